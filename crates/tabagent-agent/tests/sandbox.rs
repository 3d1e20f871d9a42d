//! The code sandbox against real bubblewrap, Python and shell: snippets run and answer, and
//! every escape a hostile snippet tries is stopped and reported, the host untouched.

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tabagent_agent::{Language, Limits, Outcome, Sandbox, SandboxConfig, SandboxError};

async fn sandbox() -> Sandbox {
    match Sandbox::new(SandboxConfig::default()).await {
        Ok(sandbox) => sandbox,
        Err(e) => panic!("{e} (scripts/test installs bubblewrap)"),
    }
}

async fn python(sandbox: &Sandbox, code: &str) -> tabagent_agent::Run {
    sandbox.run(Language::Python, code).await.unwrap()
}

#[tokio::test]
async fn python_and_shell_snippets_run_and_answer() {
    let sandbox = sandbox().await;
    let run = python(&sandbox, "print(2**100)").await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    assert_eq!(run.stdout.trim(), (1u128 << 100).to_string());

    let run = sandbox
        .run(
            Language::Shell,
            "echo hello > note && tr a-z A-Z < note; pwd; exit 3",
        )
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Exited(3), "{run:?}");
    assert_eq!(run.stdout, "HELLO\n/work\n");

    // An exception is the snippet's error, on its standard error.
    let run = python(&sandbox, "raise ValueError('nope')").await;
    assert_eq!(run.outcome, Outcome::Exited(1));
    assert!(run.stderr.contains("ValueError: nope"), "{}", run.stderr);

    // No privilege: not root, no capabilities, no new privileges.
    let run = python(
        &sandbox,
        "import os\nprint(os.getuid())\n\
         print([l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs'))])",
    )
    .await;
    let mut lines = run.stdout.lines();
    assert_ne!(lines.next(), Some("0"), "{run:?}");
    assert_eq!(
        lines.next(),
        Some("['0000000000000000', '0000000000000000', '1']"),
        "{run:?}"
    );
}

#[tokio::test]
async fn the_hosts_files_are_out_of_reach() {
    let sandbox = sandbox().await;
    // A secret on the host, where the test can read it.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    let code = format!(
        r#"
import os
for path in ['/etc/shadow', '/etc/passwd', '/root', '/home', {secret:?}, {repo:?},
             '/work/../etc/shadow', '/proc/1/root/etc/shadow']:
    try:
        if os.path.isdir(path):
            print('LISTED', path, os.listdir(path))
        else:
            print('READ', path, open(path).read()[:40])
    except OSError as e:
        print('refused', path, type(e).__name__)
for path in ['/usr/evil', '/evil', '/etc/evil', '/work/../evil', {outside:?}]:
    try:
        open(path, 'w').write('x')
        print('WROTE', path)
    except OSError as e:
        print('refused', path, type(e).__name__)
"#,
        secret = secret.display().to_string(),
        repo = env!("CARGO_MANIFEST_DIR"),
        outside = host.path().join("planted").display().to_string(),
    );
    let run = python(&sandbox, &code).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    assert!(!run.stdout.contains("READ"), "{}", run.stdout);
    assert!(!run.stdout.contains("LISTED"), "{}", run.stdout);
    assert!(!run.stdout.contains("WROTE"), "{}", run.stdout);
    assert!(!run.stdout.contains("the host's secret"), "{}", run.stdout);
    assert_eq!(run.stdout.matches("refused").count(), 13, "{}", run.stdout);
    assert!(!host.path().join("planted").exists());
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "the host's secret"
    );

    // The working directory is the run's own: a file left by one run is gone in the next.
    let run = sandbox
        .run(Language::Shell, "echo left > here; ls")
        .await
        .unwrap();
    assert_eq!(run.stdout, "here\n");
    let run = sandbox.run(Language::Shell, "ls -A").await.unwrap();
    assert_eq!(run.stdout, "", "{run:?}");
}

#[tokio::test]
async fn there_is_no_network() {
    let sandbox = sandbox().await;
    // A server on the host's loopback, which the snippet is told about.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        r#"
import socket
for host, port in [('127.0.0.1', {port}), ('1.1.1.1', 80), ('::1', {port})]:
    try:
        socket.create_connection((host, port), timeout=2)
        print('CONNECTED', host)
    except OSError as e:
        print('refused', host, type(e).__name__)
try:
    socket.getaddrinfo('example.com', 80)
    print('RESOLVED')
except OSError as e:
    print('refused dns', type(e).__name__)
"#
    );
    let run = python(&sandbox, &code).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    assert!(!run.stdout.contains("CONNECTED"), "{}", run.stdout);
    assert!(!run.stdout.contains("RESOLVED"), "{}", run.stdout);
    assert_eq!(run.stdout.matches("refused").count(), 4, "{}", run.stdout);
    // Nothing reached the host's listener.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[tokio::test]
async fn host_processes_cannot_be_seen_or_signalled() {
    let sandbox = sandbox().await;
    let me = std::process::id();
    let code = format!(
        r#"
import os, signal
try:
    os.kill({me}, signal.SIGKILL)
    print('KILLED')
except OSError as e:
    print('refused', type(e).__name__)
print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
"#
    );
    let run = python(&sandbox, &code).await;
    assert!(run.stdout.starts_with("refused"), "{run:?}");
    // Its own processes only: bubblewrap's init, and the snippet.
    let pids: Vec<u32> = run
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.len() <= 3, "{pids:?}");

    // Nor can it make namespaces of its own, or mount anything.
    let run = sandbox
        .run(
            Language::Shell,
            "unshare -r true 2>/dev/null && echo UNSHARED; mount -t tmpfs none /work 2>/dev/null && echo MOUNTED; echo done",
        )
        .await
        .unwrap();
    assert_eq!(run.stdout, "done\n", "{run:?}");
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_and_leaves_nothing_behind() {
    let sandbox = sandbox().await;
    let marker = format!("forkbomb-{}", std::process::id());
    let code = format!(
        r#"
import os, time
marker = {marker:?}
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        n += 1
except OSError as e:
    print('stopped after', n, type(e).__name__)
"#
    );
    let run = python(&sandbox, &code).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    let forked: u64 = run
        .stdout
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("{run:?}"))
        .parse()
        .unwrap();
    assert!(forked < sandbox.limits().processes, "{run:?}");
    // Its sleeping children went with it: no process on the host holds the marker.
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(left, 0);

    // The shell's classic, stopped by the process limit and then the wall clock.
    let limits = Limits {
        wall: Duration::from_secs(3),
        ..sandbox.limits().clone()
    };
    let run = sandbox
        .run_with(Language::Shell, "b(){ b|b& }; b; sleep 30", &limits)
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::WallTimeout, "{run:?}");
    let run = sandbox
        .run(Language::Shell, "echo still fine")
        .await
        .unwrap();
    assert_eq!(run.stdout, "still fine\n");
}

#[tokio::test]
async fn memory_and_disk_are_bounded() {
    let sandbox = sandbox().await;
    let run = python(&sandbox, "x = bytearray(4 * 1024**3)").await;
    assert_eq!(run.outcome, Outcome::Exited(1), "{run:?}");
    assert!(run.stderr.contains("MemoryError"), "{}", run.stderr);

    // One big file, then many small ones: each stops at the limit.
    let code = r#"
import os
for target in ['/work/big', '/tmp/big']:
    try:
        with open(target, 'wb') as f:
            for _ in range(1000):
                f.write(b'x' * 1024 * 1024)
        print('FILLED', target)
    except OSError as e:
        print('refused', target, os.path.getsize(target) // (1024 * 1024), type(e).__name__)
    os.remove(target)
try:
    for i in range(10000):
        with open(f'/work/part{i}', 'wb') as f:
            f.write(b'x' * 1024 * 1024)
    print('FILLED many')
except OSError as e:
    print('refused many after', i, e.strerror)
"#;
    let run = python(&sandbox, code).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    assert!(!run.stdout.contains("FILLED"), "{}", run.stdout);
    let limit_mib = sandbox.limits().disk_bytes >> 20;
    for line in run.stdout.lines() {
        let number: u64 = line
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(number <= limit_mib, "{line}");
    }
}

#[tokio::test]
async fn time_and_output_limits_stop_a_run() {
    let sandbox = sandbox().await;
    let limits = Limits {
        wall: Duration::from_secs(2),
        ..sandbox.limits().clone()
    };
    let run = sandbox
        .run_with(Language::Python, "import time; time.sleep(600)", &limits)
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::WallTimeout);

    let limits = Limits {
        cpu_seconds: 1,
        wall: Duration::from_secs(60),
        ..sandbox.limits().clone()
    };
    let run = sandbox
        .run_with(Language::Python, "while True: pass", &limits)
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::CpuLimit, "{run:?}");
    assert!(Outcome::CpuLimit.describe(&limits).contains("1 s of CPU"));

    let run = python(&sandbox, "while True: print('x' * 1000)").await;
    assert_eq!(run.outcome, Outcome::OutputLimit, "{run:?}");
    assert_eq!(run.stdout.len(), sandbox.limits().output_bytes);
}

#[tokio::test]
async fn code_it_will_not_run_is_refused_before_starting() {
    let sandbox = sandbox().await;
    let big = "#".repeat(sandbox.limits().code_bytes + 1);
    assert!(matches!(
        sandbox.run(Language::Python, &big).await,
        Err(SandboxError::CodeTooLarge { .. })
    ));
    assert!(matches!(
        sandbox.run(Language::Shell, "echo \0").await,
        Err(SandboxError::NulInCode)
    ));
    let missing = SandboxConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxConfig::default()
    };
    match Sandbox::new(missing).await {
        Err(SandboxError::Unavailable(why)) => assert!(why.contains("bubblewrap"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn run_code_reports_output_and_failures_as_a_tool() {
    use tabagent_agent::tools::{RunCode, Tool as _, ToolError};
    let tool = RunCode(std::sync::Arc::new(sandbox().await));
    let answer = tool
        .call(serde_json::json!({"language": "python", "code": "print(sum(range(101)))"}))
        .await;
    assert_eq!(answer, Ok("5050\n".to_string()));
    // As in a notebook cell: the last expression's value is printed; Python is the default.
    let cell = tool
        .call(serde_json::json!({"code": "x = [i * i for i in range(1, 101)]\nsum(x)"}))
        .await;
    assert_eq!(cell, Ok("338350\n".to_string()));
    let silent = tool.call(serde_json::json!({"code": "x = 1"})).await;
    assert!(
        silent.as_ref().is_ok_and(|s| s.contains("printed nothing")),
        "{silent:?}"
    );
    let broken = tool.call(serde_json::json!({"code": "1 +"})).await;
    assert!(
        matches!(&broken, Err(ToolError::Failed(text)) if text.contains("<snippet>") && text.contains("SyntaxError")),
        "{broken:?}"
    );
    let failed = tool
        .call(
            serde_json::json!({"language": "shell", "code": "echo partial; echo oops >&2; exit 4"}),
        )
        .await;
    assert_eq!(
        failed,
        Err(ToolError::Failed(
            "exited with status 4\npartial\n[stderr]\noops\n".into()
        ))
    );
    let refused = tool
        .call(serde_json::json!({"language": "ruby", "code": "puts 1"}))
        .await;
    assert!(
        matches!(refused, Err(ToolError::InvalidArguments(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn risky_kernel_interfaces_are_refused_by_the_seccomp_filter() {
    let sandbox = sandbox().await;
    // Each call would succeed, or fail otherwise than EPERM, without the filter: ptrace(TRACEME)
    // works, io_uring_setup and keyctl reject their arguments, an x32 number is ENOSYS or runs.
    let code = r#"
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
for name, number, args in [
    ('ptrace', 101, (0, 0, 0, 0)),
    ('io_uring_setup', 425, (1, 0)),
    ('keyctl', 250, (0, 0)),
    ('bpf', 321, (0, 0, 0)),
    ('userfaultfd', 323, (0,)),
    ('perf_event_open', 298, (0, 0, 0, 0, 0)),
    ('x32 getpid', 0x40000000 | 39, ()),
]:
    ctypes.set_errno(0)
    result = libc.syscall(number, *args)
    print(name, result, ctypes.get_errno())
for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
    try:
        socket.socket(family, socket.SOCK_DGRAM)
        print('OPENED', family)
    except PermissionError:
        print('refused socket', int(family))
a, b = socket.socketpair(socket.AF_UNIX)
a.send(b'unix sockets work')
print(b.recv(100).decode())
"#;
    let run = python(&sandbox, code).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 11, "{}", run.stdout);
    for line in &lines[..7] {
        assert!(line.ends_with(" -1 1"), "not refused with EPERM: {line}");
    }
    assert_eq!(
        lines[7..10],
        ["refused socket 2", "refused socket 10", "refused socket 16"]
    );
    assert_eq!(lines[10], "unix sockets work");
}
