//! The response cache: a deterministic request (temperature 0, or a fixed seed) asked again
//! gets the answer it got before, without generating. Benchmark requests (`ignore_eos`) are
//! never cached: they ask for the work, not the answer.
//!
//! Entries live in process memory (an LRU bounded by entries, each with a TTL) and, when
//! `redis_url` is set, in Redis too, shared by every server using it: compressed with LZ4,
//! expired by Redis. Redis is an accelerator, never a dependency: an operation that fails or
//! takes longer than `redis_timeout_ms` is skipped, Redis is left alone for a second, and
//! requests carry on with the in-memory cache.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tabagent_core::{ChatMessage, FinishReason, GenerationParams, Usage};

use crate::config::ConfigError;

/// `[response_cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether deterministic requests are cached at all.
    pub enabled: bool,
    /// Seconds an answer is kept.
    pub ttl_secs: u64,
    /// Answers kept in process memory.
    pub max_entries: usize,
    /// Share the cache through this Redis (`redis://host:6379/0`).
    pub redis_url: Option<tabagent_core::SecretUrl>,
    /// Milliseconds a Redis operation may take before it is skipped.
    pub redis_timeout_ms: u64,
    /// Also answer a request whose last user message means nearly the same as a cached
    /// one's, with the same model, settings and earlier messages (off by default).
    pub semantic: bool,
    /// Cosine similarity from which two questions count as the same.
    pub semantic_threshold: f32,
    /// The embedding model for it (default: `memory.embedding_model`).
    pub semantic_model: Option<String>,
    /// Seconds a session lives after its last change.
    pub session_ttl_secs: u64,
    /// Messages a session keeps (the oldest go first).
    pub session_max_messages: usize,
    /// Bytes a session may hold (its messages' text and its data as JSON); past it the oldest
    /// messages go first, and a `PUT` of a larger session is refused.
    pub session_max_bytes: usize,
    /// Sessions kept in process memory.
    pub max_sessions: usize,
    /// Bytes all sessions kept in process memory may hold together; past it the least
    /// recently used go first.
    pub sessions_max_total_bytes: usize,
    /// Bytes one caller's sessions may hold together; past it that caller's least recently
    /// used go first (so one caller cannot push out everyone else's).
    pub session_max_bytes_per_caller: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 3600,
            max_entries: 10_000,
            redis_url: None,
            redis_timeout_ms: 250,
            semantic: false,
            semantic_threshold: 0.95,
            semantic_model: None,
            session_ttl_secs: 86_400,
            session_max_messages: 200,
            session_max_bytes: 1 << 20,
            max_sessions: 10_000,
            sessions_max_total_bytes: 256 << 20,
            session_max_bytes_per_caller: 32 << 20,
        }
    }
}

/// A session: a conversation the server keeps for a client that sends only its new turns
/// (`X-TabAgent-Session`), and any state the client keeps with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The turns so far, oldest first.
    #[serde(default)]
    pub messages: Vec<SessionMessage>,
    /// The client's own state.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// One turn of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

/// The bytes a session holds: its messages' roles and text, and its data as JSON.
pub fn session_bytes(session: &Session) -> usize {
    let data = match &session.data {
        serde_json::Value::Null => 0,
        data => serde_json::to_vec(data).map_or(usize::MAX, |v| v.len()),
    };
    session
        .messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .fold(data, usize::saturating_add)
}

fn session_key(id: &str) -> String {
    format!("tabagent:session:v1:{id}")
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// All its text.
    pub text: String,
    /// `stop` or `length`.
    pub reason: String,
    /// Prompt tokens when it was generated.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
}

impl CachedAnswer {
    /// The answer of a finished generation.
    pub fn new(text: String, reason: FinishReason, usage: Usage) -> Self {
        Self {
            text,
            reason: reason.as_str().to_string(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }

    /// Why it ended.
    pub fn finish_reason(&self) -> FinishReason {
        FinishReason::parse(&self.reason)
    }

    /// Its token counts.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            timings: None,
        }
    }
}

/// How the cache has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not.
    pub misses: u64,
    /// Redis operations skipped because Redis failed or was slow.
    pub redis_errors: u64,
}

/// Values at least this long are compressed.
const COMPRESS_FROM: usize = 512;
/// How long Redis is left alone after it failed.
const REDIS_PAUSE: Duration = Duration::from_secs(1);

struct Redis {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    timeout: Duration,
    paused_until: Mutex<Option<Instant>>,
}

/// The response cache.
pub struct ResponseCache {
    config: CacheConfig,
    /// Sessions: when each expires, and whether it was written while Redis was away (then
    /// this copy is newer than Redis's, and is written back once Redis answers).
    sessions: Mutex<crate::session_table::SessionTable>,
    semantic: crate::semantic::SemanticCache,
    memory: Mutex<lru::LruCache<String, (Instant, CachedAnswer)>>,
    redis: Option<Redis>,
    hits: AtomicU64,
    misses: AtomicU64,
    redis_errors: AtomicU64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A cache as `config` says (Redis is connected lazily, on first use).
    pub fn new(config: CacheConfig) -> Result<Self, ConfigError> {
        let entries = NonZeroUsize::new(config.max_entries).ok_or_else(|| {
            ConfigError("response_cache.max_entries must be at least 1".to_string())
        })?;
        if config.semantic && !(0.5..=1.0).contains(&config.semantic_threshold) {
            return Err(ConfigError(
                "response_cache.semantic_threshold must be between 0.5 and 1".to_string(),
            ));
        }
        let sessions = NonZeroUsize::new(config.max_sessions).ok_or_else(|| {
            ConfigError("response_cache.max_sessions must be at least 1".to_string())
        })?;
        if config.session_ttl_secs == 0
            || config.session_max_messages == 0
            || config.session_max_bytes == 0
        {
            return Err(ConfigError(
                "response_cache.session_ttl_secs, session_max_messages and session_max_bytes \
                 must be at least 1"
                    .to_string(),
            ));
        }
        if config.session_max_bytes_per_caller < config.session_max_bytes
            || config.sessions_max_total_bytes < config.session_max_bytes_per_caller
        {
            return Err(ConfigError(
                "response_cache: session_max_bytes <= session_max_bytes_per_caller <= \
                 sessions_max_total_bytes must hold"
                    .to_string(),
            ));
        }
        if config.ttl_secs == 0 {
            return Err(ConfigError(
                "response_cache.ttl_secs must be at least 1".to_string(),
            ));
        }
        let redis = match &config.redis_url {
            Some(url) => Some(Redis {
                client: redis::Client::open(url.expose()).map_err(|e| {
                    ConfigError(format!("response_cache.redis_url is not a Redis URL: {e}"))
                })?,
                connection: tokio::sync::Mutex::new(None),
                timeout: Duration::from_millis(config.redis_timeout_ms.max(1)),
                paused_until: Mutex::new(None),
            }),
            None => None,
        };
        Ok(Self {
            sessions: Mutex::new(crate::session_table::SessionTable::new(
                crate::session_table::Bounds {
                    sessions,
                    total_bytes: config.sessions_max_total_bytes,
                    bytes_per_owner: config.session_max_bytes_per_caller,
                },
            )),
            semantic: crate::semantic::SemanticCache::new(
                config.max_entries,
                config.semantic_threshold,
                Duration::from_secs(config.ttl_secs),
            ),
            memory: Mutex::new(lru::LruCache::new(entries)),
            redis,
            config,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
        })
    }

    /// The key for this request, if it is deterministic and the cache is on.
    pub fn key(
        &self,
        model: &str,
        messages: &[ChatMessage],
        params: &GenerationParams,
    ) -> Option<String> {
        let deterministic = params.sampling.temperature == 0.0 || params.sampling.seed.is_some();
        if !self.config.enabled || !deterministic || params.ignore_eos {
            return None;
        }
        // Debug output covers every field of the request; the version prefix keeps keys from
        // one release from answering another's requests.
        let digest = Sha256::digest(format!("{model}\u{0}{messages:?}\u{0}{params:?}"));
        Some(format!("tabagent:answer:v1:{}", hex(&digest)))
    }

    /// For a request the semantic cache may answer: its scope (everything but the question)
    /// and the question (the last user message) to embed.
    pub fn semantic_query(
        &self,
        model: &str,
        messages: &[ChatMessage],
        params: &GenerationParams,
    ) -> Option<crate::semantic::SemanticQuery> {
        if !self.config.semantic {
            return None;
        }
        self.key(model, messages, params)?;
        let (last, earlier) = messages.split_last()?;
        if last.role != tabagent_core::Role::User || last.content.trim().is_empty() {
            return None;
        }
        let scope = Sha256::digest(format!("{model}\u{0}{earlier:?}\u{0}{params:?}"));
        Some(crate::semantic::SemanticQuery {
            scope: scope.into(),
            question: last.content.clone(),
        })
    }

    /// The semantic cache (in process memory only).
    pub fn semantic(&self) -> &crate::semantic::SemanticCache {
        &self.semantic
    }

    /// The cached answer for `key`, if any.
    pub async fn get(&self, key: &str) -> Option<CachedAnswer> {
        let now = Instant::now();
        let found = {
            let mut memory = lock(&self.memory);
            match memory.get(key) {
                Some((expires, answer)) if *expires > now => Some(answer.clone()),
                Some(_) => {
                    memory.pop(key);
                    None
                }
                None => None,
            }
        };
        let found = match found {
            Some(answer) => Some(answer),
            None => match self.redis_get::<CachedAnswer>(key).await {
                Some(answer) => {
                    self.remember(key, &answer);
                    Some(answer)
                }
                None => None,
            },
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `answer` for `key`.
    pub async fn put(&self, key: &str, answer: &CachedAnswer) {
        self.remember(key, answer);
        self.redis_put(key, answer, self.config.ttl_secs).await;
    }

    /// Hits, misses and Redis errors so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            redis_errors: self.redis_errors.load(Ordering::Relaxed),
        }
    }

    fn remember(&self, key: &str, answer: &CachedAnswer) {
        let expires = Instant::now() + Duration::from_secs(self.config.ttl_secs);
        lock(&self.memory).put(key.to_string(), (expires, answer.clone()));
    }

    async fn redis_get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.redis_lookup(key).await.flatten()
    }

    /// What Redis holds at `key`: `None` when Redis is not configured or not answering,
    /// `Some(None)` when it answered that there is nothing there.
    async fn redis_lookup<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<Option<T>> {
        let redis = self.redis.as_ref()?;
        let bytes: Option<Vec<u8>> = self
            .with_redis(redis, |mut conn| {
                let key = key.to_string();
                async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }
            })
            .await?;
        Some(bytes.and_then(|b| decode(&b)))
    }

    /// Stores `value` at `key` in Redis; whether Redis has it now (`true` without Redis).
    async fn redis_put<T: Serialize>(&self, key: &str, value: &T, ttl: u64) -> bool {
        let Some(redis) = self.redis.as_ref() else {
            return true;
        };
        let Some(value) = encode(value) else {
            return false;
        };
        let stored: Option<()> = self
            .with_redis(redis, |mut conn| {
                let key = key.to_string();
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(ttl)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await;
        stored.is_some()
    }

    async fn redis_delete(&self, key: &str) {
        let Some(redis) = self.redis.as_ref() else {
            return;
        };
        let _: Option<()> = self
            .with_redis(redis, |mut conn| {
                let key = key.to_string();
                async move { redis::cmd("DEL").arg(key).query_async(&mut conn).await }
            })
            .await;
    }

    /// Session `id`, if it exists. With Redis configured, Redis's answer is the truth (servers
    /// share sessions: one another server ended is gone here too), except for a copy written
    /// here while Redis was away, which is newer and is written back; process memory answers
    /// alone only while Redis does not.
    pub async fn session(&self, id: &str) -> Option<Session> {
        let key = session_key(id);
        let now = Instant::now();
        let local = {
            let mut sessions = lock(&self.sessions);
            match sessions.get_mut(&key) {
                Some(entry) if entry.expires > now => Some((entry.session.clone(), entry.unsynced)),
                Some(_) => {
                    sessions.pop(&key);
                    None
                }
                None => None,
            }
        };
        if self.redis.is_none() {
            return local.map(|(session, _)| session);
        }
        if let Some((session, true)) = &local {
            if self
                .redis_put(&key, session, self.config.session_ttl_secs)
                .await
            {
                if let Some(entry) = lock(&self.sessions).get_mut(&key) {
                    entry.unsynced = false;
                }
            }
            return Some(session.clone());
        }
        match self.redis_lookup::<Session>(&key).await {
            Some(answer) => {
                if answer.is_none() {
                    lock(&self.sessions).pop(&key);
                }
                answer
            }
            None => local.map(|(session, _)| session),
        }
    }

    /// Replaces session `id` (its TTL starts again), keeping its last `session_max_messages`
    /// messages, and of those as many of the latest as fit in `session_max_bytes`; what it kept.
    pub async fn put_session(&self, id: &str, mut session: Session) -> Session {
        let excess = session
            .messages
            .len()
            .saturating_sub(self.config.session_max_messages);
        session.messages.drain(..excess);
        let mut bytes = session_bytes(&session);
        let mut dropped = 0;
        for m in &session.messages {
            if bytes <= self.config.session_max_bytes {
                break;
            }
            bytes -= m.role.len() + m.content.len();
            dropped += 1;
        }
        session.messages.drain(..dropped);
        let key = session_key(id);
        let expires = Instant::now() + Duration::from_secs(self.config.session_ttl_secs);
        lock(&self.sessions).put(key.clone(), expires, session.clone(), true);
        if self
            .redis_put(&key, &session, self.config.session_ttl_secs)
            .await
        {
            if let Some(entry) = lock(&self.sessions).get_mut(&key) {
                entry.unsynced = false;
            }
        }
        session
    }

    /// Removes session `id`; whether it existed.
    pub async fn delete_session(&self, id: &str) -> bool {
        let existed = self.session(id).await.is_some();
        let key = session_key(id);
        lock(&self.sessions).pop(&key);
        self.redis_delete(&key).await;
        existed
    }

    /// Runs `op` on a Redis connection within the timeout; `None` when Redis is paused, fails
    /// or is slow (then it is paused).
    async fn with_redis<T, F, Fut>(&self, redis: &Redis, op: F) -> Option<T>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if lock(&redis.paused_until).is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let attempt = async {
            let conn = {
                let mut slot = redis.connection.lock().await;
                match slot.as_ref() {
                    Some(conn) => conn.clone(),
                    None => {
                        let conn = redis.client.get_multiplexed_async_connection().await?;
                        *slot = Some(conn.clone());
                        conn
                    }
                }
            };
            op(conn).await
        };
        match tokio::time::timeout(redis.timeout, attempt).await {
            Ok(Ok(value)) => Some(value),
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", redis.timeout.as_millis()),
                };
                if self.redis_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %why, "Redis cache unavailable; using the in-memory cache");
                }
                *lock(&redis.paused_until) = Some(Instant::now() + REDIS_PAUSE);
                // A broken connection is replaced on the next try.
                if let Ok(mut slot) = redis.connection.try_lock() {
                    *slot = None;
                }
                None
            }
        }
    }
}

/// JSON, LZ4-compressed when long; the first byte says which.
fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(value).ok()?;
    if json.len() < COMPRESS_FROM {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(b'j');
        out.extend_from_slice(&json);
        return Some(out);
    }
    let mut out = vec![b'l'];
    out.extend_from_slice(&lz4_flex::compress_prepend_size(&json));
    Some(out)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let (tag, body) = bytes.split_first()?;
    match tag {
        b'j' => serde_json::from_slice(body).ok(),
        b'l' => serde_json::from_slice(&lz4_flex::decompress_size_prepended(body).ok()?).ok(),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, seed: Option<u32>) -> GenerationParams {
        let mut p = GenerationParams::default();
        p.sampling.temperature = temperature;
        p.sampling.seed = seed;
        p
    }

    #[test]
    fn only_deterministic_requests_have_keys_and_every_field_counts() {
        let cache = ResponseCache::new(CacheConfig::default()).unwrap();
        let m = |c: &str| vec![ChatMessage::new(tabagent_core::Role::User, c)];
        assert!(cache.key("x", &m("hi"), &params(0.7, None)).is_none());
        let a = cache.key("x", &m("hi"), &params(0.0, None)).unwrap();
        assert_eq!(
            Some(a.clone()),
            cache.key("x", &m("hi"), &params(0.0, None))
        );
        assert_ne!(
            Some(a.clone()),
            cache.key("y", &m("hi"), &params(0.0, None))
        );
        assert_ne!(
            Some(a.clone()),
            cache.key("x", &m("hi!"), &params(0.0, None))
        );
        assert!(cache.key("x", &m("hi"), &params(0.7, Some(3))).is_some());
        let mut bench = params(0.0, Some(42));
        bench.ignore_eos = true;
        assert!(cache.key("x", &m("hi"), &bench).is_none());
        let off = ResponseCache::new(CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        })
        .unwrap();
        assert!(off.key("x", &m("hi"), &params(0.0, None)).is_none());
    }

    #[test]
    fn long_answers_are_compressed_and_all_round_trip() {
        for text in ["short".to_string(), "long answer ".repeat(200)] {
            let answer = CachedAnswer {
                text,
                reason: "length".into(),
                prompt_tokens: 3,
                completion_tokens: 9,
            };
            let bytes = encode(&answer).unwrap();
            assert_eq!(bytes[0], if answer.text.len() > 100 { b'l' } else { b'j' });
            if bytes[0] == b'l' {
                assert!(bytes.len() < answer.text.len() / 4, "{}", bytes.len());
            }
            assert_eq!(decode(&bytes), Some(answer));
        }
        assert_eq!(decode::<CachedAnswer>(b"x{}"), None);
        assert_eq!(decode::<CachedAnswer>(b""), None);
    }

    #[tokio::test]
    async fn entries_are_found_until_they_expire_and_the_oldest_unused_go_first() {
        let cache = ResponseCache::new(CacheConfig {
            max_entries: 2,
            ..CacheConfig::default()
        })
        .unwrap();
        let answer = |t: &str| CachedAnswer::new(t.into(), FinishReason::Stop, Usage::default());
        cache.put("a", &answer("A")).await;
        cache.put("b", &answer("B")).await;
        assert_eq!(cache.get("a").await.map(|a| a.text), Some("A".into()));
        cache.put("c", &answer("C")).await;
        assert_eq!(cache.get("b").await, None, "b was the least recently used");
        assert!(cache.get("a").await.is_some() && cache.get("c").await.is_some());
        // Expired entries are not answered.
        lock(&cache.memory).put("a".into(), (Instant::now(), answer("old")));
        assert_eq!(cache.get("a").await, None);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 3,
                misses: 2,
                redis_errors: 0
            }
        );
    }
}
