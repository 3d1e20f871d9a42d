//! Folders the library follows: a scan when it starts (what changed while it was stopped:
//! new, changed, moved and deleted files), then the kernel's file events (inotify, through
//! `notify`, debounced so that a file being written is read once it settles).
//!
//! Every event is handled the same way, by what the path is now: a file is ingested (unchanged
//! size and time cost one `stat`; unchanged content costs a hash), a folder is scanned, a path
//! that is gone takes its documents with it. A rename's new path is handled before its old one,
//! so the document follows the file instead of being read again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tabagent_memory::MemoryApi;
use tokio::sync::mpsc;

use crate::extract::Format;
use crate::library::{DocumentInfo, IngestError, IngestOutcome, Library};

/// How long a file must be quiet before it is read.
const SETTLE: Duration = Duration::from_millis(500);

/// What happened to one file, for logs and progress.
#[derive(Debug)]
pub enum Noticed {
    /// Ingested (or found unchanged or moved).
    Ingested {
        /// The file.
        path: PathBuf,
        /// What it is now.
        document: DocumentInfo,
        /// What ingesting it did.
        outcome: IngestOutcome,
    },
    /// Its document was removed with it.
    Removed {
        /// The file it was read from.
        path: PathBuf,
        /// The document.
        document: DocumentInfo,
    },
    /// It could not be ingested.
    Failed {
        /// The file.
        path: PathBuf,
        /// Why.
        error: IngestError,
    },
    /// A scan of every folder ended (at start, and after the kernel's queue overflowed): the
    /// library is in line with the folders as they were.
    Scanned,
}

/// Whether a file in a followed folder is one to read: a known extension, not hidden, not a
/// download or editor's file in progress.
pub fn wanted(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let partial = [".part", ".crdownload", ".tmp", ".swp", ".download"];
    !name.starts_with('.')
        && !name.starts_with("~$")
        && !name.ends_with('~')
        && !partial.iter().any(|s| name.ends_with(s))
        && Format::known_extension(name)
}

/// The files to read under `folder`: regular files only (symbolic links are not followed: a
/// link could point anywhere), hidden folders skipped.
pub fn files_under(folder: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if kind.is_dir() && !hidden {
                pending.push(path);
            } else if kind.is_file() && wanted(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn under(path: &Path, folder: &Path) -> bool {
    path.starts_with(folder)
}

/// Brings the library in line with `folders` as they are now: every wanted file ingested, every
/// document read from a file under them that is gone removed. Reports each file it touched.
pub async fn scan<M: MemoryApi>(
    library: &Library<M>,
    folders: &[PathBuf],
    report: &mut (dyn FnMut(Noticed) + Send),
) -> Result<(), IngestError> {
    for folder in folders {
        for path in files_under(folder) {
            report(ingest(library, &path).await);
        }
    }
    for document in library.list().await? {
        let Some(path) = document.path.as_deref().map(PathBuf::from) else {
            continue;
        };
        if folders.iter().any(|f| under(&path, f)) && !is_file(&path) {
            if let Some(document) = library.remove_path(&path).await? {
                report(Noticed::Removed { path, document });
            }
        }
    }
    Ok(())
}

fn is_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

async fn ingest<M: MemoryApi>(library: &Library<M>, path: &Path) -> Noticed {
    match library.ingest_file(path).await {
        Ok((document, outcome)) => Noticed::Ingested {
            path: path.to_path_buf(),
            document,
            outcome,
        },
        Err(error) => Noticed::Failed {
            path: path.to_path_buf(),
            error,
        },
    }
}

/// Handles one path as it is now (see the module's note).
async fn reconcile<M: MemoryApi>(
    library: &Library<M>,
    path: &Path,
    report: &mut (dyn FnMut(Noticed) + Send),
) -> Result<(), IngestError> {
    let metadata = std::fs::symlink_metadata(path);
    match metadata {
        Ok(m) if m.is_file() => {
            if wanted(path) {
                let noticed = ingest(library, path).await;
                // Deleted while it was being read: gone, not failed.
                if matches!(noticed, Noticed::Failed { .. }) && !is_file(path) {
                    return remove_gone(library, path, report).await;
                }
                report(noticed);
            }
        }
        Ok(m) if m.is_dir() => {
            for file in files_under(path) {
                report(ingest(library, &file).await);
            }
        }
        Ok(_) => {}
        Err(_) => remove_gone(library, path, report).await?,
    }
    Ok(())
}

/// Removes the documents read from files at or under `path` that are no longer there.
async fn remove_gone<M: MemoryApi>(
    library: &Library<M>,
    path: &Path,
    report: &mut (dyn FnMut(Noticed) + Send),
) -> Result<(), IngestError> {
    for document in library.list().await? {
        let Some(gone) = document.path.as_deref().map(PathBuf::from) else {
            continue;
        };
        if under(&gone, path) && !is_file(&gone) {
            if let Some(document) = library.remove_path(&gone).await? {
                report(Noticed::Removed {
                    path: gone,
                    document,
                });
            }
        }
    }
    Ok(())
}

/// Follows `folders` until the returned handle is dropped: scans them, then handles their file
/// events as they come. `report` hears about every file touched.
pub fn follow<M: MemoryApi + 'static>(
    library: Arc<Library<M>>,
    folders: Vec<PathBuf>,
    mut report: Box<dyn FnMut(Noticed) + Send>,
) -> Result<Following, notify::Error> {
    let (events, mut incoming) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut debouncer = new_debouncer(SETTLE, None, move |result: DebounceEventResult| {
        let Ok(batch) = result else {
            // The kernel's queue overflowed or a watch failed: look at everything again.
            let _ = events.send(Vec::new());
            return;
        };
        let mut paths = Vec::new();
        for event in batch {
            match event.kind {
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if event.paths.len() == 2 => {
                    // The new path first: the document follows the file.
                    paths.push(event.paths[1].clone());
                    paths.push(event.paths[0].clone());
                }
                EventKind::Access(_) => {}
                _ => paths.extend(event.paths.iter().cloned()),
            }
        }
        paths.dedup();
        if !paths.is_empty() {
            let _ = events.send(paths);
        }
    })?;
    for folder in &folders {
        debouncer.watch(folder, RecursiveMode::Recursive)?;
    }
    let task = tokio::spawn(async move {
        match scan(&library, &folders, &mut *report).await {
            Ok(()) => report(Noticed::Scanned),
            Err(e) => tracing::warn!(error = %e, "scanning the librarian's folders failed"),
        }
        while let Some(paths) = incoming.recv().await {
            let result = if paths.is_empty() {
                let scanned = scan(&library, &folders, &mut *report).await;
                if scanned.is_ok() {
                    report(Noticed::Scanned);
                }
                scanned
            } else {
                // What is there before what is gone, so that a file that moved (its new path
                // there, its old one gone) is followed rather than removed and read again.
                let (there, gone): (Vec<PathBuf>, Vec<PathBuf>) =
                    paths.into_iter().partition(|p| p.exists());
                let mut result = Ok(());
                for path in there.into_iter().chain(gone) {
                    if folders.iter().any(|f| under(&path, f)) {
                        result = result.and(reconcile(&library, &path, &mut *report).await);
                    }
                }
                result
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "following the librarian's folders failed");
            }
        }
    });
    Ok(Following {
        _debouncer: Box::new(debouncer),
        task,
    })
}

/// Folders being followed; dropping it stops.
pub struct Following {
    _debouncer: Box<dyn std::any::Any + Send>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Following").finish_non_exhaustive()
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}
