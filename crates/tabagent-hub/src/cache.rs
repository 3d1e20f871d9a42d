//! The Hugging Face cache on disk, laid out exactly as `huggingface_hub` lays it out:
//!
//! ```text
//! <root>/models--{owner}--{name}/
//!     blobs/<etag>                      file contents, named by the Hub's ETag (sha256 for LFS)
//!     snapshots/<commit>/<path>         relative symlinks into blobs/
//!     refs/<revision>                   the commit a branch or tag pointed to when last resolved
//! <root>/.locks/models--{owner}--{name}/<etag>.lock
//! ```
//!
//! Every name that becomes a path here has been validated ([`RepoId`], [`RepoPath`],
//! [`Revision`], and hex-only etags and commits), so no input can reach outside the root.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::repo::{is_commit_hash, RepoId, RepoPath, Revision};
use crate::HubError;

/// A Hugging Face cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

/// A file present in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// Its repository.
    pub repo: RepoId,
    /// The commit of the snapshot.
    pub commit: String,
    /// The path inside the repository.
    pub path: RepoPath,
    /// Where it is on disk (the snapshot entry; a symlink into `blobs/`).
    pub local_path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Refs (branches, tags) pointing at this commit.
    pub refs: Vec<String>,
}

impl HubCache {
    /// A cache rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache `huggingface_hub` would use: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub fn from_env() -> Self {
        Self::new(default_root(|key| std::env::var_os(key)))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--owner--name`.
    pub fn repo_dir(&self, repo: &RepoId) -> PathBuf {
        self.root.join(repo.cache_folder())
    }

    /// Where a blob with this etag lives. The etag must be hex (a sha256 or git sha1).
    pub fn blob_path(&self, repo: &RepoId, etag: &str) -> Result<PathBuf, HubError> {
        check_etag(etag)?;
        Ok(self.repo_dir(repo).join("blobs").join(etag))
    }

    /// The lock `huggingface_hub` takes while it downloads this blob.
    pub fn lock_path(&self, repo: &RepoId, etag: &str) -> Result<PathBuf, HubError> {
        check_etag(etag)?;
        Ok(self
            .root
            .join(".locks")
            .join(repo.cache_folder())
            .join(format!("{etag}.lock")))
    }

    /// The snapshot entry for `path` at `commit`.
    pub fn snapshot_path(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &RepoPath,
    ) -> Result<PathBuf, HubError> {
        check_commit(commit)?;
        let mut out = self.repo_dir(repo).join("snapshots").join(commit);
        for segment in path.segments() {
            out.push(segment);
        }
        Ok(out)
    }

    /// The commit `revision` resolves to from the cache alone.
    pub fn resolve(&self, repo: &RepoId, revision: &Revision) -> Result<Option<String>, HubError> {
        if revision.is_commit() {
            return Ok(Some(revision.as_str().to_string()));
        }
        let path = self.ref_path(repo, revision);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let commit = text.trim();
                Ok(is_commit_hash(commit).then(|| commit.to_string()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(HubError::io("read", path)(err)),
        }
    }

    /// Records that `revision` points at `commit` (atomically: write, then rename).
    pub fn write_ref(
        &self,
        repo: &RepoId,
        revision: &Revision,
        commit: &str,
    ) -> Result<(), HubError> {
        check_commit(commit)?;
        if revision.is_commit() {
            return Ok(());
        }
        let path = self.ref_path(repo, revision);
        write_atomically(&path, commit.as_bytes())
    }

    /// The cached file for `path` at `revision`, when present and complete.
    pub fn find(
        &self,
        repo: &RepoId,
        revision: &Revision,
        path: &RepoPath,
    ) -> Result<Option<PathBuf>, HubError> {
        let Some(commit) = self.resolve(repo, revision)? else {
            return Ok(None);
        };
        let entry = self.snapshot_path(repo, &commit, path)?;
        // `exists` follows the symlink: a dangling entry (blob deleted) does not count.
        Ok(entry.exists().then_some(entry))
    }

    /// Opens the cached `path` of `repo` at `revision` for another process to read, with its
    /// size. The entry must resolve (symlinks followed) to a file inside the repository's own
    /// folder: a link planted to point elsewhere is refused, never followed out of the cache.
    pub fn open(
        &self,
        repo: &RepoId,
        revision: &Revision,
        path: &RepoPath,
    ) -> Result<Option<(fs::File, u64)>, HubError> {
        let Some(entry) = self.find(repo, revision, path)? else {
            return Ok(None);
        };
        let real = fs::canonicalize(&entry).map_err(HubError::io("resolve", &entry))?;
        let repo_dir = self.repo_dir(repo);
        let root = fs::canonicalize(&repo_dir).map_err(HubError::io("resolve", &repo_dir))?;
        if !real.starts_with(&root) {
            return Err(HubError::invalid(
                "file path",
                path.as_str(),
                "its cache entry points outside the repository's cache folder",
            ));
        }
        let file = fs::File::open(&real).map_err(HubError::io("open", &real))?;
        let meta = file.metadata().map_err(HubError::io("read", &real))?;
        if !meta.is_file() {
            return Err(HubError::invalid("file path", path.as_str(), "not a file"));
        }
        Ok(Some((file, meta.len())))
    }

    /// Points the snapshot entry for `path` at `commit` to the blob `etag`, with a relative
    /// symlink as `huggingface_hub` makes, replacing any previous entry atomically.
    pub fn link(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &RepoPath,
        etag: &str,
    ) -> Result<PathBuf, HubError> {
        let entry = self.snapshot_path(repo, commit, path)?;
        let blob = self.blob_path(repo, etag)?;
        let parent = entry.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(HubError::io("create", &parent))?;
        // snapshots/<commit>/<a>/<b> → ../../../blobs/<etag>: one `..` per directory below the repo.
        let depth = 2 + path.segments().count() - 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let temp = parent.join(format!(".{}.tabagent-link", path.file_name()));
        let _ = fs::remove_file(&temp);
        make_link(&target, &blob, &temp).map_err(HubError::io("link", &temp))?;
        fs::rename(&temp, &entry).map_err(HubError::io("rename into", &entry))?;
        sync_dir(&parent);
        Ok(entry)
    }

    /// Every file in every snapshot whose name ends with `suffix` (e.g. `.gguf`), sorted.
    pub fn list(&self, suffix: &str) -> Result<Vec<CachedFile>, HubError> {
        let mut found = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(err) => return Err(HubError::io("read", &self.root)(err)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(repo) = name.to_str().and_then(RepoId::from_cache_folder) else {
                continue;
            };
            let refs = self.refs_of(&repo);
            let snapshots = self.repo_dir(&repo).join("snapshots");
            let Ok(commits) = fs::read_dir(&snapshots) else {
                continue;
            };
            for commit in commits.flatten() {
                let Some(commit_name) = commit.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if !is_commit_hash(&commit_name) {
                    continue;
                }
                let mut files = Vec::new();
                walk(&commit.path(), String::new(), &mut files, 0);
                for (relative, local_path) in files {
                    if !relative.to_ascii_lowercase().ends_with(suffix) {
                        continue;
                    }
                    let Ok(path) = RepoPath::parse(&relative) else {
                        continue;
                    };
                    // Follows the symlink; a dangling one is skipped.
                    let Ok(meta) = fs::metadata(&local_path) else {
                        continue;
                    };
                    found.push(CachedFile {
                        repo: repo.clone(),
                        commit: commit_name.clone(),
                        path,
                        local_path,
                        size: meta.len(),
                        refs: refs
                            .iter()
                            .filter(|(_, c)| *c == commit_name)
                            .map(|(r, _)| r.clone())
                            .collect(),
                    });
                }
            }
        }
        found.sort_by(|a, b| (&a.repo, &a.path, &a.commit).cmp(&(&b.repo, &b.path, &b.commit)));
        Ok(found)
    }

    /// Removes `path` from the snapshot `commit`, then its blob when no snapshot of the
    /// repository points at it any more, then the repository folder when nothing is left.
    pub fn remove(&self, repo: &RepoId, commit: &str, path: &RepoPath) -> Result<(), HubError> {
        let entry = self.snapshot_path(repo, commit, path)?;
        let blob = fs::read_link(&entry)
            .ok()
            .and_then(|target| target.file_name().map(|n| n.to_os_string()));
        match fs::remove_file(&entry) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(HubError::io("remove", &entry)(err)),
        }
        let repo_dir = self.repo_dir(repo);
        let mut links = Vec::new();
        walk(&repo_dir.join("snapshots"), String::new(), &mut links, 0);
        if let Some(blob) = blob {
            let used = links.iter().any(|(_, link)| {
                fs::read_link(link).is_ok_and(|t| t.file_name() == Some(blob.as_os_str()))
            });
            if !used {
                let blob_path = repo_dir.join("blobs").join(&blob);
                match fs::remove_file(&blob_path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(HubError::io("remove", &blob_path)(err)),
                }
            }
        }
        // Empty directories left in the snapshot, deepest first.
        let mut dir = entry.parent().map(Path::to_path_buf);
        let snapshots = repo_dir.join("snapshots");
        while let Some(current) = dir {
            if current == snapshots || fs::remove_dir(&current).is_err() {
                break;
            }
            dir = current.parent().map(Path::to_path_buf);
        }
        if links.is_empty() {
            // Nothing left of the repository: its refs go, and its folders when empty (a
            // download in progress keeps `blobs/`).
            let _ = fs::remove_dir_all(repo_dir.join("refs"));
            let _ = fs::remove_dir_all(&snapshots);
            let _ = fs::remove_dir(repo_dir.join("blobs"));
            let _ = fs::remove_dir(&repo_dir);
        }
        Ok(())
    }

    fn ref_path(&self, repo: &RepoId, revision: &Revision) -> PathBuf {
        let mut path = self.repo_dir(repo).join("refs");
        for segment in revision.as_str().split('/') {
            path.push(segment);
        }
        path
    }

    fn refs_of(&self, repo: &RepoId) -> Vec<(String, String)> {
        let mut files = Vec::new();
        walk(
            &self.repo_dir(repo).join("refs"),
            String::new(),
            &mut files,
            0,
        );
        files
            .into_iter()
            .filter_map(|(name, path)| {
                let commit = fs::read_to_string(path).ok()?;
                let commit = commit.trim();
                is_commit_hash(commit).then(|| (name, commit.to_string()))
            })
            .collect()
    }
}

fn default_root(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let set = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("HF_HUB_CACHE").or_else(|| set("HUGGINGFACE_HUB_CACHE")) {
        return dir;
    }
    if let Some(home) = set("HF_HOME") {
        return home.join("hub");
    }
    let cache = set("XDG_CACHE_HOME")
        .or_else(|| set("HOME").map(|home| home.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("huggingface").join("hub")
}

/// Files under `dir` (following no symlinked directories), as `/`-joined relative paths.
fn walk(dir: &Path, prefix: String, out: &mut Vec<(String, PathBuf)>, depth: usize) {
    if depth > 16 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue; // our temporary links, editor droppings
        }
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&entry.path(), relative, out, depth + 1);
        } else {
            out.push((relative, entry.path()));
        }
    }
}

fn check_etag(etag: &str) -> Result<(), HubError> {
    let ok = matches!(etag.len(), 40 | 64) && etag.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(HubError::invalid(
            "etag",
            etag,
            "expected a 40- or 64-digit hex digest",
        ))
    }
}

fn check_commit(commit: &str) -> Result<(), HubError> {
    if is_commit_hash(commit) {
        Ok(())
    } else {
        Err(HubError::invalid(
            "commit",
            commit,
            "expected a 40-digit lowercase hex hash",
        ))
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old contents or the new, never a mix.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(HubError::io("create", parent))?;
    let temp = parent.join(format!(
        ".{}.tabagent-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut file = fs::File::create(&temp).map_err(HubError::io("create", &temp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(HubError::io("write", &temp))?;
    fs::rename(&temp, path).map_err(HubError::io("rename into", path))?;
    sync_dir(parent);
    Ok(())
}

/// Makes the rename of an entry in `dir` durable. Best effort: not every filesystem allows it.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn make_link(_target: &Path, blob: &Path, link: &Path) -> std::io::Result<()> {
    // Where symlinks need privileges, `huggingface_hub` copies; a hard link costs no space.
    fs::hard_link(blob, link).or_else(|_| fs::copy(blob, link).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_follows_huggingface_hub() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            default_root(env(&[("HF_HUB_CACHE", "/a"), ("HF_HOME", "/b")])),
            PathBuf::from("/a")
        );
        assert_eq!(
            default_root(env(&[("HF_HOME", "/b")])),
            PathBuf::from("/b/hub")
        );
        assert_eq!(
            default_root(env(&[("HOME", "/home/u")])),
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert_eq!(
            default_root(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")])),
            PathBuf::from("/x/huggingface/hub")
        );
    }

    #[test]
    fn links_resolve_refs_and_list_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let repo = RepoId::parse("org/model").unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let etag = "a".repeat(64);
        let blob = cache.blob_path(&repo, &etag).unwrap();
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, b"GGUF...").unwrap();
        let path = RepoPath::parse("sub/m.gguf").unwrap();
        let entry = cache.link(&repo, commit, &path, &etag).unwrap();
        assert_eq!(fs::read(&entry).unwrap(), b"GGUF...");
        assert_eq!(
            fs::read_link(&entry).unwrap(),
            PathBuf::from("../../../blobs").join(&etag)
        );
        let main = Revision::main();
        assert_eq!(cache.find(&repo, &main, &path).unwrap(), None, "no ref yet");
        cache.write_ref(&repo, &main, commit).unwrap();
        assert_eq!(
            cache.find(&repo, &main, &path).unwrap(),
            Some(entry.clone())
        );
        let listed = cache.list(".gguf").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].refs, vec!["main".to_string()]);
        assert_eq!(listed[0].size, 7);
        fs::remove_file(&blob).unwrap();
        assert_eq!(
            cache.find(&repo, &main, &path).unwrap(),
            None,
            "dangling entry"
        );
        assert!(cache.list(".gguf").unwrap().is_empty());
    }

    #[test]
    fn opening_never_follows_a_link_out_of_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let repo = RepoId::parse("org/model").unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let main = Revision::main();
        cache.write_ref(&repo, &main, commit).unwrap();
        let outside = dir.path().join("secret.txt");
        fs::write(&outside, b"secret").unwrap();
        let planted = cache
            .snapshot_path(&repo, commit, &RepoPath::parse("config.json").unwrap())
            .unwrap();
        fs::create_dir_all(planted.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, &planted).unwrap();
        let err = cache
            .open(&repo, &main, &RepoPath::parse("config.json").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");

        let etag = "b".repeat(64);
        let blob = cache.blob_path(&repo, &etag).unwrap();
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, b"weights").unwrap();
        let path = RepoPath::parse("m.gguf").unwrap();
        cache.link(&repo, commit, &path, &etag).unwrap();
        let (_, size) = cache.open(&repo, &main, &path).unwrap().unwrap();
        assert_eq!(size, 7);
        assert!(cache
            .open(&repo, &main, &RepoPath::parse("absent").unwrap())
            .unwrap()
            .is_none());
    }

    #[test]
    fn hostile_etags_and_commits_never_become_paths() {
        let cache = HubCache::new("/cache");
        let repo = RepoId::parse("org/model").unwrap();
        assert!(cache.blob_path(&repo, "../../../etc/passwd").is_err());
        assert!(cache.blob_path(&repo, &"g".repeat(64)).is_err());
        let path = RepoPath::parse("m.gguf").unwrap();
        assert!(cache.snapshot_path(&repo, "../x", &path).is_err());
    }
}
