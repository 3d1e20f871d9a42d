//! How many processes (threads included: the kernel counts tasks) a user has now, the base the
//! process limit of a sandbox is added to.

/// The tasks of user `uid` now, from `/proc` (0 where it cannot be read).
pub(super) fn of_user(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut tasks = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process that ended since the listing has no status: skipped.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if real_uid(&status) == Some(uid) {
            tasks += threads(&status).unwrap_or(1);
        }
    }
    tasks
}

/// The real user id in a `/proc/<pid>/status` text (`Uid:` real, effective, saved, fs).
fn real_uid(status: &str) -> Option<u32> {
    field(status, "Uid:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn threads(status: &str) -> Option<u64> {
    field(status, "Threads:")?.trim().parse().ok()
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| line.strip_prefix(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_gives_its_real_user_and_threads() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\nThreads:\t7\n";
        assert_eq!(real_uid(status), Some(1000));
        assert_eq!(threads(status), Some(7));
    }

    #[test]
    fn this_process_is_counted_with_its_threads() {
        let me = rustix::process::getuid().as_raw();
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let held = std::thread::spawn(move || rx.recv());
        assert!(of_user(me) >= 2, "{}", of_user(me));
        drop(_tx);
        let _ = held.join();
    }
}
