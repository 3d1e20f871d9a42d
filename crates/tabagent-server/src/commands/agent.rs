//! `tabagent agent MODEL TASK`: the agent loop over a model in this process, with the built-in
//! tools the flags allow; the model's text to standard output, its steps (tool calls and their
//! results) to standard error as they happen.

use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tabagent_agent::agent::{
    self, AgentEnd, AgentEvent, Budget, GenerationStream, Model, ModelError,
};
use tabagent_agent::tools::{
    Calculator, CurrentTime, ListFiles, ReadFile, RunCode, Toolbox, Workspace,
};
use tabagent_agent::{Sandbox, SandboxConfig};
use tabagent_core::{ChatMessage, GenerationParams, Role};
use tabagent_llama::LlamaEngine;

use crate::cli::AgentArgs;
use crate::config::Config;

/// The longest a tool call may take, and the most it may return to the model.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const OUTPUT_CAP: usize = 16 * 1024;
/// The most of a file `read_file` returns.
const MAX_READ: u64 = 64 * 1024;

/// The in-process engine as the agent's model.
struct Engine(Arc<LlamaEngine>);

impl Model for Engine {
    fn generate(
        &self,
        messages: Vec<ChatMessage>,
        params: GenerationParams,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<GenerationStream, ModelError>> + Send + '_>>
    {
        let engine = Arc::clone(&self.0);
        Box::pin(async move {
            let handle = tokio::task::spawn_blocking(move || engine.chat(&messages, params))
                .await
                .map_err(|e| Arc::new(e) as ModelError)?
                .map_err(|e| Arc::new(e) as ModelError)?;
            let events = futures_util::stream::unfold(handle, |mut handle| async move {
                let event = handle.events.recv().await?;
                Some((event, handle))
            });
            Ok(Box::pin(events) as GenerationStream)
        })
    }
}

/// Runs the task to its end.
pub async fn run(config: Config, args: AgentArgs) -> anyhow::Result<()> {
    let toolbox = toolbox(&args).await?;
    let engine = super::load_local(&config, &args.model, 0, Some(1)).await?;
    if !engine.facts().has_chat_template {
        bail!(
            "the model `{}` has no chat template: an agent needs a chat model",
            args.model
        );
    }
    let mut params = GenerationParams::default();
    if let Some(t) = args.temperature {
        params.sampling.temperature = t;
    }
    params.sampling.seed = args.seed;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::new(Role::System, system.clone()));
    }
    messages.push(ChatMessage::new(Role::User, args.task.clone()));
    let budget = Budget {
        max_steps: args.max_steps,
        max_tokens: args.max_tokens,
        max_step_tokens: None,
        notes: None,
    };
    let model: Arc<dyn Model> = Arc::new(Engine(Arc::new(engine)));
    let mut events = agent::start(model, toolbox, messages, params, budget);
    let mut stdout = std::io::stdout();
    while let Some(event) = events.recv().await {
        match event {
            AgentEvent::Step(step) => eprintln!("[step {step}]"),
            AgentEvent::Text(text) => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            AgentEvent::ToolCall(call) => eprintln!("\n-> {} {}", call.name, call.arguments),
            AgentEvent::ToolOutput { output, .. } => match output {
                Ok(text) => eprintln!("<- {}", crate::agent::excerpt(&text, 200)),
                Err(error) => eprintln!(
                    "<- error: {}",
                    crate::agent::excerpt(&error.to_string(), 200)
                ),
            },
            AgentEvent::Finished(outcome) => {
                writeln!(stdout)?;
                eprintln!(
                    "[{} in {} step(s), {} tool call(s), {} tokens generated, {:.1} s]",
                    match outcome.end {
                        AgentEnd::Answered => "answered",
                        AgentEnd::StepBudget => "stopped at the step budget",
                        AgentEnd::TokenBudget => "stopped at the token budget",
                        AgentEnd::ClientCall => "stopped on a call of a tool it does not run",
                    },
                    outcome.steps,
                    outcome.tool_calls,
                    outcome.usage.completion_tokens,
                    outcome.elapsed.as_secs_f64()
                );
                return Ok(());
            }
            AgentEvent::Failed(error) => bail!("the agent failed: {error}"),
        }
    }
    bail!("the agent stopped without finishing")
}

/// The tools the flags allow.
async fn toolbox(args: &AgentArgs) -> anyhow::Result<Toolbox> {
    let mut toolbox = Toolbox::new(CALL_TIMEOUT, OUTPUT_CAP);
    toolbox.add(Arc::new(Calculator));
    toolbox.add(Arc::new(CurrentTime));
    if !args.workspaces.is_empty() {
        let mut roots = Vec::new();
        for given in &args.workspaces {
            let (name, path) = given
                .split_once('=')
                .ok_or_else(|| anyhow!("--workspace takes NAME=PATH, not {given:?}"))?;
            roots.push((name.to_string(), PathBuf::from(path)));
        }
        let workspace = Arc::new(
            Workspace::new(&roots, MAX_READ).context("a --workspace folder cannot be used")?,
        );
        toolbox.add(Arc::new(ListFiles(Arc::clone(&workspace))));
        toolbox.add(Arc::new(ReadFile(workspace)));
    }
    if args.allow_code {
        let sandbox = Sandbox::new(SandboxConfig::default()).await?;
        toolbox.add(Arc::new(RunCode(Arc::new(sandbox))));
    }
    Ok(toolbox)
}
