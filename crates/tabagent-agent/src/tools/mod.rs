//! Tools an agent calls: the `Tool` trait (a name, a JSON Schema for its arguments, an async
//! call) and the `Toolbox` that holds a run's tools and calls them, each call bounded in time
//! and output size and logged. Built-in tools live in the submodules.

mod calculator;
mod clock;
mod code;
mod workspace;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tabagent_core::ToolSpec;

pub use calculator::{evaluate, Calculator};
pub use clock::CurrentTime;
pub use code::RunCode;
pub use workspace::{ListFiles, ReadFile, Workspace};

/// What a tool's call returns: text for the model.
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = Result<String, ToolError>> + Send + 'a>>;

/// A tool the model may call.
pub trait Tool: Send + Sync {
    /// Its name, its description and its arguments' JSON Schema.
    fn spec(&self) -> ToolSpec;
    /// Whether it writes or executes anything (such tools are off unless enabled).
    fn has_effects(&self) -> bool {
        false
    }
    /// The MCP server it comes from (`None`: tabagent's own).
    fn server_label(&self) -> Option<&str> {
        None
    }
    /// Calls it with the arguments the model gave (a JSON object).
    fn call(&self, arguments: Value) -> ToolFuture<'_>;
}

/// Why a tool call gave no result. Each is reported to the model as the call's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// No tool of that name is offered.
    #[error("there is no tool named {0:?}")]
    UnknownTool(String),
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The call ran past its time.
    #[error("the call took longer than {0:?} and was stopped")]
    TimedOut(Duration),
}

/// The arguments as `T`, or the error the model is told.
pub fn arguments<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<T, ToolError> {
    serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

/// A finished call, as the agent records it.
#[derive(Debug, Clone)]
pub struct Called {
    /// The tool's output, or the error text the model is given.
    pub output: Result<String, ToolError>,
    /// Whether the output was cut to the cap.
    pub truncated: bool,
    /// How long the call took.
    pub elapsed: Duration,
}

/// The tools of one agent run, by name.
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    /// The longest a call may take.
    pub call_timeout: Option<Duration>,
    /// The most output bytes a call returns (cut at a character boundary).
    pub output_cap: Option<usize>,
}

impl Toolbox {
    /// An empty toolbox with these bounds.
    pub fn new(call_timeout: Duration, output_cap: usize) -> Self {
        Self {
            tools: BTreeMap::new(),
            call_timeout: Some(call_timeout),
            output_cap: Some(output_cap),
        }
    }

    /// Adds `tool`, replacing one of the same name.
    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.spec().name, tool);
    }

    /// Adds `tool` under another name (when its own is taken).
    pub fn add_as(&mut self, name: String, tool: Arc<dyn Tool>) {
        self.tools
            .insert(name.clone(), Arc::new(Renamed { name, tool }));
    }

    /// The tools' specifications, by name.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec()).collect()
    }

    /// The tools, by name.
    pub fn tools(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.values()
    }

    /// The MCP server tool `name` comes from (`None`: a built-in tool, or no such tool).
    pub fn server_label(&self, name: &str) -> Option<String> {
        self.tools
            .get(name)
            .and_then(|tool| tool.server_label().map(str::to_string))
    }

    /// The tool names offered.
    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// Only the tools whose names are in `allowed` (a request narrows what the configuration
    /// offers; it cannot add to it). Names not offered are ignored.
    pub fn narrowed(&self, allowed: &[String]) -> Self {
        Self {
            tools: self
                .tools
                .iter()
                .filter(|(name, _)| allowed.iter().any(|a| a == *name))
                .map(|(name, tool)| (name.clone(), Arc::clone(tool)))
                .collect(),
            call_timeout: self.call_timeout,
            output_cap: self.output_cap,
        }
    }

    /// Calls tool `name`, bounded and logged.
    pub async fn call(&self, name: &str, arguments: Value) -> Called {
        let started = Instant::now();
        let Some(tool) = self.tools.get(name) else {
            return Called {
                output: Err(ToolError::UnknownTool(name.to_string())),
                truncated: false,
                elapsed: started.elapsed(),
            };
        };
        let output = match self.call_timeout {
            Some(limit) => tokio::time::timeout(limit, tool.call(arguments))
                .await
                .unwrap_or(Err(ToolError::TimedOut(limit))),
            None => tool.call(arguments).await,
        };
        let (output, truncated) = match (output, self.output_cap) {
            (Ok(text), Some(cap)) if text.len() > cap => (Ok(cut(&text, cap)), true),
            (other, _) => (other, false),
        };
        let elapsed = started.elapsed();
        match &output {
            Ok(text) => tracing::info!(
                tool = name,
                bytes = text.len(),
                truncated,
                ms = elapsed.as_millis() as u64,
                "tool call"
            ),
            Err(error) => tracing::info!(
                tool = name,
                %error,
                ms = elapsed.as_millis() as u64,
                "tool call failed"
            ),
        }
        Called {
            output,
            truncated,
            elapsed,
        }
    }
}

/// A tool under another name.
struct Renamed {
    name: String,
    tool: Arc<dyn Tool>,
}

impl Tool for Renamed {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            ..self.tool.spec()
        }
    }
    fn has_effects(&self) -> bool {
        self.tool.has_effects()
    }
    fn server_label(&self) -> Option<&str> {
        self.tool.server_label()
    }
    fn call(&self, arguments: Value) -> ToolFuture<'_> {
        self.tool.call(arguments)
    }
}

/// `text` cut to at most `cap` bytes, at a character boundary.
fn cut(text: &str, cap: usize) -> String {
    let mut end = cap.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Echo;
    impl Tool for Echo {
        fn spec(&self) -> ToolSpec {
            ToolSpec {
                name: "echo".into(),
                description: None,
                parameters: serde_json::json!({"type": "object"}),
                strict: false,
            }
        }
        fn call(&self, arguments: Value) -> ToolFuture<'_> {
            Box::pin(async move {
                if arguments["wait"].as_bool() == Some(true) {
                    std::future::pending::<()>().await;
                }
                Ok(arguments["text"].as_str().unwrap_or_default().to_string())
            })
        }
    }

    #[tokio::test]
    async fn calls_are_bounded_in_time_and_size_and_unknown_tools_are_errors() {
        let mut toolbox = Toolbox::new(Duration::from_millis(50), 2);
        toolbox.add(Arc::new(Echo));
        let called = toolbox
            .call("echo", serde_json::json!({"text": "héllo"}))
            .await;
        // Two bytes would end inside "é": the cut falls before it.
        assert_eq!(called.output, Ok("h".to_string()));
        assert!(called.truncated);
        let called = toolbox
            .call("echo", serde_json::json!({"wait": true}))
            .await;
        assert!(matches!(called.output, Err(ToolError::TimedOut(_))));
        let called = toolbox.call("nope", serde_json::json!({})).await;
        assert_eq!(called.output, Err(ToolError::UnknownTool("nope".into())));
    }

    #[test]
    fn narrowing_only_removes() {
        let mut toolbox = Toolbox::default();
        toolbox.add(Arc::new(Echo));
        assert_eq!(
            toolbox.narrowed(&["echo".into(), "rm".into()]).names(),
            ["echo"]
        );
        assert!(toolbox.narrowed(&["rm".into()]).names().is_empty());
    }
}
