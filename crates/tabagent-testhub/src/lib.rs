//! A stand-in for the Hugging Face Hub, for tests and benchmarks: no hub is reachable from the
//! machines this project is built on, so this speaks the Hub's file-resolution protocol over a
//! real socket and serves real files, and lets a test inject the faults a real Hub and CDN
//! produce (dropped connections, wrong bytes, stalls, missing or gated repositories).
//!
//! Protocol, as `huggingface_hub` expects it:
//! - `HEAD|GET /{owner}/{name}/resolve/{revision}/{path}`: `X-Repo-Commit`, `ETag`, and for
//!   LFS files a `302` to a CDN URL on another origin (`localhost` instead of `127.0.0.1`) with
//!   `X-Linked-Etag` (the sha256) and `X-Linked-Size`. Small files are answered directly.
//! - `GET /cdn/{sha256}`: the bytes, with `Range` support (`206`, `Content-Range`).
//! - `GET /api/models/{owner}/{name}[/revision/{revision}]`: `{id, sha, siblings}`.
//! - `GET /_testhub/stats`: what it served, for tests in other processes.
//! - Errors carry `X-Error-Code`: `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
//!   `GatedRepo`.

pub mod engine;
pub mod fuzz;

use std::collections::HashMap;
use std::io::{Read, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// One file of a repository.
#[derive(Debug, Clone)]
pub struct RepoFile {
    /// Path inside the repository.
    pub path: String,
    /// Where its bytes are on disk.
    pub source: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Hex sha256 of the contents.
    pub sha256: String,
    /// Stored in LFS (served through the CDN redirect, sha256 as linked ETag).
    pub lfs: bool,
}

/// A repository at one commit.
#[derive(Debug, Clone)]
pub struct Repo {
    /// `owner/name`.
    pub id: String,
    /// The commit `main` points at.
    pub commit: String,
    /// Its files.
    pub files: Vec<RepoFile>,
    /// Requires the token.
    pub gated: bool,
}

impl Repo {
    /// An empty repository whose commit is derived from its id.
    pub fn new(id: &str) -> Self {
        let commit = hex::encode(Sha256::digest(id.as_bytes()))[..40].to_string();
        Self {
            id: id.to_string(),
            commit,
            files: Vec::new(),
            gated: false,
        }
    }

    /// Adds `source` as `path`; `.gguf`, `.safetensors`, `.bin` and `.onnx` files go to LFS.
    pub fn file(mut self, path: &str, source: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(source)?;
        let mut sha = Sha256::new();
        let mut buffer = vec![0; 1 << 20];
        let mut size = 0;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            sha.update(&buffer[..n]);
        }
        let lfs = [".gguf", ".safetensors", ".bin", ".onnx"]
            .iter()
            .any(|ext| path.ends_with(ext));
        self.files.push(RepoFile {
            path: path.to_string(),
            source: source.to_path_buf(),
            size,
            sha256: hex::encode(sha.finalize()),
            lfs,
        });
        Ok(self)
    }

    /// Makes it gated: resolving files needs the hub's token.
    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }
}

/// Faults applied to the bytes the CDN serves. Each counter is consumed as responses use it.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Cut the connection after this many body bytes, in each of the next `drops` responses.
    pub drop_after: u64,
    /// How many responses to cut.
    pub drops: u32,
    /// Serve wrong bytes (one flipped per response) in the next this-many responses.
    pub corrupt: u32,
    /// Stop sending (without closing) after `drop_after` bytes instead of cutting, this many times.
    pub stalls: u32,
    /// Pause this long between 64 KiB pieces (a slow server).
    pub delay_per_piece: Option<Duration>,
}

/// What the hub saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// Body bytes sent by the CDN.
    pub cdn_bytes: AtomicU64,
    /// CDN requests.
    pub cdn_requests: AtomicU64,
    /// CDN requests that carried an `Authorization` header (must stay 0).
    pub cdn_requests_with_auth: AtomicU64,
    /// `HEAD` requests on `resolve`.
    pub heads: AtomicU64,
    /// Requests on `resolve` and the API that carried the right token.
    pub authorized: AtomicU64,
}

struct Shared {
    repos: HashMap<String, Repo>,
    by_sha: HashMap<String, RepoFile>,
    token: Option<String>,
    cdn_origin: String,
    faults: Mutex<Faults>,
    stats: Stats,
}

/// A running hub.
pub struct TestHub {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestHub {
    /// Serves `repos` on an ephemeral loopback port. Gated repositories need `token`.
    pub async fn start(repos: Vec<Repo>, token: Option<String>) -> std::io::Result<Self> {
        Self::start_on(repos, token, 0).await
    }

    /// Like [`TestHub::start`], on `port` (0: any free one).
    pub async fn start_on(
        repos: Vec<Repo>,
        token: Option<String>,
        port: u16,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let address = listener.local_addr()?;
        let by_sha = repos
            .iter()
            .flat_map(|repo| repo.files.iter())
            .filter(|file| file.lfs)
            .map(|file| (file.sha256.clone(), file.clone()))
            .collect();
        let shared = Arc::new(Shared {
            repos: repos
                .into_iter()
                .map(|repo| (repo.id.clone(), repo))
                .collect(),
            by_sha,
            token,
            // Another origin for the same socket: a client must not send the token there.
            cdn_origin: format!("http://localhost:{}", address.port()),
            faults: Mutex::new(Faults::default()),
            stats: Stats::default(),
        });
        let app = Router::new()
            .route("/api/models/{owner}/{name}", get(api_info))
            .route(
                "/api/models/{owner}/{name}/revision/{revision}",
                get(api_info_at),
            )
            .route("/cdn/{sha}", get(cdn))
            .route("/_testhub/stats", get(stats))
            .route(
                "/{owner}/{name}/resolve/{revision}/{*path}",
                get(resolve).head(resolve),
            )
            .with_state(Arc::clone(&shared));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            address,
            shared,
            shutdown: Some(shutdown),
        })
    }

    /// The endpoint URL (`HF_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The faults to inject; change them between requests.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What it has seen.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    response
        .headers_mut()
        .insert("x-error-code", HeaderValue::from_static(code));
    response
}

impl Shared {
    /// The repository, or the Hub's answer when it cannot be seen.
    fn repo(
        &self,
        owner: &str,
        name: &str,
        headers: &HeaderMap,
        check_gate: bool,
    ) -> Result<&Repo, Box<Response>> {
        let id = format!("{owner}/{name}");
        let repo = self.repos.get(&id).ok_or_else(|| {
            Box::new(error(
                StatusCode::UNAUTHORIZED,
                "RepoNotFound",
                "Repository not found",
            ))
        })?;
        let authorized = match (&self.token, headers.get("authorization")) {
            (Some(token), Some(value)) => value.to_str().ok() == Some(&format!("Bearer {token}")),
            _ => false,
        };
        if authorized {
            self.stats.authorized.fetch_add(1, Ordering::Relaxed);
        }
        if check_gate && repo.gated && !authorized {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "GatedRepo",
                "Access to this model is restricted; you must be authenticated",
            )));
        }
        Ok(repo)
    }
}

/// The counters as JSON, for tests in other processes.
async fn stats(State(hub): State<Arc<Shared>>) -> Response {
    let s = &hub.stats;
    axum::Json(serde_json::json!({
        "cdn_bytes": s.cdn_bytes.load(Ordering::Relaxed),
        "cdn_requests": s.cdn_requests.load(Ordering::Relaxed),
        "cdn_requests_with_auth": s.cdn_requests_with_auth.load(Ordering::Relaxed),
        "heads": s.heads.load(Ordering::Relaxed),
        "authorized": s.authorized.load(Ordering::Relaxed),
    }))
    .into_response()
}

fn revision_ok(repo: &Repo, revision: &str) -> bool {
    revision == "main" || revision == repo.commit
}

async fn api_info(
    State(hub): State<Arc<Shared>>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    info(&hub, &owner, &name, "main", &headers)
}

async fn api_info_at(
    State(hub): State<Arc<Shared>>,
    UrlPath((owner, name, revision)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    info(&hub, &owner, &name, &revision, &headers)
}

fn info(hub: &Shared, owner: &str, name: &str, revision: &str, headers: &HeaderMap) -> Response {
    let repo = match hub.repo(owner, name, headers, false) {
        Ok(repo) => repo,
        Err(response) => return *response,
    };
    if !revision_ok(repo, revision) {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound", "Invalid rev id");
    }
    let siblings: Vec<_> = repo
        .files
        .iter()
        .map(|f| serde_json::json!({ "rfilename": f.path }))
        .collect();
    axum::Json(serde_json::json!({
        "id": repo.id, "modelId": repo.id, "sha": repo.commit, "gated": repo.gated,
        "private": false, "siblings": siblings,
    }))
    .into_response()
}

async fn resolve(
    State(hub): State<Arc<Shared>>,
    UrlPath((owner, name, revision, path)): UrlPath<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if method == Method::HEAD {
        hub.stats.heads.fetch_add(1, Ordering::Relaxed);
    }
    let repo = match hub.repo(&owner, &name, &headers, true) {
        Ok(repo) => repo,
        Err(response) => return *response,
    };
    if !revision_ok(repo, &revision) {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound", "Invalid rev id");
    }
    let Some(file) = repo.files.iter().find(|f| f.path == path) else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound", "Entry not found");
    };
    let git_etag = format!("\"{}\"", &file.sha256[..40]);
    if file.lfs {
        let location = format!("{}/cdn/{}?repo={}", hub.cdn_origin, file.sha256, repo.id);
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::FOUND;
        let h = response.headers_mut();
        insert(h, "location", &location);
        insert(h, "x-repo-commit", &repo.commit);
        insert(h, "etag", &git_etag);
        insert(h, "x-linked-etag", &format!("\"{}\"", file.sha256));
        insert(h, "x-linked-size", &file.size.to_string());
        return response;
    }
    // Small files: the bytes themselves, ETag = the git blob id (here: a 40-digit digest).
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match tokio::fs::read(&file.source).await {
            Ok(bytes) => Body::from(bytes),
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    insert(h, "x-repo-commit", &repo.commit);
    insert(h, "etag", &git_etag);
    insert(h, "content-length", &file.size.to_string());
    response
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// `bytes=a-b` or `bytes=a-` within `size`.
fn parse_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let value = headers.get("range")?.to_str().ok()?;
    let spec = value.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let Ok(first) = first.parse::<u64>() else {
        return Some(Err(()));
    };
    let last = if last.is_empty() {
        size.saturating_sub(1)
    } else {
        match last.parse::<u64>() {
            Ok(last) => last.min(size.saturating_sub(1)),
            Err(_) => return Some(Err(())),
        }
    };
    if first > last || first >= size {
        return Some(Err(()));
    }
    Some(Ok((first, last)))
}

async fn cdn(
    State(hub): State<Arc<Shared>>,
    UrlPath(sha): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    hub.stats.cdn_requests.fetch_add(1, Ordering::Relaxed);
    if headers.contains_key("authorization") {
        hub.stats
            .cdn_requests_with_auth
            .fetch_add(1, Ordering::Relaxed);
    }
    let Some(file) = hub.by_sha.get(&sha).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (status, first, last) = match parse_range(&headers, file.size) {
        None => (StatusCode::OK, 0, file.size.saturating_sub(1)),
        Some(Ok((first, last))) => (StatusCode::PARTIAL_CONTENT, first, last),
        Some(Err(())) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            insert(
                response.headers_mut(),
                "content-range",
                &format!("bytes */{}", file.size),
            );
            return response;
        }
    };
    let length = if file.size == 0 { 0 } else { last - first + 1 };
    let faults = {
        let mut faults = hub
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut applied = Faults {
            delay_per_piece: faults.delay_per_piece,
            ..Faults::default()
        };
        if faults.drops > 0 {
            faults.drops -= 1;
            applied.drops = 1;
            applied.drop_after = faults.drop_after;
        } else if faults.stalls > 0 {
            faults.stalls -= 1;
            applied.stalls = 1;
            applied.drop_after = faults.drop_after;
        }
        if faults.corrupt > 0 {
            faults.corrupt -= 1;
            applied.corrupt = 1;
        }
        applied
    };
    let body = Body::from_stream(serve_bytes(
        Arc::clone(&hub),
        file.source.clone(),
        first,
        length,
        faults,
    ));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    insert(h, "content-length", &length.to_string());
    insert(h, "accept-ranges", "bytes");
    insert(h, "etag", &format!("\"{}\"", file.sha256));
    if status == StatusCode::PARTIAL_CONTENT {
        insert(
            h,
            "content-range",
            &format!("bytes {first}-{last}/{}", file.size),
        );
    }
    response
}

/// The bytes `[first, first + length)` of `source`, in pieces, with `faults` applied.
fn serve_bytes(
    hub: Arc<Shared>,
    source: PathBuf,
    first: u64,
    length: u64,
    faults: Faults,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    const PIECE: u64 = 256 << 10;
    futures_util::stream::unfold(
        (None::<tokio::fs::File>, 0u64, faults),
        move |(file, sent, faults)| {
            let hub = Arc::clone(&hub);
            let source = source.clone();
            async move {
                if sent >= length {
                    return None;
                }
                let mut file = match file {
                    Some(file) => file,
                    None => {
                        let opened = async {
                            let mut file = tokio::fs::File::open(&source).await?;
                            file.seek(SeekFrom::Start(first)).await?;
                            Ok::<_, std::io::Error>(file)
                        };
                        match opened.await {
                            Ok(file) => file,
                            Err(err) => return Some((Err(err), (None, length, faults))),
                        }
                    }
                };
                let mut piece = PIECE.min(length - sent);
                let cut = faults.drops + faults.stalls > 0;
                if cut {
                    if sent >= faults.drop_after {
                        if faults.stalls > 0 {
                            // Hold the connection open and send nothing more.
                            std::future::pending::<()>().await;
                        }
                        let err = std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "fault: connection dropped",
                        );
                        return Some((Err(err), (None, length, faults)));
                    }
                    piece = piece.min(faults.drop_after - sent);
                }
                if let Some(delay) = faults.delay_per_piece {
                    tokio::time::sleep(delay).await;
                }
                let mut buffer = vec![0; usize::try_from(piece).unwrap_or(0)];
                if let Err(err) = file.read_exact(&mut buffer).await {
                    return Some((Err(err), (None, length, faults)));
                }
                let mut faults = faults;
                if faults.corrupt > 0 && !buffer.is_empty() {
                    buffer[0] ^= 0xff;
                    faults.corrupt = 0;
                }
                hub.stats.cdn_bytes.fetch_add(piece, Ordering::Relaxed);
                Some((Ok(Bytes::from(buffer)), (Some(file), sent + piece, faults)))
            }
        },
    )
}
