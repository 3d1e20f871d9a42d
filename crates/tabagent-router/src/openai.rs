//! A remote engine that speaks OpenAI's chat API (llama.cpp's server, vLLM, Ollama, LM Studio,
//! OpenAI): the request is sent streamed, whatever the caller asked, so the router sees the
//! first token arrive (the point after which it may no longer fail over) and can cancel by
//! dropping the connection.

use std::time::Duration;

use crate::provider::{BoxFuture, ChatRequest, EventStream, Provider, TryError};
use serde_json::{json, Value};
use tabagent_core::{
    ChatMessage, FinishReason, GenerationEvent, GenerationParams, InferenceError, OutputConstraint,
    TokenLogprob, ToolCallDelta, ToolChoice, Tools, TopLogprob, Usage,
};

/// How long an active health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest SSE line accepted from an upstream.
const MAX_LINE: usize = 4 << 20;

/// One OpenAI-compatible endpoint.
pub struct OpenAiProvider {
    name: String,
    url: String,
    completions_url: String,
    models_url: String,
    api_key: Option<String>,
    client: reqwest::Client,
}

impl OpenAiProvider {
    /// A provider at `base_url` (before `/chat/completions`), sharing `client`'s pool.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name: name.to_string(),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            completions_url: format!("{}/completions", base_url.trim_end_matches('/')),
            models_url: format!("{}/models", base_url.trim_end_matches('/')),
            api_key,
            client,
        }
    }
}

/// One message in OpenAI's shape: text content, or content parts when it has images; tool
/// calls and the call a tool result answers.
pub fn message_json(message: &ChatMessage) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("role".into(), json!(message.role.as_str()));
    let content = if message.images.is_empty() {
        match (message.content.is_empty(), message.tool_calls.is_empty()) {
            // An assistant turn that only called tools.
            (true, false) => Value::Null,
            _ => json!(message.content),
        }
    } else {
        let mut parts = Vec::new();
        let mut from = 0;
        for image in &message.images {
            let at = image.offset.min(message.content.len());
            if at > from {
                parts.push(json!({"type": "text", "text": &message.content[from..at]}));
            }
            let mut url = json!({"url": image.url});
            if let Some(detail) = &image.detail {
                url["detail"] = json!(detail);
            }
            parts.push(json!({"type": "image_url", "image_url": url}));
            from = from.max(at);
        }
        if from < message.content.len() {
            parts.push(json!({"type": "text", "text": &message.content[from..]}));
        }
        Value::Array(parts)
    };
    obj.insert("content".into(), content);
    if !message.tool_calls.is_empty() {
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({"id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments}})
            })
            .collect();
        obj.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &message.tool_call_id {
        obj.insert("tool_call_id".into(), json!(id));
    }
    if let Some(name) = &message.name {
        obj.insert("name".into(), json!(name));
    }
    Value::Object(obj)
}

/// `tools`, `tool_choice` and `parallel_tool_calls` in OpenAI's shape, into `obj`.
fn insert_tools(obj: &mut serde_json::Map<String, Value>, tools: &Tools) {
    if tools.specs.is_empty() {
        return;
    }
    let specs: Vec<Value> = tools
        .specs
        .iter()
        .map(|spec| {
            let mut function = serde_json::Map::new();
            function.insert("name".into(), json!(spec.name));
            if let Some(description) = &spec.description {
                function.insert("description".into(), json!(description));
            }
            function.insert("parameters".into(), spec.parameters.clone());
            if spec.strict {
                function.insert("strict".into(), json!(true));
            }
            json!({"type": "function", "function": function})
        })
        .collect();
    obj.insert("tools".into(), Value::Array(specs));
    let choice = match &tools.choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
    };
    obj.insert("tool_choice".into(), choice);
    if !tools.parallel {
        obj.insert("parallel_tool_calls".into(), json!(false));
    }
}

/// The JSON body for `model`.
pub fn request_body(model: &str, messages: &[ChatMessage], params: &GenerationParams) -> Value {
    let s = &params.sampling;
    let messages: Vec<Value> = messages.iter().map(message_json).collect();
    let mut obj = serde_json::Map::new();
    obj.insert("model".into(), json!(model));
    obj.insert("messages".into(), Value::Array(messages));
    obj.insert("stream".into(), json!(true));
    obj.insert("stream_options".into(), json!({"include_usage": true}));
    obj.insert("temperature".into(), json!(s.temperature));
    obj.insert("top_p".into(), json!(s.top_p));
    if let Some(max) = params.max_tokens {
        obj.insert("max_tokens".into(), json!(max));
    }
    if !params.stop.is_empty() {
        obj.insert("stop".into(), json!(params.stop));
    }
    if let Some(seed) = s.seed {
        obj.insert("seed".into(), json!(seed));
    }
    if s.frequency_penalty != 0.0 {
        obj.insert("frequency_penalty".into(), json!(s.frequency_penalty));
    }
    if s.presence_penalty != 0.0 {
        obj.insert("presence_penalty".into(), json!(s.presence_penalty));
    }
    insert_tools(&mut obj, &params.tools);
    if let Some(top) = params.logprobs {
        obj.insert("logprobs".into(), json!(true));
        if top > 0 {
            obj.insert("top_logprobs".into(), json!(top));
        }
    }
    match &params.constraint {
        OutputConstraint::None => {}
        OutputConstraint::JsonObject => {
            obj.insert("response_format".into(), json!({"type": "json_object"}));
        }
        OutputConstraint::JsonSchema(schema) => {
            obj.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
            );
        }
    }
    Value::Object(obj)
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// `GET {base}/models`: any 2xx within the probe timeout is healthy.
    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut call = self.client.get(&self.models_url).timeout(PROBE_TIMEOUT);
            if let Some(key) = &self.api_key {
                call = call.bearer_auth(key);
            }
            let response = call.send().await.map_err(|e| without_url(&e))?;
            // Any answer but a server error shows the engine is up: some engines have no
            // `/models`, or the key may lack that scope (404, 401, 403), and a 429 is busy,
            // not down.
            let status = response.status();
            if status.is_server_error() {
                Err(format!("GET /models answered {status}"))
            } else {
                Ok(())
            }
        })
    }

    fn start<'a>(
        &'a self,
        model: &'a str,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, TryError>> {
        Box::pin(async move {
            let mut body = request_body(model, &request.messages, &request.params);
            let url = match (&request.prompt, body.as_object_mut()) {
                (Some(prompt), Some(obj)) => {
                    obj.remove("messages");
                    obj.insert("prompt".into(), json!(prompt));
                    // Legacy completions count alternatives in `logprobs` itself.
                    if let Some(top) = request.params.logprobs {
                        obj.remove("top_logprobs");
                        obj.insert("logprobs".into(), json!(top));
                    }
                    &self.completions_url
                }
                _ => &self.url,
            };
            let mut call = self.client.post(url).json(&body);
            if let Some(key) = &self.api_key {
                call = call.bearer_auth(key);
            }
            if let Some(trace) = &request.trace {
                call = call.header("traceparent", trace.child().header());
            }
            let response = call.send().await.map_err(|e| TryError::Provider {
                message: format!("{}: {}", self.name, without_url(&e)),
                retry_after: None,
            })?;
            let status = response.status();
            if !status.is_success() {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = response.text().await.unwrap_or_default();
                let message = upstream_message(&text).unwrap_or_else(|| status.to_string());
                return Err(classify(&self.name, status.as_u16(), message, retry_after));
            }
            let whole = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("application/json"));
            if whole {
                // Some servers answer `stream: true` with one JSON body: that is the whole reply.
                return Ok(whole_answer(self.name.clone(), response));
            }
            Ok(events(self.name.clone(), response))
        })
    }
}

/// reqwest's message without the URL (it may carry credentials in a query).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(start) = e.find(" for url (") {
        if let Some(end) = e[start..].find(')') {
            e.replace_range(start..start + end + 1, "");
        }
    }
    e
}

/// The `error.message` of an OpenAI-style error body.
fn upstream_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.pointer("/error/message")
        .or_else(|| v.get("error"))
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A refused try: the caller's fault (4xx other than 408 and 429) is not retried elsewhere,
/// since every provider would refuse it too; anything else is the provider's.
fn classify(name: &str, status: u16, message: String, retry_after: Option<Duration>) -> TryError {
    match status {
        429 => TryError::Provider {
            message: format!("{name}: rate limited ({message})"),
            retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
        },
        408 => TryError::Provider {
            message: format!("{name}: {message}"),
            retry_after: None,
        },
        400..=499 => TryError::Caller(InferenceError::InvalidRequest {
            param: None,
            message: format!("{name} refused the request: {message}"),
        }),
        _ => TryError::Provider {
            message: format!("{name}: HTTP {status}: {message}"),
            retry_after,
        },
    }
}

/// An answer sent as one JSON body (`chat.completion` or `text_completion`) as generation
/// events, read when the caller first polls: its text, tool calls and log probabilities, then
/// the finish with the usage.
fn whole_answer(name: String, response: reqwest::Response) -> EventStream {
    use futures_util::StreamExt as _;
    let read = async move {
        let mut body = Vec::new();
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    if body.len() + bytes.len() > MAX_LINE {
                        return Err(format!(
                            "{name}: the answer is larger than {MAX_LINE} bytes"
                        ));
                    }
                    body.extend_from_slice(&bytes);
                }
                Ok(None) => break,
                Err(e) => return Err(format!("{name}: the answer broke off: {}", without_url(&e))),
            }
        }
        answer_events(&body).map_err(|message| format!("{name}: {message}"))
    };
    Box::pin(
        futures_util::stream::once(async move {
            match read.await {
                Ok(events) => events,
                Err(message) => vec![GenerationEvent::Failed(InferenceError::Unavailable(
                    message,
                ))],
            }
        })
        .flat_map(futures_util::stream::iter),
    )
}

/// The events of a whole (non-streamed) OpenAI answer.
pub fn answer_events(body: &[u8]) -> Result<Vec<GenerationEvent>, String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if let Some(message) = answer.pointer("/error/message").and_then(Value::as_str) {
        return Err(format!("failed: {message}"));
    }
    let choice = answer
        .pointer("/choices/0")
        .ok_or("the answer has no choices")?;
    // The same events its chunks would have made: the message as one delta.
    let mut chunk = serde_json::json!({"choices": [{
        "delta": choice.get("message").cloned().unwrap_or(Value::Null),
        "logprobs": choice.get("logprobs").cloned().unwrap_or(Value::Null),
        "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null),
    }]});
    if let Some(text) = choice.get("text") {
        chunk["choices"][0]["text"] = text.clone();
    }
    if let Some(calls) = chunk
        .pointer_mut("/choices/0/delta/tool_calls")
        .and_then(Value::as_array_mut)
    {
        for (index, call) in calls.iter_mut().enumerate() {
            call["index"] = serde_json::json!(index);
        }
    }
    if let Some(usage) = answer.get("usage") {
        chunk["usage"] = usage.clone();
    }
    let mut parser = ChunkParser::default();
    let mut events = parser.data(&chunk.to_string())?;
    events.extend(parser.data("[DONE]")?);
    Ok(events)
}

/// The upstream's server-sent events as generation events, parsed as the caller reads them:
/// no task, so dropping the stream drops the connection (cancelling upstream) at once. It ends
/// after the first `Finished` or `Failed`.
fn events(name: String, response: reqwest::Response) -> EventStream {
    let reader = SseReader {
        name,
        response,
        buffer: Vec::new(),
        parser: ChunkParser::default(),
        ready: std::collections::VecDeque::new(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(
        reader,
        |mut reader| async move {
            let event = reader.next().await?;
            Some((event, reader))
        },
    ))
}

struct SseReader {
    name: String,
    response: reqwest::Response,
    buffer: Vec<u8>,
    parser: ChunkParser,
    /// Events parsed and not yet taken.
    ready: std::collections::VecDeque<GenerationEvent>,
    ended: bool,
}

impl SseReader {
    fn fail(&mut self, message: String) -> Option<GenerationEvent> {
        self.ended = true;
        Some(GenerationEvent::Failed(InferenceError::Unavailable(
            format!("{}: {message}", self.name),
        )))
    }

    async fn next(&mut self) -> Option<GenerationEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                if matches!(
                    event,
                    GenerationEvent::Finished { .. } | GenerationEvent::Failed(_)
                ) {
                    self.ended = true;
                    self.ready.clear();
                }
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let bytes = match self.response.chunk().await {
                Ok(Some(bytes)) => bytes,
                Err(e) => return self.fail(format!("the stream broke: {}", without_url(&e))),
                Ok(None) => return self.fail("the stream ended before the answer did".into()),
            };
            self.buffer.extend_from_slice(&bytes);
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue;
                };
                match self.parser.data(data.trim_start()) {
                    Ok(events) => self.ready.extend(events),
                    Err(message) => {
                        self.ready.clear();
                        return self.fail(message);
                    }
                }
            }
            if self.ready.is_empty() && self.buffer.len() > MAX_LINE {
                return self.fail("an event line is too long".into());
            }
        }
    }
}

/// Legacy completions' `logprobs` (`tokens`, `token_logprobs`, `top_logprobs` as
/// token → log probability objects), when the choice has them.
fn legacy_logprobs(logprobs: &Value) -> Option<Vec<TokenLogprob>> {
    let tokens = logprobs.get("tokens")?.as_array()?;
    let values = logprobs.get("token_logprobs").and_then(Value::as_array);
    let tops = logprobs.get("top_logprobs").and_then(Value::as_array);
    Some(
        tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let token = token.as_str().unwrap_or_default();
                let top = tops
                    .and_then(|t| t.get(i))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(alt, logprob)| TopLogprob {
                        token: alt.clone(),
                        bytes: alt.as_bytes().to_vec(),
                        logprob: logprob.as_f64().unwrap_or(0.0) as f32,
                    })
                    .collect();
                TokenLogprob {
                    token: token.to_string(),
                    bytes: token.as_bytes().to_vec(),
                    logprob: values
                        .and_then(|v| v.get(i))
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0) as f32,
                    top,
                }
            })
            .collect(),
    )
}

/// One `logprobs.content` entry.
fn token_logprob(entry: &Value) -> TokenLogprob {
    let token = entry
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let bytes = |entry: &Value, token: &str| match entry.get("bytes").and_then(Value::as_array) {
        Some(bytes) => bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        None => token.as_bytes().to_vec(),
    };
    let logprob =
        |entry: &Value| entry.get("logprob").and_then(Value::as_f64).unwrap_or(0.0) as f32;
    TokenLogprob {
        token: token.to_string(),
        bytes: bytes(entry, token),
        logprob: logprob(entry),
        top: entry
            .get("top_logprobs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|alt| {
                let token = alt.get("token").and_then(Value::as_str).unwrap_or_default();
                TopLogprob {
                    token: token.to_string(),
                    bytes: bytes(alt, token),
                    logprob: logprob(alt),
                }
            })
            .collect(),
    }
}

/// Turns `data:` payloads into events; the finish is held until the usage chunk (or `[DONE]`).
#[derive(Default)]
pub struct ChunkParser {
    reason: Option<FinishReason>,
    usage: Usage,
}

impl ChunkParser {
    /// The events one `data:` payload makes.
    pub fn data(&mut self, data: &str) -> Result<Vec<GenerationEvent>, String> {
        if data == "[DONE]" {
            return Ok(vec![GenerationEvent::Finished {
                reason: self.reason.unwrap_or(FinishReason::Stop),
                usage: self.usage,
            }]);
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| format!("a chunk is not JSON: {e}"))?;
        if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
            return Err(format!("failed mid-stream: {message}"));
        }
        let mut events = Vec::new();
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            let count = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
            self.usage = Usage {
                prompt_tokens: count("prompt_tokens"),
                completion_tokens: count("completion_tokens"),
                timings: None,
            };
        }
        if let Some(choice) = chunk.pointer("/choices/0") {
            // Chat chunks carry `delta.content`; completion chunks, `text`.
            let text = choice
                .pointer("/delta/content")
                .or_else(|| choice.get("text"))
                .and_then(Value::as_str);
            if let Some(text) = text {
                if !text.is_empty() {
                    events.push(GenerationEvent::Text(text.to_string()));
                }
            }
            // Log probabilities come before the text they belong to, as the local engine sends
            // them.
            let logprobs = match choice
                .pointer("/logprobs/content")
                .and_then(Value::as_array)
            {
                Some(entries) => Some(entries.iter().map(token_logprob).collect()),
                None => choice.get("logprobs").and_then(legacy_logprobs),
            };
            if let Some(logprobs) = logprobs {
                let logprobs: Vec<TokenLogprob> = logprobs;
                if !logprobs.is_empty() {
                    let at = events.len().saturating_sub(1);
                    events.insert(at, GenerationEvent::Logprobs(logprobs));
                }
            }
            if let Some(refusal) = choice.pointer("/delta/refusal").and_then(Value::as_str) {
                if !refusal.is_empty() {
                    events.push(GenerationEvent::Refusal(refusal.to_string()));
                }
            }
            let calls = choice
                .pointer("/delta/tool_calls")
                .and_then(Value::as_array);
            for (position, call) in calls.into_iter().flatten().enumerate() {
                let text = |pointer: &str| call.pointer(pointer).and_then(Value::as_str);
                events.push(GenerationEvent::ToolCall(ToolCallDelta {
                    index: call
                        .get("index")
                        .and_then(Value::as_u64)
                        .map_or(position, |i| usize::try_from(i).unwrap_or(usize::MAX)),
                    id: text("/id").map(str::to_string),
                    name: text("/function/name").map(str::to_string),
                    arguments: text("/function/arguments").unwrap_or_default().to_string(),
                }));
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.reason = Some(FinishReason::parse(reason));
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_text_then_one_finish_with_the_usage() {
        let mut p = ChunkParser::default();
        let mut all = Vec::new();
        for data in [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#,
            "[DONE]",
        ] {
            all.extend(p.data(data).unwrap());
        }
        assert_eq!(
            all,
            vec![
                GenerationEvent::Text("Hel".into()),
                GenerationEvent::Text("lo".into()),
                GenerationEvent::Finished {
                    reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: 7,
                        completion_tokens: 2,
                        timings: None,
                    }
                }
            ]
        );
        assert!(p.data("{not json").is_err());
        assert!(p
            .data(r#"{"error":{"message":"boom"}}"#)
            .unwrap_err()
            .contains("boom"));
    }

    #[test]
    fn the_request_carries_what_the_caller_set_and_always_streams() {
        let mut params = GenerationParams {
            max_tokens: Some(12),
            stop: vec!["END".into()],
            constraint: OutputConstraint::JsonSchema(json!({"type": "object"})),
            ..GenerationParams::default()
        };
        params.sampling.seed = Some(7);
        let messages = [ChatMessage::new(tabagent_core::Role::User, "hi")];
        let body = request_body("m", &messages, &params);
        assert_eq!(body["model"], "m");
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 12);
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["seed"], 7);
        assert_eq!(
            body["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        let plain = request_body("m", &messages, &GenerationParams::default());
        assert!(plain.get("max_tokens").is_none() && plain.get("response_format").is_none());
    }

    #[test]
    fn refusals_are_the_callers_fault_only_for_4xx_other_than_408_and_429() {
        assert!(matches!(
            classify("p", 400, "bad".into(), None),
            TryError::Caller(_)
        ));
        assert!(matches!(
            classify("p", 404, "no".into(), None),
            TryError::Caller(_)
        ));
        assert!(matches!(
            classify("p", 429, "slow down".into(), Some(Duration::from_secs(7))),
            TryError::Provider { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify("p", 408, "t".into(), None),
            TryError::Provider { .. }
        ));
        assert!(matches!(
            classify("p", 503, "down".into(), None),
            TryError::Provider { .. }
        ));
    }
}

#[cfg(test)]
mod typed_parts_tests {
    use super::*;
    use tabagent_core::{ImagePart, Role, ToolCall, ToolSpec};

    #[test]
    fn tool_call_deltas_and_logprobs_become_typed_events_and_the_finish_says_tool_calls() {
        let mut p = ChunkParser::default();
        let mut all = Vec::new();
        for data in [
            r#"{"choices":[{"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.5,"bytes":[120],"top_logprobs":[{"token":"x","logprob":-0.5},{"token":"y","logprob":-1.5}]}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ] {
            all.extend(p.data(data).unwrap());
        }
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(
            all[0],
            GenerationEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("get_weather".into()),
                arguments: String::new(),
            })
        );
        assert!(
            matches!(&all[1], GenerationEvent::ToolCall(d) if d.id.is_none() && d.arguments == "{\"city\":")
        );
        match &all[2] {
            GenerationEvent::Logprobs(entries) => {
                assert_eq!(entries[0].bytes, b"x");
                assert_eq!(entries[0].logprob, -0.5);
                assert_eq!(entries[0].top[1].token, "y");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(all[3], GenerationEvent::Text("x".into()));
        assert!(matches!(
            all[4],
            GenerationEvent::Finished {
                reason: FinishReason::ToolCalls,
                ..
            }
        ));
    }

    #[test]
    fn legacy_completion_logprobs_become_typed_entries_before_their_text() {
        let mut p = ChunkParser::default();
        let events = p
            .data(r#"{"choices":[{"text":"Hi","logprobs":{"tokens":["Hi"],"token_logprobs":[-0.25],"top_logprobs":[{"Hi":-0.25,"Hello":-1.75}],"text_offset":[0]}}]}"#)
            .unwrap();
        match events.as_slice() {
            [GenerationEvent::Logprobs(entries), GenerationEvent::Text(text)] => {
                assert_eq!(text, "Hi");
                assert_eq!(entries[0].token, "Hi");
                assert_eq!(entries[0].logprob, -0.25);
                let mut top: Vec<_> = entries[0]
                    .top
                    .iter()
                    .map(|t| (t.token.as_str(), t.logprob))
                    .collect();
                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                assert_eq!(top, [("Hi", -0.25), ("Hello", -1.75)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn typed_turns_tools_and_images_are_written_as_openai_reads_them() {
        let params = GenerationParams {
            tools: Tools {
                specs: vec![ToolSpec {
                    name: "add".into(),
                    description: Some("Adds".into()),
                    parameters: json!({"type": "object"}),
                    strict: true,
                }],
                choice: ToolChoice::Function("add".into()),
                parallel: false,
            },
            logprobs: Some(3),
            ..GenerationParams::default()
        };
        let mut user = ChatMessage::new(Role::User, "before after");
        user.images.push(ImagePart {
            offset: 7,
            url: "data:image/png;base64,AAAA".into(),
            detail: None,
        });
        let messages = [
            user,
            ChatMessage::assistant_calls(
                "",
                vec![ToolCall {
                    id: "c1".into(),
                    name: "add".into(),
                    arguments: "{}".into(),
                }],
            ),
            ChatMessage::tool_result("c1", "17"),
        ];
        let body = request_body("m", &messages, &params);
        assert_eq!(
            body["messages"][0]["content"],
            json!([{"type": "text", "text": "before "},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                   {"type": "text", "text": "after"}])
        );
        assert_eq!(body["messages"][1]["content"], Value::Null);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["name"],
            "add"
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "tool", "content": "17", "tool_call_id": "c1"})
        );
        assert_eq!(body["tools"][0]["function"]["strict"], true);
        assert_eq!(body["tool_choice"]["function"]["name"], "add");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(
            (body["logprobs"].clone(), body["top_logprobs"].clone()),
            (json!(true), json!(3))
        );
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn a_whole_json_answer_makes_the_events_its_chunks_would_have() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,
            "message":{"role":"assistant","content":null,"tool_calls":[
              {"id":"c9","type":"function","function":{"name":"add","arguments":"{\"a\":1}"}}]},
            "finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;
        let events = answer_events(body).unwrap();
        assert_eq!(
            events,
            vec![
                GenerationEvent::ToolCall(ToolCallDelta {
                    index: 0,
                    id: Some("c9".into()),
                    name: Some("add".into()),
                    arguments: r#"{"a":1}"#.into(),
                }),
                GenerationEvent::Finished {
                    reason: FinishReason::ToolCalls,
                    usage: Usage {
                        prompt_tokens: 9,
                        completion_tokens: 4,
                        timings: None,
                    }
                },
            ]
        );
        let text = br#"{"choices":[{"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#;
        assert_eq!(
            answer_events(text).unwrap()[0],
            GenerationEvent::Text("Hi".into())
        );
        assert!(answer_events(b"{}").is_err());
        assert!(answer_events(br#"{"error":{"message":"nope"}}"#)
            .unwrap_err()
            .contains("nope"));
    }
}
