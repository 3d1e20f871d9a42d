//! OpenAI wire types. Only this module knows their JSON shape; `convert` turns them into domain types.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopSpec {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a final chunk with token usage before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by chat and completions.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct SamplingFields {
    /// 0–2; 0 is greedy.
    pub temperature: Option<f32>,
    /// (0, 1].
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens; 0 disables (llama.cpp extension).
    pub top_k: Option<i64>,
    /// [0, 1] (llama.cpp extension).
    pub min_p: Option<f32>,
    /// Multiplicative repeat penalty (llama.cpp extension).
    pub repeat_penalty: Option<f32>,
    /// -2–2.
    pub frequency_penalty: Option<f32>,
    /// -2–2.
    pub presence_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// Stop strings (up to 16).
    pub stop: Option<StopSpec>,
    /// Most tokens to generate.
    pub max_tokens: Option<i64>,
    /// Generate past end-of-generation tokens (llama.cpp extension, for benchmarks).
    pub ignore_eos: Option<bool>,
    /// Stream server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// How long the model stays loaded after this request: seconds, or a duration such as
    /// `"10m"`; negative keeps it loaded, 0 unloads it when idle (Ollama's `keep_alive`,
    /// extension). It holds for the model until another request changes it.
    #[schema(value_type = Option<Object>)]
    pub keep_alive: Option<Value>,
    /// Only 1 is supported.
    pub n: Option<i64>,
    /// Not supported yet.
    #[schema(value_type = Option<Object>)]
    pub logit_bias: Option<HashMap<String, f32>>,
    /// A caller id (accepted for compatibility; not used).
    #[expect(
        dead_code,
        reason = "accepted so OpenAI clients that send it are not refused"
    )]
    pub user: Option<String>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// Output shape: `text`, `json_object` or `json_schema`.
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<Value>,
    /// Newer spelling of `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Tools: sent on to remote engines with the `tools` capability (the in-process engine
    /// answers 400).
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
    /// Tool choice (with `tools`).
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    /// Whether the model may call several tools at once (with `tools`).
    pub parallel_tool_calls: Option<bool>,
    /// Each generated token's log probability (with `top_logprobs` alternatives, at most 20).
    pub logprobs: Option<bool>,
    /// Alternatives per token, with `logprobs`.
    pub top_logprobs: Option<i64>,
    /// Record this exchange in the memory's conversations store under this id (also taken
    /// from the `X-Conversation-Id` header).
    pub conversation_id: Option<String>,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// One message as the wire carries it (kept whole, so a request routed to a remote engine can
/// send it on as the caller wrote it).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct WireMessage {
    /// `system`, `developer`, `user`, `assistant`, or (to remote engines) `tool`.
    pub role: String,
    /// Text, or a list of content parts (null for an assistant turn that only called tools).
    pub content: Option<MessageContent>,
    /// Speaker name (accepted, not used by templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls of an assistant turn (remote engines only).
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// Id of the tool call a `tool` message answers (remote engines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Any other field, passed on to remote engines.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: serde_json::Map<String, Value>,
}

/// Message content.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts: `text` here; `image_url` and others for remote engines that take them.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ContentPart {
    /// `text`, or (remote engines) `image_url`, `input_audio`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The part's other fields (`image_url`, ...).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: serde_json::Map<String, Value>,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// Model name.
    pub model: String,
    /// The prompt: a string, or a list holding one string.
    #[schema(value_type = Object)]
    pub prompt: Value,
    /// Not supported.
    pub echo: Option<bool>,
    /// Not supported.
    pub suffix: Option<String>,
    /// Each token's log probability, with this many alternatives (0 to 20).
    pub logprobs: Option<i64>,
    /// Only 1 is supported.
    pub best_of: Option<i64>,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct WireUsage {
    /// Prompt tokens after templating.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

/// An assistant message in a response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The generated text (null when the answer is only tool calls).
    pub content: Option<String>,
    /// The tools the model called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
    /// A remote engine's refusal instead of an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// A tool call in a response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireToolCall {
    /// Its id, which the tool's result names.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function and its arguments.
    pub function: WireFunctionCall,
}

/// The function a tool call calls.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireFunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments: JSON text.
    pub arguments: String,
}

impl From<tabagent_core::ToolCall> for WireToolCall {
    fn from(call: tabagent_core::ToolCall) -> Self {
        WireToolCall {
            id: call.id,
            kind: "function",
            function: WireFunctionCall {
                name: call.name,
                arguments: call.arguments,
            },
        }
    }
}

/// A piece of a tool call in a stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireToolCallDelta<'a> {
    /// Which call.
    pub index: usize,
    /// Its id, on its first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// `function`, on its first piece.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The name (first piece) and more of the arguments.
    pub function: WireFunctionDelta<'a>,
}

/// The function part of a streamed tool call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireFunctionDelta<'a> {
    /// Its name, on its first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// More of its arguments.
    pub arguments: &'a str,
}

impl<'a> From<&'a tabagent_core::ToolCallDelta> for WireToolCallDelta<'a> {
    fn from(delta: &'a tabagent_core::ToolCallDelta) -> Self {
        WireToolCallDelta {
            index: delta.index,
            id: delta.id.as_deref(),
            kind: delta.id.as_ref().map(|_| "function"),
            function: WireFunctionDelta {
                name: delta.name.as_deref(),
                arguments: &delta.arguments,
            },
        }
    }
}

/// `logprobs` of a choice: one entry per generated token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireLogprobs {
    /// The tokens of the content.
    pub content: Vec<WireTokenLogprob>,
}

/// One token's log probability.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireTokenLogprob {
    /// The token's text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The likeliest tokens at its position.
    pub top_logprobs: Vec<WireTopLogprob>,
}

/// An alternative at one position.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireTopLogprob {
    /// Its text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

impl WireLogprobs {
    /// The wire form of `entries`.
    pub fn from_entries(entries: &[tabagent_core::TokenLogprob]) -> Self {
        WireLogprobs {
            content: entries
                .iter()
                .map(|entry| WireTokenLogprob {
                    token: entry.token.clone(),
                    logprob: entry.logprob,
                    bytes: entry.bytes.clone(),
                    top_logprobs: entry
                        .top
                        .iter()
                        .map(|alt| WireTopLogprob {
                            token: alt.token.clone(),
                            logprob: alt.logprob,
                            bytes: alt.bytes.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One choice of a chat completion.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatChoice {
    /// Always 0.
    pub index: u32,
    /// The reply.
    pub message: ResponseMessage,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: &'static str,
    /// `{"content": [...]}` when log probabilities were asked for.
    pub logprobs: Option<WireLogprobs>,
}

/// `POST /v1/chat/completions` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletionResponse {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: WireUsage,
    /// Where the in-process engine spent the time (llama.cpp server's `timings`), when it
    /// answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<WireTimings>,
    /// With the memory's context (`X-TabAgent-Context`): the document passages the prompt
    /// numbered, which the answer cites as `[index]` (an extension to OpenAI's shape).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub sources: Vec<crate::generation::context::CitedSource>,
}

/// An answer's times, as llama.cpp's server reports them (an extension to OpenAI's shape).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WireTimings {
    /// Prompt tokens.
    pub prompt_n: u32,
    /// Milliseconds from the job's start in its slot to its first token.
    pub prompt_ms: f64,
    /// Prompt tokens per second over that time.
    pub prompt_per_second: f64,
    /// Tokens generated.
    pub predicted_n: u32,
    /// Milliseconds from the first token to the last one sampled (an end-of-generation token
    /// included, as llama.cpp's server times it).
    pub predicted_ms: f64,
    /// Decode steps (tokens sampled after the first) per second of that time.
    pub predicted_per_second: f64,
}

impl WireTimings {
    /// The wire form of `usage`'s timings, when it has them.
    pub fn of(usage: &tabagent_core::Usage) -> Option<WireTimings> {
        let timings = usage.timings?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let rate = |n: u32, d: std::time::Duration| {
            let secs = d.as_secs_f64();
            if secs > 0.0 {
                f64::from(n) / secs
            } else {
                0.0
            }
        };
        Some(WireTimings {
            prompt_n: usage.prompt_tokens,
            prompt_ms: ms(timings.prompt),
            prompt_per_second: rate(usage.prompt_tokens, timings.prompt),
            predicted_n: usage.completion_tokens,
            predicted_ms: ms(timings.decode),
            predicted_per_second: rate(timings.decode_steps, timings.decode),
        })
    }
}

/// The delta of a streamed chat chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkDelta<'a> {
    /// `assistant` in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    /// Pieces of tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCallDelta<'a>>>,
    /// More of a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'a str>,
}

/// One choice of a streamed chat chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkChoice<'a> {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: ChunkDelta<'a>,
    /// The log probabilities of the tokens of this chunk, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<WireLogprobs>,
    /// Set in the last content chunk.
    pub finish_reason: Option<&'static str>,
}

/// A streamed chat chunk (`chat.completion.chunk`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletionChunk<'a> {
    /// Same id in every chunk of a stream.
    pub id: &'a str,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: &'a str,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice<'a>>,
    /// Null except in the usage chunk when `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    /// The answer's times, in the chunk with the finish reason (in-process engine only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<WireTimings>,
    /// The sources the answer may cite, in the chunk with the finish reason.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub sources: &'a [crate::generation::context::CitedSource],
}

/// One choice of a text completion (also the streamed form).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletionChoice<'a> {
    /// The text (a delta when streamed).
    pub text: &'a str,
    /// Always 0.
    pub index: u32,
    /// `stop`, `length`, or null while streaming.
    pub finish_reason: Option<&'static str>,
    /// `{tokens, token_logprobs, top_logprobs, text_offset}` when asked for, else null.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
}

/// `POST /v1/completions` response, and each streamed chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletionResponse<'a> {
    /// `cmpl-…`.
    pub id: &'a str,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: &'a str,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<CompletionChoice<'a>>,
    /// Token counts (in the final response; in a stream, only the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

/// An entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelObject {
    /// The name to use as `model`.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds of its import.
    pub created: u64,
    /// `tabagent` for imports, the Hub owner for pulled models.
    pub owned_by: String,
    /// `llm` (chat, completions), `embedding` (embeddings, rerank), `onnx`, `vision` or
    /// `speech` (extension).
    pub kind: &'static str,
    /// What runs it: `llama.cpp`, `onnxruntime` (both in-process) or `python-worker`
    /// (extension).
    pub engine: &'static str,
    /// GGUF architecture (extension).
    pub architecture: Option<String>,
    /// File size in bytes (extension).
    pub size_bytes: u64,
    /// Trained context length (extension).
    pub context_length: Option<u64>,
    /// Whether chat works; without a template only completions do (extension).
    pub has_chat_template: bool,
    /// Whether it is loaded in memory now (extension).
    pub loaded: bool,
    /// `on_disk`, `loading` or `loaded` (extension).
    pub state: &'static str,
    /// Bytes reserved for it while loaded: weights, KV cache, buffers (extension).
    pub memory_bytes: Option<u64>,
    /// While loaded: seconds it stays loaded once idle, -1 for until unloaded (extension).
    pub keep_alive_secs: Option<i64>,
    /// Parameters, from the GGUF header (extension; `GET /v1/models/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// Quantization, such as `Q4_K_M` (extension; `GET /v1/models/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
}

/// `GET /v1/models` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<ModelObject>,
}
