//! Wire requests → domain types, with every range check naming its field.

use serde_json::Value;
use tabagent_core::{
    ChatMessage, GenerationParams, ImagePart, OutputConstraint, Role, SamplingParams, ToolCall,
    ToolChoice, ToolSpec, Tools, MAX_TOP_LOGPROBS,
};

use super::error::ApiError;
use super::wire::{
    ChatCompletionRequest, CompletionRequest, ContentPart, MessageContent, SamplingFields,
    StopSpec, WireMessage,
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
pub struct ParsedChat {
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
    /// The sampling settings the request gave (a route's parameter set leaves them alone).
    pub fixed: std::collections::BTreeSet<&'static str>,
}

/// A validated completion request.
#[derive(Debug)]
pub struct ParsedCompletion {
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

/// Most tools a request may offer.
const MAX_TOOLS: usize = 128;
/// Most images in one request.
const MAX_IMAGES: usize = 16;

/// Checks and converts a conversation: text, images (as `data:` or `http(s)` URLs; only remote
/// engines fetch the latter), tool calls and tool results.
pub fn messages(wire: &[WireMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::bad_request(
            Some("messages"),
            "`messages` must contain at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(wire.len());
    let mut images = 0;
    for (index, message) in wire.iter().enumerate() {
        let at = format!("messages[{index}]");
        let role = match message.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            other => {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.role")),
                    format!(
                        "unknown role `{other}` in {at}; expected system, developer, user, assistant or tool"
                    ),
                ))
            }
        };
        let mut turn = ChatMessage::new(role, String::new());
        match &message.content {
            Some(MessageContent::Text(text)) => turn.content.clone_from(text),
            Some(MessageContent::Parts(parts)) => {
                for (part_index, part) in parts.iter().enumerate() {
                    let part_at = format!("{at}.content[{part_index}]");
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(text)) => turn.content.push_str(text),
                        ("image_url", _) if role == Role::User => {
                            images += 1;
                            if images > MAX_IMAGES {
                                return Err(ApiError::bad_request(
                                    Some(&part_at),
                                    format!("at most {MAX_IMAGES} images are allowed in one request"),
                                ));
                            }
                            turn.images.push(image_part(part, turn.content.len(), &part_at)?);
                        }
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                Some(&part_at),
                                format!("content parts of type `{kind}` are not supported here; send `text` parts (and `image_url` parts in user turns)"),
                            ))
                        }
                    }
                }
            }
            // An assistant turn that only called tools.
            None if role == Role::Assistant
                && message.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) => {}
            None => {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.content")),
                    format!("{at} has no content"),
                ))
            }
        }
        if let Some(calls) = message.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            if role != Role::Assistant {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.tool_calls")),
                    "only assistant turns carry `tool_calls`",
                ));
            }
            for (call_index, call) in calls.iter().enumerate() {
                turn.tool_calls
                    .push(tool_call(call, &format!("{at}.tool_calls[{call_index}]"))?);
            }
        }
        if role == Role::Tool {
            turn.tool_call_id = message.tool_call_id.clone();
            turn.name = message.name.clone();
            if turn.tool_call_id.is_none() && message.role == "tool" {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.tool_call_id")),
                    "a tool message needs the `tool_call_id` of the call it answers",
                ));
            }
        }
        messages.push(turn);
    }
    Ok(messages)
}

/// An `image_url` part: `{"image_url": {"url", "detail"}}` or `{"image_url": "url"}`.
fn image_part(part: &ContentPart, offset: usize, at: &str) -> Result<ImagePart, ApiError> {
    let value = part.other.get("image_url");
    let (url, detail) = match value {
        Some(Value::String(url)) => (url.clone(), None),
        Some(Value::Object(object)) => (
            object
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            object
                .get("detail")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        _ => (String::new(), None),
    };
    let scheme_ok =
        url.starts_with("data:image/") || url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok {
        return Err(ApiError::bad_request(
            Some(&format!("{at}.image_url.url")),
            "an image must be a `data:image/...;base64,...` URL (or an http(s) URL for a remote engine)",
        ));
    }
    Ok(ImagePart {
        offset,
        url,
        detail,
    })
}

/// One call of an assistant turn: `{"id", "type": "function", "function": {"name", "arguments"}}`.
fn tool_call(call: &Value, at: &str) -> Result<ToolCall, ApiError> {
    let name = call.pointer("/function/name").and_then(Value::as_str);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(
            Some(&format!("{at}.function.name")),
            "a tool call needs `function.name`",
        ));
    };
    // Arguments are JSON text; an object is taken as the text it would be.
    let arguments = match call.pointer("/function/arguments") {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => "{}".to_string(),
        Some(other) => other.to_string(),
    };
    Ok(ToolCall {
        id: call
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        name: name.to_string(),
        arguments,
    })
}

/// How a dialect writes a function tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolShape {
    /// `{"type": "function", "function": {"name", "description", "parameters", "strict"}}`
    /// (chat completions, Ollama).
    Nested,
    /// `{"type": "function", "name", "description", "parameters", "strict"}` (Responses).
    Flat,
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
pub fn tools(
    wire: &[Value],
    tool_choice: Option<&Value>,
    parallel: Option<bool>,
    shape: ToolShape,
) -> Result<Tools, ApiError> {
    let bad = |param: &str, message: String| ApiError::bad_request(Some(param), message);
    if wire.len() > MAX_TOOLS {
        return Err(bad(
            "tools",
            format!("at most {MAX_TOOLS} tools are allowed"),
        ));
    }
    let mut specs: Vec<ToolSpec> = Vec::with_capacity(wire.len());
    for (index, tool) in wire.iter().enumerate() {
        let at = format!("tools[{index}]");
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            return Err(bad(
                &format!("{at}.type"),
                format!("tools of type `{kind}` are not supported; send `function` tools"),
            ));
        }
        let (function, at) = match shape {
            ToolShape::Nested => (
                tool.get("function").ok_or_else(|| {
                    bad(&format!("{at}.function"), "a tool needs `function`".into())
                })?,
                format!("{at}.function"),
            ),
            ToolShape::Flat => (tool, at),
        };
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !valid {
            return Err(bad(
                &format!("{at}.name"),
                "a function name is 1 to 64 letters, digits, `_`, `-` or `.`".into(),
            ));
        }
        if specs.iter().any(|s| s.name == name) {
            return Err(bad(
                &format!("{at}.name"),
                format!("two tools are named `{name}`"),
            ));
        }
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(_) => {
                return Err(bad(
                    &format!("{at}.parameters"),
                    "`parameters` must be a JSON Schema object".into(),
                ))
            }
        };
        specs.push(ToolSpec {
            name: name.to_string(),
            description: function
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters,
            strict: function
                .get("strict")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    let choice = match tool_choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            other => return Err(bad("tool_choice", format!("unknown `tool_choice` `{other}`; expected `auto`, `none`, `required` or a function"))),
        },
        Some(named) => match named
            .pointer("/function/name")
            .or_else(|| named.get("name"))
            .and_then(Value::as_str)
        {
            Some(name) => ToolChoice::Function(name.to_string()),
            None => return Err(bad("tool_choice", "`tool_choice` must be `auto`, `none`, `required` or {\"type\": \"function\", \"function\": {\"name\": ...}}".into())),
        },
    };
    match &choice {
        ToolChoice::Auto | ToolChoice::Required | ToolChoice::Function(_)
            if specs.is_empty() && tool_choice.is_some_and(|c| !c.is_null()) =>
        {
            return Err(bad("tool_choice", "`tool_choice` needs `tools`".into()))
        }
        ToolChoice::Function(name) if !specs.iter().any(|s| &s.name == name) => {
            return Err(bad(
                "tool_choice",
                format!("`tool_choice` names `{name}`, which is not among `tools`"),
            ))
        }
        _ => {}
    }
    Ok(Tools {
        specs,
        choice,
        parallel: parallel.unwrap_or(true),
    })
}

/// `logprobs` and `top_logprobs`: `None` when not asked for.
fn logprobs(request: &ChatCompletionRequest) -> Result<Option<u8>, ApiError> {
    let top = match request.top_logprobs {
        None => 0,
        Some(top) => u8::try_from(top)
            .ok()
            .filter(|top| *top <= MAX_TOP_LOGPROBS)
            .ok_or_else(|| {
                ApiError::bad_request(
                    Some("top_logprobs"),
                    format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}"),
                )
            })?,
    };
    match request.logprobs {
        Some(true) => Ok(Some(top)),
        _ if request.top_logprobs.is_some_and(|t| t > 0) => Err(ApiError::bad_request(
            Some("logprobs"),
            "`top_logprobs` needs `logprobs: true`",
        )),
        _ => Ok(None),
    }
}

/// Validates a chat request.
pub fn chat(request: ChatCompletionRequest) -> Result<ParsedChat, ApiError> {
    check_model(&request.model)?;
    let messages = messages(&request.messages)?;
    let mut params = generation(&request.sampling, request.max_completion_tokens, None)?;
    params.constraint = response_format(request.response_format.as_ref())?;
    params.tools = tools(
        request.tools.as_deref().unwrap_or_default(),
        request.tool_choice.as_ref(),
        request.parallel_tool_calls,
        ToolShape::Nested,
    )?;
    params.logprobs = logprobs(&request)?;
    let (stream, include_usage) = streaming(&request.sampling);
    Ok(ParsedChat {
        keep_alive: keep_alive(request.sampling.keep_alive.as_ref())?,
        model: request.model,
        messages,
        params,
        stream,
        include_usage,
        conversation: request.conversation_id,
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

/// Validates a completion request.
pub fn completion(request: CompletionRequest) -> Result<ParsedCompletion, ApiError> {
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
    let logprobs = match request.logprobs {
        None => None,
        Some(n) if (0..=i64::from(MAX_TOP_LOGPROBS)).contains(&n) => Some(n as u8),
        Some(n) => {
            return Err(ApiError::bad_request(
                Some("logprobs"),
                format!("`logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"),
            ))
        }
    };
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
    let mut params = generation(
        &request.sampling,
        None,
        Some(COMPLETIONS_DEFAULT_MAX_TOKENS),
    )?;
    params.logprobs = logprobs;
    let (stream, include_usage) = streaming(&request.sampling);
    Ok(ParsedCompletion {
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

pub fn generation(
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
        ..GenerationParams::default()
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
