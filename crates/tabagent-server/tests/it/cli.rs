use std::process::Output;

use crate::server::{import, smollm2_path, tabagent, MODEL};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &Output, mentions: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = stderr(out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got {text:?}");
    assert!(lines[0].starts_with("error: "), "{text:?}");
    assert!(
        lines[0].contains(mentions),
        "{text:?} should mention {mentions}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn models_lists_what_import_added() {
    let dir = tempfile::tempdir().unwrap();
    let out = tabagent(dir.path()).arg("models").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("tabagent import"));
    import(dir.path(), &smollm2_path(), MODEL);
    let out = tabagent(dir.path()).arg("models").output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let row = listing
        .lines()
        .find(|l| l.starts_with(MODEL))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        row.contains("llama") && row.contains("yes") && row.contains("b179c9523d0e"),
        "{row}"
    );
}

#[test]
fn import_refuses_broken_files_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(smollm2_path()).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_gguf = dir.path().join("notes.gguf");
    std::fs::write(&not_gguf, b"these are not model weights").unwrap();
    let data = dir.path().join("data");

    let out = tabagent(&data)
        .arg("import")
        .arg(&truncated)
        .output()
        .unwrap();
    assert_one_line_error(&out, "truncated.gguf");
    let out = tabagent(&data)
        .arg("import")
        .arg(&not_gguf)
        .output()
        .unwrap();
    assert_one_line_error(&out, "notes.gguf");
    let out = tabagent(&data)
        .arg("import")
        .arg(dir.path().join("missing.gguf"))
        .output()
        .unwrap();
    assert_one_line_error(&out, "missing.gguf");
    let out = tabagent(&data)
        .args(["import", "--sha256", &"ab".repeat(32)])
        .arg(smollm2_path())
        .output()
        .unwrap();
    assert_one_line_error(&out, "sha256");
    let out = tabagent(&data)
        .args(["import", "--name", "../escape"])
        .arg(smollm2_path())
        .output()
        .unwrap();
    assert_one_line_error(&out, "name");

    let out = tabagent(&data).arg("models").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no models yet"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn serve_refuses_bad_settings_and_keyless_public_binds() {
    let dir = tempfile::tempdir().unwrap();
    let out = tabagent(dir.path())
        .args(["serve", "--port", "0"])
        .env("TABAGENT_WEBRTC__IP", "not-an-address")
        .output()
        .unwrap();
    assert_one_line_error(&out, "webrtc.ip");
    let out = tabagent(dir.path())
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "API key");
    let out = tabagent(dir.path())
        .args([
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--api-key",
            "short",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "API key");
}

#[test]
fn run_prints_a_completion_and_fails_cleanly_on_unknown_models() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &smollm2_path(), MODEL);
    let out = tabagent(dir.path())
        .args([
            "run",
            MODEL,
            "What is two plus two?",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    let out = tabagent(dir.path())
        .args(["run", "nope", "hi"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "nope");
}

#[test]
fn a_bad_config_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tabagent.toml");
    std::fs::write(&config, "[server]\nport = \"eighty\"\n").unwrap();
    let out = tabagent(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("models")
        .output()
        .unwrap();
    assert_one_line_error(&out, "port");

    // A route reading a memory store that does not exist is refused when the config loads,
    // not with an error on each request.
    std::fs::write(
        &config,
        "[router.routes.grounded.context]\nstores = [\"knowledge\", \"recipes\"]\n",
    )
    .unwrap();
    let out = tabagent(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("models")
        .output()
        .unwrap();
    assert_one_line_error(&out, "recipes");
}

#[test]
fn interactive_run_keeps_chatting_when_the_history_outgrows_the_context() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &smollm2_path(), MODEL);
    let mut child = tabagent(dir.path())
        .args([
            "run",
            MODEL,
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--ctx-size",
            "160",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let long_turn =
        "Please remember this sentence about rivers, mountains, forests and the sea. ".repeat(3);
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..4 {
        writeln!(stdin, "{long_turn}").unwrap();
    }
    writeln!(stdin, "/bye").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("error:"), "{err}");
    // Four prompts got four replies (a reply may itself span lines).
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(
        replies.lines().filter(|l| !l.trim().is_empty()).count() >= 4,
        "{replies:?}"
    );
    assert_eq!(err.matches(">>> ").count(), 5, "{err}");
}
