//! A GGUF file llama.cpp has not opened on this machine before is first opened in a
//! short-lived child process — `tabagent` itself, `probe-model`, a hidden subcommand — that
//! loads it, renders its chat template on conversations of every kind (with tools, tool calls
//! and results) and generates one token, its address space bounded. llama.cpp aborts the whole process on some files that
//! pass every check tabagent knows to make (an unknown rope scaling type, and whatever the next
//! llama.cpp asserts); in the child that costs the child, and the model is refused with what
//! llama.cpp said, while the server stays up. The verdict is kept by the file's SHA-256 under
//! `<data_dir>/probes/`, so each file is probed once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// How long a probe may take: loading a large model from a slow disk is slow, not wrong.
const PATIENCE: Duration = Duration::from_secs(15 * 60);

/// Lines of the child's stderr quoted when it fails.
const LAST_WORDS: usize = 3;

/// The verdicts' folder.
fn verdicts(data_dir: &Path) -> PathBuf {
    data_dir.join("probes")
}

/// The file's SHA-256: from its name where the store or the Hugging Face cache named it by
/// its content (`sha256-<hex>`, `blobs/<hex>`), else read, and remembered by its path, size and
/// time of change.
fn content_hash(data_dir: &Path, path: &Path) -> anyhow::Result<String> {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = resolved.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let named = name.strip_prefix("sha256-").unwrap_or(name);
    let in_blobs = resolved
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|dir| dir == "blobs");
    if in_blobs && named.len() == 64 && named.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(named.to_ascii_lowercase());
    }
    let meta = std::fs::metadata(&resolved)?;
    let changed = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = format!("{}\n{}\n{changed}", resolved.display(), meta.len());
    let remembered = verdicts(data_dir)
        .join("by-path")
        .join(hex(&Sha256::digest(key.as_bytes())));
    if let Ok(hash) = std::fs::read_to_string(&remembered) {
        return Ok(hash.trim().to_string());
    }
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(&resolved)?;
    std::io::copy(&mut file, &mut hasher)?;
    let hash = hex(&hasher.finalize());
    write_atomically(&remembered, &hash)?;
    Ok(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// Whether llama.cpp can open the GGUF at `path`: `Ok(())`, or why not in one line. The first
/// time for a file, this takes as long as a load.
pub async fn vet(
    data_dir: &Path,
    path: &Path,
    gpu_layers: u32,
) -> anyhow::Result<Result<(), String>> {
    let (dir, file) = (data_dir.to_path_buf(), path.to_path_buf());
    let hash = tokio::task::spawn_blocking(move || content_hash(&dir, &file))
        .await?
        .context("cannot read the model file")?;
    let verdict_path = verdicts(data_dir).join(format!("{hash}.json"));
    if let Ok(text) = std::fs::read_to_string(&verdict_path) {
        if let Ok(verdict) = serde_json::from_str::<serde_json::Value>(&text) {
            if verdict["ok"] == true {
                return Ok(Ok(()));
            }
            if let Some(reason) = verdict["reason"].as_str() {
                return Ok(Err(reason.to_string()));
            }
        }
    }
    let verdict = run_probe(path, gpu_layers).await?;
    let record = match &verdict {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(reason) => serde_json::json!({"ok": false, "reason": reason}),
    };
    write_atomically(&verdict_path, &record.to_string())?;
    Ok(verdict)
}

/// Runs the child and reads its end.
async fn run_probe(path: &Path, gpu_layers: u32) -> anyhow::Result<Result<(), String>> {
    use tokio::io::AsyncReadExt;
    let exe = std::env::current_exe().context("cannot find tabagent's own executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("probe-model")
        .arg(path)
        .arg("--gpu-layers")
        .arg(gpu_layers.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // ggml would follow its message with a debugger's backtrace.
        .env("GGML_NO_BACKTRACE", "1")
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the model probe")?;
    // Its last 64 KiB of stderr are what llama.cpp said last.
    let mut stderr = child.stderr.take().context("the probe has no stderr")?;
    let reading = tokio::spawn(async move {
        let (mut kept, mut chunk) = (Vec::new(), vec![0u8; 8192]);
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&chunk[..n]);
            let excess = kept.len().saturating_sub(64 << 10);
            kept.drain(..excess);
        }
        kept
    });
    let status = match tokio::time::timeout(PATIENCE, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            let _ = child.kill().await;
            return Ok(Err(format!(
                "llama.cpp did not open it within {} s",
                PATIENCE.as_secs()
            )));
        }
    };
    let said = String::from_utf8_lossy(&reading.await.unwrap_or_default()).into_owned();
    if status.success() {
        return Ok(Ok(()));
    }
    let last_words = last_words(&said);
    let how = {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (_, Some(signal)) => format!("llama.cpp crashed opening it (signal {signal})"),
            (Some(code), None) => format!("llama.cpp could not open it (exit {code})"),
            (None, None) => "llama.cpp could not open it".to_string(),
        }
    };
    Ok(Err(match last_words.is_empty() {
        true => how,
        false => format!("{how}: {last_words}"),
    }))
}

/// What the child said last that says what went wrong: the last line that is an assertion or
/// an error (without the source file's directories), else its last lines.
fn last_words(said: &str) -> String {
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let telling = |line: &&&str| {
        ["GGML_ASSERT", "GGML_ABORT", "error", "failed"]
            .iter()
            .any(|word| line.contains(word))
    };
    match lines.iter().rev().find(telling) {
        // `/build/.../llama-model.cpp:1422: GGML_ASSERT(...) failed`: the file's own name only.
        Some(line) => {
            let place_ends = line.find(": ").unwrap_or(0);
            let name_starts = line[..place_ends].rfind('/').map_or(0, |at| at + 1);
            line[name_starts..].to_string()
        }
        None => lines[lines.len().saturating_sub(LAST_WORDS)..].join(" / "),
    }
}

/// [`vet`] for the registry: a refusal is [`RegistryError::Unusable`]; a probe that could not
/// run at all is logged and the model loaded as before (the probe guards, it does not gate).
///
/// [`RegistryError::Unusable`]: crate::registry::RegistryError::Unusable
pub async fn vet_or_refuse(
    data_dir: &Path,
    path: &Path,
    name: &str,
    gpu_layers: u32,
) -> Result<(), crate::registry::RegistryError> {
    match vet(data_dir, path, gpu_layers).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => {
            tracing::warn!(model = name, %reason, "model refused by its probe");
            Err(crate::registry::RegistryError::Unusable {
                name: name.to_string(),
                reason,
            })
        }
        Err(err) => {
            tracing::warn!(model = name, error = %format!("{err:#}"), "the model probe could not run");
            Ok(())
        }
    }
}

/// `tabagent probe-model FILE`: loads the model and generates one token; exits 0 if all went
/// well, non-zero (or by a signal, when llama.cpp aborts) if not.
pub async fn child(path: &Path, gpu_layers: u32) -> anyhow::Result<()> {
    use tabagent_core::{ChatMessage, GenerationEvent, GenerationParams, Role};
    // A file that makes llama.cpp (or its chat template) allocate without end fails an
    // allocation here, at once, rather than pushing the machine into swap: the probe's address
    // space holds the mapped file twice and 2 GiB besides. Not with a GPU: its drivers reserve
    // large address ranges.
    if gpu_layers == 0 {
        let size = std::fs::metadata(path)?.len();
        let limit = size.saturating_mul(2).saturating_add(2 << 30);
        let bound = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        rustix::process::setrlimit(rustix::process::Resource::As, bound)?;
    }
    let config = tabagent_llama::EngineConfig {
        threads: 1,
        threads_batch: 1,
        parallel: 1,
        ctx_per_slot: 256,
        gpu_layers,
        ..tabagent_llama::EngineConfig::default()
    };
    let path = path.to_path_buf();
    let engine =
        tokio::task::spawn_blocking(move || tabagent_llama::LlamaEngine::load(&path, config))
            .await??;
    // The chat template on the conversations requests bring (a template that blows up on
    // them blows up here): turns of every role, tools offered, a tool's call and result. A
    // template may refuse a conversation (an error is fine); it may not crash the process.
    let tools = tabagent_core::Tools {
        specs: vec![tabagent_core::ToolSpec {
            name: "get_weather".into(),
            description: Some("The weather in a city".into()),
            parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            strict: false,
        }],
        ..tabagent_core::Tools::default()
    };
    let call = tabagent_core::ToolCall {
        id: "call_0".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Oslo"}"#.into(),
    };
    let conversations = [
        vec![
            ChatMessage::new(Role::System, "You are brief."),
            ChatMessage::new(Role::User, "Hello"),
            ChatMessage::new(Role::Assistant, "Hi."),
            ChatMessage::new(Role::User, "Again"),
        ],
        vec![
            ChatMessage::new(Role::User, "The weather in Oslo?"),
            ChatMessage::assistant_calls("", vec![call]),
            ChatMessage::tool_result("call_0", "12 C"),
        ],
    ];
    for messages in &conversations {
        let _ = engine.chat_prompt_with(messages, &tools);
        let _ = engine.chat_prompt_with(messages, &tabagent_core::Tools::default());
    }
    let params = GenerationParams {
        max_tokens: Some(1),
        ..GenerationParams::default()
    };
    let messages = [ChatMessage::new(Role::User, "Hi")];
    let mut handle = match engine.chat(&messages, params.clone()) {
        Ok(handle) => handle,
        // A model without a chat template answers a raw prompt.
        Err(_) => engine.complete("Hi", params)?,
    };
    while let Some(event) = handle.events.recv().await {
        match event {
            GenerationEvent::Finished { .. } => return Ok(()),
            GenerationEvent::Failed(err) => anyhow::bail!("generating failed: {err}"),
            _ => {}
        }
    }
    anyhow::bail!("the engine stopped without an answer")
}

#[cfg(test)]
mod tests {
    use super::last_words;

    #[test]
    fn the_telling_line_is_quoted_without_its_directories() {
        let said = "llama_model_loader: loaded meta data\n\
                    /build/src/llama-model.cpp:1422: GGML_ASSERT(a / b != 0) failed\n\
                    Aborted\n";
        assert_eq!(
            last_words(said),
            "llama-model.cpp:1422: GGML_ASSERT(a / b != 0) failed"
        );
        assert_eq!(last_words("one\ntwo\nthree\nfour\n"), "two / three / four");
    }
}
