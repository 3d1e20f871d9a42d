//! What a generation request asks for and what it streams back.

use crate::error::InferenceError;

/// How the next token is drawn. Defaults follow llama.cpp's own, which suit small local models.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy decoding.
    pub temperature: f32,
    /// Nucleus sampling threshold in `(0, 1]`; `1` disables it.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables it.
    pub top_k: u32,
    /// Drop tokens less likely than `min_p` times the most likely one; `0` disables it.
    pub min_p: f32,
    /// Multiplicative penalty on recently seen tokens; `1` disables it.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: u32,
    /// OpenAI-style additive penalty per occurrence.
    pub frequency_penalty: f32,
    /// OpenAI-style additive penalty for any occurrence.
    pub presence_penalty: f32,
    /// Seed for the random draw; `None` picks a fresh one.
    pub seed: Option<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
        }
    }
}

/// A constraint on the shape of the output, enforced while sampling.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputConstraint {
    /// Free text.
    #[default]
    None,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this JSON Schema.
    JsonSchema(serde_json::Value),
}

/// Everything about one generation except its input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationParams {
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Most tokens to generate; `None` means until the context window is full.
    pub max_tokens: Option<u32>,
    /// Strings that end generation; they are not included in the output.
    pub stop: Vec<String>,
    /// Shape the output must have.
    pub constraint: OutputConstraint,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Tools the model is offered (chat only).
    pub tools: crate::tools::Tools,
    /// Report each generated token's log probability, with this many of the likeliest
    /// alternatives (at most [`MAX_TOP_LOGPROBS`]); `None` reports none.
    pub logprobs: Option<u8>,
}

/// Most alternatives a token's log probability may list (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// One token's log probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (bytes that are not whole UTF-8 characters replaced).
    pub token: String,
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
    /// The likeliest tokens at its position, most likely first (the chosen one among them when
    /// it is likely enough).
    pub top: Vec<TopLogprob>,
}

/// An alternative at one position.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    /// Its text.
    pub token: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn or a stop string matched.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// A remote engine's content filter stopped it.
    ContentFilter,
}

impl FinishReason {
    /// The OpenAI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    /// From the OpenAI spelling (`function_call`, the older name, is `tool_calls`); anything
    /// unknown is `stop`.
    pub fn parse(text: &str) -> FinishReason {
        match text {
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Stop,
        }
    }
}

/// Token counts of one generation, and its times when the engine measured them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens in the prompt, after templating.
    pub prompt_tokens: u32,
    /// Tokens the model generated (stop strings included, end-of-generation tokens not).
    pub completion_tokens: u32,
    /// How long the engine took over the prompt and the answer (the in-process engine's own
    /// clock; `None` from engines that do not say).
    pub timings: Option<Timings>,
}

/// Where an engine spent a generation's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    /// From the job's start in its slot to its first token: the prompt (what the slot's cache
    /// did not hold) and the first sample.
    pub prompt: std::time::Duration,
    /// From the first token to the last one sampled, an end-of-generation token included.
    pub decode: std::time::Duration,
    /// The decode steps in `decode`: tokens sampled less the first, which came from the
    /// prompt's logits (one more than `completion_tokens - 1` when an end-of-generation token
    /// ended the answer).
    pub decode_steps: u32,
}

impl Usage {
    /// Prompt plus completion.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One step of a streamed generation. A stream ends with exactly one `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// More output text (never a partial UTF-8 character, never part of a stop string).
    Text(String),
    /// A piece of a tool call.
    ToolCall(crate::tools::ToolCallDelta),
    /// Log probabilities of the tokens generated since the last ones (sent before the text
    /// they belong to, which a stop string or a tool call may still hold back or take).
    Logprobs(Vec<TokenLogprob>),
    /// More of a refusal a remote engine's safety system wrote instead of an answer.
    Refusal(String),
    /// The generation ended normally.
    Finished {
        /// Why it ended.
        reason: FinishReason,
        /// Its token counts.
        usage: Usage,
    },
    /// The generation ended with an error after it was accepted.
    Failed(InferenceError),
}
