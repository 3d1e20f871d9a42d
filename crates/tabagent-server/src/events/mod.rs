//! Events out through Redis Streams (`[events]`): memory writes, ingestion and chat turns are
//! written to the [`outbox`] as they are acknowledged, and a [`publisher`] sends them on to
//! `<prefix>:memory`, `<prefix>:ingestion` and `<prefix>:chat` (bounded with `MAXLEN ~`) whenever
//! Redis can be reached. Work in: [`jobs`] takes ingestion jobs from `<prefix>:ingest-jobs` in a
//! consumer group, acknowledging each once its result is published.

pub mod chat;
pub mod jobs;
pub mod outbox;
pub mod publisher;

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Value};
use tabagent_memory::Outcome;

use crate::config::{Config, EventsSettings};

/// The streams tabagent publishes to, as suffixes of `events.stream_prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Records written to or deleted from the memory.
    Memory,
    /// Documents read, removed or refused; ingestion jobs' results.
    Ingestion,
    /// Chat turns answered.
    Chat,
}

impl Stream {
    /// Its suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Stream::Memory => "memory",
            Stream::Ingestion => "ingestion",
            Stream::Chat => "chat",
        }
    }
}

/// The events of this process: cheap to clone; every clone writes to the same outbox.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: outbox::Outbox,
    settings: EventsSettings,
    /// Told when an event is kept, so the publisher sends it at once.
    kept: tokio::sync::Notify,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("prefix", &self.inner.settings.stream_prefix)
            .finish()
    }
}

impl Events {
    /// The events `config` asks for: none unless `events.redis_url` is set. The outbox is
    /// `<data_dir>/events.sqlite`.
    pub fn open(config: &Config) -> anyhow::Result<Option<Events>> {
        let settings = &config.events;
        if settings.redis_url.is_none() {
            return Ok(None);
        }
        let dir = &config.storage.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let path = dir.join("events.sqlite");
        let outbox = outbox::Outbox::open(&path, settings.outbox_max)
            .with_context(|| format!("cannot open the events outbox {}", path.display()))?;
        Ok(Some(Events {
            inner: Arc::new(Inner {
                outbox,
                settings: settings.clone(),
                kept: tokio::sync::Notify::new(),
                dropped: AtomicU64::new(0),
            }),
        }))
    }

    /// The `[events]` settings.
    pub fn settings(&self) -> &EventsSettings {
        &self.inner.settings
    }

    /// Events not yet in Redis.
    pub fn waiting(&self) -> u64 {
        self.inner.outbox.waiting().unwrap_or(0)
    }

    /// Tells of what the librarian did (a document read, removed or refused; the folders
    /// scanned). Kept at once, on this thread: one small write per document.
    pub fn library_event(&self, event: &crate::librarian::LibraryEvent) {
        use crate::librarian::LibraryEvent;
        let kind = match event {
            LibraryEvent::Ingested { .. } => "document.ingested",
            LibraryEvent::Removed { .. } => "document.removed",
            LibraryEvent::Failed { .. } => "document.failed",
            LibraryEvent::Scanned => "library.scanned",
            LibraryEvent::Status { .. } | LibraryEvent::Lagged { .. } => return,
        };
        let data = serde_json::to_value(event).unwrap_or(Value::Null);
        self.keep(Stream::Ingestion, kind, data);
    }

    /// Keeps an event for `stream`; it is in the outbox when this returns. An outbox that
    /// cannot be written is logged, never the caller's failure: the write it tells of is done.
    pub async fn publish(&self, stream: Stream, kind: &'static str, data: Value) {
        let events = self.clone();
        // The outbox's write waits for the disk: not on the async threads.
        let kept = tokio::task::spawn_blocking(move || events.keep(stream, kind, data)).await;
        if let Err(e) = kept {
            tracing::error!(error = %e, kind, "events: cannot keep an event");
        }
    }

    /// [`Events::publish`] on this thread.
    fn keep(&self, stream: Stream, kind: &'static str, data: Value) {
        let time_ms = tabagent_memory::now_ms();
        let kept = self
            .inner
            .outbox
            .push(stream.suffix(), kind, &data.to_string(), time_ms);
        match kept {
            Ok(0) => {}
            Ok(dropped) => {
                let total = self.inner.dropped.fetch_add(dropped, Ordering::Relaxed) + dropped;
                // Once per thousand: the log is not flooded while Redis stays away.
                if total % 1_000 < dropped {
                    tracing::warn!(
                        dropped = total,
                        "events: Redis has been unreachable for long; the oldest events were dropped (events.outbox_max)"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, kind, "events: cannot keep an event"),
        }
        self.inner.kept.notify_one();
    }

    /// Tells of a memory write: what each change did (ids, stores, keys; not the text, which a
    /// consumer reads through the API if it needs it).
    pub async fn memory_written(&self, outcomes: &[Outcome]) {
        let changes: Vec<Value> = outcomes.iter().filter_map(describe).collect();
        if !changes.is_empty() {
            self.publish(
                Stream::Memory,
                "memory.write",
                json!({ "changes": changes }),
            )
            .await;
        }
    }

    pub(crate) fn outbox(&self) -> &outbox::Outbox {
        &self.inner.outbox
    }

    pub(crate) async fn next_kept(&self) {
        self.inner.kept.notified().await;
    }
}

/// A memory change as an event tells it.
fn describe(outcome: &Outcome) -> Option<Value> {
    Some(match outcome {
        Outcome::Inserted { record } => json!({
            "op": "insert",
            "id": record.id,
            "store": record.store.name(),
            "kind": record.kind,
            "key": record.key,
            "conversation": record.conversation,
            "source": record.source,
        }),
        Outcome::Deleted { id } => json!({"op": "delete", "id": id}),
        Outcome::Entity { entity } => json!({"op": "entity", "id": entity.id, "name": entity.name}),
        Outcome::Related { relation } => json!({
            "op": "relate",
            "id": relation.id,
            "subject": relation.subject,
            "relation": relation.relation,
            "object": relation.object,
        }),
        Outcome::Unrelated { id } => json!({"op": "unrelate", "id": id}),
        Outcome::Merged { merge } => {
            json!({"op": "merge", "kept": merge.kept, "merged": merge.merged})
        }
        Outcome::SpaceDefined { .. } => return None,
    })
}

/// Tries against Redis while it is away: the wait between them doubles from 100 ms to 3 s, and
/// an outage is logged when it starts and when it ends, not at every try.
struct Outage {
    wait: Duration,
    down: bool,
}

impl Outage {
    const FIRST_WAIT: Duration = Duration::from_millis(100);
    const MAX_WAIT: Duration = Duration::from_secs(3);

    fn new() -> Self {
        Self {
            wait: Self::FIRST_WAIT,
            down: false,
        }
    }

    /// A try failed: says so if it is the first of an outage, then waits before the next.
    async fn failed(&mut self, error: &redis::RedisError, what: &str) {
        if !self.down {
            tracing::warn!(error = %error, "events: Redis cannot be reached; {what}");
            self.down = true;
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Self::MAX_WAIT);
    }

    /// A try worked: an outage, if there was one, is over.
    fn ended(&mut self, what: &str) {
        if self.down {
            tracing::info!("events: Redis is back; {what}");
            self.down = false;
        }
        self.wait = Self::FIRST_WAIT;
    }
}
