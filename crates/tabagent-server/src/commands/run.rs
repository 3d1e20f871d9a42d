//! `tabagent run MODEL [PROMPT]`: a model in this process, streamed to the terminal.

use std::io::Write;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use tabagent_core::{ChatMessage, GenerationEvent, GenerationParams, Role};
use tabagent_llama::{GenerationHandle, LlamaEngine};
use tabagent_models::store::ModelStore;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::RunArgs;
use crate::config::Config;

/// Answers one prompt, or chats until EOF or `/bye`.
pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    let store = ModelStore::open(&config.models_dir())?;
    let entry = store.get(&args.model)?.ok_or_else(|| {
        anyhow!(
            "the model `{}` does not exist; `tabagent models` lists local models",
            args.model
        )
    })?;
    let path = store.path_of(&entry);
    let mut engine_config = config.engine_config();
    engine_config.parallel = 1;
    let engine =
        tokio::task::spawn_blocking(move || LlamaEngine::load(&path, engine_config)).await??;
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
        answer(&engine, &mut history, line, &params, chat).await?;
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
    let engine_for_submit = Arc::clone(engine);
    let params = params.clone();
    let handle = if chat {
        history.push(ChatMessage::new(Role::User, prompt));
        let messages = history.clone();
        tokio::task::spawn_blocking(move || engine_for_submit.chat(&messages, params)).await?
    } else {
        tokio::task::spawn_blocking(move || engine_for_submit.complete(&prompt, params)).await?
    };
    let reply = print_stream(handle.map_err(|err| anyhow!("{err}"))?).await?;
    if chat {
        history.push(ChatMessage::new(Role::Assistant, reply));
    }
    Ok(())
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
            GenerationEvent::Finished { .. } => {
                writeln!(stdout)?;
                return Ok(reply);
            }
            GenerationEvent::Failed(err) => bail!("generation failed: {err}"),
        }
    }
    bail!("the engine stopped before finishing")
}
