//! A response streamed as Responses events: `response.created`, `response.in_progress`, then
//! for each output item `output_item.added`, its deltas (`output_text.delta`,
//! `function_call_arguments.delta`) and its `.done` events, and last `response.completed` (or
//! `response.incomplete`, `response.failed`), each with its `sequence_number`. The response is
//! stored before the last event goes out.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use futures_util::{Stream, StreamExt as _};
use serde_json::{json, Value};
use tabagent_core::{FinishReason, GenerationEvent, TokenLogprob, ToolCall, Usage};

use super::super::error::ApiError;
use super::super::generate::response_id;
use super::items;
use super::store::Keep;
use super::Echo;
use crate::generation::Events;

/// The item being written.
enum Open {
    None,
    Message {
        id: String,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Call(ToolCall),
    /// A tool the server runs, waiting for its output.
    ServerCall(ToolCall),
}

/// Everything the stream has written so far.
pub(super) struct Writer {
    echo: Echo,
    keep: Option<Keep>,
    sequence: u64,
    output: Vec<Value>,
    open: Open,
    /// Log probabilities not yet sent: they go with the next text.
    logprobs: Vec<TokenLogprob>,
    pending: VecDeque<Event>,
    /// The response as the last event gave it, once finished.
    pub(super) last: Option<Value>,
}

impl Writer {
    /// A writer whose first events (`response.created`, `response.in_progress`) are pending.
    pub(super) fn new(echo: Echo, keep: Option<Keep>) -> Writer {
        let mut writer = Writer {
            echo,
            keep,
            sequence: 0,
            output: Vec::new(),
            open: Open::None,
            logprobs: Vec::new(),
            pending: VecDeque::new(),
            last: None,
        };
        let created = writer.echo.response("in_progress", Vec::new(), None);
        writer.emit("response.created", json!({ "response": created }));
        let in_progress = writer.echo.response("in_progress", Vec::new(), None);
        writer.emit("response.in_progress", json!({ "response": in_progress }));
        writer
    }

    /// The response's id.
    pub(super) fn id(&self) -> &str {
        &self.echo.id
    }

    /// The next event to send.
    pub(super) fn pop(&mut self) -> Option<Event> {
        self.pending.pop_front()
    }

    /// A tool the server runs was called: its item opens.
    pub(super) fn server_call(&mut self, call: &ToolCall, server_label: &str) {
        self.close();
        let item = items::server_call_item(call, server_label, None, "in_progress");
        let at = json!({"item_id": item["id"], "output_index": self.index()});
        self.emit(
            "response.output_item.added",
            json!({"output_index": self.index(), "item": item}),
        );
        self.emit("response.mcp_call.in_progress", at.clone());
        let mut delta = at.clone();
        delta["delta"] = json!(call.arguments);
        self.emit("response.mcp_call_arguments.delta", delta);
        let mut done = at;
        done["arguments"] = json!(call.arguments);
        self.emit("response.mcp_call_arguments.done", done);
        self.open = Open::ServerCall(call.clone());
    }

    /// The open server call's output (or error) came: its item is done.
    pub(super) fn server_output(&mut self, server_label: &str, output: &Result<String, String>) {
        let index = self.index();
        let Open::ServerCall(call) = std::mem::replace(&mut self.open, Open::None) else {
            return;
        };
        let status = if output.is_ok() {
            "completed"
        } else {
            "failed"
        };
        let item = items::server_call_item(&call, server_label, Some(output), status);
        self.emit(
            &format!("response.mcp_call.{status}"),
            json!({"item_id": item["id"], "output_index": index}),
        );
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    /// Whole calls of the client's own tools, as `function_call` items.
    pub(super) fn client_calls(&mut self, calls: &[ToolCall]) {
        for call in calls {
            self.call(tabagent_core::ToolCallDelta {
                index: 0,
                id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                arguments: call.arguments.clone(),
            });
        }
        self.close();
    }

    fn emit(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.pending.push_back(
            Event::default()
                .event(kind)
                .data(serde_json::to_string(&data).unwrap_or_default()),
        );
    }

    fn index(&self) -> usize {
        self.output.len()
    }

    pub(super) fn text(&mut self, piece: &str) {
        if !matches!(self.open, Open::Message { .. }) {
            self.close();
            let id = response_id("msg").replace('-', "_");
            let item = json!({"type": "message", "id": id, "status": "in_progress",
                              "role": "assistant", "content": []});
            self.emit(
                "response.output_item.added",
                json!({"output_index": self.index(), "item": item}),
            );
            self.emit(
                "response.content_part.added",
                json!({
                    "item_id": id, "output_index": self.index(), "content_index": 0,
                    "part": items::text_part("", None),
                }),
            );
            self.open = Open::Message {
                id,
                text: String::new(),
                logprobs: Vec::new(),
            };
        }
        let logprobs = std::mem::take(&mut self.logprobs);
        let output_index = self.index();
        if let Open::Message {
            id,
            text,
            logprobs: kept,
        } = &mut self.open
        {
            text.push_str(piece);
            kept.extend(logprobs.iter().cloned());
            let data = json!({"item_id": id, "output_index": output_index, "content_index": 0,
                              "delta": piece, "logprobs": items::wire_logprobs(&logprobs)});
            self.emit("response.output_text.delta", data);
        }
    }

    fn call(&mut self, delta: tabagent_core::ToolCallDelta) {
        let same = matches!(&self.open, Open::Call(call) if delta.id.is_none() || delta.id.as_deref() == Some(call.id.as_str()));
        if !same {
            self.close();
            let call = ToolCall {
                id: delta
                    .id
                    .clone()
                    .unwrap_or_else(|| response_id("call").replace('-', "_")),
                name: delta.name.clone().unwrap_or_default(),
                arguments: String::new(),
            };
            let item = items::call_item(&call, "in_progress");
            self.emit(
                "response.output_item.added",
                json!({"output_index": self.index(), "item": item}),
            );
            self.open = Open::Call(call);
        }
        let output_index = self.index();
        if let Open::Call(call) = &mut self.open {
            if call.name.is_empty() {
                call.name = delta.name.unwrap_or_default();
            }
            call.arguments.push_str(&delta.arguments);
            if !delta.arguments.is_empty() {
                let item_id = items::call_item(call, "in_progress")["id"].clone();
                self.emit(
                    "response.function_call_arguments.delta",
                    json!({
                        "item_id": item_id, "output_index": output_index, "delta": delta.arguments,
                    }),
                );
            }
        }
    }

    /// Ends the item being written.
    pub(super) fn close(&mut self) {
        let index = self.index();
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Message { id, text, logprobs } => {
                let logprobs = (!logprobs.is_empty()).then_some(logprobs.as_slice());
                self.emit(
                    "response.output_text.done",
                    json!({
                        "item_id": id, "output_index": index, "content_index": 0, "text": text,
                        "logprobs": logprobs.map(items::wire_logprobs).unwrap_or_default(),
                    }),
                );
                self.emit(
                    "response.content_part.done",
                    json!({
                        "item_id": id, "output_index": index, "content_index": 0,
                        "part": items::text_part(&text, logprobs),
                    }),
                );
                let item = items::message_item(&id, &text, logprobs, "completed");
                self.emit(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
            Open::ServerCall(call) => {
                let item = items::server_call_item(&call, "tabagent", None, "incomplete");
                self.emit(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
            Open::Call(call) => {
                let item = items::call_item(&call, "completed");
                self.emit(
                    "response.function_call_arguments.done",
                    json!({
                        "item_id": item["id"], "output_index": index, "name": call.name,
                        "arguments": call.arguments,
                    }),
                );
                self.emit(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.push(item);
            }
        }
    }

    /// The last events, after the response is stored.
    pub(super) async fn finish(&mut self, reason: FinishReason, usage: Usage) {
        if self.output.is_empty() && matches!(self.open, Open::None) {
            self.text("");
        }
        self.close();
        let status = match reason {
            FinishReason::Length => "incomplete",
            _ => "completed",
        };
        let response = self.echo.response(status, self.output.clone(), Some(usage));
        if let Some(keep) = self.keep.take() {
            if let Err(err) = keep.put(&self.echo.id, &self.output, &response).await {
                self.failed(&err);
                return;
            }
        }
        self.emit(
            &format!("response.{status}"),
            json!({ "response": response }),
        );
        self.last = Some(response);
    }

    pub(super) fn failed(&mut self, err: &ApiError) {
        let mut response = self.echo.response("failed", self.output.clone(), None);
        response["error"] = json!({"code": "server_error", "message": err.message()});
        self.emit("response.failed", json!({ "response": response }));
    }
}

/// The events of a streamed response.
pub fn events(
    events: Events,
    echo: Echo,
    keep: Option<Keep>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let writer = Writer::new(echo, keep);
    let stream = futures_util::stream::unfold(
        (events, writer, false),
        |(mut events, mut writer, mut ended)| async move {
            loop {
                if let Some(event) = writer.pending.pop_front() {
                    return Some((event, (events, writer, ended)));
                }
                if ended {
                    return None;
                }
                match events.next().await {
                    Some(GenerationEvent::Text(text)) | Some(GenerationEvent::Refusal(text)) => {
                        writer.text(&text)
                    }
                    Some(GenerationEvent::Logprobs(more)) => writer.logprobs.extend(more),
                    Some(GenerationEvent::ToolCall(delta)) => writer.call(delta),
                    Some(GenerationEvent::Finished { reason, usage }) => {
                        ended = true;
                        writer.finish(reason, usage).await;
                    }
                    Some(GenerationEvent::Failed(err)) => {
                        ended = true;
                        writer.close();
                        writer.failed(&ApiError::from(err));
                    }
                    None => {
                        ended = true;
                        writer.failed(&ApiError::internal(
                            "the engine dropped a generation without finishing it",
                        ));
                    }
                }
            }
        },
    );
    Sse::new(stream.map(Ok))
}
