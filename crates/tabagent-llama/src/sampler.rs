//! Building a llama.cpp sampler chain from [`GenerationParams`].

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use tabagent_core::{GenerationParams, InferenceError, OutputConstraint};

use crate::schema::check_enforceable;

/// The grammar that enforces `constraint`, or `None` for free text.
pub(crate) fn grammar_for(constraint: &OutputConstraint) -> Result<Option<String>, InferenceError> {
    let schema = match constraint {
        OutputConstraint::None => return Ok(None),
        OutputConstraint::JsonObject => serde_json::json!({"type": "object"}),
        OutputConstraint::JsonSchema(schema) => {
            check_enforceable(schema).map_err(|reason| {
                InferenceError::unsupported(
                    "response_format",
                    format!("response_format.json_schema: {reason}"),
                )
            })?;
            schema.clone()
        }
    };
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map(Some)
        .map_err(|err| {
            InferenceError::unsupported(
                "response_format",
                format!("response_format.json_schema cannot be turned into a grammar: {err}"),
            )
        })
}

/// A sampler chain for one sequence; fails closed if the grammar does not compile.
pub(crate) fn build(
    model: &LlamaModel,
    params: &GenerationParams,
    grammar: Option<&str>,
    end_tokens: &[LlamaToken],
) -> Result<LlamaSampler, InferenceError> {
    let sampling = &params.sampling;
    let mut chain = Vec::new();
    if params.ignore_eos && !end_tokens.is_empty() {
        let biases: Vec<LlamaLogitBias> = end_tokens
            .iter()
            .map(|token| LlamaLogitBias::new(*token, f32::NEG_INFINITY))
            .collect();
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &biases));
    }
    if let Some(grammar) = grammar {
        let sampler = LlamaSampler::grammar(model, grammar, "root").map_err(|err| {
            InferenceError::unsupported(
                "response_format",
                format!("the output grammar does not compile: {err}"),
            )
        })?;
        chain.push(sampler);
    }
    let penalize = sampling.repeat_penalty != 1.0
        || sampling.frequency_penalty != 0.0
        || sampling.presence_penalty != 0.0;
    if penalize {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            i32::try_from(sampling.repeat_last_n).unwrap_or(i32::MAX),
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        ));
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if sampling.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(sampling.top_k).unwrap_or(i32::MAX),
            ));
        }
        if sampling.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(sampling.top_p, 1));
        }
        if sampling.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(sampling.min_p, 1));
        }
        chain.push(LlamaSampler::temp(sampling.temperature));
        chain.push(LlamaSampler::dist(sampling.seed.unwrap_or_else(fresh_seed)));
    }
    Ok(LlamaSampler::chain_simple(chain))
}

fn fresh_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish() as u32
}
