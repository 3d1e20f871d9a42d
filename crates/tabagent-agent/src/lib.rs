//! tabagent's agent parts: the loop (`agent`: the model answers or calls tools, within step and
//! token budgets, every step reported as it happens), the tools an agent calls (`tools`: the `Tool` trait, a `Toolbox` that
//! bounds and logs every call, and the built-in calculator, clock, workspace reading and
//! `run_code`) and the sandbox `run_code` runs in (`sandbox`: untrusted Python and shell
//! snippets under bubblewrap with no network, no view of the host's files, a throwaway working
//! directory in memory and limits on everything a snippet can consume), and the Model Context
//! Protocol both ways (`mcp`: a toolbox served to MCP clients, MCP servers' tools as tools).

pub mod agent;
pub mod mcp;
pub mod sandbox;
pub mod tools;

pub use sandbox::{Language, Limits, Outcome, Run, Sandbox, SandboxConfig, SandboxError};
