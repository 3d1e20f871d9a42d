//! Command-line flags, parsed raw by clap and applied on top of the layered config.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, LogFormat};

/// tabagent: a local-first AI runtime with an OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "tabagent", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (default: ~/.config/tabagent/tabagent.toml when it exists).
    #[arg(long, global = true, env = "TABAGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (models, state).
    #[arg(long, global = true, env = "TABAGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `tabagent=debug`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server.
    Serve(ServeArgs),
    /// Chat with a model in the terminal (interactive when no prompt is given).
    Run(RunArgs),
    /// Give a model a task it may use tools for (a calculator, the clock, workspace files,
    /// sandboxed code); its steps stream to standard error, its text to standard output.
    Agent(AgentArgs),
    /// Serve tabagent's tools (memory search and write, the knowledge graph, documents, chat
    /// with a local model, embeddings, and the agent tools the configuration enables) to an MCP
    /// client over stdin/stdout: what an editor or desktop assistant starts.
    Mcp(McpArgs),
    /// List (default), show or remove local models.
    Models(ModelsArgs),
    /// Add a local GGUF file, or a model directory (an embedding model), to the model store.
    Import(ImportArgs),
    /// Download a model from the Hugging Face Hub into the Hugging Face cache.
    Pull(PullArgs),
    /// Measure a model in process: an LLM's prompt and decode speed, an encoder's latency and
    /// throughput.
    Bench(BenchArgs),
    /// Show this machine's CPU, memory and ONNX Runtime execution providers.
    Hw(HwArgs),
    /// Write, list, search and delete records in the memory stores (works beside a running
    /// server).
    Memory(MemoryArgs),
    /// Back up, restore or check the memory database.
    Db(DbArgs),
    /// Read documents (PDF, HTML, Markdown, text, DOCX, ODT; folders are read through) into the
    /// memory: passages with page citations, searchable by keyword and meaning; list or remove
    /// them (works beside a running server).
    Ingest(IngestArgs),
    /// The Python ML worker (vision, speech): make its environment, or say how it stands.
    Worker(WorkerArgs),
    /// Chrome native messaging: serve it on stdin/stdout (what the browser starts), or
    /// install the host manifest that lets an extension connect.
    Native(NativeArgs),
    /// Opens a GGUF file in llama.cpp and generates one token (the server runs this in a
    /// child process before it loads a file for the first time).
    #[command(name = "probe-model", hide = true)]
    ProbeModel(ProbeModelArgs),
}

/// `tabagent ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and folders to read (a folder: every document in it and its subfolders).
    pub paths: Vec<PathBuf>,
    /// List the documents in the memory instead.
    #[arg(long, conflicts_with_all = ["paths", "remove"])]
    pub list: bool,
    /// Remove the documents with these ids (and the passages only they cite) instead.
    #[arg(long, value_name = "ID", conflicts_with = "paths")]
    pub remove: Vec<String>,
    /// One JSON object per document on standard output.
    #[arg(long)]
    pub json: bool,
}

/// `tabagent probe-model`.
#[derive(Debug, Args)]
pub struct ProbeModelArgs {
    /// The GGUF file.
    pub file: PathBuf,
    /// Layers to offload to a GPU, as the server would.
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
}

/// `tabagent native`.
#[derive(Debug, Args)]
pub struct NativeArgs {
    /// What to do; without one, serve native messages on stdin/stdout.
    #[command(subcommand)]
    pub action: Option<NativeAction>,
}

/// `tabagent native install|uninstall`.
#[derive(Debug, Subcommand)]
pub enum NativeAction {
    /// Write the host manifest (`ai.tabagent`) into each browser's per-user directory, so the
    /// named extensions can call `chrome.runtime.connectNative("ai.tabagent")`.
    Install {
        /// An extension allowed to connect (32 letters a-p, as chrome://extensions shows it);
        /// repeat for several.
        #[arg(long = "extension-id", required = true)]
        extension_ids: Vec<String>,
        /// Only these browsers (repeatable); all four by default.
        #[arg(long = "browser", value_enum)]
        browsers: Vec<crate::native::install::Browser>,
    },
    /// Remove the host manifest from each browser's directory.
    Uninstall {
        /// Only these browsers (repeatable); all four by default.
        #[arg(long = "browser", value_enum)]
        browsers: Vec<crate::native::install::Browser>,
    },
}

/// `tabagent worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: WorkerAction,
}

/// `tabagent worker setup|status`.
#[derive(Debug, Subcommand)]
pub enum WorkerAction {
    /// Make (or bring up to date) the worker's venv and sources: pip installs its pinned
    /// packages, minutes the first time; a second run only checks.
    Setup {
        /// Also install PyTorch, Transformers and sentence-transformers (about 2.5 GB), for
        /// sentence-transformers embeddings and safetensors language models (as
        /// worker.transformers = true does).
        #[arg(long)]
        transformers: bool,
    },
    /// Whether the worker's environment is made, and where.
    Status,
    /// Makes the model directory DIR known as NAME, served by the worker (a link in
    /// `<data_dir>/worker-models`): MediaPipe task files, Whisper in CTranslate2 form, or a
    /// Transformers model (a causal language model, else sentence-transformers).
    Link {
        /// The id requests and `[worker]` use (letters, digits, `.`, `_`, `-`).
        name: String,
        /// The model's directory.
        dir: std::path::PathBuf,
    },
}

/// `tabagent memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: MemoryAction,
}

/// `tabagent memory add|ls|get|rm|search|stats`.
#[derive(Debug, Subcommand)]
pub enum MemoryAction {
    /// Write a record (keyword-searchable; the server embeds records it writes).
    Add {
        /// The store: conversations, knowledge, embeddings, tool-results, experience,
        /// summaries or meta.
        store: String,
        /// The text.
        text: String,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A key unique in the store (writing it again replaces the record).
        #[arg(long)]
        key: Option<String>,
        /// The kind of record.
        #[arg(long)]
        kind: Option<String>,
        /// The conversation it belongs to.
        #[arg(long)]
        conversation: Option<String>,
        /// Where it came from.
        #[arg(long)]
        source: Option<String>,
    },
    /// Write records from JSON lines (`{"store", "text", ...}`, with `vector` and `space` for
    /// a vector), printing `{"line", "id"}` as each one is committed.
    Import {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
    /// List a store's records, newest first.
    Ls {
        /// The store.
        store: String,
        /// Most records shown.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only records with this tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show one record as JSON.
    Get {
        /// The record's id.
        id: i64,
    },
    /// Delete a record.
    Rm {
        /// The record's id.
        id: i64,
    },
    /// Keyword search (BM25) across stores.
    Search {
        /// Words to look for.
        query: String,
        /// Only this store (repeatable).
        #[arg(long = "store")]
        stores: Vec<String>,
        /// Most results.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Records per store and vector spaces.
    Stats,
    /// Create a knowledge-graph entity, or add to the one with its name; prints it.
    Entity {
        /// Its name (or an id or name to show, with no other option).
        name: String,
        /// What it is (person, place...).
        #[arg(long = "type")]
        entity_type: Option<String>,
        /// A sentence about it.
        #[arg(long)]
        description: Option<String>,
        /// Another name it goes by (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
    },
    /// Record a relation: SUBJECT RELATION OBJECT (entities by id or name; new names create
    /// entities).
    Relate {
        /// Where it starts.
        subject: String,
        /// Its type (`works_for`).
        relation: String,
        /// Where it ends.
        object: String,
        /// The record it was read from.
        #[arg(long)]
        evidence: Option<i64>,
    },
    /// The entities within --hops relations of one, and the relations among them (JSON).
    Neighbours {
        /// The entity (id or name).
        entity: String,
        /// How far (at most 6).
        #[arg(long, default_value_t = 1)]
        hops: u32,
        /// Only this relation type (repeatable).
        #[arg(long = "relation")]
        relations: Vec<String>,
        /// out, in or both.
        #[arg(long, default_value = "both")]
        direction: String,
    },
    /// The shortest path between two entities (JSON); exits 1 when there is none.
    Path {
        /// The start (id or name).
        from: String,
        /// The end.
        to: String,
        /// Most relations on the path (at most 12).
        #[arg(long, default_value_t = 6)]
        max_hops: u32,
        /// out, in or both.
        #[arg(long, default_value = "both")]
        direction: String,
    },
    /// Serve this memory over gRPC (proto/database.proto) for other machines and processes;
    /// prints `memory service listening on http(s)://ADDR` once ready.
    Serve {
        /// Address to bind (loopback by default; anything else needs `server.api_keys`, and TLS
        /// or `--insecure`).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0 picks a free one).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// A bearer key every call must carry (besides `server.api_keys`).
        #[arg(long, env = "TABAGENT_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Serve TLS with this certificate chain (PEM).
        #[arg(long, env = "TABAGENT_MEMORY_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, env = "TABAGENT_MEMORY_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve off loopback without TLS (keys and memories then cross the network in clear).
        #[arg(long)]
        insecure: bool,
    },
    /// Merge duplicate entities (same loose name or alias, same type); prints the merges.
    Consolidate {
        /// Only show what would be merged.
        #[arg(long)]
        dry_run: bool,
        /// Also merge entities whose vectors are at least this cosine-similar.
        #[arg(long)]
        similarity: Option<f32>,
    },
}

/// `tabagent db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: DbAction,
}

/// `tabagent db backup|restore|check`.
#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Copy the memory database, consistent at one moment, to a new file (safe while the
    /// server runs).
    Backup {
        /// The file to write (must not exist).
        file: PathBuf,
    },
    /// Replace the memory database with a backup (checked first; indexes are rebuilt).
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Verify SQLite's integrity, the full-text index, and that the vector indexes agree with
    /// SQLite; exits non-zero when something is wrong.
    Check,
}

/// `tabagent hw`.
#[derive(Debug, Args)]
pub struct HwArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which transports `serve` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The HTTP API, without WebRTC.
    Http,
    /// Chrome native messaging on stdin/stdout only (as `tabagent native`, in this process).
    Native,
    /// WebRTC only: the HTTP listener serves signaling (and the health probes); the API is
    /// reached through data channels.
    Webrtc,
    /// The HTTP API and WebRTC (the default).
    Web,
    /// The HTTP API, WebRTC, and native messaging on stdin/stdout, from one engine.
    All,
}

/// Engine flags shared by `serve` and `run`.
#[derive(Debug, Args, Default)]
pub struct EngineArgs {
    /// Threads for generation.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Sequences decoded together.
    #[arg(long)]
    pub parallel: Option<u32>,
    /// Context window per sequence, in tokens.
    #[arg(long)]
    pub ctx_size: Option<u32>,
    /// Requests that may wait for a free sequence.
    #[arg(long)]
    pub queue_capacity: Option<usize>,
}

/// `tabagent serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Transports to start.
    #[arg(long, value_enum, default_value = "web")]
    pub mode: Mode,
    /// Address to bind (loopback by default; anything else needs an API key).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind (0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// API key required as `Authorization: Bearer <key>`.
    #[arg(long, env = "TABAGENT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Default model, loaded at start.
    #[arg(long)]
    pub model: Option<String>,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `tabagent mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// The model `chat` uses when the client names none.
    #[arg(long)]
    pub model: Option<String>,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl McpArgs {
    /// Applies `mcp` flags to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(model) = &self.model {
            config.models.default = model.clone();
        }
        self.engine.apply(config);
    }
}

/// `tabagent run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model name (see `tabagent models`).
    pub model: String,
    /// Prompt; without one, an interactive chat starts.
    pub prompt: Option<String>,
    /// System message for the chat.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Most tokens per reply.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u32>,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `tabagent agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Model name (see `tabagent models`); one that calls tools, such as Qwen2.5.
    pub model: String,
    /// The task.
    pub task: String,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Model turns at most.
    #[arg(long, default_value_t = 8)]
    pub max_steps: usize,
    /// Tokens the model may generate over the whole run.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: u32,
    /// Offer `run_code`: Python and shell snippets in a sandbox (bubblewrap; off by default).
    #[arg(long)]
    pub allow_code: bool,
    /// A folder the agent may read, as NAME=PATH (repeatable).
    #[arg(long = "workspace", value_name = "NAME=PATH")]
    pub workspaces: Vec<String>,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u32>,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `tabagent bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model name (see `tabagent models`).
    pub model: String,
    /// Tokens in the prompt-processing test.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: u32,
    /// Tokens generated in the decode test.
    #[arg(long, default_value_t = 256)]
    pub gen_tokens: u32,
    /// Prompt tokens ahead of the decode test (decode speed depends on the position).
    #[arg(long, default_value_t = 16)]
    pub decode_prompt_tokens: u32,
    /// Measured repetitions (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Encoders: inputs per batch in the throughput test.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Encoders: a file of texts, one per line (default: a few built-in sentences).
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Encoders compiled from safetensors: also write the ONNX graph to this file.
    #[arg(long)]
    pub save_onnx: Option<PathBuf>,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `tabagent models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// What to do (default: `ls`).
    #[command(subcommand)]
    pub action: Option<ModelsAction>,
}

/// `tabagent models ls|show|rm`.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// List local models: imported ones and the Hugging Face cache's GGUF files.
    Ls,
    /// Show a model's GGUF metadata: architecture, parameters, quantization, context, template.
    Show {
        /// Model id (see `tabagent models`).
        id: String,
    },
    /// Remove a model's file from this machine.
    Rm {
        /// Model id (see `tabagent models`).
        id: String,
    },
}

/// `tabagent pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// `OWNER/REPO`, `OWNER/REPO:QUANT` (e.g. `:Q4_K_M`) or `OWNER/REPO:FILE`.
    #[arg(
        required_unless_present = "recommended",
        conflicts_with = "recommended"
    )]
    pub model: Option<String>,
    /// Pull the library's recommended model for `--role`, the largest this machine's memory holds.
    #[arg(long)]
    pub recommended: bool,
    /// The role for `--recommended`: `chat`, `tools`, `embedding` or `speech`.
    #[arg(long, default_value = "chat", requires = "recommended")]
    pub role: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Parallel connections (default: `hub.connections`, 8).
    #[arg(long)]
    pub connections: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `tabagent import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The GGUF file, or a model directory (an encoder: tokenizer.json beside safetensors or
    /// ONNX weights), copied into the store.
    pub path: PathBuf,
    /// Name to serve it as (default: from the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Refuse the file unless its SHA-256 is this.
    #[arg(long)]
    pub sha256: Option<String>,
}

impl Cli {
    /// Applies global flags to `config`.
    pub fn apply_globals(&self, config: &mut Config) {
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
    }
}

impl EngineArgs {
    /// Applies engine flags to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(threads) = self.threads {
            config.llama.threads = threads;
            config.llama.threads_batch = threads;
        }
        if let Some(parallel) = self.parallel {
            config.llama.parallel = parallel;
        }
        if let Some(ctx) = self.ctx_size {
            config.llama.ctx_size = ctx;
        }
        if let Some(queue) = self.queue_capacity {
            config.llama.queue_capacity = queue;
        }
    }
}

impl ServeArgs {
    /// Applies `serve` flags to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(host) = &self.host {
            config.server.host = host.clone();
        }
        if let Some(port) = self.port {
            config.server.port = port;
        }
        if let Some(key) = &self.api_key {
            config.server.api_keys.push(key.clone().into());
        }
        if let Some(model) = &self.model {
            config.models.default = model.clone();
        }
        self.engine.apply(config);
    }
}
