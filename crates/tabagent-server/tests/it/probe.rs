//! A model file that passes every check tabagent makes of it but aborts llama.cpp: opened
//! first in a probe process, it costs that process only; the server refuses it with what
//! llama.cpp said, stays up, and remembers the verdict.

use serde_json::json;

use crate::server::{assert_error, import, smollm2_path, tabagent, Server, MODEL};

/// SmolLM2 with its chat template's key renamed, in place (the same length: nothing moves), to
/// `llama.rope.scaling.type`: llama.cpp asserts that it knows the scaling type a file names,
/// and a chat template is none it knows.
fn crashing_model(dir: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(smollm2_path()).unwrap();
    let from = b"tokenizer.chat_template";
    let to = b"llama.rope.scaling.type";
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("SmolLM2 has a chat template");
    bytes[at..at + to.len()].copy_from_slice(to);
    let path = dir.join("crashing.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_aborts_llama_cpp_is_refused_and_the_server_stays_up() {
    let files = tempfile::tempdir().unwrap();
    let crashing = crashing_model(files.path());
    let server = Server::start_with(&[], &[], |data| import(data, &crashing, "crashing"));
    let ask = |model: &str| json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = server
        .post_json("/v1/chat/completions", &ask("crashing"))
        .await;
    let message = assert_error(status, &body, 400)["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body["error"]["code"], "model_unusable", "{body}");
    // What llama.cpp said before it aborted.
    assert!(
        message.contains("crashed") && message.contains("rope_scaling_type"),
        "{message}"
    );
    // The server is up and serves its other model.
    let (status, body) = server.post_json("/v1/chat/completions", &ask(MODEL)).await;
    assert_eq!(status, 200, "{body}");
    // The verdict is kept: the same refusal again, and on disk by the file's SHA-256.
    let (status, again) = server
        .post_json("/v1/chat/completions", &ask("crashing"))
        .await;
    assert_eq!(
        assert_error(status, &again, 400)["message"],
        message.as_str()
    );
    let verdicts: Vec<_> = std::fs::read_dir(server.data_dir().join("probes"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(
        verdicts.len() >= 2,
        "a verdict for each model: {verdicts:?}"
    );
    // The CLI says it in one line and exits non-zero.
    let out = tabagent(server.data_dir())
        .args(["run", "crashing", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used"), "{stderr}");
}

/// SmolLM2 with its chat template replaced, in place (the same length, padded by a comment),
/// by one that doubles a string without end: fuel counts instructions, not bytes.
fn template_bomb(dir: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(smollm2_path()).unwrap();
    let key = b"tokenizer.chat_template";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    // The value: a u32 type tag (8: string), a u64 length, the text.
    let len = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap()) as usize;
    let start = at + 12;
    let bomb = "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}\
                {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}";
    assert!(
        bomb.len() + 4 <= len,
        "SmolLM2's template is longer than the bomb"
    );
    let padded = format!("{bomb}{{#{}#}}", " ".repeat(len - bomb.len() - 4));
    assert_eq!(padded.len(), len);
    bytes[start..start + len].copy_from_slice(padded.as_bytes());
    let path = dir.join("bomb.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_template_that_allocates_without_end_is_refused_and_the_server_stays_up() {
    let files = tempfile::tempdir().unwrap();
    let bomb = template_bomb(files.path());
    let server = Server::start_with(&[], &[], |data| import(data, &bomb, "bomb"));
    let ask = |model: &str| json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = server.post_json("/v1/chat/completions", &ask("bomb")).await;
    assert_eq!(
        assert_error(status, &body, 400)["code"],
        "model_unusable",
        "{body}"
    );
    let (status, body) = server.post_json("/v1/chat/completions", &ask(MODEL)).await;
    assert_eq!(status, 200, "{body}");
}
