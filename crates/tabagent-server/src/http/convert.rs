//! Wire requests → domain types, with every range check naming its field.

use serde_json::Value;
use tabagent_core::{ChatMessage, GenerationParams, OutputConstraint, Role, SamplingParams};

use super::error::ApiError;
use super::wire::{
    ChatCompletionRequest, CompletionRequest, MessageContent, SamplingFields, StopSpec, WireMessage,
};
use crate::keep_alive::KeepAlive;

/// Most stop strings a request may give.
const MAX_STOPS: usize = 16;
/// Longest stop string, in bytes.
const MAX_STOP_LEN: usize = 256;
/// OpenAI's default `max_tokens` for legacy completions.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

/// A validated chat request.
#[derive(Debug)]
pub struct ChatJob {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// How to generate.
    pub params: GenerationParams,
    /// Stream or not.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// The model's keep-alive, when the request sets one.
    pub keep_alive: Option<KeepAlive>,
    /// The conversation to record the exchange in.
    pub conversation: Option<String>,
    /// What only a remote engine can take (tools, tool messages, images, log probabilities),
    /// with the refusal to answer if the request is not routed to one.
    pub passthrough: Option<(tabagent_router::Passthrough, ApiError)>,
    /// The sampling settings the request gave (a route's parameter set leaves them alone).
    pub fixed: std::collections::BTreeSet<&'static str>,
}

/// A validated completion request.
#[derive(Debug)]
pub struct CompletionJob {
    /// The model.
    pub model: String,
    /// The raw prompt.
    pub prompt: String,
    /// How to generate.
    pub params: GenerationParams,
    /// Stream or not.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// The model's keep-alive, when the request sets one.
    pub keep_alive: Option<KeepAlive>,
    /// The sampling settings the request gave.
    pub fixed: std::collections::BTreeSet<&'static str>,
}

/// Checks and converts a conversation.
pub fn messages(wire: &[WireMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    messages_with(wire, false)
}

/// Converts a conversation; `remote_only` (a request only a remote engine will see) keeps the
/// text of what the in-process engine cannot take (tool turns, images) instead of refusing it.
fn messages_with(wire: &[WireMessage], remote_only: bool) -> Result<Vec<ChatMessage>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::bad_request(
            Some("messages"),
            "`messages` must contain at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(wire.len());
    for (index, message) in wire.iter().enumerate() {
        let at = format!("messages[{index}]");
        let role = match message.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "function" if remote_only => Role::User,
            "tool" | "function" => {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.role")),
                    "tool messages are not available yet in this server",
                ))
            }
            other => {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.role")),
                    format!(
                    "unknown role `{other}` in {at}; expected system, developer, user or assistant"
                ),
                ))
            }
        };
        if !remote_only
            && (message
                .tool_calls
                .as_ref()
                .is_some_and(|calls| !calls.is_empty())
                || message.tool_call_id.is_some())
        {
            return Err(ApiError::bad_request(
                Some(&format!("{at}.tool_calls")),
                "tool calls are not available yet in this server",
            ));
        }
        let content = match &message.content {
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (part_index, part) in parts.iter().enumerate() {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(part_text)) => text.push_str(part_text),
                        _ if remote_only => {}
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                Some(&format!("{at}.content[{part_index}]")),
                                format!("content parts of type `{kind}` are not supported by this model; send `text` parts"),
                            ))
                        }
                    }
                }
                text
            }
            // An assistant turn that only called tools.
            None if remote_only => String::new(),
            None => {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.content")),
                    format!("{at} has no content"),
                ))
            }
        };
        messages.push(ChatMessage::new(role, content));
    }
    Ok(messages)
}

/// Validates a chat request.
pub fn chat(request: ChatCompletionRequest) -> Result<ChatJob, ApiError> {
    check_model(&request.model)?;
    let passthrough = passthrough(&request)?;
    let messages = messages_with(&request.messages, passthrough.is_some())?;
    let mut params = generation(&request.sampling, request.max_completion_tokens, None)?;
    params.constraint = response_format(request.response_format.as_ref())?;
    let (stream, include_usage) = streaming(&request.sampling);
    Ok(ChatJob {
        keep_alive: keep_alive(request.sampling.keep_alive.as_ref())?,
        model: request.model,
        messages,
        params,
        stream,
        include_usage,
        conversation: request.conversation_id,
        passthrough,
        fixed: fixed(&request.sampling, request.max_completion_tokens),
    })
}

/// The sampling settings a request gave, by their wire names.
fn fixed(
    sampling: &SamplingFields,
    max_completion_tokens: Option<i64>,
) -> std::collections::BTreeSet<&'static str> {
    [
        ("temperature", sampling.temperature.is_some()),
        ("top_p", sampling.top_p.is_some()),
        ("top_k", sampling.top_k.is_some()),
        ("min_p", sampling.min_p.is_some()),
        ("repeat_penalty", sampling.repeat_penalty.is_some()),
        ("frequency_penalty", sampling.frequency_penalty.is_some()),
        ("presence_penalty", sampling.presence_penalty.is_some()),
        (
            "max_tokens",
            sampling.max_tokens.is_some() || max_completion_tokens.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect()
}

/// What of `request` only a remote engine can take, and the error the in-process engine would
/// answer it with (the first such part): `None` when it is plain text.
fn passthrough(
    request: &ChatCompletionRequest,
) -> Result<Option<(tabagent_router::Passthrough, ApiError)>, ApiError> {
    let mut refusal: Option<ApiError> = None;
    let mut refuse = |param: &str, message: &str| {
        refusal.get_or_insert_with(|| ApiError::bad_request(Some(param), message));
    };
    let mut fields = serde_json::Map::new();
    let tools = request.tools.as_ref().is_some_and(|t| !t.is_empty());
    if tools {
        refuse(
            "tools",
            "tool calling needs a remote engine with the `tools` capability; the in-process engine does not call tools yet",
        );
        fields.insert(
            "tools".into(),
            Value::from(request.tools.clone().unwrap_or_default()),
        );
    }
    if let Some(choice) = &request.tool_choice {
        if choice != &Value::String("none".into()) {
            if !tools {
                return Err(ApiError::bad_request(
                    Some("tool_choice"),
                    "`tool_choice` needs `tools`",
                ));
            }
            fields.insert("tool_choice".into(), choice.clone());
        }
    }
    if let Some(parallel) = request.parallel_tool_calls.filter(|_| tools) {
        fields.insert("parallel_tool_calls".into(), Value::Bool(parallel));
    }
    if request.logprobs == Some(true) || request.top_logprobs.is_some() {
        if !(0..=20).contains(&request.top_logprobs.unwrap_or(0)) {
            return Err(ApiError::bad_request(
                Some("top_logprobs"),
                "`top_logprobs` must be between 0 and 20",
            ));
        }
        refuse(
            "logprobs",
            "log probabilities come from remote engines only; the in-process engine does not report them yet",
        );
        fields.insert("logprobs".into(), Value::Bool(true));
        if let Some(top) = request.top_logprobs {
            fields.insert("top_logprobs".into(), Value::from(top));
        }
    }
    let mut tool_turns = false;
    let mut images = false;
    for (index, message) in request.messages.iter().enumerate() {
        if matches!(message.role.as_str(), "tool" | "function")
            || message.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
            || message.tool_call_id.is_some()
        {
            tool_turns = true;
            refuse(
                &format!("messages[{index}].tool_calls"),
                "tool calls need a remote engine with the `tools` capability; the in-process engine does not call tools yet",
            );
        }
        if let Some(MessageContent::Parts(parts)) = &message.content {
            if let Some(at) = parts.iter().position(|p| p.kind != "text") {
                images = true;
                refuse(
                    &format!("messages[{index}].content[{at}]"),
                    &format!("content parts of type `{}` need a remote engine with the `vision` capability; this model takes `text` parts", parts[at].kind),
                );
            }
        }
    }
    let Some(refusal) = refusal else {
        return Ok(None);
    };
    let messages = (tool_turns || images)
        .then(|| serde_json::to_value(&request.messages))
        .transpose()
        .map_err(ApiError::internal)?;
    Ok(Some((
        tabagent_router::Passthrough {
            messages,
            fields,
            needs_tools: tools || tool_turns,
            needs_vision: images,
        },
        refusal,
    )))
}

/// Validates a completion request.
pub fn completion(request: CompletionRequest) -> Result<CompletionJob, ApiError> {
    check_model(&request.model)?;
    if request.echo == Some(true) {
        return Err(ApiError::bad_request(
            Some("echo"),
            "`echo` is not supported",
        ));
    }
    if request.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            Some("suffix"),
            "`suffix` is not supported",
        ));
    }
    if request.logprobs.is_some() {
        return Err(ApiError::bad_request(
            Some("logprobs"),
            "logprobs are not supported yet",
        ));
    }
    if request.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            Some("best_of"),
            "only `best_of: 1` is supported",
        ));
    }
    let prompt = match &request.prompt {
        Value::String(text) => text.clone(),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        Value::Array(_) => {
            return Err(ApiError::bad_request(
                Some("prompt"),
                "`prompt` must be a string or a list of exactly one string",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                Some("prompt"),
                "`prompt` must be a string",
            ))
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request(
            Some("prompt"),
            "`prompt` must not be empty",
        ));
    }
    let params = generation(
        &request.sampling,
        None,
        Some(COMPLETIONS_DEFAULT_MAX_TOKENS),
    )?;
    let (stream, include_usage) = streaming(&request.sampling);
    Ok(CompletionJob {
        fixed: fixed(&request.sampling, None),
        keep_alive: keep_alive(request.sampling.keep_alive.as_ref())?,
        model: request.model,
        prompt,
        params,
        stream,
        include_usage,
    })
}

/// `keep_alive`, when given.
pub fn keep_alive(value: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    value
        .filter(|v| !v.is_null())
        .map(|v| {
            KeepAlive::parse(v).map_err(|reason| ApiError::bad_request(Some("keep_alive"), reason))
        })
        .transpose()
}

fn check_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request(
            Some("model"),
            "`model` must name a model; GET /v1/models lists them",
        ));
    }
    Ok(())
}

fn streaming(fields: &SamplingFields) -> (bool, bool) {
    let stream = fields.stream.unwrap_or(false);
    let include_usage = stream
        && fields
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
    (stream, include_usage)
}

fn generation(
    fields: &SamplingFields,
    max_completion_tokens: Option<i64>,
    default_max: Option<u32>,
) -> Result<GenerationParams, ApiError> {
    let mut sampling = SamplingParams::default();
    if let Some(t) = fields.temperature {
        sampling.temperature = in_range(t, 0.0, 2.0, "temperature")?;
    }
    if let Some(p) = fields.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::bad_request(
                Some("top_p"),
                "`top_p` must be greater than 0 and at most 1",
            ));
        }
        sampling.top_p = p;
    }
    if let Some(k) = fields.top_k {
        sampling.top_k = u32::try_from(k)
            .map_err(|_| ApiError::bad_request(Some("top_k"), "`top_k` must be 0 or more"))?;
    }
    if let Some(p) = fields.min_p {
        sampling.min_p = in_range(p, 0.0, 1.0, "min_p")?;
    }
    if let Some(r) = fields.repeat_penalty {
        if !(r > 0.0 && r <= 10.0) {
            return Err(ApiError::bad_request(
                Some("repeat_penalty"),
                "`repeat_penalty` must be greater than 0 and at most 10",
            ));
        }
        sampling.repeat_penalty = r;
    }
    if let Some(f) = fields.frequency_penalty {
        sampling.frequency_penalty = in_range(f, -2.0, 2.0, "frequency_penalty")?;
    }
    if let Some(p) = fields.presence_penalty {
        sampling.presence_penalty = in_range(p, -2.0, 2.0, "presence_penalty")?;
    }
    if let Some(seed) = fields.seed {
        // OpenAI seeds are 64-bit; llama.cpp takes 32 bits. Fold rather than refuse.
        sampling.seed = Some((seed as u64 ^ ((seed as u64) >> 32)) as u32);
    }
    if fields.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(Some("n"), "only `n: 1` is supported"));
    }
    if fields.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::bad_request(
            Some("logit_bias"),
            "`logit_bias` is not supported yet",
        ));
    }
    let (max_value, max_name) = match (max_completion_tokens, fields.max_tokens) {
        (Some(value), _) => (Some(value), "max_completion_tokens"),
        (None, value) => (value, "max_tokens"),
    };
    let max_tokens = match max_value {
        Some(value) if value < 1 => {
            return Err(ApiError::bad_request(
                Some(max_name),
                format!("`{max_name}` must be at least 1, got {value}"),
            ))
        }
        Some(value) => Some(u32::try_from(value).unwrap_or(u32::MAX)),
        None => default_max,
    };
    let stop = match &fields.stop {
        None => Vec::new(),
        Some(StopSpec::One(one)) => vec![one.clone()],
        Some(StopSpec::Many(many)) => many.clone(),
    };
    if stop.len() > MAX_STOPS {
        return Err(ApiError::bad_request(
            Some("stop"),
            format!("at most {MAX_STOPS} stop strings are allowed"),
        ));
    }
    if stop.iter().any(|s| s.len() > MAX_STOP_LEN) {
        return Err(ApiError::bad_request(
            Some("stop"),
            format!("stop strings must be at most {MAX_STOP_LEN} bytes"),
        ));
    }
    Ok(GenerationParams {
        sampling,
        max_tokens,
        stop,
        constraint: OutputConstraint::None,
        ignore_eos: fields.ignore_eos.unwrap_or(false),
    })
}

fn in_range(value: f32, low: f32, high: f32, name: &str) -> Result<f32, ApiError> {
    if value.is_finite() && value >= low && value <= high {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            Some(name),
            format!("`{name}` must be between {low} and {high}, got {value}"),
        ))
    }
}

fn response_format(format: Option<&Value>) -> Result<OutputConstraint, ApiError> {
    let Some(format) = format else {
        return Ok(OutputConstraint::None);
    };
    let bad = |message: &str| ApiError::bad_request(Some("response_format"), message.to_string());
    let kind = format.get("type").and_then(Value::as_str).ok_or_else(|| {
        bad("`response_format.type` must be `text`, `json_object` or `json_schema`")
    })?;
    match kind {
        "text" => Ok(OutputConstraint::None),
        "json_object" => Ok(OutputConstraint::JsonObject),
        "json_schema" => {
            let spec = format.get("json_schema").ok_or_else(|| bad("`response_format.json_schema` is required for type `json_schema`"))?;
            let schema = spec.get("schema").ok_or_else(|| bad("`response_format.json_schema.schema` is required"))?;
            if !schema.is_object() {
                return Err(bad("`response_format.json_schema.schema` must be a JSON Schema object"));
            }
            Ok(OutputConstraint::JsonSchema(schema.clone()))
        }
        other => Err(bad(&format!("unknown `response_format.type` `{other}`; expected `text`, `json_object` or `json_schema`"))),
    }
}
