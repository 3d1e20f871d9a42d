//! The one typed configuration: embedded defaults → `tabagent.toml` → `TABAGENT_*` env → flags.
//!
//! Environment variables address nested keys with a double underscore, e.g.
//! `TABAGENT_SERVER__PORT=9000` or `TABAGENT_LLAMA__PARALLEL=8`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod agent;
mod events;
mod librarian;
mod surprise;
pub use agent::AgentSettings;
pub use events::EventsSettings;
pub use librarian::LibrarianSettings;
pub use surprise::SurpriseSettings;

/// Everything tabagent can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP listener and its guards.
    pub server: ServerConfig,
    /// Where state lives.
    pub storage: StorageConfig,
    /// Which models to serve.
    pub models: ModelsConfig,
    /// How llama.cpp runs models.
    pub llama: LlamaConfig,
    /// How ONNX Runtime runs encoders and ONNX models.
    pub onnx: OnnxConfig,
    /// Where models are downloaded from and kept.
    pub hub: HubSettings,
    /// The memory stores.
    pub memory: MemorySettings,
    /// Remote engines, aliases and routes.
    pub router: tabagent_router::RouterConfig,
    /// The response cache for deterministic requests.
    pub response_cache: tabagent_router::CacheConfig,
    /// Priorities, fair queuing, concurrency limits, per-key rate limits and token budgets.
    pub scheduler: tabagent_router::SchedulerConfig,
    /// The Python ML worker (MediaPipe vision, Whisper speech, Transformers).
    pub worker: WorkerSettings,
    /// Chrome native messaging (`tabagent native`).
    pub native: NativeSettings,
    /// WebRTC sessions (`/v1/webrtc`).
    pub webrtc: WebRtcSettings,
    /// Server-side tools for agents (`/v1/responses`).
    pub agent: AgentSettings,
    /// Documents in the memory (`/v1/documents`, `tabagent ingest`, followed folders).
    pub librarian: LibrarianSettings,
    /// Events out and ingestion jobs in through Redis Streams.
    pub events: EventsSettings,
    /// Logging.
    pub log: LogConfig,
}

/// When the Python ML worker runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    /// Run it when its environment is ready (`tabagent worker setup` made it).
    #[default]
    Auto,
    /// Run it, making its environment at start when needed (pip: minutes the first time).
    On,
    /// Never run it: its endpoints answer 503.
    Off,
}

/// The Python ML worker (`[worker]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// `auto`, `on` or `off`.
    pub mode: WorkerMode,
    /// The Python (3.10 or newer) that makes the worker's venv.
    pub python: PathBuf,
    /// Where its venv and sources live (default `<data_dir>/worker`).
    pub dir: Option<PathBuf>,
    /// Calls it serves at once.
    pub threads: u32,
    /// The MediaPipe model: a directory of task files, by the id `models.directories`, the
    /// worker model directory (`<data_dir>/worker-models/<id>`) or the Hugging Face cache
    /// (`owner/name`) knows it by.
    pub vision_model: String,
    /// The Whisper model (CTranslate2 form), found the same way.
    pub speech_model: String,
    /// Seconds it may take to start before it is killed and started again.
    pub start_timeout_secs: u64,
    /// Seconds a request waits for a worker that is starting or restarting.
    pub call_wait_secs: u64,
    /// Install PyTorch and Transformers into its venv too (about 2.5 GB): sentence-transformers
    /// embeddings and text generation with safetensors models.
    pub transformers: bool,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            mode: WorkerMode::Auto,
            python: PathBuf::from("python3"),
            dir: None,
            threads: 4,
            vision_model: "mediapipe".to_string(),
            speech_model: "whisper-tiny.en".to_string(),
            start_timeout_secs: 120,
            call_wait_secs: 30,
            transformers: false,
        }
    }
}

impl WorkerSettings {
    /// The worker's environment directory.
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("worker"))
    }
}

/// WebRTC sessions (`[webrtc]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcSettings {
    /// The address sessions' UDP sockets bind to and announce. Unset: `server.host` when it is
    /// one address; for `0.0.0.0`/`::`, the address of the default route.
    pub ip: Option<String>,
    /// Seconds a session may take to connect after its offer.
    pub connect_timeout_secs: u64,
    /// Seconds a connected session may go without a message or a video frame.
    pub idle_timeout_secs: u64,
    /// Sessions at once.
    pub max_sessions: usize,
    /// Sessions one caller (API key) may have at once.
    pub max_sessions_per_caller: usize,
    /// The longest data-channel message accepted, in bytes.
    pub max_message_bytes: usize,
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        Self {
            ip: None,
            connect_timeout_secs: 30,
            idle_timeout_secs: 300,
            max_sessions: 16,
            max_sessions_per_caller: 4,
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// Chrome native messaging (`[native]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NativeSettings {
    /// `auto`: relay to the running server if one answers at `server_url`, else serve in the
    /// host's own process; `server`: always relay; `in-process`: never.
    pub connect: NativeConnect,
    /// The server to relay to (default: `http://<server.host>:<server.port>`).
    pub server_url: Option<String>,
    /// The longest message accepted from the browser, in bytes (Chrome sends at most 64 MiB).
    pub max_message_bytes: usize,
    /// Requests one browser connection may have running at once.
    pub max_in_flight: usize,
}

/// Where the native messaging host serves requests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NativeConnect {
    Auto,
    Server,
    InProcess,
}

impl Default for NativeSettings {
    fn default() -> Self {
        Self {
            connect: NativeConnect::Auto,
            server_url: None,
            max_message_bytes: 64 * 1024 * 1024,
            max_in_flight: 64,
        }
    }
}

/// The HTTP listener and its guards.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; loopback unless told otherwise.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Bearer keys accepted; required when binding off loopback.
    pub api_keys: Vec<tabagent_core::Secret>,
    /// Extra Host header names accepted (DNS-rebinding guard); `"*"` accepts any.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed cross-origin, e.g. `chrome-extension://<id>`.
    pub cors_origins: Vec<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Connections open at once; one beyond is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// Seconds a request's headers may take to arrive (on a kept-alive connection, counted
    /// from the end of the previous answer): a connection that sends no complete request in
    /// this time is closed.
    pub header_timeout_secs: u64,
    /// Seconds a request body may pause between pieces.
    pub body_timeout_secs: u64,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("api_keys", &self.api_keys)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("cors_origins", &self.cors_origins)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("body_timeout_secs", &self.body_timeout_secs)
            .finish()
    }
}

/// The memory's embedding model unless configured otherwise: all-MiniLM-L6-v2, which
/// `scripts/setup` imports under this name. When it is not installed, the memory searches by
/// keyword (and says so at start) rather than failing.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// The memory stores (`/v1/memory`, `tabagent memory`, `tabagent db`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Serve the memory API (the database is created on first start).
    pub enabled: bool,
    /// Where the database and its vector indexes live (default `<data_dir>/memory`).
    pub dir: Option<PathBuf>,
    /// `full`: a write is on disk before it is acknowledged (survives power loss); `normal`:
    /// survives the process being killed, not a power cut, and writes faster.
    pub durability: tabagent_memory::Durability,
    /// An embedding model (as `/v1/models` names it): records written and searches made
    /// without a vector are embedded with it, and search is hybrid. Default `all-minilm-l6-v2`
    /// (keyword search when it is not installed); `""`: none, keyword search plus vectors
    /// callers send themselves.
    pub embedding_model: Option<String>,
    /// The language model that extracts entities and writes conversation summaries (as
    /// `/v1/models` names it); unset: `models.default`.
    pub llm: Option<String>,
    /// A conversation (chat requests carrying a conversation id) gets a summary in the
    /// summaries store after this many new messages; 0: never.
    pub summarize_after: u32,
    /// Use the memory served at this URL (`tabagent memory serve` elsewhere,
    /// `http://host:port`) instead of a local database.
    pub remote: Option<String>,
    /// The bearer key for `remote`.
    pub remote_api_key: Option<tabagent_core::Secret>,
    /// The CA certificate (PEM file) that signed an `https://` `remote`'s certificate; unset:
    /// the system's trusted roots.
    pub remote_ca: Option<PathBuf>,
    /// Keep the memory in this PostgreSQL database (with the pgvector extension), e.g.
    /// `postgres://tabagent:secret@db.internal:5432/tabagent`, instead of a local database:
    /// several servers can then share one memory. TLS follows libpq's `sslmode` and
    /// `sslrootcert` options in the string.
    pub postgres: Option<tabagent_core::SecretUrl>,
    /// What the memory keeps of conversations and agent runs by itself: what surprises it.
    pub surprise: SurpriseSettings,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            durability: tabagent_memory::Durability::Full,
            embedding_model: Some(DEFAULT_EMBEDDING_MODEL.to_string()),
            llm: None,
            summarize_after: 20,
            remote: None,
            remote_api_key: None,
            remote_ca: None,
            postgres: None,
            surprise: SurpriseSettings::default(),
        }
    }
}

/// Where state lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root of tabagent's data (`~/.local/share/tabagent` on Linux).
    pub data_dir: PathBuf,
}

/// Which models to serve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// The model loaded at start and used by `tabagent run` without a name.
    pub default: String,
    /// Load the default model when the server starts (readiness waits for it).
    pub preload: bool,
    /// MiB all loaded models may hold together (weights + KV cache + buffers, estimated from
    /// each GGUF header); 0: three quarters of this machine's RAM.
    pub memory_budget_mib: u64,
    /// Seconds an idle model stays loaded; negative: forever. The default model always stays.
    pub keep_alive_secs: i64,
    /// Encoder directories served in place, by the name requests use
    /// (`{ minilm = "/models/all-MiniLM-L6-v2" }`): a `tokenizer.json` beside
    /// `config.json` + `model.safetensors` or a `model.onnx`.
    pub directories: std::collections::BTreeMap<String, PathBuf>,
}

/// How ONNX Runtime runs encoders (embeddings) and ONNX models.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OnnxConfig {
    /// The ONNX Runtime shared library; unset: next to the executable, then
    /// `<data_dir>/onnxruntime/`, then `$TABAGENT_CACHE/onnxruntime/` (where scripts/setup puts
    /// the one from the onnxruntime wheel), then the system's `libonnxruntime.so`.
    pub runtime_library: Option<PathBuf>,
    /// Execution providers allowed (`cuda`, `tensorrt`, `rocm`, `migraphx`, `openvino`,
    /// `coreml`, `directml`, `onednn`, `xnnpack`, `cpu`); empty: all. They are tried in that
    /// order; the CPU takes what none of the others can.
    pub providers: Vec<String>,
    /// Threads per session inside an operator; 0: every core.
    pub intra_threads: usize,
    /// Sessions per encoder, each on its own worker (more help only with more cores).
    pub sessions: usize,
    /// Inputs per batch.
    pub max_batch_inputs: usize,
    /// Padded tokens per batch (inputs × the longest input's tokens).
    pub max_batch_tokens: usize,
    /// Milliseconds a worker waits to fill a batch while requests arrive close together.
    pub batch_wait_ms: u64,
    /// Most padding a batch may carry, as a fraction of its real tokens (shorter inputs wait
    /// for a batch of their own rather than pad to the longest).
    pub max_batch_padding: f32,
    /// Inputs one request may send (OpenAI allows 2048).
    pub max_inputs_per_request: usize,
    /// Linear weights of encoders compiled from safetensors: `float32` (the published numbers)
    /// or `int8` (per-column int8, faster where the CPU has fast int8 dot products, slightly
    /// further from the reference).
    pub precision: tabagent_onnx::Precision,
}

impl Default for OnnxConfig {
    fn default() -> Self {
        let limits = tabagent_onnx::BatchLimits::default();
        Self {
            runtime_library: None,
            providers: Vec::new(),
            intra_threads: 0,
            sessions: 1,
            max_batch_inputs: limits.max_items,
            max_batch_tokens: limits.max_tokens,
            batch_wait_ms: limits.wait.as_millis() as u64,
            max_batch_padding: limits.max_padding,
            max_inputs_per_request: 2048,
            precision: tabagent_onnx::Precision::Float32,
        }
    }
}

/// How llama.cpp runs models.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LlamaConfig {
    /// Threads for generation (default: all cores).
    pub threads: u32,
    /// Threads for prompt processing (default: all cores).
    pub threads_batch: u32,
    /// Sequences decoded together.
    pub parallel: u32,
    /// Context window per sequence, in tokens.
    pub ctx_size: u32,
    /// Most tokens per decode call.
    pub batch_size: u32,
    /// Requests that may wait for a free sequence before new ones get 503.
    pub queue_capacity: usize,
    /// Layers to offload to a GPU, when built with one.
    pub gpu_layers: u32,
}

/// Where models are downloaded from and kept. The token comes from `HF_TOKEN` only, never from
/// a file tabagent writes or prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HubSettings {
    /// The Hub's URL; empty: `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: String,
    /// The Hugging Face cache; unset: `HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Parallel connections per file.
    pub connections: usize,
    /// MiB per ranged request (the unit a resumed download keeps).
    pub chunk_mib: u64,
    /// Never touch the network (also `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Downloads the API runs at once (`/v1/models/pull`, `/api/pull`, `POST /v1/files`).
    pub max_pulls: usize,
    /// Downloads one caller (API key) may run at once.
    pub max_pulls_per_caller: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            cache_dir: None,
            connections: 8,
            chunk_mib: 32,
            offline: false,
            max_pulls: 4,
            max_pulls_per_caller: 2,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `tabagent=debug,info`.
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            storage: StorageConfig {
                data_dir: default_data_dir(),
            },
            models: ModelsConfig {
                default: "smollm2-135m-instruct".to_string(),
                preload: true,
                memory_budget_mib: 0,
                keep_alive_secs: 300,
                directories: std::collections::BTreeMap::new(),
            },
            llama: LlamaConfig::default(),
            onnx: OnnxConfig::default(),
            hub: HubSettings::default(),
            memory: MemorySettings::default(),
            router: tabagent_router::RouterConfig::default(),
            response_cache: tabagent_router::CacheConfig::default(),
            scheduler: tabagent_router::SchedulerConfig::default(),
            worker: WorkerSettings::default(),
            native: NativeSettings::default(),
            webrtc: WebRtcSettings::default(),
            agent: AgentSettings::default(),
            librarian: LibrarianSettings::default(),
            events: EventsSettings::default(),
            log: LogConfig {
                format: LogFormat::Text,
                level: "info".to_string(),
            },
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_string(),
            port: 8080,
            api_keys: Vec::new(),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 8 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_ip: 256,
            header_timeout_secs: 15,
            body_timeout_secs: 30,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Config::default().models
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Config::default().log
    }
}

impl Default for LlamaConfig {
    fn default() -> Self {
        let engine = tabagent_llama::EngineConfig::default();
        Self {
            threads: engine.threads,
            threads_batch: engine.threads_batch,
            parallel: engine.parallel,
            ctx_size: engine.ctx_per_slot,
            batch_size: engine.batch_size,
            queue_capacity: engine.queue_capacity,
            gpu_layers: engine.gpu_layers,
        }
    }
}

/// The local address of the route to the outside (a UDP socket "connected" to a public
/// address sends nothing; the kernel only picks the interface).
fn default_route_ip(family: IpAddr) -> Option<IpAddr> {
    let (bind, target): (&str, &str) = if family.is_ipv4() {
        ("0.0.0.0:0", "192.0.2.1:9")
    } else {
        ("[::]:0", "[2001:db8::1]:9")
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "tabagent")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".tabagent"))
}

/// The config file used when none is named: `~/.config/tabagent/tabagent.toml` on Linux.
pub fn default_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "tabagent")
        .map(|dirs| dirs.config_dir().join("tabagent.toml"))
}

impl Config {
    /// Layers defaults, the file (explicit, or the default one if it exists) and the environment.
    /// Flags are applied by the caller afterwards, then [`Config::validate`].
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    bail!("config file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file(path));
            }
            None => {
                if let Some(path) = default_config_file().filter(|p| p.is_file()) {
                    figment = figment.merge(Toml::file(path));
                }
            }
        }
        // Only nested keys (SECTION__KEY) are config; TABAGENT_CONFIG and friends belong to flags.
        let env = Env::prefixed("TABAGENT_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        figment
            .merge(env)
            .extract()
            .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))
    }

    /// The server the native messaging host relays to: `native.server_url`, else this
    /// machine's configured listener (none when it picks a free port).
    pub fn native_server_url(&self) -> Option<String> {
        if let Some(url) = &self.native.server_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        if self.server.port == 0 {
            return None;
        }
        let host = match self.server.host.as_str() {
            "0.0.0.0" | "" => "127.0.0.1".to_string(),
            "::" | "[::]" => "[::1]".to_string(),
            host if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
            host => host.to_string(),
        };
        Some(format!("http://{host}:{}", self.server.port))
    }

    /// How WebRTC sessions are made: the address they use (see [`WebRtcSettings::ip`]).
    pub fn webrtc_settings(&self) -> anyhow::Result<tabagent_webrtc::Settings> {
        let webrtc = &self.webrtc;
        let ip = match &webrtc.ip {
            Some(ip) => ip
                .parse::<IpAddr>()
                .with_context(|| format!("webrtc.ip {ip:?} is not an IP address"))?,
            None => {
                let bound = self.bind_ip()?;
                if bound.is_unspecified() {
                    default_route_ip(bound).unwrap_or(IpAddr::from([127, 0, 0, 1]))
                } else {
                    bound
                }
            }
        };
        Ok(tabagent_webrtc::Settings {
            ip,
            connect_timeout: std::time::Duration::from_secs(webrtc.connect_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(webrtc.idle_timeout_secs),
            max_sessions: webrtc.max_sessions,
            max_sessions_per_owner: webrtc.max_sessions_per_caller,
            max_offer_bytes: 64 * 1024,
            inbound_queue: 256,
        })
    }

    /// Checks the combination is safe and in range.
    pub fn validate(&self) -> anyhow::Result<()> {
        let ip = self.bind_ip()?;
        if !ip.is_loopback() && self.server.api_keys.is_empty() && self.scheduler.keys.is_empty() {
            bail!(
                "binding to {} exposes the API beyond this machine: set an API key (server.api_keys or TABAGENT_API_KEY) first",
                self.server.host
            );
        }
        if self
            .server
            .api_keys
            .iter()
            .any(|key| key.expose().len() < 16)
        {
            bail!("API keys must be at least 16 characters long");
        }
        if !(1..=64).contains(&self.hub.connections) {
            bail!("hub.connections must be between 1 and 64");
        }
        if self.hub.max_pulls == 0 || self.hub.max_pulls_per_caller == 0 {
            bail!("hub.max_pulls and hub.max_pulls_per_caller must be at least 1");
        }
        if !(1..=1024).contains(&self.hub.chunk_mib) {
            bail!("hub.chunk_mib must be between 1 and 1024");
        }
        if !self.hub.endpoint.is_empty() {
            tabagent_hub::client::parse_endpoint(&self.hub.endpoint)?;
        }
        self.router.check()?;
        self.librarian.validate()?;
        self.events.validate()?;
        self.memory.surprise.validate()?;
        if !(1..=64).contains(&self.agent.max_steps) {
            bail!("agent.max_steps must be between 1 and 64");
        }
        if self.agent.call_timeout_secs == 0 || self.agent.max_output_bytes == 0 {
            bail!("agent.call_timeout_secs and agent.max_output_bytes must be at least 1");
        }
        for (label, server) in &self.agent.mcp_servers {
            let fine_label = !label.is_empty()
                && label.len() <= 64
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !fine_label || label == "tabagent" {
                bail!("agent.mcp_servers.{label}: a label is 1 to 64 letters, digits, `_` or `-`, and not `tabagent`");
            }
            match (&server.command, &server.url) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => bail!("agent.mcp_servers.{label}: set either `command` (stdio) or `url` (Streamable HTTP)"),
            }
            if let Some(url) = &server.url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("agent.mcp_servers.{label}.url must be an http:// or https:// URL");
                }
            }
        }
        if self.response_cache.semantic
            && self.response_cache.semantic_model.is_none()
            && self.memory.embedding_model.is_none()
        {
            bail!("response_cache.semantic needs an embedding model: set response_cache.semantic_model or memory.embedding_model");
        }
        for (name, route) in &self.router.routes {
            let Some(context) = &route.context else {
                continue;
            };
            if !self.memory.enabled {
                bail!("router.routes.{name}.context reads the memory, which is off (memory.enabled = false)");
            }
            for store in &context.stores {
                if tabagent_memory::Store::parse(store).is_err() {
                    bail!("router.routes.{name}.context.stores names `{store}`, which is not a memory store");
                }
            }
        }
        self.scheduler.check()?;
        let worker = &self.worker;
        if !(1..=64).contains(&worker.threads)
            || worker.start_timeout_secs == 0
            || worker.call_wait_secs == 0
        {
            bail!("worker.threads must be between 1 and 64, worker.start_timeout_secs and call_wait_secs at least 1");
        }
        if self.native.max_message_bytes < 1024 || self.native.max_in_flight == 0 {
            bail!("native.max_message_bytes must be at least 1024 and native.max_in_flight at least 1");
        }
        if let Some(url) = &self.native.server_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("native.server_url must be an http:// or https:// URL, not {url:?}");
            }
        }
        if self.webrtc.max_sessions == 0
            || self.webrtc.max_sessions_per_caller == 0
            || self.webrtc.idle_timeout_secs == 0
            || self.webrtc.connect_timeout_secs == 0
            || self.webrtc.max_message_bytes < 1024
        {
            bail!("webrtc: max_sessions, max_sessions_per_caller, idle_timeout_secs and connect_timeout_secs must be at least 1, max_message_bytes at least 1024");
        }
        self.webrtc_settings()?;
        if self.server.max_connections == 0
            || self.server.max_connections_per_ip == 0
            || self.server.header_timeout_secs == 0
            || self.server.body_timeout_secs == 0
        {
            bail!("server: max_connections, max_connections_per_ip, header_timeout_secs and body_timeout_secs must be at least 1");
        }
        if self.server.max_body_bytes < 1024 {
            bail!("server.max_body_bytes must be at least 1024");
        }
        self.engine_config()
            .validate()
            .map_err(|err| anyhow::anyhow!("invalid llama settings: {err}"))?;
        for name in &self.onnx.providers {
            if tabagent_onnx::Provider::parse(name).is_none() {
                bail!(
                    "{}",
                    tabagent_onnx::RuntimeError::UnknownProvider(name.clone())
                );
            }
        }
        let onnx = &self.onnx;
        if !(1..=64).contains(&onnx.sessions) || onnx.intra_threads > 1024 {
            bail!("onnx.sessions must be between 1 and 64, onnx.intra_threads at most 1024");
        }
        if !(1..=4096).contains(&onnx.max_batch_inputs) || onnx.max_batch_tokens < 512 {
            bail!("onnx.max_batch_inputs must be between 1 and 4096, onnx.max_batch_tokens at least 512");
        }
        if !(0.0..=100.0).contains(&onnx.max_batch_padding) {
            bail!("onnx.max_batch_padding must be between 0 and 100");
        }
        if !(1..=100_000).contains(&onnx.max_inputs_per_request) || onnx.batch_wait_ms > 1000 {
            bail!("onnx.max_inputs_per_request must be between 1 and 100000, onnx.batch_wait_ms at most 1000");
        }
        for (name, dir) in &self.models.directories {
            tabagent_models::store::validate_name(name)
                .map_err(|err| anyhow::anyhow!("models.directories: {err}"))?;
            if !dir.is_absolute() {
                bail!("models.directories.{name} must be an absolute path");
            }
        }
        Ok(())
    }

    /// The scheduler for this configuration.
    pub fn scheduler(&self) -> tabagent_router::Scheduler {
        tabagent_router::Scheduler::new(self.scheduler.clone(), self.router.provider_concurrency())
    }

    /// tabagent's cache folder (`$TABAGENT_CACHE`, else `~/.cache/tabagent`), where
    /// `scripts/setup` puts the native libraries it fetches.
    fn cache_dir() -> Option<PathBuf> {
        std::env::var_os("TABAGENT_CACHE")
            .map(PathBuf::from)
            .or_else(|| directories::BaseDirs::new().map(|d| d.cache_dir().join("tabagent")))
    }

    /// PDFium's library: `librarian.pdfium_library`, else the first of `libpdfium.so` next to
    /// the executable, in `<data_dir>/pdfium/` and in the cache's `pdfium/` that exists, else
    /// the name alone (the system's library path).
    pub fn pdfium_library(&self) -> PathBuf {
        const LIBRARY: &str = "libpdfium.so";
        if let Some(path) = &self.librarian.pdfium_library {
            return path.clone();
        }
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            candidates.push(dir.join(LIBRARY));
        }
        candidates.push(self.storage.data_dir.join("pdfium").join(LIBRARY));
        if let Some(cache) = Self::cache_dir() {
            candidates.push(cache.join("pdfium").join(LIBRARY));
        }
        candidates
            .into_iter()
            .find(|c| c.is_file())
            .unwrap_or_else(|| PathBuf::from(LIBRARY))
    }

    /// How ONNX Runtime is found and set up.
    pub fn onnx_runtime(&self) -> tabagent_onnx::RuntimeConfig {
        const LIBRARY: &str = "libonnxruntime.so.1.31.1";
        let library_candidates = match &self.onnx.runtime_library {
            Some(path) => vec![path.clone()],
            None => {
                let mut candidates = Vec::new();
                if let Some(dir) = std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(Path::to_path_buf))
                {
                    candidates.push(dir.join("libonnxruntime.so"));
                    candidates.push(dir.join(LIBRARY));
                }
                candidates.push(self.storage.data_dir.join("onnxruntime").join(LIBRARY));
                if let Some(cache) = Self::cache_dir() {
                    candidates.push(cache.join("onnxruntime").join(LIBRARY));
                }
                candidates
            }
        };
        tabagent_onnx::RuntimeConfig {
            system_fallback: self.onnx.runtime_library.is_none(),
            library_candidates,
            allowed_providers: self.onnx.providers.clone(),
            intra_threads: self.onnx.intra_threads,
        }
    }

    /// How encoders are loaded and batched.
    pub fn encoder_settings(&self) -> tabagent_onnx::EncoderSettings {
        tabagent_onnx::EncoderSettings {
            sessions: self.onnx.sessions,
            limits: tabagent_onnx::BatchLimits {
                max_items: self.onnx.max_batch_inputs,
                max_tokens: self.onnx.max_batch_tokens,
                wait: std::time::Duration::from_millis(self.onnx.batch_wait_ms),
                max_padding: self.onnx.max_batch_padding,
            },
            precision: self.onnx.precision,
        }
    }

    /// The bind address as an IP.
    pub fn bind_ip(&self) -> anyhow::Result<IpAddr> {
        let host = self
            .server
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host == "localhost" {
            return Ok(IpAddr::from([127, 0, 0, 1]));
        }
        host.parse()
            .with_context(|| format!("server.host {:?} is not an IP address", self.server.host))
    }

    /// The engine settings derived from `[llama]`.
    pub fn engine_config(&self) -> tabagent_llama::EngineConfig {
        let llama = &self.llama;
        tabagent_llama::EngineConfig {
            threads: llama.threads,
            threads_batch: llama.threads_batch,
            parallel: llama.parallel,
            ctx_per_slot: llama.ctx_size,
            batch_size: llama.batch_size,
            queue_capacity: llama.queue_capacity,
            gpu_layers: llama.gpu_layers,
        }
    }

    /// The model store's directory.
    pub fn models_dir(&self) -> PathBuf {
        self.storage.data_dir.join("models")
    }

    /// Where and how the memory database is opened.
    pub fn memory_config(&self) -> tabagent_memory::MemoryConfig {
        let dir = self
            .memory
            .dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("memory"));
        tabagent_memory::MemoryConfig {
            durability: self.memory.durability,
            ..tabagent_memory::MemoryConfig::at(dir)
        }
    }

    /// The memory rules of the model registry.
    pub fn lifecycle(&self, pinned: Option<String>) -> crate::registry::Lifecycle {
        let budget_mib = match self.models.memory_budget_mib {
            0 => {
                crate::recommended::total_memory_mib().map_or(u64::MAX >> 20, |total| total / 4 * 3)
            }
            mib => mib,
        };
        crate::registry::Lifecycle {
            budget_bytes: budget_mib.saturating_mul(1 << 20),
            keep_alive: crate::keep_alive::KeepAlive::from_secs(self.models.keep_alive_secs),
            pinned,
        }
    }

    /// The Hugging Face cache models are pulled into.
    pub fn hub_cache(&self) -> tabagent_hub::HubCache {
        match &self.hub.cache_dir {
            Some(dir) => tabagent_hub::HubCache::new(dir),
            None => tabagent_hub::HubCache::from_env(),
        }
    }

    /// Every local model: imported ones and the Hugging Face cache's.
    pub fn catalog(&self) -> anyhow::Result<crate::catalog::Catalog> {
        let store = tabagent_models::store::ModelStore::open(&self.models_dir())?;
        Ok(crate::catalog::Catalog::new(store, self.hub_cache())
            .with_directories(self.models.directories.clone())
            .with_worker_models(crate::worker::worker_models_dir(self)))
    }

    /// A Hub client: `HF_*` environment first, then `[hub]` settings over it.
    pub fn hub_client(&self) -> anyhow::Result<tabagent_hub::HubClient> {
        self.hub_client_for(true)
    }

    /// A Hub client that uses the operator's token (`HF_TOKEN`, the token file) only when
    /// `trusted`: the CLI is, an API caller only with an admin key.
    pub fn hub_client_for(&self, trusted: bool) -> anyhow::Result<tabagent_hub::HubClient> {
        let mut hub = tabagent_hub::HubConfig::from_env()?;
        if !trusted && hub.token.is_some() {
            hub.token = None;
            hub.token_withheld = true;
        }
        if !self.hub.endpoint.is_empty() {
            hub.endpoint = tabagent_hub::client::parse_endpoint(&self.hub.endpoint)?;
        }
        hub.connections = self.hub.connections;
        hub.chunk_size = self.hub.chunk_mib << 20;
        hub.offline |= self.hub.offline;
        Ok(tabagent_hub::HubClient::new(hub, self.hub_cache())?)
    }

    /// The effective configuration as JSON with secrets replaced: the keys and connection
    /// strings typed as secrets redact themselves, and any other URL that carries credentials
    /// (a provider's or the remote memory's) has them redacted too.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        redact_urls(&mut value);
        if let Some(agent) = value.get_mut("agent") {
            agent::redact(agent);
        }
        value
    }
}

/// Redacts the credentials of every URL in `value`.
fn redact_urls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.contains("://") => {
            *text = tabagent_core::secret::redact_credentials(text);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_urls),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(redact_urls),
        _ => {}
    }
}
