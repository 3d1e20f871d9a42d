//! Building a llama.cpp sampler chain from [`GenerationParams`].

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use tabagent_core::{GenerationParams, InferenceError, OutputConstraint, Tools};
use tabagent_models::tool_calls::{self, ToolFormat};

use crate::schema::check_enforceable;

/// A grammar the output is held to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Grammar {
    /// From the first token.
    Strict(String),
    /// From the moment the output contains `trigger` (the text that opens a tool call), which
    /// the grammar's root starts with.
    Lazy {
        /// The GBNF grammar.
        grammar: String,
        /// What wakes it.
        trigger: &'static str,
    },
}

/// The rule each tool call of a tool grammar matches (a name no generated rule takes: those
/// are made of `root`, property names and JSON's primitives).
const CALL_RULE: &str = "tabagent-tool-call";

/// The grammar for a request's output: forced tool calls (`required` or a named function)
/// match the calls' schemas from the first token; with `auto`, a format with an opening tag
/// gets the same grammar lazily, once the model opens a call, unless `response_format` holds
/// the text; otherwise the `response_format` grammar, or none.
pub(crate) fn grammar(
    params: &GenerationParams,
    format: Option<ToolFormat>,
) -> Result<Option<Grammar>, InferenceError> {
    let tools = &params.tools;
    if let (Some(format), true) = (format, tools.active()) {
        if tools.forced() {
            return tool_grammar(format, tools).map(|g| Some(Grammar::Strict(g)));
        }
        if let (Some(trigger), OutputConstraint::None) = (format.trigger(), &params.constraint) {
            let grammar = tool_grammar(format, tools)?;
            return Ok(Some(Grammar::Lazy { grammar, trigger }));
        }
    }
    Ok(grammar_for(&params.constraint)?.map(Grammar::Strict))
}

/// Calls to the callable tools, framed as `format` writes them. A tool whose parameters use
/// keywords the grammar cannot enforce gets any JSON object as arguments, unless it is
/// `strict`, which is refused.
fn tool_grammar(format: ToolFormat, tools: &Tools) -> Result<String, InferenceError> {
    let loose = serde_json::json!({"type": "object"});
    let mut specs = Vec::new();
    for spec in tools.callable() {
        let parameters = match check_enforceable(&spec.parameters) {
            Ok(()) => &spec.parameters,
            Err(reason) if spec.strict => {
                return Err(InferenceError::unsupported(
                    "tools",
                    format!(
                        "tool `{}` is strict but its parameters cannot be enforced: {reason}",
                        spec.name
                    ),
                ))
            }
            Err(_) => &loose,
        };
        specs.push((spec.name.as_str(), parameters));
    }
    if specs.is_empty() {
        return Err(InferenceError::invalid(
            "tool_choice",
            "`tool_choice` names a function that is not among `tools`",
        ));
    }
    let schema = tool_calls::call_schema(specs.into_iter());
    let calls = llama_cpp_2::json_schema_to_grammar(&schema).map_err(|err| {
        InferenceError::unsupported(
            "tools",
            format!("the tools' parameters cannot be turned into a grammar: {err}"),
        )
    })?;
    // The schema's root becomes the call rule; the format's frame becomes the root.
    let mut grammar = String::with_capacity(calls.len() + 128);
    for line in calls.lines() {
        match line.strip_prefix("root ::=") {
            Some(body) => grammar.push_str(&format!("{CALL_RULE} ::={body}")),
            None => grammar.push_str(line),
        }
        grammar.push('\n');
    }
    grammar.push_str(&format.grammar_root(CALL_RULE, tools.parallel));
    grammar.push('\n');
    Ok(grammar)
}

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

/// The sampler of one sequence: its chain, and its grammar kept apart. The grammar is asked
/// only whether the chain's pick is allowed, and shapes the candidates only when it is not (as
/// llama.cpp's own server samples): checking every token of a 150,000-token vocabulary against
/// the grammar at every step costs more than the decode.
pub(crate) struct TokenSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl TokenSampler {
    /// Draws the next token from the logits at batch index `at`, and accepts it.
    pub(crate) fn sample(&mut self, ctx: &LlamaContext<'_>, at: i32) -> LlamaToken {
        let Some(grammar) = self.grammar.as_mut() else {
            return self.chain.sample(ctx, at);
        };
        let mut candidates = ctx.token_data_array_ith(at);
        self.chain.apply(&mut candidates);
        let picked = candidates.selected_token();
        let token = match picked {
            Some(token) if allowed(grammar, token) => token,
            _ => {
                let mut candidates = ctx.token_data_array_ith(at);
                grammar.apply(&mut candidates);
                self.chain.apply(&mut candidates);
                match (candidates.selected_token(), picked) {
                    (Some(token), _) | (None, Some(token)) => token,
                    // Neither pass picked anything: only an empty vocabulary does that.
                    (None, None) => LlamaToken(0),
                }
            }
        };
        grammar.accept(token);
        self.chain.accept(token);
        token
    }
}

/// Whether `grammar` allows `token` next (it sets a refused token's logit to minus infinity).
fn allowed(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
    grammar.apply(&mut one);
    one.data
        .first()
        .is_some_and(|data| data.logit().is_finite())
}

/// A sampler for one sequence; fails closed if the grammar does not compile.
pub(crate) fn build(
    model: &LlamaModel,
    params: &GenerationParams,
    grammar: Option<&Grammar>,
    end_tokens: &[LlamaToken],
) -> Result<TokenSampler, InferenceError> {
    let sampling = &params.sampling;
    let mut chain = Vec::new();
    if params.ignore_eos && !end_tokens.is_empty() {
        let biases: Vec<LlamaLogitBias> = end_tokens
            .iter()
            .map(|token| LlamaLogitBias::new(*token, f32::NEG_INFINITY))
            .collect();
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &biases));
    }
    let refused = |err: llama_cpp_2::GrammarError| {
        let param = match params.tools.active() {
            true => "tools",
            false => "response_format",
        };
        InferenceError::unsupported(param, format!("the output grammar does not compile: {err}"))
    };
    let grammar = match grammar {
        Some(Grammar::Strict(grammar)) => {
            Some(LlamaSampler::grammar(model, grammar, "root").map_err(refused)?)
        }
        Some(Grammar::Lazy { grammar, trigger }) => Some(
            LlamaSampler::grammar_lazy(model, grammar, "root", [trigger.as_bytes()], &[])
                .map_err(refused)?,
        ),
        None => None,
    };
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
    Ok(TokenSampler {
        chain: LlamaSampler::chain_simple(chain),
        grammar,
    })
}

fn fresh_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish() as u32
}
