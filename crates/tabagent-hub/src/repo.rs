//! Names on the Hub: repositories, files in them, revisions, and the `ORG/REPO[:FILE|:QUANT]`
//! specifications users type. Each is validated once, here, before it becomes part of a URL or
//! a path in the cache, so nothing a client sends can steer a path out of the cache.

use std::fmt;

use crate::HubError;

/// `owner/name` of a model repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    owner: String,
    name: String,
}

impl RepoId {
    /// Parses `owner/name` with the Hub's rules: 1-96 letters, digits, `-`, `_` or `.` each,
    /// not starting or ending with `-` or `.`, no `--` or `..`.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let (owner, name) = text.split_once('/').ok_or_else(|| {
            HubError::invalid(
                "repository",
                text,
                "expected OWNER/NAME, e.g. HuggingFaceTB/SmolLM2-135M-Instruct",
            )
        })?;
        for part in [owner, name] {
            check_repo_part(part)
                .map_err(|reason| HubError::invalid("repository", text, reason))?;
        }
        Ok(Self {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }

    /// The owner (user or organisation).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The repository's folder in the cache: `models--owner--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}--{}", self.owner, self.name)
    }

    /// Parses a cache folder name back into the id, if it is a model folder.
    pub fn from_cache_folder(folder: &str) -> Option<Self> {
        let rest = folder.strip_prefix("models--")?;
        let (owner, name) = rest.split_once("--")?;
        Self::parse(&format!("{owner}/{name}")).ok()
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

fn check_repo_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() || part.len() > 96 {
        return Err("each part must be 1-96 characters");
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed");
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err("a part may not start or end with '-' or '.'");
    }
    if part.contains("--") || part.contains("..") {
        return Err("'--' and '..' are not allowed");
    }
    Ok(())
}

/// A file's path inside a repository: relative, `/`-separated, no `.` or `..` segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(String);

impl RepoPath {
    /// Validates `text` as a path inside a repository.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let bad = |reason| Err(HubError::invalid("file path", text, reason));
        if text.is_empty() || text.len() > 1024 {
            return bad("must be 1-1024 bytes");
        }
        if text.starts_with('/') || text.contains('\\') {
            return bad("must be relative and use '/'");
        }
        if text.chars().any(char::is_control) {
            return bad("control characters are not allowed");
        }
        if text
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return bad("empty, '.' and '..' segments are not allowed");
        }
        Ok(Self(text.to_string()))
    }

    /// The path as the Hub spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A branch, tag or commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision(String);

impl Revision {
    /// The default branch.
    pub fn main() -> Self {
        Self("main".to_string())
    }

    /// Validates a branch, tag (`v1.0`, `refs/pr/1`) or commit hash.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let bad = |reason| Err(HubError::invalid("revision", text, reason));
        if text.is_empty() || text.len() > 255 {
            return bad("must be 1-255 characters");
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        {
            return bad("only letters, digits, '-', '_', '.' and '/' are allowed");
        }
        if text.starts_with('/') || text.ends_with('/') || text.contains("//") {
            return bad("misplaced '/'");
        }
        if text
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return bad("'.' and '..' segments are not allowed");
        }
        Ok(Self(text.to_string()))
    }

    /// The revision as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is a full commit hash (then no ref needs recording).
    pub fn is_commit(&self) -> bool {
        is_commit_hash(&self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 40-hex-digit lowercase git commit hash.
pub fn is_commit_hash(text: &str) -> bool {
    text.len() == 40
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What `tabagent pull` was asked for: `ORG/REPO`, `ORG/REPO:FILE` or `ORG/REPO:QUANT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The repository.
    pub repo: RepoId,
    /// Which file(s).
    pub selector: Selector,
}

/// Which file of a repository a specification means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The repository's only GGUF file (an error when there are several).
    OnlyGguf,
    /// A file by path.
    File(RepoPath),
    /// The GGUF file whose name carries this quantization, e.g. `Q4_K_M` (case-insensitive).
    Quant(String),
}

impl ModelSpec {
    /// Parses `ORG/REPO[:FILE|:QUANT]`. After the colon, a value with a `.` or `/` is a file
    /// path; anything else is a quantization tag.
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let (repo, rest) = match text.split_once(':') {
            Some((repo, rest)) => (repo, Some(rest)),
            None => (text, None),
        };
        let repo = RepoId::parse(repo)?;
        let selector = match rest {
            None => Selector::OnlyGguf,
            Some(rest) if rest.contains(['.', '/']) => Selector::File(RepoPath::parse(rest)?),
            Some(rest) => {
                if rest.is_empty()
                    || rest.len() > 64
                    || !rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                {
                    return Err(HubError::invalid(
                        "quantization",
                        rest,
                        "expected a tag such as Q4_K_M, or a file name ending in .gguf",
                    ));
                }
                Selector::Quant(rest.to_string())
            }
        };
        Ok(Self { repo, selector })
    }

    /// Picks the file this specification means among a repository's files.
    pub fn choose<'a>(&self, files: &'a [String]) -> Result<&'a str, HubError> {
        let gguf: Vec<&String> = files
            .iter()
            .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
            .collect();
        let listing = || {
            let names: Vec<&str> = gguf.iter().map(|f| f.as_str()).collect();
            if names.is_empty() {
                "it has no .gguf files".to_string()
            } else {
                format!("its .gguf files: {}", names.join(", "))
            }
        };
        match &self.selector {
            Selector::File(path) => files
                .iter()
                .find(|f| f.as_str() == path.as_str())
                .map(String::as_str)
                .ok_or_else(|| {
                    HubError::Ambiguous(format!("{} has no file {path}; {}", self.repo, listing()))
                }),
            Selector::OnlyGguf => match gguf.as_slice() {
                [only] => Ok(only.as_str()),
                _ => Err(HubError::Ambiguous(format!(
                    "{} needs a file or quantization, e.g. {}:Q4_K_M; {}",
                    self.repo,
                    self.repo,
                    listing()
                ))),
            },
            Selector::Quant(quant) => {
                let wanted = quant.to_ascii_lowercase();
                let matching: Vec<&&String> = gguf
                    .iter()
                    .filter(|f| quant_tokens(f).any(|token| token == wanted))
                    .collect();
                match matching.as_slice() {
                    [only] => Ok(only.as_str()),
                    [] => Err(HubError::Ambiguous(format!(
                        "{} has no {quant} file; {}",
                        self.repo,
                        listing()
                    ))),
                    many => Err(HubError::Ambiguous(format!(
                        "{quant} matches several files in {}: {}; name one with {}:FILE",
                        self.repo,
                        many.iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        self.repo
                    ))),
                }
            }
        }
    }
}

/// The dot- or dash-separated parts of a file name, lowercased: `model.Q4_K_M.gguf` → `q4_k_m`.
fn quant_tokens(file: &str) -> impl Iterator<Item = String> + '_ {
    let name = file.rsplit('/').next().unwrap_or(file);
    let stem = name
        .strip_suffix(".gguf")
        .or_else(|| name.strip_suffix(".GGUF"))
        .unwrap_or(name);
    stem.split(['.', '-']).map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_follow_the_hub_rules() {
        let repo = RepoId::parse("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert_eq!(
            repo.cache_folder(),
            "models--HuggingFaceTB--SmolLM2-135M-Instruct"
        );
        assert_eq!(RepoId::from_cache_folder(&repo.cache_folder()), Some(repo));
        for bad in [
            "", "a", "a/", "/b", "a/b/c", "../b", "a/..", "a--b/c", "a/b c", "-a/b", "a/b.",
        ] {
            assert!(RepoId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn file_paths_cannot_leave_the_repository() {
        assert!(RepoPath::parse("sub/dir/model.gguf").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            "a\nb",
        ] {
            assert!(RepoPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn revisions_are_branches_tags_or_commits() {
        assert!(Revision::parse("refs/pr/1").is_ok());
        assert!(Revision::parse("v1.0").is_ok());
        assert!(Revision::parse(&"a".repeat(40)).unwrap().is_commit());
        for bad in ["", "../main", "a/../b", "/main", "main/", "a b", "a%2Fb"] {
            assert!(Revision::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn specs_choose_files_by_name_or_quantization() {
        let files: Vec<String> = ["README.md", "m.Q4_K_M.gguf", "m.Q8_0.gguf", "m-q4_k_s.gguf"]
            .map(String::from)
            .to_vec();
        let choose = |spec: &str| {
            ModelSpec::parse(spec)
                .unwrap()
                .choose(&files)
                .map(str::to_string)
        };
        assert_eq!(choose("o/m:q4_k_m").unwrap(), "m.Q4_K_M.gguf");
        assert_eq!(choose("o/m:Q4_K_S").unwrap(), "m-q4_k_s.gguf");
        assert_eq!(choose("o/m:m.Q8_0.gguf").unwrap(), "m.Q8_0.gguf");
        assert!(choose("o/m")
            .unwrap_err()
            .to_string()
            .contains("m.Q8_0.gguf"));
        assert!(choose("o/m:Q2_K").is_err());
        assert!(ModelSpec::parse("o/m:Q4 K").is_err());
    }
}
