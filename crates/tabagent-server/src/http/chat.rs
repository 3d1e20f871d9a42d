//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tabagent_core::{FinishReason, TokenLogprob, ToolCallDelta};
use tabagent_router::{ArmId, CachedAnswer, ChatRequest};

use super::error::{ApiError, ErrorBody};
use super::generate::{self, ChunkFormat, Events};
use super::json::ApiJson;
use super::wire::{
    ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChunkChoice,
    ChunkDelta, ResponseMessage, WireLogprobs, WireToolCall, WireToolCallDelta, WireUsage,
};
use super::{admission, context, conversation, convert, sessions};
use crate::callers::Caller;
use crate::catalog::ModelKind;
use crate::registry::Engine;
use crate::state::AppState;

/// Generates the assistant's next message.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The reply; with `stream: true`, server-sent `chat.completion.chunk` events ending in `[DONE]`", body = ChatCompletionResponse),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 503, description = "Busy (see Retry-After) or model unavailable", body = ErrorBody),
    )
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let mut job = convert::chat(request)?;
    let ticket = admission::admit(&state, &headers, caller.as_deref())?;
    let conversation = conversation::conversation_id(&headers, job.conversation.take())?;
    let recording = conversation::Recording::new(&state, conversation, &job.model, &job.messages);
    let echo = recording.as_ref().map(|r| {
        (
            HeaderName::from_static(conversation::HEADER),
            HeaderValue::from_str(r.conversation()).ok(),
        )
    });
    let started = std::time::Instant::now();
    // A session's earlier turns come first; this request's turns and the answer are added to it
    // once the answer is complete.
    // What the request needs of an engine: a session's earlier turns are text, so they do not
    // change it.
    let needs = tabagent_router::ChatRequest::needs_of(&job.messages, &job.params);
    let session = match sessions::requested(&headers, caller.as_deref())? {
        Some(sessions::Requested { id, key }) => {
            if !needs.is_empty() {
                return Err(ApiError::bad_request(
                    Some(sessions::HEADER),
                    "a session keeps text turns only: send a conversation with tools, tool \
                     results or images whole, without X-TabAgent-Session",
                ));
            }
            let kept = state.cache().session(&key).await.unwrap_or_default();
            let new_turns = sessions::turns(&job.messages);
            let mut messages = sessions::history(&kept);
            messages.append(&mut job.messages);
            job.messages = messages;
            let mut updated = kept;
            updated.messages.extend(new_turns);
            Some((id, key, updated))
        }
        None => None,
    };
    // Before the cache key: an answer depends on the context it was given.
    let context_records = match context::wanted(&state, &job.model, &headers)? {
        Some(config) => Some(context::enhance(&state, &config, &mut job.messages).await?),
        None => None,
    };
    // A cached answer is text: requests with tools, tool turns, images or log probabilities
    // are not cached; nor are those to a route whose parameter sets are being tuned.
    let cacheable = needs.is_empty() && job.params.logprobs.is_none();
    let cache_key = match cacheable {
        false => None,
        true if crate::routing::tunes(&state, &job.model) => None,
        true => state
            .cache()
            .key(&job.model, &job.messages, &job.params)
            .map(Arc::<str>::from),
    };
    let hit = match &cache_key {
        Some(key) => {
            let hit = state.cache().get(key).await;
            state
                .metrics()
                .cache_lookup(if hit.is_some() { "hit" } else { "miss" });
            hit
        }
        None => None,
    };
    // An exact miss may still be a semantic hit (when that cache is on); a request the exact
    // cache may not answer (tools, log probabilities) is not looked up there either.
    let mut semantic = None;
    let mut semantic_hit = false;
    let hit = match hit {
        Some(hit) => Some(hit),
        None => match cache_key.as_ref().and_then(|_| {
            state
                .cache()
                .semantic_query(&job.model, &job.messages, &job.params)
        }) {
            Some(query) => match semantic_vector(&state, &query.question).await {
                Some(vector) => {
                    let found = state.cache().semantic().get(&query.scope, &vector);
                    state.metrics().cache_lookup(if found.is_some() {
                        "semantic_hit"
                    } else {
                        "semantic_miss"
                    });
                    semantic_hit = found.is_some();
                    semantic = Some((query.scope, vector));
                    found.map(|(answer, _)| answer)
                }
                None => None,
            },
            None => None,
        },
    };
    let cache_header = match (&cache_key, &hit) {
        (None, _) => None,
        (Some(_), Some(_)) if semantic_hit => Some(HeaderValue::from_static("semantic-hit")),
        (Some(_), Some(_)) => Some(HeaderValue::from_static("hit")),
        (Some(_), None) => Some(HeaderValue::from_static("miss")),
    };
    let semantic = if hit.is_some() { None } else { semantic };
    // Only a fresh answer is stored: a hit is not written back.
    let store_key = if hit.is_some() { None } else { cache_key };
    let (messages, params) = (job.messages, job.params);
    let plan = match hit {
        Some(_) => None,
        None => crate::routing::plan(&state, &job.model),
    };
    let plan = match (plan, state.router()) {
        (Some(plan), Some(router)) if !needs.is_empty() => {
            let plan = plan.restrict(router, needs);
            if plan.is_empty() {
                return Err(no_capable_provider(&job.model, needs));
            }
            Some(plan)
        }
        (plan, _) => plan,
    };
    let (handle, arm) = match (hit, plan, state.router()) {
        (Some(hit), _, _) => (replay(&hit), ArmId::new("cache", &job.model)),
        (None, Some(plan), Some(router)) => {
            let request = ChatRequest {
                messages,
                prompt: None,
                params,
                trace: Some(admission::trace(&headers)),
                fixed: std::mem::take(&mut job.fixed),
                ticket: None,
            };
            let routed = router.dispatch(plan, request, &ticket).await?;
            (Events::stream(routed.events), routed.arm)
        }
        (None, _, _) => {
            let local = tabagent_router::LOCAL;
            // The registry first: only a model that exists gets a gate, under its canonical id.
            let acquired = state.registry().acquire(&job.model, job.keep_alive).await?;
            let permits = state
                .scheduler()
                .enter(&ticket, local, &acquired.id)
                .await?;
            let events = match acquired.engine {
                // A Transformers model: the worker generates (the registry chose by its files).
                Engine::Worker(model) if model.kind == ModelKind::TextGeneration => {
                    Events::stream(crate::worker::generate(model, &messages, None, &params).await?)
                }
                engine => {
                    let engine = engine.llama(&acquired.id)?;
                    let class = crate::routing::job_class(&ticket);
                    let handle = generate::submit(&engine, move |engine| {
                        engine.chat_as(&messages, params, class)
                    })
                    .await?;
                    Events::from(handle)
                }
            };
            let events = events.held(permits, ticket.deadline);
            (events, ArmId::new(local, &job.model))
        }
    };
    let watch = state
        .metrics()
        .watch(&job.model, &arm.provider, started)
        .charging(admission::Charge::new(&state, &ticket));
    let id = generate::response_id("chatcmpl");
    if let Some(router) = state.router() {
        // Feedback on this answer (`POST /v1/feedback`) is credited to who gave it.
        router.analytics().answered(&id, &arm);
    }
    let created = generate::unix_now();
    let session_header = session
        .as_ref()
        .and_then(|(id, _, _)| HeaderValue::from_str(id).ok());
    let with_headers = |mut response: Response| {
        if let Some((name, Some(value))) = echo {
            response.headers_mut().insert(name, value);
        }
        if let Some(value) = session_header {
            response
                .headers_mut()
                .insert(HeaderName::from_static(sessions::HEADER), value);
        }
        if let Some(records) = context_records {
            response.headers_mut().insert(
                HeaderName::from_static(context::RECORDS_HEADER),
                HeaderValue::from(records),
            );
        }
        if let Some(value) = cache_header {
            response
                .headers_mut()
                .insert(HeaderName::from_static(CACHE_HEADER), value);
        }
        response
    };
    if job.stream {
        let format = ChatChunks {
            id,
            created,
            model: job.model,
        };
        let on_finish =
            (recording.is_some() || store_key.is_some() || session.is_some()).then(|| {
                let state = state.clone();
                Box::new(move |text: String, reason, usage| {
                    tokio::spawn(async move {
                        if let Some((_, key, session)) = session {
                            save_session(&state, &key, session, &text).await;
                        }
                        if let Some(key) = store_key {
                            let answer = CachedAnswer::new(text.clone(), reason, usage);
                            state.cache().put(&key, &answer).await;
                            if let Some((scope, vector)) = semantic {
                                state.cache().semantic().put(scope, vector, answer);
                            }
                        }
                        match recording {
                            Some(recording) => recording.finish(&state, text, reason, usage).await,
                            None => Ok(()),
                        }
                    })
                }) as generate::OnFinish
            });
        return Ok(with_headers(
            generate::stream_then(handle, format, job.include_usage, on_finish, watch)
                .into_response(),
        ));
    }
    let out = generate::collect(handle, watch).await?;
    if let Some((_, key, session)) = session {
        save_session(&state, &key, session, &out.text).await;
    }
    if let Some(key) = store_key {
        let answer = CachedAnswer::new(out.text.clone(), out.reason, out.usage);
        state.cache().put(&key, &answer).await;
        if let Some((scope, vector)) = semantic {
            state.cache().semantic().put(scope, vector, answer);
        }
    }
    if let Some(recording) = recording {
        recording
            .finish(&state, out.text.clone(), out.reason, out.usage)
            .await?;
    }
    let response = ChatCompletionResponse {
        id,
        object: "chat.completion",
        created,
        model: job.model,
        choices: vec![ChatChoice {
            index: 0,
            message: ResponseMessage {
                role: "assistant",
                content: (!out.text.is_empty() || out.tool_calls.is_empty()).then_some(out.text),
                tool_calls: (!out.tool_calls.is_empty())
                    .then(|| out.tool_calls.into_iter().map(WireToolCall::from).collect()),
                refusal: out.refusal,
            },
            finish_reason: out.reason.as_str(),
            logprobs: out.logprobs.as_deref().map(WireLogprobs::from_entries),
        }],
        usage: generate::wire_usage(out.usage),
    };
    Ok(with_headers(Json(response).into_response()))
}

/// Adds the answer to the session and keeps it.
async fn save_session(
    state: &AppState,
    id: &str,
    mut session: tabagent_router::Session,
    answer: &str,
) {
    session.messages.push(tabagent_router::SessionMessage {
        role: "assistant".to_string(),
        content: answer.to_string(),
    });
    state.cache().put_session(id, session).await;
}

/// The question embedded for the semantic cache; `None` (the cache is skipped) when the
/// embedding model fails.
async fn semantic_vector(state: &AppState, question: &str) -> Option<Vec<f32>> {
    let config = state.config();
    let model = config
        .response_cache
        .semantic_model
        .as_deref()
        .or(config.memory.embedding_model.as_deref())?;
    match super::memory::embed_with(state, model, vec![question.to_string()]).await {
        Ok((_, mut vectors)) => vectors.pop(),
        Err(err) => {
            tracing::warn!(error = %err.to_json(), "semantic cache skipped: the question could not be embedded");
            None
        }
    }
}

/// 400: nothing serving `model` can take what the request needs.
fn no_capable_provider(model: &str, needs: tabagent_router::Needs) -> ApiError {
    let (param, capability) = match needs.vision {
        true => ("messages", "vision"),
        false => ("tools", "tools"),
    };
    ApiError::bad_request(
        Some(param),
        format!("no provider serving `{model}` can take this request: it needs the in-process engine or a remote engine with the `{capability}` capability (router.providers[].capabilities)"),
    )
}

/// `hit` or `miss` on a request the response cache could answer (temperature 0 or a seed).
pub const CACHE_HEADER: &str = "x-tabagent-cache";

/// A cached answer as a finished generation.
fn replay(hit: &CachedAnswer) -> Events {
    let events = vec![
        tabagent_core::GenerationEvent::Text(hit.text.clone()),
        tabagent_core::GenerationEvent::Finished {
            reason: hit.finish_reason(),
            usage: hit.usage(),
        },
    ];
    Events::stream(Box::pin(futures_util::stream::iter(events)))
}

struct ChatChunks {
    id: String,
    created: u64,
    model: String,
}

impl ChatChunks {
    fn chunk(
        &self,
        delta: ChunkDelta<'_>,
        logprobs: Option<WireLogprobs>,
        finish_reason: Option<&'static str>,
        usage: Option<WireUsage>,
    ) -> String {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason,
            }]
        };
        let chunk = ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }
}

/// A delta carrying nothing but what `fill` sets.
fn delta<'a>(fill: impl FnOnce(&mut ChunkDelta<'a>)) -> ChunkDelta<'a> {
    let mut delta = ChunkDelta {
        role: None,
        content: None,
        tool_calls: None,
        refusal: None,
    };
    fill(&mut delta);
    delta
}

impl ChunkFormat for ChatChunks {
    fn tool_call(&self, call: &ToolCallDelta) -> Option<String> {
        let delta = delta(|d| d.tool_calls = Some(vec![WireToolCallDelta::from(call)]));
        Some(self.chunk(delta, None, None, None))
    }

    fn refusal(&self, text: &str) -> Option<String> {
        Some(self.chunk(delta(|d| d.refusal = Some(text)), None, None, None))
    }

    fn opening(&self) -> Option<String> {
        let delta = delta(|d| {
            d.role = Some("assistant");
            d.content = Some("");
        });
        Some(self.chunk(delta, None, None, None))
    }

    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String {
        let logprobs = (!logprobs.is_empty()).then(|| WireLogprobs::from_entries(logprobs));
        self.chunk(delta(|d| d.content = Some(text)), logprobs, None, None)
    }

    fn finish(&self, reason: FinishReason) -> String {
        self.chunk(delta(|_| {}), None, Some(reason.as_str()), None)
    }

    fn usage(&self, usage: WireUsage) -> String {
        self.chunk(delta(|_| {}), None, None, Some(usage))
    }
}
