//! The generation service: one [`generate`] under every API dialect (OpenAI's chat and
//! completions, Ollama's, OpenAI's Responses) and under the server's own work.
//!
//! A [`ChatJob`] says everything about a request in typed values: the turns (text, images, tool
//! calls and results), sampling, tools, who asks and how urgently, and which of the service's
//! steps it takes (a session, memory context, a conversation to record, the caches). `generate`
//! runs those steps, plans where the request goes (the in-process engine, the ML worker, or the
//! router's providers), enters the scheduler's gates, and returns the answer as one typed event
//! stream whose finishing work (recording, caching, keeping the session) runs before its last
//! event. Transports parse their wire into a `ChatJob` and format the events; nothing below
//! them sees their JSON.

mod cache;
pub mod context;
pub mod events;
pub mod local;
pub mod recording;
mod session;
pub mod tasks;

use std::collections::BTreeSet;
use std::time::Instant;

use futures_util::FutureExt as _;
use tabagent_core::{ChatMessage, GenerationEvent, GenerationParams};
use tabagent_router::{
    ArmId, CachedAnswer, ChatRequest, ContextConfig, Needs, Ticket, TraceParent,
};

pub use cache::CacheStatus;
pub use events::{collect, Collected, Events};
pub use session::SessionRef;

use crate::error::ServiceError;
use crate::keep_alive::KeepAlive;
use crate::state::AppState;
use recording::Recording;

/// The request field (a header) that names a session, in errors about it.
const SESSION_PARAM: &str = "x-tabagent-session";

/// Everything about one generation request.
pub struct ChatJob {
    /// The model, route, alias or `provider/model` asked for.
    pub model: String,
    /// The conversation (empty when `prompt` is set).
    pub messages: Vec<ChatMessage>,
    /// A raw prompt to continue instead of a conversation (legacy completions).
    pub prompt: Option<String>,
    /// Sampling, limits, tools, output constraint.
    pub params: GenerationParams,
    /// The sampling settings the caller gave itself (a route's parameter set leaves them alone).
    pub fixed: BTreeSet<&'static str>,
    /// How long the model stays loaded after this request, when it says.
    pub keep_alive: Option<KeepAlive>,
    /// Who asks, in which class, until when.
    pub ticket: Ticket,
    /// The trace it belongs to, continued on remote engines.
    pub trace: Option<TraceParent>,
    /// The conversation to record the exchange in.
    pub conversation: Option<String>,
    /// The session whose turns come first and which keeps this exchange.
    pub session: Option<SessionRef>,
    /// The memory-context step, when it runs.
    pub context: Option<ContextConfig>,
    /// Whether the response caches may answer (and keep) it.
    pub cacheable: bool,
}

impl ChatJob {
    /// A conversation for `model`, with no optional steps but the caches.
    pub fn chat(
        model: impl Into<String>,
        messages: Vec<ChatMessage>,
        params: GenerationParams,
        ticket: Ticket,
    ) -> ChatJob {
        ChatJob {
            model: model.into(),
            messages,
            prompt: None,
            params,
            fixed: BTreeSet::new(),
            keep_alive: None,
            ticket,
            trace: None,
            conversation: None,
            session: None,
            context: None,
            cacheable: true,
        }
    }

    /// A raw prompt for `model` to continue (never cached).
    pub fn prompt(
        model: impl Into<String>,
        prompt: String,
        params: GenerationParams,
        ticket: Ticket,
    ) -> ChatJob {
        ChatJob {
            prompt: Some(prompt),
            cacheable: false,
            ..ChatJob::chat(model, Vec::new(), params, ticket)
        }
    }

    /// What the request needs of an engine (tools, vision).
    pub fn needs(&self) -> Needs {
        ChatRequest::needs_of(&self.messages, &self.params)
    }
}

/// A generation under way, and what the service's steps did.
pub struct Generation {
    /// The answer, ending in one `Finished` or `Failed`.
    pub events: Events,
    /// The analytics arm it counts for (who answers: `local`, a provider, `cache`).
    pub arm: ArmId,
    /// The conversation it is recorded in.
    pub conversation: Option<String>,
    /// The session it belongs to.
    pub session: Option<String>,
    /// What the context step added, when it ran: records, and the document passages among
    /// them the answer may cite.
    pub context: Option<context::Grounding>,
    /// What the caches said, when they could answer.
    pub cache: Option<CacheStatus>,
}

impl Generation {
    /// Credits feedback on the answer called `id` (`POST /v1/feedback`) to who gave it.
    pub fn answers_as(&self, state: &AppState, id: &str) {
        state.router().analytics().answered(id, &self.arm);
    }
}

/// Runs `job`: session, context, caches, planning, dispatch, and the finishing work.
pub async fn generate(state: &AppState, mut job: ChatJob) -> Result<Generation, ServiceError> {
    let started = Instant::now();
    // What the request needs of an engine: a session's earlier turns are text, so they do not
    // change it.
    let needs = job.needs();
    let recording = Recording::new(state, job.conversation.take(), &job.model, &job.messages);
    let conversation = recording.as_ref().map(|r| r.conversation().to_string());
    let turn = state
        .events()
        .map(|events| crate::events::chat::ChatTurn::new(events, &job.messages));
    let session_id = job.session.as_ref().map(|s| s.id.clone());
    let session = match &job.session {
        Some(_) if !needs.is_empty() => {
            return Err(ServiceError::invalid(
                Some(SESSION_PARAM),
                "a session keeps text turns only: send a conversation with tools, tool \
                 results or images whole, without X-TabAgent-Session",
            ));
        }
        Some(named) => Some(session::join(state, named, &mut job.messages).await),
        None => None,
    };
    // Before the cache key: an answer depends on the context it was given.
    let context = match &job.context {
        Some(config) => Some(context::enhance(state, config, &mut job.messages).await?),
        None => None,
    };
    // A cached answer is text: requests with tools, tool turns, images or log probabilities
    // are not cached; nor are those to a route whose parameter sets are being tuned.
    let cacheable = job.cacheable
        && needs.is_empty()
        && job.params.logprobs.is_none()
        && !crate::routing::tunes(state, &job.model);
    let lookup = match cacheable {
        true => cache::lookup(state, &job.model, &job.messages, &job.params).await,
        false => cache::Lookup::skipped(),
    };
    let (events, arm) = match lookup.hit {
        Some(hit) => (replay(&hit), ArmId::new("cache", &job.model)),
        None => dispatch(state, &mut job, needs).await?,
    };
    let watch = state
        .metrics()
        .watch(&job.model, &arm.provider, started)
        .charging(crate::metrics::Charge::new(state, &job.ticket));
    let mut events = events.watched(watch);
    let keep = lookup.keep;
    if recording.is_some() || keep.is_some() || session.is_some() || turn.is_some() {
        let state = state.clone();
        let (model, provider) = (job.model.clone(), arm.provider.clone());
        let conversation = conversation.clone();
        events = events.then(Box::new(move |answer: events::Answer| {
            async move {
                if let Some(turn) = turn {
                    turn.answered(&model, &provider, conversation.as_deref(), &answer)
                        .await;
                }
                if let Some(session) = session {
                    session.keep(&state, &answer.text).await;
                }
                if let Some(keep) = keep {
                    let cached =
                        CachedAnswer::new(answer.text.clone(), answer.reason, answer.usage);
                    keep.put(&state, cached).await;
                }
                match recording {
                    Some(recording) => {
                        recording
                            .finish(&state, answer.text, answer.reason, answer.usage)
                            .await
                    }
                    None => Ok(()),
                }
            }
            .boxed()
        }));
    }
    Ok(Generation {
        events,
        arm,
        conversation,
        session: session_id,
        context,
        cache: lookup.status,
    })
}

/// Sends the request where it goes: through the router when it names a route, an alias, a
/// provider or a remote-only model; else to the local model, behind the scheduler's gates.
async fn dispatch(
    state: &AppState,
    job: &mut ChatJob,
    needs: Needs,
) -> Result<(Events, ArmId), ServiceError> {
    let plan = crate::routing::plan(state, &job.model);
    if let Some(plan) = plan {
        let router = state.router();
        let plan = match needs.is_empty() {
            true => plan,
            false => plan.restrict(router, needs),
        };
        if plan.is_empty() {
            let (param, capability) = match needs.vision {
                true => ("messages", "vision"),
                false => ("tools", "tools"),
            };
            return Err(ServiceError::NoCapableProvider {
                model: job.model.clone(),
                capability,
                param,
            });
        }
        let request = ChatRequest {
            messages: std::mem::take(&mut job.messages),
            prompt: job.prompt.take(),
            params: job.params.clone(),
            trace: job.trace,
            fixed: std::mem::take(&mut job.fixed),
            ticket: None,
        };
        let routed = router.dispatch(plan, request, &job.ticket).await?;
        return Ok((Events::stream(routed.events), routed.arm));
    }
    let local = tabagent_router::LOCAL;
    // The registry first: only a model that exists gets a gate, under its canonical id.
    let acquired = state.registry().acquire(&job.model, job.keep_alive).await?;
    let permits = state
        .scheduler()
        .enter(&job.ticket, local, &acquired.id)
        .await?;
    let input = match job.prompt.take() {
        Some(prompt) => local::Input::Prompt(prompt),
        None => local::Input::Chat(std::mem::take(&mut job.messages)),
    };
    let class = local::job_class(&job.ticket);
    let events = local::start(acquired, input, job.params.clone(), class).await?;
    Ok((
        events.held(permits, job.ticket.deadline),
        ArmId::new(local, &job.model),
    ))
}

/// A cached answer as a finished generation.
fn replay(hit: &CachedAnswer) -> Events {
    Events::of(vec![
        GenerationEvent::Text(hit.text.clone()),
        GenerationEvent::Finished {
            reason: hit.finish_reason(),
            usage: hit.usage(),
        },
    ])
}
