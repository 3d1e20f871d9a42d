//! Engine settings.

/// How a model is run. One engine per loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Threads for token generation.
    pub threads: u32,
    /// Threads for prompt processing.
    pub threads_batch: u32,
    /// Sequences decoded together (llama-server's "slots").
    pub parallel: u32,
    /// Context window of each sequence, in tokens.
    pub ctx_per_slot: u32,
    /// Most tokens in one `llama_decode` call.
    pub batch_size: u32,
    /// Requests that may wait for a free slot before new ones are turned away.
    pub queue_capacity: usize,
    /// Layers to offload to a GPU when llama.cpp was built with one.
    pub gpu_layers: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4);
        let threads = u32::try_from(cores).unwrap_or(4).max(1);
        Self {
            threads,
            threads_batch: threads,
            parallel: 4,
            ctx_per_slot: 4096,
            batch_size: 512,
            queue_capacity: 64,
            gpu_layers: 0,
        }
    }
}

impl EngineConfig {
    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
        check(
            self.threads >= 1 && self.threads <= 1024,
            "threads must be between 1 and 1024",
        )?;
        check(
            self.threads_batch >= 1 && self.threads_batch <= 1024,
            "threads_batch must be between 1 and 1024",
        )?;
        check(
            self.parallel >= 1 && self.parallel <= 256,
            "parallel must be between 1 and 256",
        )?;
        check(
            self.ctx_per_slot >= 64 && self.ctx_per_slot <= 1 << 20,
            "ctx_size must be between 64 and 1048576",
        )?;
        check(
            self.batch_size >= 16 && self.batch_size <= 1 << 16,
            "batch_size must be between 16 and 65536",
        )?;
        check(
            self.queue_capacity >= 1 && self.queue_capacity <= 1 << 16,
            "queue_capacity must be between 1 and 65536",
        )?;
        self.parallel
            .checked_mul(self.ctx_per_slot)
            .map(|_| ())
            .ok_or_else(|| "parallel × ctx_size overflows".to_string())
    }
}
