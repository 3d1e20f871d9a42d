//! Dynamic batching, as text-embeddings-inference does it: requests queue, and each free worker
//! packs the next batch from every waiting request in turn (round robin, so a request with a
//! thousand inputs never holds back one with a single input), bounded by a number of inputs and
//! of padded tokens. A batch starts as soon as a worker is free, except that while requests are
//! arriving close together a worker waits up to a short `wait` for more to fill the batch.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::text::Encoded;

/// Limits of one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLimits {
    /// Inputs per batch.
    pub max_items: usize,
    /// Padded tokens per batch (inputs × the longest input's tokens).
    pub max_tokens: usize,
    /// How long a worker may wait to fill a batch while requests arrive close together.
    pub wait: Duration,
    /// Most padding a batch may carry, as a fraction of its real tokens: an input much
    /// shorter than the batch's longest waits for the next batch rather than pad to it.
    pub max_padding: f32,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_items: 64,
            // Attention grows with inputs × length²: 64 passages of 200 tokens ran a third
            // slower than batches of 2048 padded tokens (scripts/bench-ingest, 2 cores), while
            // 32 inputs of 64 tokens still go as one batch.
            max_tokens: 2_048,
            wait: Duration::from_millis(2),
            max_padding: 0.25,
        }
    }
}

/// What a worker computes for one batch: one output row per input, in order.
pub type BatchResult = Result<Vec<Vec<f32>>, String>;

/// A request's reply: its outputs in the order of its inputs, or why not.
pub type Reply = Result<Vec<Vec<f32>>, String>;

struct Job {
    id: u64,
    items: Vec<Encoded>,
    /// Indices of inputs not yet batched, longest last (batches then hold similar lengths).
    remaining: Vec<usize>,
    results: Vec<Vec<f32>>,
    /// Inputs batched but not finished.
    in_flight: usize,
    reply: Option<oneshot::Sender<Reply>>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    next_id: u64,
    closed: bool,
    last_arrival: Option<Instant>,
    /// Time between the last two arrivals: short means concurrent load.
    arrival_gap: Option<Duration>,
}

/// The queue the request side and the workers share.
pub struct BatchQueue {
    state: Mutex<State>,
    ready: Condvar,
    limits: BatchLimits,
}

/// One input of a formed batch: its job, its index there, its tokens.
pub struct Slot {
    job: u64,
    index: usize,
    /// The input.
    pub encoded: Encoded,
}

impl BatchQueue {
    /// An empty queue with `limits`.
    pub fn new(limits: BatchLimits) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            limits: BatchLimits {
                max_items: limits.max_items.max(1),
                ..limits
            },
        })
    }

    /// Queues `items`; the receiver gets their outputs in order.
    pub fn submit(&self, items: Vec<Encoded>) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        if items.is_empty() {
            let _ = tx.send(Ok(Vec::new()));
            return rx;
        }
        let mut state = self.lock();
        if state.closed {
            let _ = tx.send(Err("the model is unloading".to_string()));
            return rx;
        }
        let now = Instant::now();
        state.arrival_gap = state.last_arrival.map(|t| now.saturating_duration_since(t));
        state.last_arrival = Some(now);
        let mut remaining: Vec<usize> = (0..items.len()).collect();
        remaining.sort_by_key(|&i| items[i].ids.len());
        let id = state.next_id;
        state.next_id += 1;
        let count = items.len();
        state.jobs.push_back(Job {
            id,
            items,
            remaining,
            results: vec![Vec::new(); count],
            in_flight: 0,
            reply: Some(tx),
        });
        drop(state);
        self.ready.notify_all();
        rx
    }

    /// Stops taking requests; queued ones are refused, workers exit when idle.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for job in state.jobs.iter_mut().filter(|j| j.in_flight == 0) {
            if let Some(reply) = job.reply.take() {
                let _ = reply.send(Err("the model is unloading".to_string()));
            }
        }
        state.jobs.retain(|j| j.in_flight > 0);
        drop(state);
        self.ready.notify_all();
    }

    /// Waits for the next batch; `None` once closed and drained.
    pub fn next_batch(&self) -> Option<Vec<Slot>> {
        let mut state = self.lock();
        loop {
            drop_abandoned(&mut state);
            if queued(&state) > 0 {
                break;
            }
            if state.closed {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let concurrent = state.arrival_gap.is_some_and(|gap| gap < self.limits.wait);
        if concurrent && queued(&state) < self.limits.max_items {
            let deadline = Instant::now() + self.limits.wait;
            while queued(&state) < self.limits.max_items && !state.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .ready
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        Some(self.form(&mut state))
    }

    /// Hands a batch's outputs (or its failure) back to the requests it came from.
    pub fn finish(&self, batch: Vec<Slot>, outputs: BatchResult) {
        let mut state = self.lock();
        match outputs {
            Ok(rows) if rows.len() == batch.len() => {
                for (slot, row) in batch.iter().zip(rows) {
                    if let Some(job) = state.jobs.iter_mut().find(|j| j.id == slot.job) {
                        job.results[slot.index] = row;
                        job.in_flight -= 1;
                    }
                }
            }
            other => {
                let reason = match other {
                    Err(reason) => reason,
                    Ok(rows) => format!("{} outputs for {} inputs", rows.len(), batch.len()),
                };
                for slot in &batch {
                    if let Some(job) = state.jobs.iter_mut().find(|j| j.id == slot.job) {
                        job.remaining.clear();
                        job.in_flight -= 1;
                        if let Some(reply) = job.reply.take() {
                            let _ = reply.send(Err(reason.clone()));
                        }
                    }
                }
            }
        }
        // Reply to finished requests and forget them.
        let mut i = 0;
        while i < state.jobs.len() {
            let job = &mut state.jobs[i];
            if job.remaining.is_empty() && job.in_flight == 0 {
                if let Some(reply) = job.reply.take() {
                    let _ = reply.send(Ok(std::mem::take(&mut job.results)));
                }
                state.jobs.remove(i);
            } else {
                i += 1;
            }
        }
        drop(state);
        self.ready.notify_all();
    }

    /// Takes inputs from each waiting request in turn until the limits are reached.
    fn form(&self, state: &mut State) -> Vec<Slot> {
        let mut batch: Vec<Slot> = Vec::new();
        let mut longest = 0usize;
        let mut real = 0usize;
        loop {
            let mut took = false;
            for job in state.jobs.iter_mut() {
                if batch.len() >= self.limits.max_items {
                    break;
                }
                let Some(&index) = job.remaining.last() else {
                    continue;
                };
                let len = job.items[index].ids.len();
                let padded = longest.max(len) * (batch.len() + 1);
                let allowed = (real + len) as f32 * (1.0 + self.limits.max_padding);
                if !batch.is_empty() && (padded > self.limits.max_tokens || padded as f32 > allowed)
                {
                    continue;
                }
                job.remaining.pop();
                job.in_flight += 1;
                longest = longest.max(len);
                real += len;
                batch.push(Slot {
                    job: job.id,
                    index,
                    encoded: std::mem::take(&mut job.items[index]),
                });
                took = true;
            }
            if !took || batch.len() >= self.limits.max_items {
                return batch;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Inputs waiting to be batched.
fn queued(state: &State) -> usize {
    state.jobs.iter().map(|j| j.remaining.len()).sum()
}

/// Requests whose caller went away lose their unbatched inputs.
fn drop_abandoned(state: &mut State) {
    for job in state.jobs.iter_mut() {
        if job.reply.as_ref().is_some_and(oneshot::Sender::is_closed) {
            job.remaining.clear();
        }
    }
    state
        .jobs
        .retain(|j| !(j.remaining.is_empty() && j.in_flight == 0));
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn input(len: usize, marker: i64) -> Encoded {
        Encoded {
            ids: vec![marker; len],
            type_ids: vec![0; len],
            truncated: false,
        }
    }

    fn limits(max_items: usize, max_tokens: usize) -> BatchLimits {
        BatchLimits {
            max_items,
            max_tokens,
            wait: Duration::ZERO,
            max_padding: 10.0,
        }
    }

    /// A worker that answers each input with its marker and length.
    fn answer(queue: &BatchQueue) -> Vec<(i64, usize)> {
        let batch = queue.next_batch().expect("a batch");
        let seen: Vec<(i64, usize)> = batch
            .iter()
            .map(|s| (s.encoded.ids[0], s.encoded.ids.len()))
            .collect();
        let rows = seen
            .iter()
            .map(|&(m, l)| vec![m as f32, l as f32])
            .collect();
        queue.finish(batch, Ok(rows));
        seen
    }

    #[test]
    fn a_small_request_shares_the_next_batch_with_a_large_one() {
        let queue = BatchQueue::new(limits(4, 1_000));
        let big = queue.submit((0..10).map(|_| input(5, 1)).collect());
        let small = queue.submit(vec![input(3, 2)]);
        let first = answer(&queue);
        assert_eq!(first.len(), 4);
        assert!(
            first.contains(&(2, 3)),
            "the small request waited: {first:?}"
        );
        let mut small = small;
        assert_eq!(
            small.try_recv().expect("answered"),
            Ok(vec![vec![2.0, 3.0]])
        );
        answer(&queue);
        answer(&queue);
        let mut big = big;
        let rows = big.try_recv().expect("answered").expect("ok");
        assert_eq!(rows.len(), 10);
        assert!(rows.iter().all(|r| r == &vec![1.0, 5.0]));
    }

    #[test]
    fn outputs_come_back_in_input_order_whatever_the_batching() {
        let queue = BatchQueue::new(limits(2, 1_000));
        let lengths = [3usize, 9, 1, 7, 5];
        let mut rx = queue.submit(
            lengths
                .iter()
                .enumerate()
                .map(|(i, &l)| input(l, i as i64))
                .collect(),
        );
        for _ in 0..3 {
            answer(&queue);
        }
        let rows = rx.try_recv().expect("answered").expect("ok");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row, &vec![i as f32, lengths[i] as f32]);
        }
    }

    #[test]
    fn the_token_budget_bounds_a_batch_but_never_starves_a_long_input() {
        let queue = BatchQueue::new(limits(64, 20));
        let _rx = queue.submit(vec![input(30, 1), input(4, 2), input(4, 3)]);
        let first = answer(&queue);
        assert_eq!(first, vec![(1, 30)], "a lone over-budget input runs alone");
        let second = answer(&queue);
        assert_eq!(second.len(), 2);
    }

    #[test]
    fn inputs_much_shorter_than_the_longest_wait_for_a_batch_of_their_own() {
        let queue = BatchQueue::new(BatchLimits {
            max_padding: 0.25,
            ..limits(64, 10_000)
        });
        let _rx = queue.submit(vec![input(40, 1), input(38, 2), input(5, 3), input(4, 4)]);
        let first = answer(&queue);
        assert_eq!(first, vec![(1, 40), (2, 38)]);
        let second = answer(&queue);
        assert_eq!(second, vec![(3, 5), (4, 4)]);
    }

    #[test]
    fn a_failed_batch_fails_its_requests_and_spares_the_others() {
        let queue = BatchQueue::new(limits(1, 1_000));
        let mut doomed = queue.submit(vec![input(2, 1), input(2, 1)]);
        let mut fine = queue.submit(vec![input(2, 2)]);
        let batch = queue.next_batch().expect("a batch");
        queue.finish(batch, Err("boom".to_string()));
        assert_eq!(
            doomed.try_recv().expect("answered"),
            Err("boom".to_string())
        );
        assert_eq!(answer(&queue), vec![(2, 2)]);
        assert_eq!(fine.try_recv().expect("answered"), Ok(vec![vec![2.0, 2.0]]));
    }

    #[test]
    fn an_abandoned_request_is_not_computed() {
        let queue = BatchQueue::new(limits(8, 1_000));
        drop(queue.submit(vec![input(2, 1)]));
        let _kept = queue.submit(vec![input(2, 2)]);
        assert_eq!(answer(&queue), vec![(2, 2)]);
    }

    #[test]
    fn closing_refuses_new_and_queued_requests() {
        let queue = BatchQueue::new(limits(8, 1_000));
        let mut queued = queue.submit(vec![input(2, 1)]);
        queue.close();
        assert!(queued.try_recv().expect("answered").is_err());
        let mut late = queue.submit(vec![input(2, 1)]);
        assert!(late.try_recv().expect("answered").is_err());
        assert!(queue.next_batch().is_none());
    }
}
