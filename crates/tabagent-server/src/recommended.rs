//! The default model library (seed 000): known-good models by role, shipped inside the binary,
//! and the choice `tabagent pull --recommended` makes from it for this machine's memory.

use serde::Deserialize;

const CATALOG: &str = include_str!("../catalog/models.toml");

/// One known-good model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommended {
    /// `chat`, `tools`, ...
    pub role: String,
    /// A human name.
    pub name: String,
    /// `owner/name` on the Hub.
    pub repo: String,
    /// The file in the repository.
    pub file: String,
    /// Bytes.
    pub size: u64,
    /// The published sha256 the download must have.
    pub sha256: String,
    /// MiB it needs loaded with the default context.
    pub ram_mib: u64,
    /// Why it is here.
    pub notes: String,
    /// Files it needs beside `file` (tokenizer, configuration), fetched from the same commit.
    #[serde(default)]
    pub companions: Vec<Companion>,
}

/// A file a model needs beside its weights.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Companion {
    /// Path in the repository.
    pub path: String,
    /// Its sha256: small files are stored in git, not LFS, so the Hub announces no sha256 for
    /// them; the library's pin is what verifies them.
    pub sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Library {
    model: Vec<Recommended>,
}

/// Every entry of the library.
pub fn library() -> anyhow::Result<Vec<Recommended>> {
    Ok(toml::from_str::<Library>(CATALOG)?.model)
}

/// The largest model of `role` that needs at most half of `available_mib` (the rest stays for
/// the system and other models); the smallest of the role when none fits or memory is unknown.
pub fn choose(role: &str, available_mib: Option<u64>) -> anyhow::Result<Recommended> {
    let mut candidates: Vec<Recommended> =
        library()?.into_iter().filter(|m| m.role == role).collect();
    if candidates.is_empty() {
        let roles: std::collections::BTreeSet<String> =
            library()?.into_iter().map(|m| m.role).collect();
        anyhow::bail!(
            "no recommended model for the role `{role}`; roles: {}",
            roles.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    candidates.sort_by_key(|m| m.ram_mib);
    let fitting = available_mib.and_then(|available| {
        candidates
            .iter()
            .rev()
            .find(|m| m.ram_mib.saturating_mul(2) <= available)
    });
    Ok(fitting.unwrap_or(&candidates[0]).clone())
}

/// `MemAvailable` from `/proc/meminfo`, in MiB (Linux); `None` elsewhere.
pub fn available_memory_mib() -> Option<u64> {
    meminfo_mib("MemAvailable:")
}

/// `MemTotal` from `/proc/meminfo`, in MiB (Linux); `None` elsewhere.
pub fn total_memory_mib() -> Option<u64> {
    meminfo_mib("MemTotal:")
}

fn meminfo_mib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_parses_and_pins_every_file() {
        let models = library().unwrap();
        assert!(models.iter().any(|m| m.role == "chat"));
        for model in &models {
            assert_eq!(model.sha256.len(), 64, "{}", model.name);
            assert!(
                tabagent_hub::RepoId::parse(&model.repo).is_ok(),
                "{}",
                model.repo
            );
            assert!(model.size > 0 && model.ram_mib > 0, "{}", model.name);
            for companion in &model.companions {
                assert_eq!(companion.sha256.len(), 64, "{}", companion.path);
                assert!(
                    tabagent_hub::RepoPath::parse(&companion.path).is_ok(),
                    "{}",
                    companion.path
                );
            }
        }
        for role in ["chat", "tools", "embedding", "speech"] {
            assert!(models.iter().any(|m| m.role == role), "{role}");
        }
    }

    #[test]
    fn the_choice_follows_memory() {
        let small = choose("chat", Some(500)).unwrap();
        let large = choose("chat", Some(64 * 1024)).unwrap();
        assert!(small.ram_mib < large.ram_mib, "{small:?} vs {large:?}");
        assert_eq!(choose("chat", None).unwrap(), small);
        assert!(choose("nonsense", Some(1024)).is_err());
    }
}
