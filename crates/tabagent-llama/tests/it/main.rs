//! Engine tests on the real SmolLM2 GGUF (path in `TABAGENT_TEST_SMOLLM2_GGUF`; `scripts/test` sets it)
//! and, for tool calling, Qwen2.5-Coder (`TABAGENT_TEST_QWEN_GGUF`).

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod engine;
mod tools;

use std::path::PathBuf;

use tabagent_core::{ChatMessage, FinishReason, GenerationEvent, GenerationParams, Role, Usage};
use tabagent_llama::{EngineConfig, GenerationHandle, LlamaEngine};

pub(crate) fn smollm2_path() -> PathBuf {
    let Some(path) = std::env::var_os("TABAGENT_TEST_SMOLLM2_GGUF") else {
        panic!("TABAGENT_TEST_SMOLLM2_GGUF is not set: run the tests with scripts/test, which fetches the model");
    };
    PathBuf::from(path)
}

pub(crate) fn small_config() -> EngineConfig {
    EngineConfig {
        threads: 2,
        threads_batch: 2,
        parallel: 2,
        ctx_per_slot: 1024,
        queue_capacity: 4,
        ..EngineConfig::default()
    }
}

pub(crate) fn load(config: EngineConfig) -> LlamaEngine {
    LlamaEngine::load(&smollm2_path(), config).expect("SmolLM2 loads")
}

pub(crate) fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new(Role::User, text)]
}

pub(crate) fn greedy(max_tokens: u32) -> GenerationParams {
    let mut params = GenerationParams {
        max_tokens: Some(max_tokens),
        ..GenerationParams::default()
    };
    params.sampling.temperature = 0.0;
    params
}

/// The whole output of a generation, with how it ended.
pub(crate) struct Outcome {
    pub(crate) text: String,
    pub(crate) reason: FinishReason,
    pub(crate) usage: Usage,
}

pub(crate) fn collect(mut handle: GenerationHandle) -> Outcome {
    let mut text = String::new();
    while let Some(event) = handle.events.blocking_recv() {
        match event {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Finished { reason, usage } => {
                return Outcome {
                    text,
                    reason,
                    usage,
                }
            }
            GenerationEvent::Failed(err) => panic!("generation failed: {err}"),
            GenerationEvent::ToolCall(_) | GenerationEvent::Logprobs(_) => {}
            GenerationEvent::Refusal(_) => panic!("the local engine sent a remote-only event"),
        }
    }
    panic!("the event stream ended without Finished");
}
