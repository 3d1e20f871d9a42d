//! The resource limits a sandbox starts with, set in the launcher between fork and exec so that
//! bubblewrap and everything it starts inherit them, and nothing runs before they hold.

// `pre_exec` is unsafe by signature: the closure runs in the forked child, where only
// async-signal-safe calls are allowed. It makes `fcntl` and `setrlimit` system calls and nothing
// else (no allocation, no locks).
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt as _;

use rustix::process::{setrlimit, Resource, Rlimit};

use super::Limits;

/// Sets `limits` (and at most `processes` processes for the user) on the program `command`
/// starts, and lets it inherit descriptor `inherited` (the seccomp program's pipe).
pub(super) fn apply_on_start(
    command: &mut tokio::process::Command,
    limits: &Limits,
    processes: u64,
    inherited: std::os::fd::RawFd,
) {
    let cpu = limits.cpu_seconds;
    let wanted = [
        // SIGXCPU at the soft limit, SIGKILL a second later for a program that ignores it.
        (Resource::Cpu, cpu, cpu.saturating_add(1)),
        (Resource::As, limits.memory_bytes, limits.memory_bytes),
        (Resource::Fsize, limits.disk_bytes, limits.disk_bytes),
        (Resource::Nofile, limits.open_files, limits.open_files),
        (Resource::Nproc, processes, processes),
        (Resource::Core, 0, 0),
    ];
    let set_all = move || {
        // SAFETY: `inherited` is open in the parent until the child has started (the caller
        // holds it), so it is open here, in the child's copy of the table.
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(inherited) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        for (resource, soft, hard) in wanted {
            setrlimit(
                resource,
                Rlimit {
                    current: Some(soft),
                    maximum: Some(hard),
                },
            )?;
        }
        Ok(())
    };
    // SAFETY: `set_all` only makes fcntl and setrlimit system calls on values computed before
    // the fork.
    unsafe {
        command.as_std_mut().pre_exec(set_all);
    }
}
