//! Fetching one blob: parallel byte ranges into `blobs/<etag>.tabagent-partial`, with a small
//! JSON record of the chunks already written beside it, so an interrupted download (a dropped
//! connection, a killed process) resumes instead of restarting.
//!
//! The sha256 is computed while the download runs (chunks are hashed in order as soon as they
//! are complete) and checked before the blob is fsynced and renamed into place, so `blobs/`
//! only ever holds verified, durable files. The partial file is ours alone (`huggingface_hub`
//! resumes `.incomplete` files from their length, which would be wrong for a file written in
//! parallel ranges), and the `.locks/` file it uses keeps both tools off the same blob.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_RANGE, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{sync_dir, write_atomically};
use crate::client::{network, protocol, FileMetadata, HubClient};
use crate::HubError;

/// What a download reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The file was already in the cache.
    Cached {
        /// The file.
        file: String,
        /// Its size.
        size: u64,
    },
    /// Transfer starts; `resumed` bytes were already there from an interrupted attempt.
    Started {
        /// The file.
        file: String,
        /// Its size.
        size: u64,
        /// Bytes kept from before.
        resumed: u64,
    },
    /// More bytes arrived.
    Advanced {
        /// How many.
        bytes: u64,
    },
    /// A transfer failed and is retried from where it stopped.
    Retrying {
        /// Why.
        reason: String,
    },
    /// All bytes are there; the checksum is being finished.
    Verifying,
    /// Verified and in place.
    Done,
}

/// Receives [`ProgressEvent`]s. Implemented for closures and for `()` (ignore everything).
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: ProgressEvent);
}

impl Progress for () {
    fn event(&self, _: ProgressEvent) {}
}

impl<F: Fn(ProgressEvent) + Send + Sync> Progress for F {
    fn event(&self, event: ProgressEvent) {
        self(event);
    }
}

/// An exclusive lock on a blob, shared with `huggingface_hub` (same file, `flock`).
pub(crate) struct BlobLock {
    _file: File,
}

pub(crate) async fn lock(path: &Path) -> Result<BlobLock, HubError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(HubError::io("create", parent))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(HubError::io("open", &path))?;
        file.lock().map_err(HubError::io("lock", &path))?;
        Ok(BlobLock { _file: file })
    })
    .await
    .map_err(|err| HubError::Io {
        action: "lock",
        path: PathBuf::from("(blocking task)"),
        source: std::io::Error::other(err.to_string()),
    })?
}

/// Which chunks of a partial file are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartialState {
    etag: String,
    size: u64,
    chunk_size: u64,
    done: BTreeSet<u64>,
}

struct Paths {
    partial: PathBuf,
    state: PathBuf,
}

/// Downloads the blob described by `meta` to `blob`. Returns the bytes transferred.
pub(crate) async fn fetch(
    client: &HubClient,
    meta: &FileMetadata,
    auth: Option<HeaderValue>,
    blob: &Path,
    file: &str,
    progress: &dyn Progress,
) -> Result<u64, HubError> {
    let name = blob.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
    let paths = Paths {
        partial: blob.with_file_name(format!("{name}.tabagent-partial")),
        state: blob.with_file_name(format!("{name}.tabagent-partial.json")),
    };
    let had_progress = paths.state.exists();
    let fetched = match fetch_once(client, meta, auth.clone(), &paths, file, progress).await {
        // Resumed bytes are trusted without an fsync per chunk; if a crash lost some, the
        // checksum says so: start once afresh.
        Err(HubError::ChecksumMismatch { .. }) if had_progress => {
            progress.event(ProgressEvent::Retrying {
                reason: "the resumed file did not verify; downloading it again".to_string(),
            });
            fetch_once(client, meta, auth, &paths, file, progress).await
        }
        other => other,
    }?;
    progress.event(ProgressEvent::Verifying);
    finish(meta, blob, &paths, file).await?;
    progress.event(ProgressEvent::Done);
    Ok(fetched)
}

async fn fetch_once(
    client: &HubClient,
    meta: &FileMetadata,
    auth: Option<HeaderValue>,
    paths: &Paths,
    file: &str,
    progress: &dyn Progress,
) -> Result<u64, HubError> {
    let config = client.config();
    let chunk_size = config.chunk_size.max(1 << 20);
    let (handle, state) = open_partial(meta, chunk_size, paths, file)?;
    let chunks = meta.size.div_ceil(chunk_size);
    let resumed: u64 = state
        .done
        .iter()
        .map(|&i| chunk_len(i, chunk_size, meta.size))
        .sum();
    progress.event(ProgressEvent::Started {
        file: file.to_string(),
        size: meta.size,
        resumed,
    });
    let pending: VecDeque<u64> = (0..chunks).filter(|i| !state.done.contains(i)).collect();
    let hasher = Hasher::start(Arc::clone(&handle), chunk_size, meta.size, &state.done);
    let flusher = Flusher::start(Arc::clone(&handle));
    let job = Job {
        client,
        url: meta.location.clone(),
        auth,
        size: meta.size,
        chunk_size,
        file: handle,
        partial: paths.partial.clone(),
        state_path: paths.state.clone(),
        state: Mutex::new(state),
        queue: Mutex::new(pending),
        hasher: hasher.sender.clone(),
        flusher: flusher.sender.clone(),
        progress,
    };
    let workers = config.connections.clamp(1, 64);
    let results = futures_util::future::join_all((0..workers).map(|_| job.worker())).await;
    let fetched: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    drop(job);
    let digest = hasher.finish();
    flusher.finish();
    for result in results {
        result?;
    }
    if let Some(expected) = meta.sha256() {
        let actual = digest.ok_or_else(|| HubError::Io {
            action: "hash",
            path: paths.partial.clone(),
            source: std::io::Error::other("the checksum could not be computed"),
        })?;
        if actual != expected {
            discard(paths);
            return Err(HubError::ChecksumMismatch {
                file: file.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(fetched)
}

/// Fsyncs the verified partial file and renames it into `blobs/`.
async fn finish(
    meta: &FileMetadata,
    blob: &Path,
    paths: &Paths,
    file: &str,
) -> Result<(), HubError> {
    let partial = paths.partial.clone();
    let state = paths.state.clone();
    let blob = blob.to_path_buf();
    let size = meta.size;
    let file = file.to_string();
    tokio::task::spawn_blocking(move || {
        let handle = File::open(&partial).map_err(HubError::io("open", &partial))?;
        let len = handle
            .metadata()
            .map_err(HubError::io("read", &partial))?
            .len();
        if len != size {
            return Err(HubError::Protocol {
                url: file,
                reason: format!("downloaded {len} bytes, the Hub announced {size}"),
            });
        }
        handle.sync_all().map_err(HubError::io("sync", &partial))?;
        fs::rename(&partial, &blob).map_err(HubError::io("rename into", &blob))?;
        if let Some(dir) = blob.parent() {
            sync_dir(dir);
        }
        let _ = fs::remove_file(&state);
        Ok(())
    })
    .await
    .map_err(|err| HubError::Io {
        action: "finish",
        path: paths.partial.clone(),
        source: std::io::Error::other(err.to_string()),
    })?
}

fn discard(paths: &Paths) {
    let _ = fs::remove_file(&paths.partial);
    let _ = fs::remove_file(&paths.state);
}

/// Opens the partial file, keeping earlier progress only when it is for this very blob.
fn open_partial(
    meta: &FileMetadata,
    chunk_size: u64,
    paths: &Paths,
    file_name: &str,
) -> Result<(Arc<File>, PartialState), HubError> {
    if let Some(parent) = paths.partial.parent() {
        fs::create_dir_all(parent).map_err(HubError::io("create", parent))?;
    }
    let earlier = fs::read(&paths.state)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<PartialState>(&bytes).ok())
        .filter(|s| s.etag == meta.etag && s.size == meta.size && s.chunk_size == chunk_size)
        .filter(|_| fs::metadata(&paths.partial).is_ok_and(|m| m.len() == meta.size));
    let fresh = earlier.is_none();
    let state = earlier.unwrap_or_else(|| PartialState {
        etag: meta.etag.clone(),
        size: meta.size,
        chunk_size,
        done: BTreeSet::new(),
    });
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(fresh)
        .open(&paths.partial)
        .map_err(HubError::io("open", &paths.partial))?;
    if fresh {
        allocate(&file, meta.size).map_err(|source| {
            let dir = paths
                .partial
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf();
            if is_disk_full(&source) {
                let _ = fs::remove_file(&paths.partial);
                HubError::DiskFull {
                    file: file_name.to_string(),
                    available: available_space(&dir).unwrap_or(0),
                    dir,
                    needed: meta.size,
                }
            } else {
                HubError::io("allocate", &paths.partial)(source)
            }
        })?;
        save_state(&paths.state, &state)?;
    }
    Ok((Arc::new(file), state))
}

/// Reserves the file's blocks before any byte is fetched: a disk without room for it is a
/// clear error now, not a failed write minutes into the transfer (and the blocks lie together).
#[cfg(target_os = "linux")]
fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    use rustix::io::Errno;
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate (some network and FUSE ones): a sparse file will do.
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => file.set_len(size),
        Err(err) => Err(err.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    file.set_len(size)
}

fn is_disk_full(err: &std::io::Error) -> bool {
    // ENOSPC, or EFBIG: larger than the filesystem allows a file to be.
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge
    )
}

/// Free bytes in `dir` for an unprivileged user.
#[cfg(unix)]
pub fn available_space(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
pub fn available_space(_dir: &Path) -> Option<u64> {
    None
}

fn save_state(path: &Path, state: &PartialState) -> Result<(), HubError> {
    let bytes = serde_json::to_vec(state).map_err(|err| HubError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: std::io::Error::other(err),
    })?;
    write_atomically(path, &bytes)
}

fn chunk_len(index: u64, chunk_size: u64, size: u64) -> u64 {
    let start = index * chunk_size;
    chunk_size.min(size.saturating_sub(start))
}

/// One download: a queue of chunks that `connections` workers take from.
struct Job<'a> {
    client: &'a HubClient,
    url: Url,
    auth: Option<HeaderValue>,
    size: u64,
    chunk_size: u64,
    file: Arc<File>,
    partial: PathBuf,
    state_path: PathBuf,
    state: Mutex<PartialState>,
    queue: Mutex<VecDeque<u64>>,
    hasher: mpsc::Sender<u64>,
    flusher: mpsc::Sender<()>,
    progress: &'a dyn Progress,
}

/// Why one ranged request stopped.
enum Attempt {
    /// Worth another try from where it stopped (network error, early close, 5xx, 429).
    Retry(String),
    /// Not worth retrying.
    Fatal(HubError),
}

impl Job<'_> {
    async fn worker(&self) -> Result<u64, HubError> {
        let mut fetched = 0;
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            let Some(index) = next else {
                return Ok(fetched);
            };
            fetched += self.chunk(index).await.inspect_err(|_| {
                // Stop the other workers from starting new chunks.
                self.queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clear();
            })?;
            let snapshot = {
                let mut state = self
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                state.done.insert(index);
                state.clone()
            };
            let _ = self.hasher.send(index);
            let _ = self.flusher.send(());
            save_state(&self.state_path, &snapshot)?;
        }
    }

    /// Fetches chunk `index`, retrying from the last byte written. Returns the bytes fetched.
    async fn chunk(&self, index: u64) -> Result<u64, HubError> {
        let start = index * self.chunk_size;
        let end = (start + self.chunk_size).min(self.size);
        let mut offset = start;
        let mut failures = 0;
        loop {
            match self.range(&mut offset, end).await {
                Ok(()) => return Ok(end - start),
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(reason)) => {
                    failures += 1;
                    if failures > self.client.config().retries {
                        return Err(HubError::Network {
                            url: self.url.to_string(),
                            reason: format!("{reason} (gave up after {failures} attempts)"),
                        });
                    }
                    tracing::debug!(%reason, offset, failures, "retrying a range");
                    self.progress.event(ProgressEvent::Retrying { reason });
                    // Back off: 100 ms, 200 ms, ... up to 3.2 s.
                    tokio::time::sleep(Duration::from_millis(100 << failures.min(5))).await;
                }
            }
        }
    }

    /// One ranged GET for `[*offset, end)`, writing as bytes arrive and advancing `offset`.
    async fn range(&self, offset: &mut u64, end: u64) -> Result<(), Attempt> {
        if *offset >= end {
            return Ok(());
        }
        let range = format!("bytes={}-{}", *offset, end - 1);
        let response = self.get(&range).await?;
        let status = response.status();
        if status == StatusCode::OK {
            // The whole file: acceptable only when that is what was asked for.
            if *offset != 0 || end != self.size {
                return Err(Attempt::Fatal(protocol(
                    &self.url,
                    "the server ignores Range requests",
                )));
            }
        } else if status == StatusCode::PARTIAL_CONTENT {
            let announced = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split_once('-'))
                .and_then(|(first, _)| first.parse::<u64>().ok());
            if announced != Some(*offset) {
                return Err(Attempt::Fatal(protocol(
                    &self.url,
                    "Content-Range does not match the range asked for",
                )));
            }
        } else if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            return Err(Attempt::Retry(format!("HTTP {status}")));
        } else {
            return Err(Attempt::Fatal(protocol(
                &self.url,
                &format!("HTTP {status} for a range"),
            )));
        }
        let mut body = response.bytes_stream();
        let mut buffer = Vec::with_capacity(WRITE_BUFFER);
        // Bytes before `written` are in the file; `buffer` holds the ones after.
        let mut written = *offset;
        let outcome = loop {
            match body.next().await {
                Some(Ok(bytes)) => {
                    if written + (buffer.len() + bytes.len()) as u64 > end {
                        break Err(Attempt::Fatal(protocol(
                            &self.url,
                            "more bytes than the range asked for",
                        )));
                    }
                    buffer.extend_from_slice(&bytes);
                    if buffer.len() >= WRITE_BUFFER {
                        let len = buffer.len() as u64;
                        buffer = self.write(buffer, written).await.map_err(Attempt::Fatal)?;
                        written += len;
                        *offset = written;
                        self.progress.event(ProgressEvent::Advanced { bytes: len });
                    }
                }
                Some(Err(err)) => break Err(Attempt::Retry(network(&self.url, &err).to_string())),
                None => break Ok(()),
            }
        };
        // Whatever arrived is kept, so a retry continues after it.
        if !buffer.is_empty() {
            let len = buffer.len() as u64;
            self.write(buffer, written).await.map_err(Attempt::Fatal)?;
            written += len;
            *offset = written;
            self.progress.event(ProgressEvent::Advanced { bytes: len });
        }
        outcome?;
        if *offset < end {
            return Err(Attempt::Retry(format!(
                "the connection closed {} bytes early",
                end - *offset
            )));
        }
        Ok(())
    }

    /// Writes `buffer` at `at` on a blocking thread; returns the emptied buffer for reuse.
    async fn write(&self, mut buffer: Vec<u8>, at: u64) -> Result<Vec<u8>, HubError> {
        let file = Arc::clone(&self.file);
        let path = self.partial.clone();
        tokio::task::spawn_blocking(move || {
            write_all_at(&file, &buffer, at).map_err(HubError::io("write", &path))?;
            buffer.clear();
            Ok(buffer)
        })
        .await
        .map_err(|err| HubError::Io {
            action: "write",
            path: self.partial.clone(),
            source: std::io::Error::other(err.to_string()),
        })?
    }

    /// A GET for `range`, following redirects by hand: the token only ever goes to the
    /// endpoint's origin.
    async fn get(&self, range: &str) -> Result<reqwest::Response, Attempt> {
        let mut url = self.url.clone();
        for _ in 0..5 {
            let mut request = self
                .client
                .http()
                .get(url.clone())
                .header(RANGE, range)
                .header("accept-encoding", "identity");
            if let Some(auth) = self
                .auth
                .as_ref()
                .filter(|_| self.client.auth_for(&url).is_some())
            {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|err| Attempt::Retry(network(&url, &err).to_string()))?;
            if response.status().is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Attempt::Fatal(protocol(&url, "redirect without Location")))?;
                url = url.join(location).map_err(|_| {
                    Attempt::Fatal(protocol(&url, "redirect to an invalid Location"))
                })?;
                continue;
            }
            return Ok(response);
        }
        Err(Attempt::Fatal(protocol(&url, "too many redirects")))
    }
}

/// Bytes gathered before one positioned write.
const WRITE_BUFFER: usize = 1 << 20;

#[cfg(unix)]
fn write_all_at(file: &File, buffer: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buffer, at)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buffer: &[u8], mut at: u64) -> std::io::Result<()> {
    while !buffer.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buffer, at)?;
        buffer = &buffer[n..];
        at += n as u64;
    }
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(file: &File, buffer: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, at)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buffer: &mut [u8], mut at: u64) -> std::io::Result<()> {
    while !buffer.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buffer, at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer = &mut buffer[n..];
        at += n as u64;
    }
    Ok(())
}

/// Hashes the file's chunks in order, each as soon as it and all before it are written.
struct Hasher {
    sender: mpsc::Sender<u64>,
    thread: std::thread::JoinHandle<Option<String>>,
}

impl Hasher {
    fn start(file: Arc<File>, chunk_size: u64, size: u64, done: &BTreeSet<u64>) -> Self {
        let (sender, receiver) = mpsc::channel::<u64>();
        for index in done {
            let _ = sender.send(*index);
        }
        let thread = std::thread::spawn(move || {
            let mut sha = Sha256::new();
            let mut ready = BTreeSet::new();
            let mut next = 0;
            let chunks = size.div_ceil(chunk_size);
            let mut buffer = vec![0; 4 << 20];
            while next < chunks {
                let Ok(index) = receiver.recv() else {
                    return None;
                };
                ready.insert(index);
                while ready.remove(&next) {
                    let mut at = next * chunk_size;
                    let end = at + chunk_len(next, chunk_size, size);
                    while at < end {
                        let n = usize::try_from(end - at)
                            .unwrap_or(usize::MAX)
                            .min(buffer.len());
                        read_exact_at(&file, &mut buffer[..n], at).ok()?;
                        sha.update(&buffer[..n]);
                        at += n as u64;
                    }
                    next += 1;
                }
            }
            Some(hex::encode(sha.finalize()))
        });
        Self { sender, thread }
    }

    /// The digest, once every chunk was reported; `None` if some never were.
    fn finish(self) -> Option<String> {
        drop(self.sender);
        self.thread.join().ok().flatten()
    }
}

/// Writes finished chunks to disk in the background while the next ones arrive, so the fsync
/// that makes the blob durable at the end finds little left to do: the disk works during the
/// transfer instead of after it.
struct Flusher {
    sender: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Flusher {
    fn start(file: Arc<File>) -> Self {
        let (sender, receiver) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while receiver.recv().is_ok() {
                // Several chunks may have finished meanwhile: one flush covers them all.
                while receiver.try_recv().is_ok() {}
                let _ = file.sync_data();
            }
        });
        Self { sender, thread }
    }

    fn finish(self) {
        drop(self.sender);
        let _ = self.thread.join();
    }
}

/// The sha256 of a whole file.
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut file = File::open(path).map_err(HubError::io("open", path))?;
    let mut sha = Sha256::new();
    let mut buffer = vec![0; 4 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(HubError::io("read", path))?;
        if n == 0 {
            break;
        }
        sha.update(&buffer[..n]);
    }
    Ok(hex::encode(sha.finalize()))
}
