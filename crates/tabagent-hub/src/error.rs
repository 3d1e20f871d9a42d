//! Why a Hub operation failed.

use std::path::PathBuf;

/// Why a Hub operation failed. Every variant names what the user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A repository id, file path or revision is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// `repository`, `file`, `revision`, ...
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The repository does not exist (or is private and no token grants access).
    #[error("repository {repo} not found on {endpoint} (private repositories need HF_TOKEN)")]
    RepoNotFound {
        /// The repository.
        repo: String,
        /// The Hub endpoint asked.
        endpoint: String,
    },
    /// The revision does not exist in the repository.
    #[error("revision {revision} not found in {repo}")]
    RevisionNotFound {
        /// The repository.
        repo: String,
        /// The revision asked for.
        revision: String,
    },
    /// The file does not exist at that revision.
    #[error("file {file} not found in {repo} at {revision}")]
    FileNotFound {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// The revision.
        revision: String,
    },
    /// The repository needs a token, or a different one.
    #[error("{repo} requires authentication ({status}): {how}{gated}")]
    Unauthorized {
        /// The repository.
        repo: String,
        /// The HTTP status.
        status: u16,
        /// How to get access.
        how: &'static str,
        /// A hint when the repository is gated.
        gated: &'static str,
    },
    /// A specification names no file and the repository has several candidates, or none.
    #[error("{0}")]
    Ambiguous(String),
    /// The Hub answered something the protocol does not allow.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The Hub could not be reached or the transfer failed after retries.
    #[error("cannot reach {url}: {reason}")]
    Network {
        /// The URL asked.
        url: String,
        /// The error.
        reason: String,
    },
    /// The downloaded bytes are not the ones the Hub announced.
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}; the download was discarded")]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// The digest announced.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Offline mode, and the cache lacks the file.
    #[error("offline mode: {file} from {repo} at {revision} is not in the cache {cache}")]
    NotCached {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// The revision.
        revision: String,
        /// The cache root.
        cache: PathBuf,
    },
    /// The cache's filesystem has no room for the file. Checked before any byte is fetched.
    #[error(
        "not enough disk space for {file} ({needed} bytes) in {dir}: {available} bytes free; \
         free some space or point HF_HUB_CACHE elsewhere"
    )]
    DiskFull {
        /// The file.
        file: String,
        /// The directory it was to be written to.
        dir: PathBuf,
        /// Its size.
        needed: u64,
        /// Free bytes there (for unprivileged users), as far as the system says.
        available: u64,
    },
    /// A file operation in the cache failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: &'static str) -> Self {
        Self::Invalid {
            what,
            value: value.chars().take(200).collect(),
            reason,
        }
    }
}
