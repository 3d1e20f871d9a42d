//! Ingestion jobs from other processes: entries of `<prefix>:ingest-jobs` with a `path` field
//! naming a file inside `librarian.folders`, read in the consumer group `events.consumer_group`
//! as `events.consumer`. Each job's result (`job.done` with the document, or `job.failed` with
//! why) goes to `<prefix>:ingestion` with the job's entry id, through the outbox, before the job
//! is acknowledged: a crash in between runs the job again (an unchanged file costs nothing),
//! and no result is lost. Jobs left pending by an earlier run of this consumer are done first.

use std::time::Duration;

use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Value};
use serde_json::json;

use super::{Events, Stream};
use crate::librarian::LibraryEvent;
use crate::state::{AppState, WeakAppState};

/// How long one read waits for a job before asking again.
const BLOCK: Duration = Duration::from_secs(5);

/// Starts taking jobs, when `events.jobs` is on and the memory is.
pub fn start(events: Events, state: &AppState) {
    let settings = events.settings();
    let Some(url) = settings.redis_url.clone() else {
        return;
    };
    if !settings.jobs || state.memory().is_none() {
        return;
    }
    let Ok(client) = redis::Client::open(url.expose()) else {
        return;
    };
    let consumer = settings.consumer.clone().unwrap_or_else(host_name);
    let stream = format!("{}:ingest-jobs", settings.stream_prefix);
    tracing::info!(%stream, group = %settings.consumer_group, %consumer, "events: taking ingestion jobs");
    let reader = Reader {
        events,
        state: state.downgrade(),
        client,
        stream,
        consumer,
    };
    tokio::spawn(reader.run());
}

/// The host's name (consumers on different machines get different names), else `tabagent`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        .unwrap_or_else(|| "tabagent".to_string())
}

struct Reader {
    events: Events,
    state: WeakAppState,
    client: redis::Client,
    stream: String,
    consumer: String,
}

impl Reader {
    async fn run(self) {
        let mut outage = super::Outage::new();
        loop {
            match self.serve(&mut outage).await {
                Ok(()) => return,
                Err(e) => outage.failed(&e, "ingestion jobs wait in Redis").await,
            }
        }
    }

    /// Reads and does jobs until Redis fails (an error) or the server stops (`Ok`).
    async fn serve(&self, outage: &mut super::Outage) -> redis::RedisResult<()> {
        // A blocking read must not time out on the client's side.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(None);
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let group = &self.events.settings().consumer_group;
        // From the stream's start: jobs sent before tabagent first ran are done too.
        let created: redis::RedisResult<()> = connection
            .xgroup_create_mkstream(&self.stream, group, "0")
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(e);
            }
        }
        outage.ended("taking ingestion jobs again");
        // First this consumer's jobs left pending by a crash, then new ones.
        let mut pending = true;
        loop {
            let options = StreamReadOptions::default()
                .group(group, &self.consumer)
                .count(8);
            let (options, from) = match pending {
                true => (options, "0"),
                false => (options.block(BLOCK.as_millis() as usize), ">"),
            };
            let reply: Option<StreamReadReply> = connection
                .xread_options(&[&self.stream], &[from], &options)
                .await?;
            let jobs: Vec<StreamId> = reply
                .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
                .unwrap_or_default();
            if pending && jobs.is_empty() {
                pending = false;
                continue;
            }
            for job in jobs {
                let Some(state) = self.state.upgrade() else {
                    return Ok(());
                };
                self.run_job(&state, &job).await;
                let _: () = connection.xack(&self.stream, group, &[&job.id]).await?;
            }
        }
    }

    /// Does one job and keeps its result in the outbox.
    async fn run_job(&self, state: &AppState, job: &StreamId) {
        let path = match job.map.get("path") {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
            Some(Value::SimpleString(text)) => Some(text.clone()),
            _ => None,
        };
        let result = match &path {
            None => Err("a job needs a `path` field (a file inside librarian.folders)".to_string()),
            Some(path) => self.ingest(state, path).await,
        };
        let (kind, data) = match result {
            Ok(event) => (
                "job.done",
                json!({"job": job.id, "path": path, "result": event}),
            ),
            Err(error) => {
                tracing::warn!(job = %job.id, path = ?path, %error, "events: ingestion job failed");
                (
                    "job.failed",
                    json!({"job": job.id, "path": path, "error": error}),
                )
            }
        };
        self.events.publish(Stream::Ingestion, kind, data).await;
    }

    async fn ingest(&self, state: &AppState, path: &str) -> Result<LibraryEvent, String> {
        let settings = &state.config().librarian;
        let file = crate::librarian::file_in_folders(settings, path).map_err(str::to_string)?;
        let shelf = state.librarian().await.map_err(|e| e.to_string())?;
        let (document, outcome) = shelf.ingest_file(&file).await.map_err(|e| e.to_string())?;
        let event = LibraryEvent::Ingested {
            path: Some(file.display().to_string()),
            outcome,
            document,
        };
        state.library_event(event.clone());
        Ok(event)
    }
}
