//! A remote engine that speaks OpenAI's chat API (llama.cpp's server, vLLM, Ollama, LM Studio,
//! OpenAI): the request is sent streamed, whatever the caller asked, so the router sees the
//! first token arrive (the point after which it may no longer fail over) and can cancel by
//! dropping the connection.

use std::time::Duration;

use crate::provider::{BoxFuture, ChatRequest, EventStream, Provider, TryError};
use serde_json::{json, Value};
use tabagent_core::{
    ChatMessage, FinishReason, GenerationEvent, GenerationParams, InferenceError, OutputConstraint,
    Usage,
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

/// Puts what the caller sent for the engine itself into `body`: its own messages, and fields
/// the core request cannot carry (never the model, `stream` or `stream_options`).
pub fn pass_through(body: &mut Value, passthrough: &crate::provider::Passthrough) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    if let Some(messages) = &passthrough.messages {
        obj.insert("messages".into(), messages.clone());
    }
    for (name, value) in &passthrough.fields {
        if !matches!(
            name.as_str(),
            "model" | "stream" | "stream_options" | "messages"
        ) {
            obj.insert(name.clone(), value.clone());
        }
    }
}

/// The JSON body for `model`.
pub fn request_body(model: &str, messages: &[ChatMessage], params: &GenerationParams) -> Value {
    let s = &params.sampling;
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
        .collect();
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
            if let Some(passthrough) = &request.passthrough {
                pass_through(&mut body, passthrough);
            }
            let url = match (&request.prompt, body.as_object_mut()) {
                (Some(prompt), Some(obj)) => {
                    obj.remove("messages");
                    obj.insert("prompt".into(), json!(prompt));
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
            // Whatever else the delta carries (tool calls, a refusal) and log probabilities go
            // to the caller as they are.
            let delta: serde_json::Map<String, Value> = choice
                .get("delta")
                .and_then(Value::as_object)
                .map(|d| {
                    d.iter()
                        .filter(|(k, v)| !matches!(k.as_str(), "content" | "role") && !v.is_null())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let logprobs = choice.get("logprobs").filter(|l| !l.is_null()).cloned();
            if !delta.is_empty() || logprobs.is_some() {
                events.push(GenerationEvent::Extra { delta, logprobs });
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
                        completion_tokens: 2
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
        let messages = [ChatMessage {
            role: tabagent_core::Role::User,
            content: "hi".into(),
        }];
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
mod passthrough_tests {
    use super::*;

    #[test]
    fn tool_call_deltas_and_logprobs_pass_through_and_the_finish_says_tool_calls() {
        let mut p = ChunkParser::default();
        let mut all = Vec::new();
        for data in [
            r#"{"choices":[{"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.5}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ] {
            all.extend(p.data(data).unwrap());
        }
        assert_eq!(all.len(), 5, "{all:?}");
        match &all[0] {
            GenerationEvent::Extra { delta, logprobs } => {
                assert_eq!(delta["tool_calls"][0]["id"], "call_1");
                assert!(!delta.contains_key("role") && !delta.contains_key("content"));
                assert!(logprobs.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(all[2], GenerationEvent::Text("x".into()));
        match &all[3] {
            GenerationEvent::Extra { delta, logprobs } => {
                assert!(delta.is_empty());
                assert_eq!(logprobs.as_ref().unwrap()["content"][0]["logprob"], -0.5);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            all[4],
            GenerationEvent::Finished {
                reason: FinishReason::ToolCalls,
                ..
            }
        ));
    }

    #[test]
    fn passed_through_fields_never_replace_the_model_or_streaming() {
        let mut body = request_body("m", &[], &GenerationParams::default());
        let passthrough = crate::provider::Passthrough {
            messages: Some(json!([{"role": "tool", "tool_call_id": "c", "content": "17"}])),
            fields: [
                ("tools".to_string(), json!([{"type": "function"}])),
                ("model".to_string(), json!("other")),
                ("stream".to_string(), json!(false)),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        pass_through(&mut body, &passthrough);
        assert_eq!(body["model"], "m");
        assert_eq!(body["stream"], true);
        assert_eq!(body["tools"], json!([{"type": "function"}]));
        assert_eq!(body["messages"][0]["role"], "tool");
    }
}
