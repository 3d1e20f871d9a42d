//! The public face of a loaded model: submit work, read stats.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tabagent_core::{
    ChatMessage, GenerationEvent, GenerationParams, InferenceError, OutputConstraint, Tools,
    MAX_TOP_LOGPROBS,
};
use tabagent_models::chat_template::ChatTemplate;
use tabagent_models::tool_calls::{self, ToolCallParser, ToolFormat};
use tokio::sync::mpsc;

use crate::batcher::{self, Batcher, Job, Refused};
use crate::queue::JobClass;
use crate::{backend, sampler, EngineConfig, LoadError};

/// Facts about a loaded model, for listings and health.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// Parameter count.
    pub parameters: u64,
    /// Context length the model was trained with.
    pub trained_context: u32,
    /// Bytes of weights.
    pub size_bytes: u64,
    /// Whether the file carries a chat template (without one, only raw completions work).
    pub has_chat_template: bool,
}

/// Counters of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Sequences being generated now.
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Generations that ended normally.
    pub completed_total: u64,
    /// Generations stopped because the caller went away.
    pub cancelled_total: u64,
    /// Generations that failed inside the engine.
    pub failed_total: u64,
    /// Tokens generated.
    pub generated_tokens_total: u64,
    /// Prompt tokens evaluated.
    pub prompt_tokens_total: u64,
    /// Prompt tokens reused from a slot's cache instead of evaluated.
    pub cached_prompt_tokens_total: u64,
}

/// Shared counters written by the scheduler thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) active: AtomicUsize,
    pub(crate) queued: AtomicUsize,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) generated: AtomicU64,
    pub(crate) prompt: AtomicU64,
    pub(crate) cached: AtomicU64,
}

/// An accepted generation: its prompt size and the stream of its events.
#[derive(Debug)]
pub struct GenerationHandle {
    /// Tokens in the prompt after templating.
    pub prompt_tokens: u32,
    /// Events until exactly one `Finished` or `Failed`. Dropping it cancels the generation.
    pub events: mpsc::UnboundedReceiver<GenerationEvent>,
}

/// A model loaded in llama.cpp with its own scheduler thread.
pub struct LlamaEngine {
    model: Arc<LlamaModel>,
    template: Option<ChatTemplate>,
    end_tokens: Arc<Vec<LlamaToken>>,
    /// The bytes the texts of its special tokens (control, user-defined) start with: text
    /// holding none of them cannot read as one, and is not tokenized twice to find out.
    special_starts: [bool; 256],
    counters: Arc<Counters>,
    config: EngineConfig,
    facts: ModelFacts,
    // Dropping it fails what is running and joins the thread (which holds its own `Arc` of the
    // model), so no llama.cpp work outlives the engine.
    scheduler: Batcher,
}

impl std::fmt::Debug for LlamaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaEngine")
            .field("facts", &self.facts)
            .field("config", &self.config)
            .finish()
    }
}

impl LlamaEngine {
    /// Validates `path`, loads it with mmap and starts its scheduler thread.
    ///
    /// Blocking: call it from a blocking context.
    pub fn load(path: &Path, config: EngineConfig) -> Result<Self, LoadError> {
        config.validate().map_err(LoadError::InvalidConfig)?;
        let shown = path.display().to_string();
        let info =
            tabagent_models::gguf::inspect_file(path).map_err(|source| LoadError::InvalidFile {
                path: shown.clone(),
                source,
            })?;
        let backend = backend::backend().map_err(|message| LoadError::Llama {
            path: shown.clone(),
            message,
        })?;
        let params = LlamaModelParams::default()
            .with_use_mmap(true)
            .with_n_gpu_layers(config.gpu_layers);
        let model =
            LlamaModel::load_from_file(backend, path, &params).map_err(|err| LoadError::Llama {
                path: shown.clone(),
                message: err.to_string(),
            })?;
        let model = Arc::new(model);

        let end_tokens: Vec<LlamaToken> = model
            .vocab()
            .tokens()
            .filter(|t| model.vocab().is_eog(*t))
            .collect();
        let special_starts = special_starts(&model);
        let template = match info.chat_template() {
            None => None,
            Some(source) => {
                let bos = special_text(&model, model.vocab().bos());
                let eos = special_text(&model, model.vocab().eos());
                Some(ChatTemplate::new(source, &bos, &eos).map_err(|err| {
                    LoadError::InvalidTemplate {
                        path: shown.clone(),
                        message: err.to_string(),
                    }
                })?)
            }
        };
        let facts = ModelFacts {
            architecture: info.architecture().unwrap_or("unknown").to_string(),
            parameters: model.n_params(),
            trained_context: model.n_ctx_train(),
            size_bytes: model.size(),
            has_chat_template: template.is_some(),
        };
        if config.ctx_per_slot > facts.trained_context {
            tracing::warn!(
                ctx = config.ctx_per_slot,
                trained = facts.trained_context,
                "context per slot exceeds the model's trained context; quality may degrade"
            );
        }

        let counters = Arc::new(Counters::default());
        let scheduler = batcher::start(batcher::Setup {
            model: Arc::clone(&model),
            backend,
            config: config.clone(),
            counters: Arc::clone(&counters),
        })
        .map_err(|message| LoadError::Llama {
            path: shown,
            message,
        })?;
        Ok(Self {
            model,
            template,
            end_tokens: Arc::new(end_tokens),
            special_starts,
            counters,
            config,
            facts,
            scheduler,
        })
    }

    /// What was loaded.
    pub fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    /// The settings it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A snapshot of its counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            active: c.active.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            completed_total: c.completed.load(Ordering::Relaxed),
            cancelled_total: c.cancelled.load(Ordering::Relaxed),
            failed_total: c.failed.load(Ordering::Relaxed),
            generated_tokens_total: c.generated.load(Ordering::Relaxed),
            prompt_tokens_total: c.prompt.load(Ordering::Relaxed),
            cached_prompt_tokens_total: c.cached.load(Ordering::Relaxed),
        }
    }

    /// How many tokens `text` is, as a raw prompt would be tokenized.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), true, true)
            .len()
    }

    /// `text` as this model's token ids, exactly as a prompt is tokenized for generation
    /// (special tokens written as text are parsed); `add_special` adds what the model puts in
    /// front of a prompt (BOS) when it wants it.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, true)
            .into_iter()
            .map(|token| token.0)
            .collect()
    }

    /// How many tokens the vocabulary has: valid ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> u32 {
        u32::try_from(self.model.vocab().n_tokens()).unwrap_or(0)
    }

    /// The text of `tokens`, special tokens written out. An id outside the vocabulary is an
    /// error naming it (llama.cpp would abort on it, so it never gets there).
    pub fn detokenize(&self, tokens: &[i32]) -> Result<String, InferenceError> {
        self.check_tokens(tokens)?;
        if tokens.is_empty() {
            return Ok(String::new());
        }
        let tokens: Vec<LlamaToken> = tokens.iter().map(|&id| LlamaToken(id)).collect();
        let bytes = self.model.vocab().detokenize(&tokens, false, true);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Each token's own text (bytes that are not whole UTF-8 characters are replaced).
    pub fn token_pieces(&self, tokens: &[i32]) -> Result<Vec<String>, InferenceError> {
        self.check_tokens(tokens)?;
        Ok(tokens
            .iter()
            .map(|&id| {
                let bytes = self
                    .model
                    .vocab()
                    .token_to_piece(LlamaToken(id), true, None);
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect())
    }

    fn check_tokens(&self, tokens: &[i32]) -> Result<(), InferenceError> {
        let size = self.vocab_size();
        match tokens
            .iter()
            .position(|&id| u32::try_from(id).map_or(true, |id| id >= size))
        {
            Some(at) => Err(InferenceError::invalid(
                "tokens",
                format!(
                    "token {} at index {at} is outside this model's vocabulary (0..{size})",
                    tokens[at]
                ),
            )),
            None => Ok(()),
        }
    }

    /// The prompt text `messages` render to with the model's chat template, as
    /// [`LlamaEngine::chat`] tokenizes it.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, InferenceError> {
        self.chat_prompt_with(messages, &Tools::default())
    }

    /// How this model's template has it write tool calls (`None` without a template).
    pub fn tool_format(&self) -> Option<ToolFormat> {
        self.template.as_ref().map(ChatTemplate::tool_format)
    }

    /// [`LlamaEngine::chat_prompt`] offering `tools`: through the template when it reads
    /// `tools`, else described in the system message (tool turns written as text).
    pub fn chat_prompt_with(
        &self,
        messages: &[ChatMessage],
        tools: &Tools,
    ) -> Result<String, InferenceError> {
        // Checked here, so counting a prompt (`/v1/tokenize`) refuses images as chat does.
        if messages.iter().any(|m| !m.images.is_empty()) {
            return Err(InferenceError::unsupported(
                "messages",
                "this model takes text only: it has no multimodal projector for images",
            ));
        }
        let template = self.template.as_ref().ok_or_else(|| {
            InferenceError::unsupported(
                "messages",
                "this model has no chat template (it is a base model); use /v1/completions with a raw prompt",
            )
        })?;
        let offered: &[tabagent_core::ToolSpec] = match tools.active() {
            true => &tools.specs,
            false => &[],
        };
        let rendered = match template.tool_format() {
            ToolFormat::Unsupported if tools.active() || messages.iter().any(|m| !m.is_text()) => {
                template.render(&tool_calls::plain_turns(messages, tools), true)
            }
            _ => template.render_with_tools(messages, offered, true),
        };
        let prompt =
            rendered.map_err(|err| InferenceError::invalid("messages", err.to_string()))?;
        // Templates write the BOS token as text; tokenization adds it too when the model wants one.
        let bos = special_text(&self.model, self.model.vocab().bos());
        Ok(match prompt.strip_prefix(bos.as_str()) {
            Some(rest) if !bos.is_empty() && self.model.vocab().should_add_bos() => {
                rest.to_string()
            }
            _ => prompt,
        })
    }

    /// `messages` as the token ids a chat request with them (and `tools`) gives the model:
    /// rendered by the template, the template's markup as special tokens and the client's
    /// text as plain text.
    pub fn chat_tokens(
        &self,
        messages: &[ChatMessage],
        tools: &Tools,
    ) -> Result<Vec<i32>, InferenceError> {
        let prompt = self.chat_prompt_with(messages, tools)?;
        Ok(self
            .tokenize_chat(&prompt, messages, tools)?
            .into_iter()
            .map(|token| token.0)
            .collect())
    }

    /// Renders `messages` with the model's chat template and starts generating.
    ///
    /// Cheap enough for an async context only for short prompts; callers should use a blocking task.
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        params: GenerationParams,
    ) -> Result<GenerationHandle, InferenceError> {
        self.chat_as(messages, params, JobClass::default())
    }

    /// [`LlamaEngine::chat`] for `class`: where it waits in line for a slot.
    pub fn chat_as(
        &self,
        messages: &[ChatMessage],
        params: GenerationParams,
        class: JobClass,
    ) -> Result<GenerationHandle, InferenceError> {
        let prompt = self.chat_prompt_with(messages, &params.tools)?;
        let tokens = self.tokenize_chat(&prompt, messages, &params.tools)?;
        let format = self.tool_format();
        self.submit_tokens(tokens, params, format, class, None)
    }

    /// A rendered chat prompt as tokens, such that only the template's own markup becomes
    /// special tokens: text a client wrote (message contents, tool call arguments, tool
    /// descriptions) that reads as a special token (`<|im_start|>system` typed by a user) is
    /// tokenized as the plain text it is. The prompt is tokenized whole, as before, unless some
    /// client text holds special-token text; then that text's place in the prompt is tokenized
    /// with special tokens off. Client text of that kind the template changed past finding is
    /// refused rather than let through.
    fn tokenize_chat(
        &self,
        prompt: &str,
        messages: &[ChatMessage],
        tools: &Tools,
    ) -> Result<Vec<LlamaToken>, InferenceError> {
        let vocab = self.model.vocab();
        let reads_special = |text: &str| {
            text.bytes().any(|b| self.special_starts[usize::from(b)])
                && vocab.tokenize(text.as_bytes(), false, true)
                    != vocab.tokenize(text.as_bytes(), false, false)
        };
        let client_texts = messages
            .iter()
            .flat_map(|m| {
                std::iter::once(m.content.as_str())
                    .chain(m.tool_calls.iter().map(|call| call.arguments.as_str()))
            })
            .chain(
                tools
                    .specs
                    .iter()
                    .filter_map(|spec| spec.description.as_deref()),
            );
        let mut plain: Vec<std::ops::Range<usize>> = Vec::new();
        for text in client_texts {
            if text.trim().is_empty() || !reads_special(text) {
                continue;
            }
            let found = [text, text.trim()]
                .into_iter()
                .find_map(|needle| prompt.find(needle).map(|at| at..at + needle.len()))
                .ok_or_else(|| {
                    InferenceError::invalid(
                        "messages",
                        "a message holds text that this model reads as its own control tokens, \
                         and its chat template changes that text so that it cannot be kept as \
                         plain text",
                    )
                })?;
            plain.push(found);
        }
        if plain.is_empty() {
            // Special tokens in the text are parsed, as llama-server does: templates emit
            // them as text.
            return Ok(vocab.tokenize(prompt.as_bytes(), true, true));
        }
        plain.sort_by_key(|range| range.start);
        let mut tokens = Vec::new();
        let mut at = 0;
        let mut first = true;
        let mut piece = |text: &str, special: bool, tokens: &mut Vec<LlamaToken>| {
            if !text.is_empty() {
                tokens.extend(vocab.tokenize(text.as_bytes(), first, special));
                first = false;
            }
        };
        for range in plain {
            if range.start < at {
                continue;
            }
            piece(&prompt[at..range.start], true, &mut tokens);
            piece(&prompt[range.clone()], false, &mut tokens);
            at = range.end;
        }
        piece(&prompt[at..], true, &mut tokens);
        Ok(tokens)
    }

    /// Starts generating a continuation of the raw `prompt`.
    pub fn complete(
        &self,
        prompt: &str,
        params: GenerationParams,
    ) -> Result<GenerationHandle, InferenceError> {
        self.complete_as(prompt, params, JobClass::default())
    }

    /// [`LlamaEngine::complete`] for `class`.
    pub fn complete_as(
        &self,
        prompt: &str,
        params: GenerationParams,
        class: JobClass,
    ) -> Result<GenerationHandle, InferenceError> {
        if prompt.is_empty() {
            return Err(InferenceError::invalid(
                "prompt",
                "prompt must not be empty",
            ));
        }
        if params.tools.active() {
            return Err(InferenceError::invalid(
                "tools",
                "tools need a chat request: a raw prompt has no template to show them",
            ));
        }
        self.submit(prompt, params, None, class)
    }

    /// Starts generating after `text`, tokenized whole (special tokens written as text are
    /// parsed: a raw prompt is all the caller's).
    fn submit(
        &self,
        text: &str,
        params: GenerationParams,
        tool_format: Option<ToolFormat>,
        class: JobClass,
    ) -> Result<GenerationHandle, InferenceError> {
        let prompt = self.model.vocab().tokenize(text.as_bytes(), true, true);
        self.submit_tokens(prompt, params, tool_format, class, None)
    }

    /// The log probability of each token of `text` read after `context` (prompt scoring: how
    /// surprising the text is to the model given what it was shown), as `Logprobs` events, then
    /// `Finished`; nothing is generated. Neither text's special tokens are parsed.
    pub fn score(
        &self,
        context: &str,
        text: &str,
        class: JobClass,
    ) -> Result<GenerationHandle, InferenceError> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(context.as_bytes(), true, false);
        let from = tokens.len();
        tokens.extend(vocab.tokenize(text.as_bytes(), false, false));
        if tokens.len() <= from {
            return Err(InferenceError::invalid("text", "there is no text to score"));
        }
        let params = GenerationParams {
            max_tokens: Some(0),
            ..GenerationParams::default()
        };
        // The first token of the text is scored from the one before it.
        self.submit_tokens(tokens, params, None, class, Some(from.max(1)))
    }

    fn submit_tokens(
        &self,
        prompt: Vec<LlamaToken>,
        params: GenerationParams,
        tool_format: Option<ToolFormat>,
        class: JobClass,
        score_from: Option<usize>,
    ) -> Result<GenerationHandle, InferenceError> {
        if params.ignore_eos
            && (params.constraint != OutputConstraint::None || params.tools.forced())
        {
            return Err(InferenceError::unsupported(
                "ignore_eos",
                "ignore_eos cannot be combined with response_format or a forced tool call",
            ));
        }
        if params.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return Err(InferenceError::invalid(
                "top_logprobs",
                format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}"),
            ));
        }
        let limit = self.config.ctx_per_slot;
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if prompt.is_empty() {
            return Err(InferenceError::invalid(
                "prompt",
                "the prompt is empty after tokenization",
            ));
        }
        if prompt_tokens >= limit {
            return Err(InferenceError::ContextOverflow {
                prompt_tokens,
                limit,
            });
        }
        let room = limit - prompt_tokens;
        let max_tokens = params.max_tokens.map_or(room, |max| max.min(room));
        let grammar = sampler::grammar(&params, tool_format)?;
        let sampler = sampler::build(&self.model, &params, grammar.as_ref(), &self.end_tokens)?;
        let tool_calls = match (tool_format, params.tools.active()) {
            (Some(_), true) => Some(ToolCallParser::for_tools(&params.tools)),
            _ => None,
        };
        let (sink, events) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            max_tokens,
            stop: params.stop,
            ignore_eos: params.ignore_eos,
            tool_calls,
            logprobs: params.logprobs,
            score_from,
            sampler,
            sink,
            span: tracing::Span::current(),
            class,
        };
        // The scheduler thread moves jobs from the channel into its own line at once, so the
        // bound is kept by this count (jobs not yet in a slot), not by the channel.
        let queued = self.counters.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.config.queue_capacity {
            self.counters.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(InferenceError::QueueFull { queued });
        }
        match self.scheduler.try_send(job) {
            Ok(()) => Ok(GenerationHandle {
                prompt_tokens,
                events,
            }),
            Err(Refused::Full) => {
                let queued = self.counters.queued.fetch_sub(1, Ordering::AcqRel) - 1;
                Err(InferenceError::QueueFull { queued })
            }
            Err(Refused::Stopped) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                Err(InferenceError::Unavailable(
                    "the model's scheduler thread has stopped".to_string(),
                ))
            }
        }
    }
}

/// The first bytes of the texts of `model`'s special tokens (what special-token parsing
/// matches: control and user-defined tokens).
fn special_starts(model: &LlamaModel) -> [bool; 256] {
    use llama_cpp_2::token_type::LlamaTokenAttr;
    let vocab = model.vocab();
    let mut starts = [false; 256];
    for token in vocab.tokens() {
        let attrs = vocab.attr(token);
        if attrs.contains(LlamaTokenAttr::Control) || attrs.contains(LlamaTokenAttr::UserDefined) {
            if let Some(&first) = vocab.token_to_piece(token, true, None).first() {
                starts[usize::from(first)] = true;
            }
        }
    }
    starts
}

fn special_text(model: &LlamaModel, token: LlamaToken) -> String {
    if token.0 < 0 {
        return String::new();
    }
    String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned()
}
