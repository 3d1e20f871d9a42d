//! `tabagent run MODEL [PROMPT]`: a model in this process, streamed to the terminal.

use std::io::Write;
use std::sync::Arc;

use anyhow::bail;
use tabagent_core::{ChatMessage, GenerationEvent, GenerationParams, InferenceError, Role};
use tabagent_llama::{GenerationHandle, LlamaEngine};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::RunArgs;
use crate::config::Config;

/// Answers one prompt, or chats until EOF or `/bye`.
pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    let engine = super::load_local(&config, &args.model, 0, Some(1)).await?;
    let engine = Arc::new(engine);
    let mut params = GenerationParams::default();
    if let Some(t) = args.temperature {
        params.sampling.temperature = t;
    }
    params.sampling.seed = args.seed;
    params.max_tokens = args.max_tokens;
    let chat = engine.facts().has_chat_template;

    let mut history = Vec::new();
    if let Some(system) = &args.system {
        history.push(ChatMessage::new(Role::System, system.clone()));
    }
    if let Some(prompt) = args.prompt {
        if !chat {
            eprintln!(
                "note: `{}` has no chat template; continuing the prompt as raw text",
                args.model
            );
        }
        answer(&engine, &mut history, prompt, &params, chat).await?;
        return Ok(());
    }
    eprintln!(
        "chatting with {} — /clear forgets the conversation, /bye or Ctrl-D ends it",
        args.model
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        eprint!(">>> ");
        let Some(line) = lines.next_line().await? else {
            break;
        };
        match line.trim() {
            "" => continue,
            "/bye" | "/exit" => break,
            "/clear" => {
                history.retain(|m: &ChatMessage| m.role == Role::System);
                continue;
            }
            _ => {}
        }
        // A mistake in one turn (a context overflow, say) is reported and the chat goes on.
        if let Err(err) = answer(&engine, &mut history, line, &params, chat).await {
            eprintln!("error: {err:#}");
        }
    }
    Ok(())
}

async fn answer(
    engine: &Arc<LlamaEngine>,
    history: &mut Vec<ChatMessage>,
    prompt: String,
    params: &GenerationParams,
    chat: bool,
) -> anyhow::Result<()> {
    if !chat {
        let engine = Arc::clone(engine);
        let params = params.clone();
        let handle =
            tokio::task::spawn_blocking(move || engine.complete(&prompt, params)).await??;
        print_stream(handle).await?;
        return Ok(());
    }
    history.push(ChatMessage::new(Role::User, prompt));
    let handle = loop {
        let engine = Arc::clone(engine);
        let (messages, params) = (history.clone(), params.clone());
        match tokio::task::spawn_blocking(move || engine.chat(&messages, params)).await? {
            Ok(handle) => break handle,
            // A long chat outgrows the context: forget the oldest turn and try again.
            Err(InferenceError::ContextOverflow { .. }) if forget_oldest_turn(history) => {}
            Err(err) => {
                history.pop();
                return Err(err.into());
            }
        }
    };
    let reply = print_stream(handle).await?;
    history.push(ChatMessage::new(Role::Assistant, reply));
    Ok(())
}

/// Drops the oldest message that is neither a system message nor the newest one.
fn forget_oldest_turn(history: &mut Vec<ChatMessage>) -> bool {
    let last = history.len().saturating_sub(1);
    match history.iter().position(|m| m.role != Role::System) {
        Some(index) if index < last => {
            history.remove(index);
            true
        }
        _ => false,
    }
}

async fn print_stream(mut handle: GenerationHandle) -> anyhow::Result<String> {
    let mut stdout = std::io::stdout();
    let mut reply = String::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            GenerationEvent::Text(text) => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
                reply.push_str(&text);
            }
            // `run` offers no tools and asks for no log probabilities.
            GenerationEvent::ToolCall(_)
            | GenerationEvent::Logprobs(_)
            | GenerationEvent::Refusal(_) => {}
            GenerationEvent::Finished { .. } => {
                writeln!(stdout)?;
                return Ok(reply);
            }
            GenerationEvent::Failed(err) => bail!("generation failed: {err}"),
        }
    }
    bail!("the engine stopped before finishing")
}
