//! `tabagent agent` with the real Qwen2.5 model: it calls a tool, reads the result and answers
//! with it; it reads a workspace file it is pointed at; bad flags are one-line errors.

use std::path::PathBuf;
use std::process::Output;

use crate::server::{import, tabagent};

fn qwen() -> PathBuf {
    PathBuf::from(
        std::env::var_os("TABAGENT_TEST_QWEN_GGUF")
            .expect("TABAGENT_TEST_QWEN_GGUF is not set: run the tests with scripts/test"),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn agent(dir: &std::path::Path, args: &[&str]) -> Output {
    tabagent(dir)
        .args(["agent", "qwen"])
        .args(args)
        .args(["--temperature", "0"])
        .output()
        .unwrap()
}

#[test]
fn the_agent_calls_a_tool_and_answers_with_its_result() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &qwen(), "qwen");
    let out = agent(
        dir.path(),
        &["What is 1234 * 5678? Use the calculator tool."],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // The steps on standard error: the call, and the tool's own result.
    assert!(stderr.contains("[step 1]"), "{stderr}");
    assert!(stderr.contains("-> calculator"), "{stderr}");
    assert!(stderr.contains("<- 1234 * 5678 = 7006652"), "{stderr}");
    assert!(stderr.contains("[answered in"), "{stderr}");
    // The answer on standard output carries the result (which the model could not have
    // computed itself at this size).
    assert!(stdout.contains("7006652"), "{stdout}");

    // A file in a workspace folder: listed or read, and its content reaches the answer.
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(
        workspace.path().join("notes.txt"),
        "The launch code is 4417. The rocket is named Heron.",
    )
    .unwrap();
    let folder = format!("docs={}", workspace.path().display());
    let out = agent(
        dir.path(),
        &[
            "Read notes.txt in the docs workspace and tell me the rocket's name.",
            "--workspace",
            &folder,
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("-> read_file"), "{stderr}");
    assert!(stdout.contains("Heron"), "{stdout}");
}

#[test]
fn bad_agent_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &qwen(), "qwen");
    for (flag, mentions) in [
        ("docs", "NAME=PATH"),
        ("docs=/nonexistent/folder", "--workspace"),
    ] {
        let out = agent(dir.path(), &["hi", "--workspace", flag]);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(mentions),
            "{stderr}"
        );
    }
}
