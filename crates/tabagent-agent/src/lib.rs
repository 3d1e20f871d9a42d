//! tabagent's agent parts. For now the sandbox `run_code` will use: untrusted Python and shell
//! snippets run under bubblewrap with no network, no view of the host's files, a throwaway
//! working directory in memory and limits on everything a snippet can consume.

pub mod sandbox;

pub use sandbox::{Language, Limits, Outcome, Run, Sandbox, SandboxConfig, SandboxError};
