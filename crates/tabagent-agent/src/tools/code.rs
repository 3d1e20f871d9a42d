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
    #[serde(default)]
    language: Lang,
    code: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Lang {
    #[default]
    Python,
    Shell,
}

/// Runs a Python snippet as a notebook cell does: when its last statement is an expression,
/// its value is printed (models often end a snippet with the value they want, unprinted).
/// Errors point into `<snippet>`, not into this wrapper.
fn as_cell(code: &str) -> String {
    // A JSON string is a valid Python string literal.
    let source = serde_json::to_string(code).unwrap_or_else(|_| "''".into());
    format!(
        "import ast as _ast\n\
         _tree = _ast.parse({source}, '<snippet>', 'exec')\n\
         _last = _tree.body.pop() if _tree.body and isinstance(_tree.body[-1], _ast.Expr) else None\n\
         _scope = {{'__name__': '__main__'}}\n\
         exec(compile(_tree, '<snippet>', 'exec'), _scope)\n\
         if _last is not None:\n    \
         _value = eval(compile(_ast.Expression(_last.value), '<snippet>', 'eval'), _scope)\n    \
         if _value is not None:\n        print(repr(_value))\n"
    )
}

impl Tool for RunCode {
    fn spec(&self) -> ToolSpec {
        let limits = self.0.limits();
        ToolSpec {
            name: "run_code".into(),
            description: Some(format!(
                "Runs a Python 3 or POSIX shell snippet in a sandbox (no network, an empty \
                 working directory, at most {} s of CPU and {} MiB of memory) and returns what \
                 it printed; a Python snippet's last expression is printed too.",
                limits.cpu_seconds,
                limits.memory_bytes >> 20
            )),
            parameters: json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": ["python", "shell"],
                                 "description": "python (the default) or shell"},
                    "code": {"type": "string"}
                },
                "required": ["code"],
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
            let (language, code) = match language {
                Lang::Python => (Language::Python, as_cell(&code)),
                Lang::Shell => (Language::Shell, code),
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
                Outcome::Exited(0) if report.is_empty() => {
                    Ok("(the snippet printed nothing: print the values you need)".into())
                }
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
