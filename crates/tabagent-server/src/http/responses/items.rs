//! Responses items ↔ typed turns: `input` (a string, or messages, `function_call` and
//! `function_call_output` items) into `ChatMessage`s, and an answer into `output` items. A
//! stored conversation is kept as items too, so one parser reads both.

use serde_json::{json, Value};
use tabagent_core::{ChatMessage, ImagePart, Role, TokenLogprob, ToolCall};

use super::super::error::ApiError;

/// Most items one conversation (stored turns and the new input) may hold.
pub const MAX_ITEMS: usize = 2048;
/// Most images in one request.
const MAX_IMAGES: usize = 16;

/// `input` as items: a string is one user message.
pub fn input_items(input: &Value) -> Result<Vec<Value>, ApiError> {
    match input {
        Value::String(text) => Ok(vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })]),
        Value::Array(items) if !items.is_empty() => Ok(items.clone()),
        _ => Err(ApiError::bad_request(
            Some("input"),
            "`input` must be a string or a non-empty list of items",
        )),
    }
}

/// Items as turns. Consecutive `function_call`s are one assistant turn calling several tools.
pub fn turns(items: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    if items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(
            Some("input"),
            format!("a conversation holds at most {MAX_ITEMS} items"),
        ));
    }
    let mut turns: Vec<ChatMessage> = Vec::with_capacity(items.len());
    let mut images = 0;
    for (index, item) in items.iter().enumerate() {
        let at = format!("input[{index}]");
        let bad = |field: &str, message: String| {
            ApiError::bad_request(Some(&format!("{at}{field}")), message)
        };
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str).unwrap_or("") {
                    "user" => Role::User,
                    "system" | "developer" => Role::System,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(bad(
                            ".role",
                            format!("unknown role `{other}`; expected user, system, developer or assistant"),
                        ))
                    }
                };
                let mut turn = ChatMessage::new(role, String::new());
                match item.get("content") {
                    Some(Value::String(text)) => turn.content.clone_from(text),
                    Some(Value::Array(parts)) => {
                        for (part_index, part) in parts.iter().enumerate() {
                            let part_at = format!(".content[{part_index}]");
                            match part.get("type").and_then(Value::as_str).unwrap_or("") {
                                "input_text" | "output_text" | "text" => turn
                                    .content
                                    .push_str(part.get("text").and_then(Value::as_str).unwrap_or("")),
                                "input_image" if role == Role::User => {
                                    images += 1;
                                    if images > MAX_IMAGES {
                                        return Err(bad(
                                            &part_at,
                                            format!("at most {MAX_IMAGES} images are allowed in one request"),
                                        ));
                                    }
                                    let url = part
                                        .get("image_url")
                                        .and_then(Value::as_str)
                                        .filter(|u| {
                                            u.starts_with("data:image/")
                                                || u.starts_with("https://")
                                                || u.starts_with("http://")
                                        })
                                        .ok_or_else(|| {
                                            bad(
                                                &format!("{part_at}.image_url"),
                                                "an image must be a `data:image/...;base64,...` URL (or an http(s) URL for a remote engine); `file_id` is not supported".into(),
                                            )
                                        })?;
                                    turn.images.push(ImagePart {
                                        offset: turn.content.len(),
                                        url: url.to_string(),
                                        detail: part
                                            .get("detail")
                                            .and_then(Value::as_str)
                                            .map(str::to_string),
                                    });
                                }
                                "refusal" => turn.content.push_str(
                                    part.get("refusal").and_then(Value::as_str).unwrap_or(""),
                                ),
                                other => {
                                    return Err(bad(
                                        &part_at,
                                        format!("content parts of type `{other}` are not supported here"),
                                    ))
                                }
                            }
                        }
                    }
                    _ => return Err(bad(".content", "a message needs `content`".into())),
                }
                turns.push(turn);
            }
            "function_call" => {
                let text = |field: &str| item.get(field).and_then(Value::as_str);
                let name = text("name").filter(|n| !n.is_empty());
                let call_id = text("call_id").filter(|n| !n.is_empty());
                let (Some(name), Some(call_id)) = (name, call_id) else {
                    return Err(bad("", "a `function_call` needs `name` and `call_id`".into()));
                };
                let call = ToolCall {
                    id: call_id.to_string(),
                    name: name.to_string(),
                    arguments: text("arguments").unwrap_or("{}").to_string(),
                };
                match turns.last_mut() {
                    Some(last) if last.role == Role::Assistant && !last.tool_calls.is_empty() => {
                        last.tool_calls.push(call)
                    }
                    _ => turns.push(ChatMessage::assistant_calls("", vec![call])),
                }
            }
            "function_call_output" => {
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| bad(".call_id", "a `function_call_output` needs `call_id`".into()))?;
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(""),
                    _ => return Err(bad(".output", "a `function_call_output` needs `output`".into())),
                };
                turns.push(ChatMessage::tool_result(call_id, output));
            }
            // A tool the server ran: the call and its result, as two turns.
            "mcp_call" => {
                let text = |field: &str| item.get(field).and_then(Value::as_str);
                let (Some(id), Some(name)) = (text("id"), text("name").filter(|n| !n.is_empty()))
                else {
                    return Err(bad("", "an `mcp_call` needs `id` and `name`".into()));
                };
                let call = ToolCall {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: text("arguments").unwrap_or("{}").to_string(),
                };
                turns.push(ChatMessage::assistant_calls("", vec![call]));
                let error = match item.get("error") {
                    Some(Value::String(error)) => Some(error.clone()),
                    Some(error @ Value::Object(_)) => Some(
                        error
                            .pointer("/content/0/text")
                            .or_else(|| error.get("message"))
                            .and_then(Value::as_str)
                            .unwrap_or("the tool failed")
                            .to_string(),
                    ),
                    _ => None,
                };
                let result = match (text("output"), error) {
                    (_, Some(error)) => format!("error: {error}"),
                    (Some(output), None) => output.to_string(),
                    (None, None) => String::new(),
                };
                turns.push(ChatMessage::tool_result(id, result));
            }
            other => {
                return Err(bad(
                    ".type",
                    format!("input items of type `{other}` are not supported; send `message`, `function_call`, `function_call_output` or `mcp_call` items"),
                ))
            }
        }
    }
    Ok(turns)
}

/// The output of an answer: its text as one message (when there is text, or nothing at all),
/// then its calls.
pub fn output(
    text: &str,
    logprobs: Option<&[TokenLogprob]>,
    calls: &[ToolCall],
    message_id: &str,
) -> Vec<Value> {
    let mut output = Vec::new();
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(message_id, text, logprobs, "completed"));
    }
    output.extend(calls.iter().map(|call| call_item(call, "completed")));
    output
}

/// An assistant message item.
pub fn message_item(
    id: &str,
    text: &str,
    logprobs: Option<&[TokenLogprob]>,
    status: &str,
) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [text_part(text, logprobs)],
    })
}

/// An `output_text` part.
pub fn text_part(text: &str, logprobs: Option<&[TokenLogprob]>) -> Value {
    json!({
        "type": "output_text", "text": text, "annotations": [],
        "logprobs": logprobs.map(wire_logprobs).unwrap_or_default(),
    })
}

/// A `function_call` item.
pub fn call_item(call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call", "id": format!("fc_{}", call.id.trim_start_matches("call_")),
        "call_id": call.id, "name": call.name, "arguments": call.arguments, "status": status,
    })
}

/// An `mcp_call` item: a tool the server ran (`server_label` is `tabagent` for the built-in
/// tools), with its output or error once it has one.
pub fn server_call_item(
    call: &ToolCall,
    server_label: &str,
    output: Option<&Result<String, String>>,
    status: &str,
) -> Value {
    let (output, error) = match output {
        Some(Ok(text)) => (json!(text), Value::Null),
        // As OpenAI reports a tool that failed on an MCP server.
        Some(Err(error)) => (
            Value::Null,
            json!({"type": "mcp_tool_execution_error",
                   "content": [{"type": "text", "text": error}]}),
        ),
        None => (Value::Null, Value::Null),
    };
    json!({
        "type": "mcp_call", "id": format!("mcp_{}", call.id.trim_start_matches("call_")),
        "server_label": server_label, "name": call.name, "arguments": call.arguments,
        "output": output, "error": error, "status": status,
    })
}

/// Log probabilities as the Responses API writes them.
pub fn wire_logprobs(entries: &[TokenLogprob]) -> Vec<Value> {
    entries
        .iter()
        .map(|entry| {
            json!({
                "token": entry.token, "logprob": entry.logprob, "bytes": entry.bytes,
                "top_logprobs": entry.top.iter().map(|alt| json!({
                    "token": alt.token, "logprob": alt.logprob, "bytes": alt.bytes,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The output items as input items, for the stored conversation (ids and statuses dropped).
pub fn as_input(output: &[Value]) -> Vec<Value> {
    output
        .iter()
        .map(|item| match item.get("type").and_then(Value::as_str) {
            Some("function_call") => json!({
                "type": "function_call", "call_id": item["call_id"], "name": item["name"],
                "arguments": item["arguments"],
            }),
            Some("mcp_call") => json!({
                "type": "mcp_call", "id": item["id"], "server_label": item["server_label"],
                "name": item["name"], "arguments": item["arguments"], "output": item["output"],
                "error": item["error"],
            }),
            _ => json!({
                "type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": item["content"][0]["text"]}],
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_and_its_output_become_a_calling_turn_and_a_tool_turn() {
        let items = vec![
            json!({"role": "user", "content": "Weather in Paris and Oslo?"}),
            json!({"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"}),
            json!({"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"}),
            json!({"type": "function_call_output", "call_id": "call_1", "output": "31C"}),
            json!({"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "4C"}]}),
        ];
        let turns = turns(&items).unwrap();
        assert_eq!(turns.len(), 4);
        assert_eq!(turns[1].tool_calls.len(), 2);
        assert_eq!(turns[1].tool_calls[1].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(turns[3].tool_call_id.as_deref(), Some("call_2"));
        assert_eq!(turns[3].content, "4C");
    }

    #[test]
    fn unknown_items_and_roles_name_their_place() {
        let err = turns(&[json!({"type": "reasoning", "summary": []})]).unwrap_err();
        assert!(err.message().contains("reasoning"), "{}", err.message());
        let err = turns(&[json!({"role": "wizard", "content": "hi"})]).unwrap_err();
        assert!(err.message().contains("wizard"));
    }

    #[test]
    fn output_kept_as_input_reads_back_as_the_same_turns() {
        let calls = vec![ToolCall {
            id: "call_7".into(),
            name: "add".into(),
            arguments: "{\"a\":1}".into(),
        }];
        let out = output("Let me add.", None, &calls, "msg_1");
        let back = turns(&as_input(&out)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].content, "Let me add.");
        assert_eq!(back[1].tool_calls, calls);
    }
}
