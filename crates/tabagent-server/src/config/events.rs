//! `[events]`: what tabagent publishes to Redis Streams for other services (memory writes,
//! ingestion, chat turns) and the ingestion jobs it takes from them.

use serde::{Deserialize, Serialize};
use tabagent_core::SecretUrl;

/// Events out and work in through Redis Streams; off unless `redis_url` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    /// The Redis to publish to (`redis://host:6379/0`); unset: no events.
    pub redis_url: Option<SecretUrl>,
    /// Streams are named `<prefix>:memory`, `<prefix>:ingestion`, `<prefix>:chat`, and jobs are
    /// taken from `<prefix>:ingest-jobs`.
    pub stream_prefix: String,
    /// About how many entries each stream keeps (`XADD … MAXLEN ~`): the oldest go first.
    pub max_len: u64,
    /// Take ingestion jobs (`path` fields naming files inside `librarian.folders`) from
    /// `<prefix>:ingest-jobs`.
    pub jobs: bool,
    /// The consumer group tabagent reads jobs in.
    pub consumer_group: String,
    /// This server's name in that group; unset: the host's name. Servers sharing a Redis need
    /// different names.
    pub consumer: Option<String>,
    /// Whether chat turn events carry the messages' text (else only the model, sizes and
    /// conversation).
    pub chat_text: bool,
    /// The most events kept while Redis cannot be reached; beyond it the oldest are dropped
    /// (and counted in the log).
    pub outbox_max: u64,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            stream_prefix: "tabagent".to_string(),
            max_len: 100_000,
            jobs: true,
            consumer_group: "tabagent".to_string(),
            consumer: None,
            chat_text: true,
            outbox_max: 1_000_000,
        }
    }
}

impl EventsSettings {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.expose()).map_err(|e| {
                anyhow::anyhow!(
                    "events.redis_url `{}` is not a Redis URL: {e}",
                    url.redacted()
                )
            })?;
        }
        let name_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        };
        if !name_ok(&self.stream_prefix) || !name_ok(&self.consumer_group) {
            anyhow::bail!(
                "events.stream_prefix and events.consumer_group must be 1 to 64 letters, digits or `-_.:`"
            );
        }
        if self.consumer.as_deref().is_some_and(|name| !name_ok(name)) {
            anyhow::bail!("events.consumer must be 1 to 64 letters, digits or `-_.:`");
        }
        if self.max_len < 100 || self.outbox_max < 1_000 {
            anyhow::bail!(
                "events.max_len must be at least 100 and events.outbox_max at least 1000"
            );
        }
        Ok(())
    }
}
