//! Serving one message: decode it into an HTTP request, send it through the [`Backend`], and
//! relay the reply (whole, or event by event for a stream).

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::backend::{ApiReply, ApiRequest, Backend};
use super::Limits;

/// Starts serving one message, or answers it at once (a cancel, or an invalid request).
pub(super) async fn accept(
    message: Value,
    backend: &Backend,
    replies: &mpsc::Sender<Value>,
    running: &mut JoinSet<String>,
    handles: &mut HashMap<String, AbortHandle>,
    limits: Limits,
) {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    if !(id.is_string() || id.is_number()) {
        let _ = replies
            .send(error_reply(
                Value::Null,
                400,
                "missing_id",
                "every message needs an `id`: a string or a number, echoed in its replies",
            ))
            .await;
        return;
    }
    let key = id.to_string();
    if message.get("cancel").and_then(Value::as_bool) == Some(true) {
        let reply = match handles.remove(&key) {
            Some(handle) => {
                handle.abort();
                json!({"id": id, "cancelled": true})
            }
            None => error_reply(
                id,
                404,
                "unknown_request",
                "no request with this id is running",
            ),
        };
        let _ = replies.send(reply).await;
        return;
    }
    if handles.contains_key(&key) {
        let _ = replies
            .send(error_reply(
                id,
                400,
                "duplicate_id",
                "a request with this id is still running",
            ))
            .await;
        return;
    }
    if handles.len() >= limits.max_in_flight {
        let message = format!(
            "{} requests are already running; wait for one to finish",
            limits.max_in_flight
        );
        let _ = replies
            .send(error_reply(id, 429, "too_many_requests", &message))
            .await;
        return;
    }
    let request = match decode_request(&message) {
        Ok(request) => request,
        Err((param, text)) => {
            let _ = replies.send(invalid_request(id, param, &text)).await;
            return;
        }
    };
    let backend = backend.clone();
    let replies = replies.clone();
    let task_key = key.clone();
    let handle = running.spawn(async move {
        serve_one(&backend, request, id, &replies, limits).await;
        task_key
    });
    handles.insert(key, handle);
}

/// Sends one request and relays its reply.
async fn serve_one(
    backend: &Backend,
    request: ApiRequest,
    id: Value,
    replies: &mpsc::Sender<Value>,
    limits: Limits,
) {
    let reply = match backend.send(request).await {
        Ok(reply) => reply,
        Err(err) => {
            let _ = replies
                .send(error_reply(id, 502, "server_unreachable", &err.to_string()))
                .await;
            return;
        }
    };
    if reply.content_type.starts_with("text/event-stream") {
        relay_stream(reply, id, replies).await;
    } else {
        let message = collect(reply, id, limits.max_reply_body_bytes).await;
        let _ = replies.send(message).await;
    }
}

/// One message per server-sent event, then `done`.
async fn relay_stream(reply: ApiReply, id: Value, replies: &mpsc::Sender<Value>) {
    let status = reply.status;
    let mut events = EventParser::default();
    let mut body = reply.body;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                let _ = replies
                    .send(error_reply(
                        id,
                        502,
                        "stream_broken",
                        &format!("the stream broke: {err}"),
                    ))
                    .await;
                return;
            }
        };
        for data in events.push(&chunk) {
            if data == "[DONE]" {
                continue;
            }
            let event = serde_json::from_str(&data).unwrap_or(Value::String(data));
            if replies
                .send(json!({"id": id, "status": status, "event": event}))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = replies
        .send(json!({"id": id, "status": status, "done": true}))
        .await;
}

/// The whole reply as one message.
async fn collect(reply: ApiReply, id: Value, max: usize) -> Value {
    let mut body = Vec::new();
    let mut stream = reply.body;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() <= max => body.extend_from_slice(&chunk),
            Ok(_) => {
                return error_reply(id, 413, "reply_too_large", &format!("the reply is over {max} bytes, more than native messaging relays; use the HTTP API for it"));
            }
            Err(err) => {
                return error_reply(
                    id,
                    502,
                    "reply_broken",
                    &format!("the reply broke off: {err}"),
                )
            }
        }
    }
    let status = reply.status;
    let content_type = reply.content_type;
    if content_type.starts_with("application/json") {
        if let Ok(parsed) = serde_json::from_slice::<Value>(&body) {
            return json!({"id": id, "status": status, "body": parsed});
        }
    }
    if content_type.starts_with("text/") {
        if let Ok(text) = String::from_utf8(body.clone()) {
            return json!({"id": id, "status": status, "text": text});
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
    json!({"id": id, "status": status, "content_type": content_type, "body_base64": encoded})
}

/// Headers a message may not set: they describe the connection, which is ours.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "origin",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// The HTTP request a message describes, or the field at fault and why.
fn decode_request(message: &Value) -> Result<ApiRequest, (&'static str, String)> {
    let path = message.get("path").and_then(Value::as_str).ok_or((
        "path",
        "`path` is required: the API path, e.g. \"/v1/chat/completions\"".to_string(),
    ))?;
    if !path.starts_with('/') || path.starts_with("//") || path.contains(['\r', '\n', '#']) {
        return Err((
            "path",
            format!("`path` must be an absolute API path like \"/v1/models\", not {path:?}"),
        ));
    }
    let (body, json_body) = match (message.get("body"), message.get("body_base64")) {
        (Some(_), Some(_)) => {
            return Err(("body", "give `body` or `body_base64`, not both".to_string()))
        }
        (Some(body), None) => (Bytes::from(body.to_string()), true),
        (None, Some(encoded)) => {
            let encoded = encoded
                .as_str()
                .ok_or(("body_base64", "`body_base64` must be a string".to_string()))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|err| ("body_base64", format!("`body_base64` is not base64: {err}")))?;
            (Bytes::from(bytes), false)
        }
        (None, None) => (Bytes::new(), false),
    };
    let has_body = message.get("body").is_some() || message.get("body_base64").is_some();
    let method = match message.get("method") {
        None => {
            if has_body {
                Method::POST
            } else {
                Method::GET
            }
        }
        Some(Value::String(name)) => Method::from_str(&name.to_ascii_uppercase())
            .map_err(|_| ("method", format!("`method` {name:?} is not an HTTP method")))?,
        Some(_) => {
            return Err((
                "method",
                "`method` must be a string such as \"POST\"".to_string(),
            ))
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(given) = message.get("headers") {
        let given = given.as_object().ok_or((
            "headers",
            "`headers` must be an object of strings".to_string(),
        ))?;
        for (name, value) in given {
            let header = HeaderName::from_str(name)
                .map_err(|_| ("headers", format!("{name:?} is not a header name")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err((
                    "headers",
                    format!("the header {name:?} cannot be set over native messaging"),
                ));
            }
            let value = value
                .as_str()
                .and_then(|v| HeaderValue::from_str(v).ok())
                .ok_or((
                    "headers",
                    format!("the header {name:?} needs a string value without line breaks"),
                ))?;
            headers.insert(header, value);
        }
    }
    let content_type = if json_body {
        Some("application/json".to_string())
    } else {
        message
            .get("content_type")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(content_type) = content_type {
        let value = HeaderValue::from_str(&content_type).map_err(|_| {
            (
                "content_type",
                "`content_type` is not a valid media type".to_string(),
            )
        })?;
        headers.insert(axum::http::header::CONTENT_TYPE, value);
    }
    Ok(ApiRequest {
        method,
        path: path.to_string(),
        headers,
        body,
    })
}

fn invalid_request(id: Value, param: &str, message: &str) -> Value {
    json!({"id": id, "status": 400, "body": {"error": {
        "message": message, "type": "invalid_request_error", "param": param, "code": "invalid_native_message",
    }}})
}

pub(super) fn error_reply(id: Value, status: u16, code: &str, message: &str) -> Value {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json!({"id": id, "status": status, "body": {"error": {
        "message": message, "type": kind, "param": null, "code": code,
    }}})
}

/// Splits a server-sent event stream into its events' data.
#[derive(Default)]
struct EventParser {
    pending: Vec<u8>,
}

impl EventParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.pending) {
            let block: Vec<u8> = self.pending.drain(..end.0).collect();
            self.pending.drain(..end.1 - end.0);
            let block = String::from_utf8_lossy(&block);
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|rest| rest.strip_prefix(' ').unwrap_or(rest))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        events
    }
}

/// The end of the first event in `bytes`: where its blank line starts and where it ends.
fn find_blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, at + 2));
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut parser = EventParser::default();
        assert!(parser.push(b"data: {\"a\":").is_empty());
        assert_eq!(
            parser.push(b"1}\n\n: comment\n\ndata: [DONE]\n\n"),
            vec!["{\"a\":1}", "[DONE]"]
        );
        assert_eq!(parser.push(b"data: x\r\ndata: y\r\n\r\n"), vec!["x\ny"]);
    }

    #[test]
    fn requests_are_checked_before_they_are_sent() {
        let ok = decode_request(
            &json!({"id": 1, "path": "/v1/chat/completions", "body": {"model": "m"}}),
        )
        .unwrap();
        assert_eq!(ok.method, Method::POST);
        assert_eq!(ok.headers["content-type"], "application/json");
        assert_eq!(
            decode_request(&json!({"id": 1, "path": "/v1/models"}))
                .unwrap()
                .method,
            Method::GET
        );
        for (message, param) in [
            (json!({"id": 1}), "path"),
            (json!({"id": 1, "path": "v1/models"}), "path"),
            (json!({"id": 1, "path": "//evil.example/x"}), "path"),
            (
                json!({"id": 1, "path": "/v1/x", "method": "NOT A METHOD"}),
                "method",
            ),
            (
                json!({"id": 1, "path": "/v1/x", "headers": {"Host": "evil.example"}}),
                "headers",
            ),
            (
                json!({"id": 1, "path": "/v1/x", "headers": {"x-a": "b\nc"}}),
                "headers",
            ),
            (
                json!({"id": 1, "path": "/v1/x", "body_base64": "%%%"}),
                "body_base64",
            ),
            (
                json!({"id": 1, "path": "/v1/x", "body": {}, "body_base64": ""}),
                "body",
            ),
        ] {
            let Err((got, _)) = decode_request(&message) else {
                panic!("{message} was accepted");
            };
            assert_eq!(got, param, "{message}");
        }
    }
}
