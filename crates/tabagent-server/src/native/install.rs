//! Host manifests: the JSON file that tells a Chromium-based browser which binary answers
//! `chrome.runtime.connectNative(HOST_NAME)` and which extensions may call it. Each browser reads
//! its own per-user directory; Chromium reads only `<user data dir>/NativeMessagingHosts`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::json;

/// The name extensions connect to.
pub const HOST_NAME: &str = "ai.tabagent";

/// The browsers whose per-user manifest directories we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Browser {
    Chrome,
    Chromium,
    Edge,
    Brave,
}

impl Browser {
    pub const ALL: [Browser; 4] = [
        Browser::Chrome,
        Browser::Chromium,
        Browser::Edge,
        Browser::Brave,
    ];

    /// The directory this browser reads host manifests from, for the current user.
    pub fn manifest_dir(self) -> anyhow::Result<PathBuf> {
        let home = std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from)
            .context("HOME is not set, so the browser's profile directory is unknown")?;
        if cfg!(target_os = "macos") {
            let base = home.join("Library/Application Support");
            let dir = match self {
                Browser::Chrome => "Google/Chrome",
                Browser::Chromium => "Chromium",
                Browser::Edge => "Microsoft Edge",
                Browser::Brave => "BraveSoftware/Brave-Browser",
            };
            Ok(base.join(dir).join("NativeMessagingHosts"))
        } else if cfg!(windows) {
            bail!("on Windows the host is registered in the registry, which `tabagent native install` does not do yet")
        } else {
            // Chromium-based browsers on Linux follow XDG_CONFIG_HOME.
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|dir| !dir.is_empty())
                .map_or_else(|| home.join(".config"), PathBuf::from);
            let dir = match self {
                Browser::Chrome => "google-chrome",
                Browser::Chromium => "chromium",
                Browser::Edge => "microsoft-edge",
                Browser::Brave => "BraveSoftware/Brave-Browser",
            };
            Ok(config.join(dir).join("NativeMessagingHosts"))
        }
    }
}

/// Whether `id` is an extension id: 32 letters a to p (a SHA-256 prefix, one letter a nibble).
pub fn valid_extension_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| (b'a'..=b'p').contains(&b))
}

/// The manifest naming `binary` as the host for `extension_ids`.
pub fn manifest(binary: &Path, extension_ids: &[String]) -> serde_json::Value {
    let origins: Vec<String> = extension_ids
        .iter()
        .map(|id| format!("chrome-extension://{id}/"))
        .collect();
    json!({
        "name": HOST_NAME,
        "description": "tabagent: local AI models for the browser",
        "path": binary,
        "type": "stdio",
        "allowed_origins": origins,
    })
}

/// Writes the manifest for each browser (atomically); returns the files written.
pub fn install(browsers: &[Browser], extension_ids: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if extension_ids.is_empty() {
        bail!("name the extension allowed to connect: --extension-id <32 letters a-p>");
    }
    for id in extension_ids {
        if !valid_extension_id(id) {
            bail!("{id:?} is not an extension id: 32 letters from a to p, as chrome://extensions shows it");
        }
    }
    // The browser starts the host by this path, so it must be absolute and stay valid.
    let binary = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find this binary's path")?;
    let text = serde_json::to_string_pretty(&manifest(&binary, extension_ids))? + "\n";
    let mut written = Vec::new();
    for browser in browsers {
        let dir = browser.manifest_dir()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{HOST_NAME}.json"));
        let partial = dir.join(format!(".{HOST_NAME}.json.partial"));
        std::fs::write(&partial, &text)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Removes the manifest from each browser's directory; returns the files removed.
pub fn uninstall(browsers: &[Browser]) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for browser in browsers {
        let path = browser.manifest_dir()?.join(format!("{HOST_NAME}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot remove {}", path.display()))
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_ids_are_32_letters_a_to_p() {
        assert!(valid_extension_id("abcdefghijklmnopabcdefghijklmnop"));
        assert!(!valid_extension_id("abcdefghijklmnopabcdefghijklmnoq"));
        assert!(!valid_extension_id("abcdefghijklmnop"));
        assert!(!valid_extension_id("../../../../etc/passwd/aaaaaaaaaa"));
    }

    #[test]
    fn the_manifest_allows_only_the_named_extensions() {
        let manifest = manifest(Path::new("/opt/tabagent"), &["a".repeat(32)]);
        assert_eq!(manifest["name"], HOST_NAME);
        assert_eq!(manifest["type"], "stdio");
        assert_eq!(manifest["path"], "/opt/tabagent");
        assert_eq!(
            manifest["allowed_origins"],
            json!([format!("chrome-extension://{}/", "a".repeat(32))])
        );
    }
}
