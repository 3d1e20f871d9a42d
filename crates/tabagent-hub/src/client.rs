//! The Hub's protocol: file metadata through `HEAD /{repo}/resolve/{revision}/{path}`, the
//! repository listing through `/api/models/{repo}/revision/{revision}`, and downloads into the
//! cache.
//!
//! Redirects are followed by hand, never by the HTTP client: the token goes only to the
//! configured endpoint's origin (a redirect to a CDN or anywhere else never carries it), and a
//! model is named by repository, never by URL, so a caller cannot point a pull at another host.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::cache::HubCache;
use crate::download::{self, Progress, ProgressEvent};
use crate::repo::{is_commit_hash, RepoId, RepoPath, Revision};
use crate::HubError;

/// Where and how to reach the Hub.
#[derive(Clone)]
pub struct HubConfig {
    /// The Hub's base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: Url,
    /// A user access token (`HF_TOKEN`), sent to `endpoint`'s origin only.
    pub token: Option<String>,
    /// A token exists but this client may not use it (it serves a caller the operator has
    /// not trusted with it): a refusal says so rather than "set HF_TOKEN".
    pub token_withheld: bool,
    /// Never use the network; serve from the cache only (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Parallel connections for one large file.
    pub connections: usize,
    /// Bytes per ranged request (and per unit of resumable progress).
    pub chunk_size: u64,
    /// Attempts per chunk before the download fails.
    pub retries: u32,
    /// How long to wait for a connection or a stalled read.
    pub timeout: Duration,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("connections", &self.connections)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            endpoint: Url::parse(DEFAULT_ENDPOINT).unwrap_or_else(|_| unreachable_url()),
            token: None,
            token_withheld: false,
            offline: false,
            connections: 8,
            chunk_size: 32 << 20,
            retries: 5,
            timeout: Duration::from_secs(30),
        }
    }
}

fn unreachable_url() -> Url {
    // DEFAULT_ENDPOINT is a valid URL; this is never reached.
    Url::parse("http://127.0.0.1/").unwrap_or_else(|_| std::process::abort())
}

impl HubConfig {
    /// The defaults with `HF_ENDPOINT`, `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`, or the token file
    /// `huggingface-cli login` writes) and `HF_HUB_OFFLINE` applied.
    pub fn from_env() -> Result<Self, HubError> {
        let mut config = Self::default();
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        if let Some(endpoint) = var("HF_ENDPOINT") {
            config.endpoint = parse_endpoint(&endpoint)?;
        }
        config.token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(token_file);
        config.offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"));
        Ok(config)
    }
}

/// Checks an endpoint URL: http(s), a host, nothing after the path.
pub fn parse_endpoint(text: &str) -> Result<Url, HubError> {
    let url = Url::parse(text.trim_end_matches('/'))
        .map_err(|_| HubError::invalid("endpoint", text, "not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(HubError::invalid(
            "endpoint",
            text,
            "expected an http(s) URL with a host",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(HubError::invalid(
            "endpoint",
            text,
            "no query, fragment or credentials allowed",
        ));
    }
    Ok(url)
}

fn token_file() -> Option<String> {
    let home = std::env::var_os("HF_HOME").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface"))
    })?;
    let token = std::fs::read_to_string(home.join("token")).ok()?;
    Some(token.trim().to_string()).filter(|t| !t.is_empty())
}

/// What the Hub says about one file at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    /// The commit the revision resolved to.
    pub commit: String,
    /// The blob's ETag: the sha256 for LFS files, the git blob sha1 otherwise.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// Where the bytes are (the endpoint, or the CDN it redirected to).
    pub location: Url,
}

impl FileMetadata {
    /// The sha256 the file must have, when the Hub announced one (LFS files).
    pub fn sha256(&self) -> Option<&str> {
        (self.etag.len() == 64).then_some(self.etag.as_str())
    }
}

/// A repository at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The commit.
    pub commit: String,
    /// Its files.
    pub files: Vec<String>,
}

/// The result of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The snapshot entry (use this path to open the file).
    pub path: PathBuf,
    /// The commit.
    pub commit: String,
    /// The blob's ETag.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// Bytes fetched by this call (0 when the cache already had it).
    pub fetched: u64,
    /// The sha256 was checked (LFS files).
    pub verified: bool,
}

/// A Hub client writing into a [`HubCache`].
#[derive(Clone)]
pub struct HubClient {
    config: Arc<HubConfig>,
    cache: HubCache,
    http: reqwest::Client,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish()
    }
}

impl HubClient {
    /// A client for `config` writing into `cache`.
    pub fn new(config: HubConfig, cache: HubCache) -> Result<Self, HubError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .user_agent(concat!("tabagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| HubError::Network {
                url: config.endpoint.to_string(),
                reason: err.to_string(),
            })?;
        Ok(Self {
            config: Arc::new(config),
            cache,
            http,
        })
    }

    /// Its cache.
    pub fn cache(&self) -> &HubCache {
        &self.cache
    }

    /// Its configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Resolves `revision` of `repo` and reads the metadata of `path` with `HEAD`.
    pub async fn file_metadata(
        &self,
        repo: &RepoId,
        revision: &Revision,
        path: &RepoPath,
    ) -> Result<FileMetadata, HubError> {
        let mut url = self.repo_url(repo, &["resolve", revision.as_str()], Some(path));
        // Redirects on the same origin (a renamed repository) are followed; one to another origin
        // is where the bytes live (the CDN) and ends the walk, as in `huggingface_hub`: that
        // response carries the metadata, and the token must not follow it.
        for _ in 0..5 {
            let response = self.send(Method::HEAD, &url, None).await?;
            let status = response.status();
            let headers = response.headers();
            if status.is_redirection() {
                let location = header(headers, LOCATION.as_str())
                    .ok_or_else(|| protocol(&url, "redirect without Location"))?;
                let target = url
                    .join(location)
                    .map_err(|_| protocol(&url, "redirect to an invalid Location"))?;
                if target.origin() == url.origin() {
                    url = target;
                    continue;
                }
                return metadata_from(headers, target, &url, true);
            }
            if status.is_success() {
                return metadata_from(headers, url.clone(), &url, false);
            }
            return Err(self.status_error(status, headers, repo, revision, Some(path), &url));
        }
        Err(protocol(&url, "too many redirects"))
    }

    /// The commit `revision` names and the files in it.
    pub async fn repo_info(
        &self,
        repo: &RepoId,
        revision: &Revision,
    ) -> Result<RepoInfo, HubError> {
        #[derive(Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(Deserialize)]
        struct Info {
            sha: String,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let mut url = self.config.endpoint.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                HubError::invalid(
                    "endpoint",
                    self.config.endpoint.as_str(),
                    "cannot be a base URL",
                )
            })?;
            segments.pop_if_empty().extend([
                "api",
                "models",
                repo.owner(),
                repo.name(),
                "revision",
                revision.as_str(),
            ]);
        }
        let response = self.send(Method::GET, &url, None).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_error(status, response.headers(), repo, revision, None, &url));
        }
        let body = response.bytes().await.map_err(|err| network(&url, &err))?;
        if body.len() > 16 << 20 {
            return Err(protocol(&url, "repository listing larger than 16 MiB"));
        }
        let info: Info = serde_json::from_slice(&body)
            .map_err(|err| protocol(&url, &format!("bad JSON: {err}")))?;
        if !is_commit_hash(&info.sha) {
            return Err(protocol(&url, "the listing's sha is not a commit hash"));
        }
        Ok(RepoInfo {
            commit: info.sha,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// Makes `path` of `repo` at `revision` available in the cache: resolves the revision,
    /// reuses the blob when the cache has it, otherwise downloads it (resuming any partial
    /// download), verifies it and links it into the snapshot.
    pub async fn download(
        &self,
        repo: &RepoId,
        revision: &Revision,
        path: &RepoPath,
        progress: &dyn Progress,
    ) -> Result<Downloaded, HubError> {
        if self.config.offline {
            return self.cached(repo, revision, path);
        }
        let meta = match self.file_metadata(repo, revision, path).await {
            Ok(meta) => meta,
            // Unreachable Hub, file cached from before: use it, as `huggingface_hub` does.
            Err(HubError::Network { .. }) if self.cache.find(repo, revision, path)?.is_some() => {
                tracing::warn!(%repo, %path, "the Hub is unreachable; using the cached file");
                return self.cached(repo, revision, path);
            }
            Err(err) => return Err(err),
        };
        let blob = self.cache.blob_path(repo, &meta.etag)?;
        let lock_path = self.cache.lock_path(repo, &meta.etag)?;
        let lock = download::lock(&lock_path).await?;
        let fetched = if blob_complete(&blob, meta.size) {
            progress.event(ProgressEvent::Cached {
                file: path.to_string(),
                size: meta.size,
            });
            0
        } else {
            let auth = self.auth_for(&meta.location);
            download::fetch(self, &meta, auth, &blob, path.as_str(), progress).await?
        };
        drop(lock);
        let entry = self.cache.link(repo, &meta.commit, path, &meta.etag)?;
        self.cache.write_ref(repo, revision, &meta.commit)?;
        Ok(Downloaded {
            path: entry,
            commit: meta.commit.clone(),
            etag: meta.etag.clone(),
            size: meta.size,
            fetched,
            verified: meta.sha256().is_some(),
        })
    }

    fn cached(
        &self,
        repo: &RepoId,
        revision: &Revision,
        path: &RepoPath,
    ) -> Result<Downloaded, HubError> {
        let not_cached = || HubError::NotCached {
            repo: repo.to_string(),
            file: path.to_string(),
            revision: revision.to_string(),
            cache: self.cache.root().to_path_buf(),
        };
        let commit = self.cache.resolve(repo, revision)?.ok_or_else(not_cached)?;
        let entry = self
            .cache
            .find(repo, revision, path)?
            .ok_or_else(not_cached)?;
        let etag = std::fs::read_link(&entry)
            .ok()
            .and_then(|target| {
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let size = std::fs::metadata(&entry)
            .map_err(HubError::io("read", &entry))?
            .len();
        Ok(Downloaded {
            path: entry,
            commit,
            etag,
            size,
            fetched: 0,
            verified: false,
        })
    }

    /// The token header, only for the endpoint's own origin.
    pub(crate) fn auth_for(&self, url: &Url) -> Option<HeaderValue> {
        let token = self.config.token.as_ref()?;
        if url.origin() != self.config.endpoint.origin() {
            return None;
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        range: Option<&str>,
    ) -> Result<reqwest::Response, HubError> {
        let mut request = self
            .http
            .request(method, url.clone())
            .header("accept-encoding", "identity");
        if let Some(auth) = self.auth_for(url) {
            request = request.header(AUTHORIZATION, auth);
        }
        if let Some(range) = range {
            request = request.header(reqwest::header::RANGE, range);
        }
        request.send().await.map_err(|err| network(url, &err))
    }

    fn repo_url(&self, repo: &RepoId, middle: &[&str], path: Option<&RepoPath>) -> Url {
        let mut url = self.config.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(repo.owner()).push(repo.name());
            // Each piece is one percent-encoded segment: `refs/pr/1` becomes `refs%2Fpr%2F1`.
            for part in middle {
                segments.push(part);
            }
            if let Some(path) = path {
                segments.extend(path.segments());
            }
        }
        url
    }

    fn status_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        repo: &RepoId,
        revision: &Revision,
        path: Option<&RepoPath>,
        url: &Url,
    ) -> HubError {
        let code = header(headers, "x-error-code").unwrap_or("");
        let file_not_found = || HubError::FileNotFound {
            repo: repo.to_string(),
            file: path.map(ToString::to_string).unwrap_or_default(),
            revision: revision.to_string(),
        };
        let repo_not_found = || HubError::RepoNotFound {
            repo: repo.to_string(),
            endpoint: self.config.endpoint.to_string(),
        };
        match (status.as_u16(), code) {
            (_, "RevisionNotFound") => HubError::RevisionNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
            },
            (_, "EntryNotFound") => file_not_found(),
            (_, "RepoNotFound") => repo_not_found(),
            (401 | 403, _) => HubError::Unauthorized {
                repo: repo.to_string(),
                status: status.as_u16(),
                how: if self.config.token_withheld {
                    "the server's Hugging Face token serves only `tabagent pull` and API keys \
                     marked admin (`admin = true` under [scheduler.keys.NAME])"
                } else {
                    "set HF_TOKEN to a token with access"
                },
                gated: if code == "GatedRepo" {
                    "; this repository is gated: accept its terms on the Hub first"
                } else {
                    ""
                },
            },
            (404, _) if path.is_some() => file_not_found(),
            (404, _) => repo_not_found(),
            _ => HubError::Protocol {
                url: url.to_string(),
                reason: format!("HTTP {status}"),
            },
        }
    }
}

fn metadata_from(
    headers: &HeaderMap,
    location: Url,
    url: &Url,
    redirected: bool,
) -> Result<FileMetadata, HubError> {
    let commit =
        header(headers, "x-repo-commit").ok_or_else(|| protocol(url, "no X-Repo-Commit header"))?;
    if !is_commit_hash(commit) {
        return Err(protocol(url, "X-Repo-Commit is not a commit hash"));
    }
    let etag = header(headers, "x-linked-etag")
        .or_else(|| header(headers, "etag"))
        .map(normalize_etag)
        .ok_or_else(|| protocol(url, "no ETag header"))?;
    if !matches!(etag.len(), 40 | 64) || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(protocol(url, "the ETag is not a hex digest"));
    }
    // A redirect's own Content-Length is the redirect's body, not the file.
    let size = header(headers, "x-linked-size")
        .or_else(|| {
            (!redirected)
                .then(|| header(headers, "content-length"))
                .flatten()
        })
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| protocol(url, "no file size (X-Linked-Size or Content-Length)"))?;
    Ok(FileMetadata {
        commit: commit.to_string(),
        etag: etag.to_ascii_lowercase(),
        size,
        location,
    })
}

/// `W/"abc"` → `abc`.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn blob_complete(blob: &std::path::Path, size: u64) -> bool {
    std::fs::metadata(blob).is_ok_and(|m| m.is_file() && m.len() == size)
}

pub(crate) fn protocol(url: &Url, reason: &str) -> HubError {
    HubError::Protocol {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

pub(crate) fn network(url: &Url, err: &reqwest::Error) -> HubError {
    // reqwest's Display omits the cause ("error sending request"); the chain says why.
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    HubError::Network {
        url: url.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_normalized() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }

    #[test]
    fn endpoints_are_plain_http_urls() {
        assert!(parse_endpoint("https://hf-mirror.com/").is_ok());
        assert!(parse_endpoint("file:///etc").is_err());
        assert!(parse_endpoint("http://user:pw@host").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }

    #[test]
    fn the_token_goes_to_the_endpoint_only() {
        let config = HubConfig {
            endpoint: Url::parse("http://127.0.0.1:9/").unwrap(),
            token: Some("hf_secret".to_string()),
            ..HubConfig::default()
        };
        let client = HubClient::new(config, HubCache::new("/tmp/x")).unwrap();
        assert!(client
            .auth_for(&Url::parse("http://127.0.0.1:9/a/b").unwrap())
            .is_some());
        assert!(client
            .auth_for(&Url::parse("http://localhost:9/cdn").unwrap())
            .is_none());
        assert!(client
            .auth_for(&Url::parse("http://127.0.0.1:10/").unwrap())
            .is_none());
        assert!(client
            .auth_for(&Url::parse("https://127.0.0.1:9/").unwrap())
            .is_none());
    }
}
