//! `run_code`: a Python or shell snippet in the sandbox; the output and how it ended.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tabagent_core::ToolSpec;

use super::{arguments, Tool, ToolError, ToolFuture};
use crate::sandbox::{Language, Outcome, Sandbox};

/// The code tool, over one sandbox.
pub struct RunCode(pub Arc<Sandbox>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Arguments {
    language: Lang,
    code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Lang {
    Python,
    Shell,
}

impl Tool for RunCode {
    fn spec(&self) -> ToolSpec {
        let limits = self.0.limits();
        ToolSpec {
            name: "run_code".into(),
            description: Some(format!(
                "Runs a Python 3 or POSIX shell snippet in a sandbox (no network, an empty \
                 working directory, at most {} s of CPU and {} MiB of memory) and returns what \
                 it printed. Print the results you need.",
                limits.cpu_seconds,
                limits.memory_bytes >> 20
            )),
            parameters: json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": ["python", "shell"]},
                    "code": {"type": "string"}
                },
                "required": ["language", "code"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn call(&self, arguments_json: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let Arguments { language, code } = arguments(arguments_json)?;
            let language = match language {
                Lang::Python => Language::Python,
                Lang::Shell => Language::Shell,
            };
            let run = self
                .0
                .run(language, &code)
                .await
                .map_err(|e| ToolError::Failed(e.to_string()))?;
            let mut report = run.stdout;
            if !run.stderr.is_empty() {
                if !report.is_empty() && !report.ends_with('\n') {
                    report.push('\n');
                }
                report.push_str("[stderr]\n");
                report.push_str(&run.stderr);
            }
            match run.outcome {
                Outcome::Exited(0) => Ok(report),
                other => Err(ToolError::Failed(format!(
                    "{}{}{report}",
                    other.describe(self.0.limits()),
                    if report.is_empty() { "" } else { "\n" }
                ))),
            }
        })
    }
}
