//! Repository-wide rules that review would otherwise have to remember.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn workspace_files() -> Vec<PathBuf> {
    // At run time: a shared build cache may hold a binary compiled in another checkout.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
        Into::into,
    );
    let root = crate_dir.join("../..");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("fuzz/fuzz_targets"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    files
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let missing: Vec<_> = workspace_files()
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .collect();
    assert!(missing.is_empty(), "modules without a //! doc: {missing:?}");
}

#[test]
fn no_test_is_skipped_or_expects_a_panic() {
    // Spelled in pieces so this file does not match its own rule.
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let offenders: Vec<_> = workspace_files()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            banned.iter().any(|b| text.contains(b))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "skipped or should_panic tests in {offenders:?}"
    );
}

#[test]
fn files_stay_readable() {
    let long: Vec<_> = workspace_files()
        .into_iter()
        .map(|p| (std::fs::read_to_string(&p).unwrap().lines().count(), p))
        .filter(|(lines, _)| *lines > 1000)
        .collect();
    assert!(long.is_empty(), "files over 1,000 lines: {long:?}");
}
