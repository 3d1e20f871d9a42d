//! The system calls a sandboxed snippet may not make, as a seccomp filter bubblewrap installs
//! (`--seccomp FD`). Namespaces and the missing capabilities already make most of them fail;
//! the filter keeps the kernel code behind them out of reach too, since that is where
//! unprivileged exploits have been found: io_uring, BPF, userfaultfd, perf events, keyrings. It
//! also refuses every socket but a Unix one (the network namespace has no interface up; this
//! keeps raw and netlink sockets closed as well) and the x32 system call numbers, through which
//! a deny list could otherwise be walked around. A refused call fails with EPERM; a call from
//! another architecture (32-bit `int 0x80`) kills the process (seccompiler's arch check).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The calls refused outright.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    libc::SYS_lookup_dcookie,
    libc::SYS_move_pages,
    libc::SYS_mbind,
    libc::SYS_migrate_pages,
];

/// Port I/O, x86 only.
#[cfg(target_arch = "x86_64")]
const DENIED_ON_X86: &[i64] = &[libc::SYS_iopl, libc::SYS_ioperm];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ON_X86: &[i64] = &[];

/// System call numbers at or above this are the x32 ABI's.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The filter as the bytes of a `struct sock_filter` array, for bubblewrap to read.
pub(super) fn program() -> Result<Vec<u8>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .chain(DENIED_ON_X86)
        .map(|&call| (call, Vec::new()))
        .collect();
    let not_unix = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Ne,
        libc::AF_UNIX as u64,
    )
    .and_then(|condition| SeccompRule::new(vec![condition]))
    .map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_socket, vec![not_unix.clone()]);
    rules.insert(libc::SYS_socketpair, vec![not_unix]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let compiled: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;

    // Ahead of seccompiler's program (its jumps are relative, so they are unchanged): load the
    // call number; x32 numbers get EPERM, the rest fall through.
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let mut instructions: Vec<(u16, u8, u8, u32)> = Vec::new();
    if cfg!(target_arch = "x86_64") {
        instructions.extend([
            (BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
            (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
            (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ]);
    }
    instructions.extend(compiled.iter().map(|i| (i.code, i.jt, i.jf, i.k)));
    let mut bytes = Vec::with_capacity(instructions.len() * 8);
    for (code, jt, jf, k) in instructions {
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.push(jt);
        bytes.push(jf);
        bytes.extend_from_slice(&k.to_ne_bytes());
    }
    Ok(bytes)
}
