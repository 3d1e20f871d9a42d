//! Runs untrusted code: a Python or shell snippet in a bubblewrap sandbox.
//!
//! Why bubblewrap: it is the proven, small setuid-free launcher Flatpak runs every app in, it
//! ships in Debian, starts in milliseconds, and builds the sandbox from the kernel's own
//! isolation: new user, PID, network, IPC, UTS and cgroup namespaces, no capabilities, no new
//! privileges, no further user namespaces. A WebAssembly Python (wasmtime + WASI) would isolate
//! as well but runs no shell, starts slower and none ships in the registries this project can
//! fetch from. The sandbox sees:
//! - `/usr` read-only (and the usual `/bin`, `/lib` links into it): the interpreters, nothing of
//!   the host's `/etc`, `/home`, `/root`, `/var` or the server's data;
//! - `/work` (the working directory) and `/tmp`: fresh tmpfs mounts of a bounded size, gone when
//!   the run ends, and the only places it can write (the root is read-only);
//! - its own `/proc` and a minimal `/dev`; a network namespace with no interface up.
//!
//! A seccomp filter (`seccomp.rs`) keeps the riskier kernel interfaces (io_uring, BPF,
//! userfaultfd, perf events, keyrings, ptrace, mounts) and every socket but a Unix one out of
//! reach.
//!
//! Limits, set on the launcher before it starts so that everything inside inherits them: CPU
//! seconds, address space, the size of any file written, open files, and processes (counted by
//! the kernel per user: the sandbox runs as `nobody` when tabagent is root, so that root's
//! processes, which the kernel exempts from the limit, are not what it runs as). Wall time and
//! output size are watched from here; past either the whole sandbox is killed (bubblewrap's
//! PID namespace ends with its first process).

mod limits;
mod seccomp;
mod tasks;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Command;

/// The user a sandbox runs as when tabagent is root (`nobody`).
const NOBODY: u32 = 65534;

/// What a snippet is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Python 3 (the system's, in isolated mode).
    Python,
    /// POSIX shell (`/bin/sh`).
    Shell,
}

/// What one run may consume.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU time, all processes of the run together.
    pub cpu_seconds: u64,
    /// Time from start to end, however spent (sleeping included).
    pub wall: Duration,
    /// Address space of each process.
    pub memory_bytes: u64,
    /// Size of `/work` and of `/tmp` each (and of any one file).
    pub disk_bytes: u64,
    /// Standard output and standard error, each; past it the run is stopped.
    pub output_bytes: usize,
    /// Processes and threads at once inside the sandbox.
    pub processes: u64,
    /// Open file descriptors of each process.
    pub open_files: u64,
    /// The snippet itself.
    pub code_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_seconds: 5,
            wall: Duration::from_secs(10),
            memory_bytes: 512 << 20,
            disk_bytes: 16 << 20,
            output_bytes: 64 << 10,
            processes: 32,
            open_files: 64,
            code_bytes: 64 << 10,
        }
    }
}

/// Where the sandbox's programs are.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The bubblewrap launcher.
    pub bwrap: PathBuf,
    /// Python inside the sandbox (under `/usr`, which is all it sees).
    pub python: PathBuf,
    /// The shell inside the sandbox.
    pub shell: PathBuf,
    /// The default limits of a run.
    pub limits: Limits,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            bwrap: PathBuf::from("bwrap"),
            python: PathBuf::from("/usr/bin/python3"),
            shell: PathBuf::from("/bin/sh"),
            limits: Limits::default(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The snippet exited with this status (0: success).
    Exited(i32),
    /// It was killed by this signal (a crash, or the kernel enforcing a limit).
    Signalled(i32),
    /// It used up its CPU time.
    CpuLimit,
    /// It ran past its wall time and was killed.
    WallTimeout,
    /// It wrote more output than allowed and was killed.
    OutputLimit,
}

impl Outcome {
    /// What a tool reports for an outcome other than a clean exit, in a line.
    pub fn describe(&self, limits: &Limits) -> String {
        match self {
            Outcome::Exited(0) => "finished".into(),
            Outcome::Exited(code) => format!("exited with status {code}"),
            Outcome::Signalled(signal) => format!("killed by signal {signal}"),
            Outcome::CpuLimit => format!("stopped: used its {} s of CPU time", limits.cpu_seconds),
            Outcome::WallTimeout => format!(
                "stopped: still running after {} s",
                limits.wall.as_secs_f64()
            ),
            Outcome::OutputLimit => format!(
                "stopped: wrote more than {} bytes of output",
                limits.output_bytes
            ),
        }
    }
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct Run {
    /// How it ended.
    pub outcome: Outcome,
    /// Its standard output (lossy UTF-8), at most the output limit.
    pub stdout: String,
    /// Its standard error, likewise.
    pub stderr: String,
    /// From start to end.
    pub elapsed: Duration,
}

/// Why a snippet could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox cannot be built on this machine.
    #[error("the code sandbox is unavailable: {0}")]
    Unavailable(String),
    /// The snippet is larger than allowed.
    #[error("the code is {size} bytes; at most {limit} are run")]
    CodeTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The snippet holds a NUL byte (no program takes one in its arguments).
    #[error("the code holds a NUL byte")]
    NulInCode,
    /// Starting or watching the sandbox failed.
    #[error("the code sandbox failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs snippets, each in a sandbox of its own.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    /// The user runs are made as: `nobody` when tabagent is root, else tabagent's own.
    run_as: Option<u32>,
    /// The seccomp filter every run starts under (`seccomp.rs`), compiled once.
    filter: std::sync::Arc<Vec<u8>>,
}

impl Sandbox {
    /// Checks that bubblewrap runs here and builds a sandbox: an error says what is missing.
    pub async fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let run_as = rustix::process::geteuid().is_root().then_some(NOBODY);
        let filter = seccomp::program().map_err(SandboxError::Unavailable)?;
        let sandbox = Self {
            config,
            run_as,
            filter: std::sync::Arc::new(filter),
        };
        let probe = sandbox
            .run_with(Language::Shell, "exit 0", &Limits::default())
            .await
            .map_err(|e| match e {
                SandboxError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                    SandboxError::Unavailable(format!(
                        "{} is not installed (Debian: apt-get install bubblewrap)",
                        sandbox.config.bwrap.display()
                    ))
                }
                other => other,
            })?;
        if probe.outcome != Outcome::Exited(0) {
            return Err(SandboxError::Unavailable(format!(
                "bubblewrap cannot build a sandbox here (user namespaces may be disabled): {}",
                probe.stderr.trim()
            )));
        }
        Ok(sandbox)
    }

    /// The default limits of a run.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Runs `code` with the default limits.
    pub async fn run(&self, language: Language, code: &str) -> Result<Run, SandboxError> {
        self.run_with(language, code, &self.config.limits).await
    }

    /// Runs `code` with `limits`.
    pub async fn run_with(
        &self,
        language: Language,
        code: &str,
        limits: &Limits,
    ) -> Result<Run, SandboxError> {
        if code.len() > limits.code_bytes {
            return Err(SandboxError::CodeTooLarge {
                size: code.len(),
                limit: limits.code_bytes,
            });
        }
        if code.contains('\0') {
            return Err(SandboxError::NulInCode);
        }
        let started = Instant::now();
        // The filter reaches bubblewrap on a pipe; the pipe holds it whole (a few hundred
        // bytes), so writing it before the start cannot block.
        let (filter, mut writer) = std::io::pipe()?;
        std::io::Write::write_all(&mut writer, &self.filter)?;
        drop(writer);
        let mut command = self.command(language, code, limits, &filter);
        let spawned = command.spawn();
        drop(filter);
        let mut child = spawned?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = limits.output_bytes;
        let pid = child.id();
        let watched = async {
            let (out, err) =
                tokio::join!(read_capped(stdout, cap, pid), read_capped(stderr, cap, pid));
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((out?, err?, status))
        };
        let finished = tokio::time::timeout(limits.wall, watched).await;
        let (outcome, stdout, stderr) = match finished {
            Err(_) => {
                // Killing bubblewrap kills the sandbox: its first process dies with it
                // (--die-with-parent), and the PID namespace with that one.
                let _ = child.kill().await;
                (Outcome::WallTimeout, Vec::new(), Vec::new())
            }
            Ok(result) => {
                let ((stdout, out_over), (stderr, err_over), status) = result?;
                let outcome = if out_over || err_over {
                    Outcome::OutputLimit
                } else {
                    outcome_of(status)
                };
                (outcome, stdout, stderr)
            }
        };
        let _ = child.kill().await;
        Ok(Run {
            outcome,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    fn command(
        &self,
        language: Language,
        code: &str,
        limits: &Limits,
        filter: &std::io::PipeReader,
    ) -> Command {
        let mut command = Command::new(&self.config.bwrap);
        let size = limits.disk_bytes.to_string();
        let filter_fd = std::os::fd::AsRawFd::as_raw_fd(filter);
        command
            .args(["--seccomp", &filter_fd.to_string()])
            .args(["--unshare-all", "--unshare-user", "--disable-userns"])
            .arg("--die-with-parent")
            .args(["--new-session", "--cap-drop", "ALL"])
            .args(["--ro-bind", "/usr", "/usr"])
            .args([
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/sbin",
                "/sbin",
            ])
            .args([
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
            ])
            .args(["--proc", "/proc", "--dev", "/dev"])
            .args(["--size", &size, "--tmpfs", "/tmp"])
            .args(["--size", &size, "--tmpfs", "/work", "--chdir", "/work"])
            // The root is bubblewrap's own tmpfs, unbounded: read-only, so that only the two
            // bounded mounts take writes.
            .args(["--remount-ro", "/"])
            .args(["--clearenv", "--setenv", "PATH", "/usr/bin:/bin"])
            .args(["--setenv", "HOME", "/work", "--setenv", "LANG", "C.UTF-8"])
            .args(["--setenv", "TMPDIR", "/tmp", "--"]);
        match language {
            // -I: isolated (no environment, no user site), -B: no bytecode files.
            Language::Python => command.arg(&self.config.python).args(["-I", "-B", "-c"]),
            Language::Shell => command.arg(&self.config.shell).arg("-c"),
        };
        command
            .arg(code)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(uid) = self.run_as {
            command.uid(uid).gid(uid);
        }
        // The kernel counts processes per user, all of them: this user's count now, plus what
        // the run may add.
        let user = self
            .run_as
            .unwrap_or_else(|| rustix::process::getuid().as_raw());
        let processes = tasks::of_user(user).saturating_add(limits.processes);
        limits::apply_on_start(&mut command, limits, processes, filter_fd);
        command
    }
}

/// A stream read to its end, keeping at most `cap` bytes; whether it wrote more. One byte past
/// the cap kills the sandbox (`launcher`: bubblewrap's process, not yet reaped, so its id is
/// still its own), which ends the other stream too.
async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    cap: usize,
    launcher: Option<u32>,
) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(stream) = stream else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    stream.take(cap as u64 + 1).read_to_end(&mut kept).await?;
    let over = kept.len() > cap;
    if over {
        let launcher = launcher
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = launcher {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        kept.truncate(cap);
    }
    Ok((kept, over))
}

/// bubblewrap exits with its first process's status, or 128 + the signal that killed it.
fn outcome_of(status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt as _;
    const SIGXCPU: i32 = 24;
    let signal = match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 => code - 128,
        (Some(code), _) => return Outcome::Exited(code),
        (None, Some(signal)) => signal,
        (None, None) => return Outcome::Signalled(0),
    };
    match signal {
        // The soft CPU limit sends SIGXCPU (a program that ignores it gets SIGKILL a second
        // later, reported as that signal).
        SIGXCPU => Outcome::CpuLimit,
        other => Outcome::Signalled(other),
    }
}
