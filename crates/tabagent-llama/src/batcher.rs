//! The per-model scheduler thread: continuous batching over llama.cpp sequences.
//!
//! Each slot is one llama.cpp sequence id with its share of the KV cache. Every step builds one
//! batch: a token for each generating slot, then prompt chunks for prefilling slots up to the
//! batch size. A slot remembers the tokens in its cache, so a follow-up prompt that shares a
//! prefix (the usual multi-turn chat) skips re-evaluating it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tabagent_core::stop::StopMatcher;
use tabagent_core::{FinishReason, GenerationEvent, InferenceError, Timings, ToolCallDelta, Usage};
use tabagent_models::tool_calls::{Parsed, ToolCallParser};
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::Counters;
use crate::text::Utf8Decoder;
use crate::EngineConfig;

/// One accepted request on its way to a slot.
pub(crate) struct Job {
    pub(crate) prompt: Vec<LlamaToken>,
    pub(crate) max_tokens: u32,
    pub(crate) stop: Vec<String>,
    pub(crate) ignore_eos: bool,
    /// Finds tool calls in the output, when the request offers tools.
    pub(crate) tool_calls: Option<ToolCallParser>,
    /// Report log probabilities with this many alternatives.
    pub(crate) logprobs: Option<u8>,
    /// Report the log probability of each prompt token from this index on (prompt scoring).
    pub(crate) score_from: Option<usize>,
    pub(crate) sampler: crate::sampler::TokenSampler,
    pub(crate) sink: UnboundedSender<GenerationEvent>,
    pub(crate) span: tracing::Span,
    /// Its place in the waiting line.
    pub(crate) class: crate::queue::JobClass,
}

/// What the scheduler thread needs.
pub(crate) struct Setup {
    pub(crate) model: Arc<LlamaModel>,
    pub(crate) backend: &'static LlamaBackend,
    pub(crate) config: EngineConfig,
    pub(crate) counters: Arc<Counters>,
}

/// The running scheduler thread. Dropping it ends the thread and waits for it: its context is
/// freed and its generations are failed before the model goes. A detached thread still decoding
/// while the process exits crashes inside llama.cpp (and its OpenMP pool) as statics are torn
/// down.
pub(crate) struct Batcher {
    jobs: Option<SyncSender<Job>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why the thread did not take a job (the job is dropped).
pub(crate) enum Refused {
    /// Its channel is full.
    Full,
    /// The thread has stopped.
    Stopped,
}

impl Batcher {
    /// Hands `job` to the thread without blocking.
    pub(crate) fn try_send(&self, job: Job) -> Result<(), Refused> {
        let jobs = self.jobs.as_ref().ok_or(Refused::Stopped)?;
        jobs.try_send(job).map_err(|err| match err {
            TrySendError::Full(_) => Refused::Full,
            TrySendError::Disconnected(_) => Refused::Stopped,
        })
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Closing the channel wakes the thread if it waits for work.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the llama scheduler thread panicked");
            }
        }
    }
}

/// Starts the thread and waits until its context exists.
pub(crate) fn start(setup: Setup) -> Result<Batcher, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let (jobs, inbox) = sync_channel(setup.config.queue_capacity);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("tabagent-llama".to_string())
        .spawn(move || {
            let model = Arc::clone(&setup.model);
            let config = &setup.config;
            let n_ctx = config.parallel * config.ctx_per_slot;
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(n_ctx))
                .with_n_batch(config.batch_size)
                .with_n_ubatch(config.batch_size)
                .with_n_seq_max(config.parallel)
                .with_n_threads(i32::try_from(config.threads).unwrap_or(1))
                .with_n_threads_batch(i32::try_from(config.threads_batch).unwrap_or(1));
            let created = model.new_context(setup.backend, params);
            match created {
                Ok(ctx) => {
                    let _ = ready_tx.send(Ok(()));
                    Scheduler::new(&model, ctx, &setup).run(&inbox, &stopping);
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(format!(
                        "cannot create a context of {n_ctx} tokens: {err}"
                    )));
                }
            };
        })
        .map_err(|err| format!("cannot start the scheduler thread: {err}"))?;
    let started = Batcher {
        jobs: Some(jobs),
        stop,
        thread: Some(thread),
    };
    ready_rx
        .recv()
        .map_err(|_| "the scheduler thread died while starting".to_string())??;
    Ok(started)
}

/// A sequence being generated.
struct Active {
    job: Job,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// The last sampled token, still to be evaluated.
    pending: Option<LlamaToken>,
    generated: u32,
    decoder: Utf8Decoder,
    stop: StopMatcher,
    /// Tool calls sent so far.
    calls: usize,
    /// Index of this slot's logits in the batch just decoded.
    logits_at: Option<i32>,
    /// For prompt scoring: the batch indices whose logits predict the prompt tokens given.
    scoring: Vec<(i32, LlamaToken)>,
    /// When it took its slot, and when its first and latest tokens were sampled (an
    /// end-of-generation token too: its decode step is part of the answer's time).
    started: std::time::Instant,
    first_sample: Option<std::time::Instant>,
    last_sample: Option<std::time::Instant>,
    /// Tokens sampled, an end-of-generation token included.
    sampled: u32,
}

impl Active {
    /// Sends `text` that passed the stop strings: through the tool-call parser when there is
    /// one.
    fn send_text(&mut self, text: String) {
        let parsed = match self.job.tool_calls.as_mut() {
            Some(parser) => parser.push(&text),
            None => {
                if !text.is_empty() {
                    let _ = self.job.sink.send(GenerationEvent::Text(text));
                }
                return;
            }
        };
        self.send_parsed(parsed);
    }

    fn send_parsed(&mut self, parsed: Vec<Parsed>) {
        for piece in parsed {
            let event = match piece {
                Parsed::Text(text) => GenerationEvent::Text(text),
                Parsed::Call(call) => {
                    let index = self.calls;
                    self.calls += 1;
                    GenerationEvent::ToolCall(ToolCallDelta {
                        index,
                        id: Some(crate::logprobs::call_id()),
                        name: Some(call.name),
                        arguments: call.arguments,
                    })
                }
            };
            let _ = self.job.sink.send(event);
        }
    }
}

struct Slot {
    seq: i32,
    /// Tokens whose keys and values are in this sequence's cache, in order.
    cached: Vec<LlamaToken>,
    active: Option<Active>,
}

struct Scheduler<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    slots: Vec<Slot>,
    batch: LlamaBatch<'static>,
    config: EngineConfig,
    counters: Arc<Counters>,
    reuse_prefix: bool,
    piece: Vec<u8>,
    /// Jobs received and waiting for a slot.
    waiting: crate::queue::FairQueue<Job>,
}

impl<'m> Scheduler<'m> {
    fn new(model: &'m LlamaModel, ctx: LlamaContext<'m>, setup: &Setup) -> Self {
        let slots = (0..setup.config.parallel)
            .map(|seq| Slot {
                seq: i32::try_from(seq).unwrap_or(0),
                cached: Vec::new(),
                active: None,
            })
            .collect();
        let batch_size = usize::try_from(setup.config.batch_size).unwrap_or(512);
        Self {
            model,
            ctx,
            slots,
            batch: LlamaBatch::new(batch_size, 1),
            config: setup.config.clone(),
            counters: Arc::clone(&setup.counters),
            // Recurrent and hybrid memories cannot drop a suffix of a sequence.
            reuse_prefix: !model.is_recurrent() && !model.is_hybrid(),
            piece: Vec::with_capacity(32),
            waiting: crate::queue::FairQueue::default(),
        }
    }

    fn run(mut self, inbox: &Receiver<Job>, stop: &AtomicBool) {
        loop {
            if stop.load(Ordering::Acquire) {
                self.fail_all(inbox);
                return;
            }
            if !self.admit(inbox) {
                return;
            }
            self.drop_cancelled();
            self.step();
        }
    }

    /// The engine is going: every generation, running or waiting, ends with `Unavailable`.
    fn fail_all(&mut self, inbox: &Receiver<Job>) {
        while let Ok(job) = inbox.try_recv() {
            let class = job.class.clone();
            self.waiting.push(&class, job);
        }
        let unloaded = || {
            GenerationEvent::Failed(InferenceError::Unavailable(
                "the model was unloaded".to_string(),
            ))
        };
        while let Some(job) = self.waiting.pop() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            let _ = job.sink.send(unloaded());
        }
        for slot in &mut self.slots {
            if let Some(active) = slot.active.take() {
                self.counters.active.fetch_sub(1, Ordering::Relaxed);
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = active.job.sink.send(unloaded());
            }
        }
    }

    /// Moves waiting jobs into free slots, in the line's order (interactive first, callers in
    /// turn). Returns false when the engine is gone and idle.
    fn admit(&mut self, inbox: &Receiver<Job>) -> bool {
        // Everything sent so far joins the line first, so the order is the line's, not arrival's.
        while let Ok(job) = inbox.try_recv() {
            let class = job.class.clone();
            self.waiting.push(&class, job);
        }
        while self.slots.iter().any(|slot| slot.active.is_none()) {
            let job = match self.waiting.pop() {
                Some(job) => job,
                None if self.slots.iter().all(|slot| slot.active.is_none()) => match inbox.recv() {
                    Ok(job) => job,
                    Err(_) => return false,
                },
                None => return true,
            };
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            if job.sink.is_closed() {
                self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.place(job);
        }
        true
    }

    /// Puts `job` in the free slot whose cache shares the longest prefix with its prompt.
    fn place(&mut self, job: Job) {
        let mut best: Option<(usize, usize)> = None;
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.active.is_some() {
                continue;
            }
            let shared = if self.reuse_prefix {
                common_prefix(&slot.cached, &job.prompt)
            } else {
                0
            };
            if best.is_none_or(|(_, longest)| shared > longest) {
                best = Some((index, shared));
            }
        }
        let Some((index, shared)) = best else { return };
        // At least one prompt token must be evaluated to get logits for the first sample.
        let mut keep = shared.min(job.prompt.len().saturating_sub(1));
        // Scored tokens need the logits of the token before each: those are evaluated again.
        if let Some(from) = job.score_from {
            keep = keep.min(from.saturating_sub(1));
        }
        let seq = self.slots[index].seq;
        let trimmed =
            self.ctx
                .clear_kv_cache_seq(u32::try_from(seq).ok(), u32::try_from(keep).ok(), None);
        // Sliding-window caches may have dropped early positions; then start over.
        if keep > 0 && (!matches!(trimmed, Ok(true)) || self.ctx.kv_cache_seq_pos_min(seq) > 0) {
            keep = 0;
        }
        if keep == 0 {
            let _ = self
                .ctx
                .clear_kv_cache_seq(u32::try_from(seq).ok(), None, None);
        }
        let slot = &mut self.slots[index];
        slot.cached.truncate(keep);
        self.counters
            .cached
            .fetch_add(keep as u64, Ordering::Relaxed);
        self.counters.active.fetch_add(1, Ordering::Relaxed);
        job.span.in_scope(|| {
            tracing::debug!(
                slot = index,
                prompt_tokens = job.prompt.len(),
                reused = keep,
                "generation started"
            )
        });
        let stop = StopMatcher::new(job.stop.clone());
        slot.active = Some(Active {
            job,
            fed: keep,
            pending: None,
            generated: 0,
            decoder: Utf8Decoder::default(),
            stop,
            calls: 0,
            logits_at: None,
            scoring: Vec::new(),
            started: std::time::Instant::now(),
            first_sample: None,
            last_sample: None,
            sampled: 0,
        });
    }

    fn drop_cancelled(&mut self) {
        for slot in &mut self.slots {
            if slot
                .active
                .as_ref()
                .is_some_and(|active| active.job.sink.is_closed())
            {
                if let Some(active) = slot.active.take() {
                    active.job.span.in_scope(|| {
                        tracing::debug!(
                            generated = active.generated,
                            "generation cancelled by the caller"
                        )
                    });
                }
                self.counters.active.fetch_sub(1, Ordering::Relaxed);
                self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Builds one batch, decodes it and samples every slot that got logits.
    fn step(&mut self) {
        self.batch.clear();
        let mut budget = usize::try_from(self.config.batch_size).unwrap_or(512);
        // (slot, tokens this step adds to its cache)
        let mut added: Vec<(usize, Vec<LlamaToken>)> = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            active.logits_at = None;
            if let Some(token) = active.pending {
                let pos = i32::try_from(slot.cached.len()).unwrap_or(i32::MAX);
                if self.batch.add(token, pos, &[slot.seq], true).is_ok() {
                    active.logits_at = Some(self.batch.n_tokens() - 1);
                    added.push((index, vec![token]));
                    budget -= 1;
                }
            }
        }
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            if active.pending.is_some() || active.fed >= active.job.prompt.len() {
                continue;
            }
            let end = (active.fed + budget).min(active.job.prompt.len());
            let chunk = active.job.prompt[active.fed..end].to_vec();
            let start = slot.cached.len();
            for (offset, token) in chunk.iter().enumerate() {
                let last = end == active.job.prompt.len() && offset + 1 == chunk.len();
                let next = active.fed + offset + 1;
                let scored = active
                    .job
                    .score_from
                    .is_some_and(|from| next >= from && next < active.job.prompt.len());
                let pos = i32::try_from(start + offset).unwrap_or(i32::MAX);
                if self
                    .batch
                    .add(*token, pos, &[slot.seq], last || scored)
                    .is_err()
                {
                    break;
                }
                if last {
                    active.logits_at = Some(self.batch.n_tokens() - 1);
                }
                if scored {
                    active
                        .scoring
                        .push((self.batch.n_tokens() - 1, active.job.prompt[next]));
                }
            }
            budget -= chunk.len();
            added.push((index, chunk));
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(err) = self.ctx.decode(&mut self.batch) {
            self.fail_batch(&added, &err.to_string());
            return;
        }
        for (index, tokens) in added {
            let slot = &mut self.slots[index];
            if let Some(active) = slot.active.as_mut() {
                if active.pending.take().is_none() {
                    active.fed += tokens.len();
                    self.counters
                        .prompt
                        .fetch_add(tokens.len() as u64, Ordering::Relaxed);
                }
            }
            slot.cached.extend(tokens);
        }
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            if active.scoring.is_empty() {
                continue;
            }
            let scored = std::mem::take(&mut active.scoring)
                .into_iter()
                .map(|(at, token)| {
                    crate::logprobs::at(self.model, self.ctx.get_logits_ith(at), token, 0)
                })
                .collect();
            let _ = active.job.sink.send(GenerationEvent::Logprobs(scored));
        }
        for index in 0..self.slots.len() {
            let logits_at = self.slots[index]
                .active
                .as_ref()
                .and_then(|active| active.logits_at);
            if let Some(at) = logits_at {
                self.sample(index, at);
            }
        }
    }

    fn sample(&mut self, index: usize, at: i32) {
        let Some(active) = self.slots[index].active.as_mut() else {
            return;
        };
        // Nothing to generate (prompt scoring): done once the prompt is read.
        if active.job.max_tokens == 0 {
            self.finish(index, FinishReason::Length, false);
            return;
        }
        let token = active.job.sampler.sample(&self.ctx, at);
        let now = std::time::Instant::now();
        active.first_sample.get_or_insert(now);
        active.last_sample = Some(now);
        active.sampled += 1;
        if !active.job.ignore_eos && self.model.vocab().is_eog(token) {
            self.finish(index, FinishReason::Stop, false);
            return;
        }
        if let Some(top) = active.job.logprobs {
            let logprobs = crate::logprobs::at(self.model, self.ctx.get_logits_ith(at), token, top);
            let _ = active
                .job
                .sink
                .send(GenerationEvent::Logprobs(vec![logprobs]));
        }
        active.generated += 1;
        self.counters.generated.fetch_add(1, Ordering::Relaxed);
        self.piece.clear();
        self.model
            .vocab()
            .token_to_piece_into(token, &mut self.piece, false, None);
        let text = active.decoder.push(&self.piece);
        let step = active.stop.push(&text);
        active.send_text(step.emit);
        let full = self.slots[index].cached.len() + 1 >= self.config.ctx_per_slot as usize;
        let Some(active) = self.slots[index].active.as_mut() else {
            return;
        };
        if step.matched {
            self.finish(index, FinishReason::Stop, true);
        } else if active.generated >= active.job.max_tokens || full {
            self.finish(index, FinishReason::Length, false);
        } else {
            active.pending = Some(token);
        }
    }

    fn finish(&mut self, index: usize, reason: FinishReason, stopped_on_string: bool) {
        let Some(mut active) = self.slots[index].active.take() else {
            return;
        };
        if !stopped_on_string {
            let mut rest = active.decoder.flush();
            rest = format!("{}{}", active.stop.push(&rest).emit, active.stop.flush());
            active.send_text(rest);
        }
        if let Some(parsed) = active.job.tool_calls.as_mut().map(ToolCallParser::finish) {
            active.send_parsed(parsed);
        }
        // A cut-off answer stays `length`; one that ended after calling tools says so.
        let reason = match reason {
            FinishReason::Stop if active.calls > 0 => FinishReason::ToolCalls,
            other => other,
        };
        let first = active.first_sample.unwrap_or_else(std::time::Instant::now);
        let last = active.last_sample.unwrap_or(first);
        let usage = Usage {
            prompt_tokens: u32::try_from(active.job.prompt.len()).unwrap_or(u32::MAX),
            completion_tokens: active.generated,
            timings: Some(Timings {
                prompt: first - active.started,
                decode: last - first,
                decode_steps: active.sampled.saturating_sub(1),
            }),
        };
        active.job.span.in_scope(|| {
            tracing::debug!(
                reason = reason.as_str(),
                generated = usage.completion_tokens,
                "generation finished"
            )
        });
        // Counters first: whoever sees `Finished` must also see them updated.
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
        self.counters.completed.fetch_add(1, Ordering::Relaxed);
        let _ = active
            .job
            .sink
            .send(GenerationEvent::Finished { reason, usage });
    }

    /// A failed decode leaves the affected sequences' caches unknown: clear them and fail their jobs.
    fn fail_batch(&mut self, added: &[(usize, Vec<LlamaToken>)], reason: &str) {
        tracing::error!(reason, "llama_decode failed");
        for (index, _) in added {
            let slot = &mut self.slots[*index];
            let _ = self
                .ctx
                .clear_kv_cache_seq(u32::try_from(slot.seq).ok(), None, None);
            slot.cached.clear();
            if let Some(active) = slot.active.take() {
                self.counters.active.fetch_sub(1, Ordering::Relaxed);
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = active
                    .job
                    .sink
                    .send(GenerationEvent::Failed(InferenceError::Internal(format!(
                        "llama_decode failed: {reason}"
                    ))));
            }
        }
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
