//! Runs the worker and keeps it running.
//!
//! The worker listens on `worker.sock` (gRPC) and `vision.sock` (its vision lane) in a private
//! directory (mode 0700, so no other user can reach them; never a TCP port), beside tabagent's
//! own `files.sock` serving it model files. It
//! runs in a process group of its own, so signals reach it and not tabagent, and it asks Linux
//! to end it when tabagent goes (the parent-death signal), so it is never orphaned, even when
//! tabagent is killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::files::{ModelFiles, ModelRoots};
use crate::vision_socket::VisionSocket;
use crate::{pb, Environment, EnvironmentConfig, Worker, WorkerError};

/// How the worker is run.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Its environment.
    pub environment: EnvironmentConfig,
    /// Make the environment first when it is missing or out of date ([`Environment::prepare`]:
    /// pip, minutes the first time); otherwise it must be made already.
    pub prepare: bool,
    /// Calls it serves at once.
    pub threads: u32,
    /// How long it may take to say SERVING before it is killed and started again.
    pub start_timeout: Duration,
    /// How long it gets to finish its calls on SIGTERM before SIGKILL.
    pub grace: Duration,
    /// The longest wait between restarts (the first restart is immediate, then 100 ms,
    /// doubling; a worker that ran a minute starts the count again).
    pub max_backoff: Duration,
    /// How long a call waits for a worker that is starting.
    pub call_wait: Duration,
}

impl SupervisorConfig {
    /// Defaults for `environment`.
    pub fn new(environment: EnvironmentConfig) -> Self {
        Self {
            environment,
            prepare: false,
            threads: 4,
            start_timeout: Duration::from_secs(120),
            grace: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
            call_wait: Duration::from_secs(30),
        }
    }
}

/// A running worker, as calls see it.
#[derive(Clone)]
pub(crate) struct Running {
    pub channel: Channel,
    /// Its vision lane (single frames, beside gRPC).
    pub lane: VisionSocket,
    pub pid: u32,
    pub generation: u64,
    /// From spawning it to gRPC health saying SERVING.
    pub startup: Duration,
    /// From the previous worker's death to this one serving (none for the first).
    pub downtime: Option<Duration>,
}

pub(crate) struct Shared {
    pub ready: watch::Sender<Option<Running>>,
    pub last_error: Mutex<Option<String>>,
    pub call_wait: Duration,
    pub restarts: std::sync::atomic::AtomicU64,
    /// Calls sent and not yet answered.
    pub in_flight: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }
}

/// Keeps the worker running until [`Supervisor::shutdown`] (or until it is dropped, which
/// kills it).
pub struct Supervisor {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    files_server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Supervisor {
    /// Starts serving model files from `roots` and starts the worker (without waiting for it:
    /// calls wait, see [`Worker`]).
    pub fn start(
        config: SupervisorConfig,
        roots: Arc<dyn ModelRoots>,
    ) -> Result<Supervisor, WorkerError> {
        remove_stale_directories();
        // Created 0700 (tempfile leaves the mode to the umask unless told): only this user
        // reaches the sockets inside.
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .permissions(private_mode())
            .tempdir()
            .map_err(|e| WorkerError::Environment(format!("private directory: {e}")))?;
        // Whose it is, so that a later tabagent can remove it if this one is killed.
        std::fs::write(dir.path().join(OWNER), std::process::id().to_string())
            .map_err(|e| WorkerError::Environment(format!("private directory: {e}")))?;
        let files_socket = dir.path().join("files.sock");
        let listener = tokio::net::UnixListener::bind(&files_socket)
            .map_err(|e| WorkerError::Environment(format!("{}: {e}", files_socket.display())))?;
        let files = pb::model_files_server::ModelFilesServer::new(ModelFiles::new(roots));
        let files_server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            if let Err(err) = tonic::transport::Server::builder()
                .add_service(files)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(error = %err, "the ML worker's file service stopped");
            }
        });
        let (ready, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            ready,
            last_error: Mutex::new(Some("starting".to_string())),
            call_wait: config.call_wait,
            restarts: std::sync::atomic::AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(
            config,
            dir.path().to_path_buf(),
            Arc::clone(&shared),
            stopped,
        ));
        Ok(Supervisor {
            shared,
            stop,
            task: Some(task),
            files_server,
            _dir: dir,
        })
    }

    /// A client of the worker.
    pub fn worker(&self) -> Worker {
        Worker::new(Arc::clone(&self.shared))
    }

    /// The worker's socket (for tools that talk to it directly, such as benchmarks).
    pub fn socket(&self) -> PathBuf {
        self._dir.path().join("worker.sock")
    }

    /// The running worker's process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.shared.ready.borrow().as_ref().map(|r| r.pid)
    }

    /// Stops the worker: SIGTERM, then SIGKILL after the grace period.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Not shut down in order: the worker's process group is killed now.
        if let Some(pid) = self.pid() {
            signal_group(pid, rustix::process::Signal::KILL);
        }
        self.files_server.abort();
    }
}

const DIR_PREFIX: &str = "tabagent-worker-";
const OWNER: &str = "owner.pid";
/// The worker's vision lane, beside its gRPC socket.
const LANE_SOCKET: &str = "vision.sock";

/// Only the owner may enter: rwx------.
fn private_mode() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o700)
}

/// Removes private directories that tabagents killed with SIGKILL left behind (this user's,
/// whose owner process is gone): beside the sockets, and on tmpfs, where earlier versions
/// handed frames over as files (memory, not disk, until removed).
fn remove_stale_directories() {
    remove_stale_directories_in(&std::env::temp_dir());
    remove_stale_directories_in(Path::new("/dev/shm"));
}

fn remove_stale_directories_in(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let path = entry.path();
        let mine = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX)
            && std::os::unix::fs::MetadataExt::uid(&match entry.metadata() {
                Ok(metadata) => metadata,
                Err(_) => continue,
            }) == me;
        if !mine {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER)).ok();
        let gone = owner
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn signal_group(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

async fn supervise(
    config: SupervisorConfig,
    dir: PathBuf,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let prepared = if config.prepare {
        shared.set_error(Some("its environment is being made (pip)".into()));
        tokio::select! {
            prepared = Environment::prepare(&config.environment) => prepared,
            _ = stop.changed() => Err(WorkerError::Unavailable("shutting down".into())),
        }
    } else {
        Environment::existing(&config.environment).ok_or_else(|| {
            WorkerError::Environment(
                "it is not made or out of date: run `tabagent worker setup`".into(),
            )
        })
    };
    let environment = match prepared {
        Ok(environment) => environment,
        Err(err) => {
            tracing::error!(error = %err, "the ML worker cannot run");
            shared.set_error(Some(err.to_string()));
            return;
        }
    };
    let mut backoff: Option<Duration> = None;
    let mut generation = 0u64;
    let mut died_at: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        generation += 1;
        let started = Instant::now();
        match start_worker(&config, &environment, &dir).await {
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                let socket = dir.join("worker.sock");
                let serving = tokio::select! {
                    serving = wait_serving(&socket, &mut child, config.start_timeout) => serving,
                    _ = stop.changed() => Err(WorkerError::Unavailable("shutting down".into())),
                };
                match serving {
                    Ok(channel) => {
                        tracing::info!(
                            pid,
                            startup_ms = started.elapsed().as_millis() as u64,
                            "the ML worker is serving"
                        );
                        shared.set_error(None);
                        shared.ready.send_replace(Some(Running {
                            channel,
                            lane: VisionSocket::new(
                                dir.join(LANE_SOCKET),
                                config.threads.max(1) as usize,
                            ),
                            pid,
                            generation,
                            startup: started.elapsed(),
                            downtime: died_at.map(|at| at.elapsed()),
                        }));
                        tokio::select! {
                            status = child.wait() => {
                                died_at = Some(Instant::now());
                                shared.ready.send_replace(None);
                                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                                tracing::warn!(pid, %status, "the ML worker stopped; starting it again");
                                shared.set_error(Some(format!("it stopped ({status}) and is starting again")));
                            }
                            _ = stop.changed() => {
                                shared.ready.send_replace(None);
                                terminate(&mut child, config.grace).await;
                                break;
                            }
                        }
                    }
                    Err(err) => {
                        tracing::error!(pid, error = %err, "the ML worker did not start");
                        shared.set_error(Some(err.to_string()));
                        terminate(&mut child, config.grace).await;
                        if *stop.borrow() {
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "the ML worker could not be started");
                shared.set_error(Some(err.to_string()));
            }
        }
        if !*stop.borrow() {
            shared
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // A worker that ran a while gets its next restart at once.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = None;
        }
        let wait = backoff.unwrap_or_default();
        backoff = Some(match backoff {
            None => Duration::from_millis(100),
            Some(b) => (b * 2).min(config.max_backoff),
        });
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
        }
    }
    shared.ready.send_replace(None);
    shared.set_error(Some("it was shut down".into()));
}

async fn start_worker(
    config: &SupervisorConfig,
    environment: &Environment,
    dir: &Path,
) -> Result<Child, WorkerError> {
    let socket = dir.join("worker.sock");
    // Sockets left by a worker that died.
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(dir.join(LANE_SOCKET));
    let mut command = Command::new(&environment.python);
    command
        .args(["-m", "tabagent_worker", "--socket"])
        .arg(&socket)
        .arg("--lane-socket")
        .arg(dir.join(LANE_SOCKET))
        .arg("--files-socket")
        .arg(dir.join("files.sock"))
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .arg("--threads")
        .arg(config.threads.max(1).to_string())
        .arg("--grace")
        .arg(config.grace.as_secs_f64().to_string())
        .current_dir(&environment.sources)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HF_HUB_OFFLINE", "1")
        // MediaPipe's and TensorFlow Lite's chatter (absl INFO lines) stays out of the log.
        .env("GLOG_minloglevel", "2")
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| WorkerError::Environment(format!("{}: {e}", environment.python.display())))?;
    let pid = child.id().unwrap_or_default();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(BufReader::new(out), pid));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(BufReader::new(err), pid));
    }
    Ok(child)
}

/// The worker's log lines, into tracing at the level each line names.
async fn forward(reader: impl tokio::io::AsyncBufRead + Unpin, pid: u32) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("ERROR")
            || line.starts_with("CRITICAL")
            || line.starts_with("Traceback")
        {
            tracing::error!(target: "tabagent_worker", pid, "{line}");
        } else if line.starts_with("WARNING") || line.starts_with("W0") {
            tracing::warn!(target: "tabagent_worker", pid, "{line}");
        } else {
            tracing::info!(target: "tabagent_worker", pid, "{line}");
        }
    }
}

/// Waits until the worker's health service says SERVING; the channel to it.
async fn wait_serving(
    socket: &Path,
    child: &mut Child,
    timeout: Duration,
) -> Result<Channel, WorkerError> {
    let deadline = Instant::now() + timeout;
    let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
        .map_err(|e| WorkerError::Environment(e.to_string()))?;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(WorkerError::Unavailable(format!(
                "it exited while starting ({status}); its log says why"
            )));
        }
        if socket.exists() {
            if let Ok(channel) = endpoint.connect().await {
                let mut health = HealthClient::new(channel.clone());
                let request = HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(reply) = health.check(request).await {
                    if reply.into_inner().status == ServingStatus::Serving as i32 {
                        return Ok(channel);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(WorkerError::Unavailable(format!(
                "it did not say SERVING within {} s",
                timeout.as_secs()
            )));
        }
        // Polled while it starts (a second or two): there is nothing to wait on before its
        // socket exists.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// SIGTERM to the worker's group, then SIGKILL if it has not exited within `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    signal_group(pid, rustix::process::Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(pid, "the ML worker did not stop on SIGTERM; killing it");
        signal_group(pid, rustix::process::Signal::KILL);
        let _ = child.wait().await;
    }
}
