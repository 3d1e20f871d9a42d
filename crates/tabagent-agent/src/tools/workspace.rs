//! `list_files` and `read_file`: read-only access to the folders the configuration names as
//! workspaces. A path is resolved (symbolic links followed) and must stay inside its folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tabagent_core::ToolSpec;

use super::{arguments, Tool, ToolError, ToolFuture};

/// The workspace folders, by name.
#[derive(Debug, Clone)]
pub struct Workspace {
    roots: Vec<(String, PathBuf)>,
    /// The most bytes `read_file` returns of one file.
    pub max_read: u64,
}

impl Workspace {
    /// Folders as `(name, path)`; each path is resolved now, and must be a directory.
    pub fn new(roots: &[(String, PathBuf)], max_read: u64) -> std::io::Result<Self> {
        let mut resolved = Vec::new();
        for (name, path) in roots {
            let path = path.canonicalize()?;
            if !path.is_dir() {
                return Err(std::io::Error::other(format!(
                    "{} is not a folder",
                    path.display()
                )));
            }
            resolved.push((name.clone(), path));
        }
        Ok(Self {
            roots: resolved,
            max_read,
        })
    }

    /// The file or folder `relative` names inside workspace `name`, resolved, or why not.
    fn resolve(&self, name: &str, relative: &str) -> Result<PathBuf, ToolError> {
        let Some((_, root)) = self.roots.iter().find(|(n, _)| n == name) else {
            let names: Vec<&str> = self.roots.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ToolError::InvalidArguments(format!(
                "no workspace named {name:?} (there are: {})",
                names.join(", ")
            )));
        };
        let relative = Path::new(relative.trim_start_matches('/'));
        let path = root
            .join(relative)
            .canonicalize()
            .map_err(|e| ToolError::Failed(format!("{}: {e}", relative.display())))?;
        if !path.starts_with(root) {
            return Err(ToolError::Failed(format!(
                "{} is outside the workspace",
                relative.display()
            )));
        }
        Ok(path)
    }

    fn names(&self) -> Vec<String> {
        self.roots.iter().map(|(n, _)| n.clone()).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    workspace: String,
    #[serde(default)]
    path: String,
}

fn target_schema(workspace: &Workspace, path: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "workspace": {"type": "string", "enum": workspace.names()},
            "path": {"type": "string", "description": path}
        },
        "required": ["workspace"],
        "additionalProperties": false
    })
}

/// Lists a folder of a workspace.
pub struct ListFiles(pub Arc<Workspace>);

impl Tool for ListFiles {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_files".into(),
            description: Some("Lists the files and folders in a folder of a workspace.".into()),
            parameters: target_schema(&self.0, "a folder inside the workspace; empty for its top"),
            strict: false,
        }
    }

    fn call(&self, arguments_json: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let Target { workspace, path } = arguments(arguments_json)?;
            let folder = self.0.resolve(&workspace, &path)?;
            let mut entries = tokio::fs::read_dir(&folder)
                .await
                .map_err(|e| ToolError::Failed(format!("{path}: {e}")))?;
            let mut lines = Vec::new();
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| ToolError::Failed(e.to_string()))?
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let kind = entry
                    .file_type()
                    .await
                    .map_err(|e| ToolError::Failed(e.to_string()))?;
                lines.push(if kind.is_dir() {
                    format!("{name}/")
                } else {
                    name
                });
            }
            lines.sort();
            Ok(lines.join("\n"))
        })
    }
}

/// Reads a text file of a workspace.
pub struct ReadFile(pub Arc<Workspace>);

impl Tool for ReadFile {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_file".into(),
            description: Some(format!(
                "Reads a text file of a workspace (at most {} KiB).",
                self.0.max_read >> 10
            )),
            parameters: target_schema(&self.0, "the file's path inside the workspace"),
            strict: false,
        }
    }

    fn call(&self, arguments_json: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let Target { workspace, path } = arguments(arguments_json)?;
            let file = self.0.resolve(&workspace, &path)?;
            let mut bytes = Vec::new();
            let opened = tokio::fs::File::open(&file)
                .await
                .map_err(|e| ToolError::Failed(format!("{path}: {e}")))?;
            if opened.metadata().await.map(|m| m.is_dir()).unwrap_or(false) {
                return Err(ToolError::Failed(format!(
                    "{path} is a folder: use list_files"
                )));
            }
            tokio::io::AsyncReadExt::read_to_end(
                &mut tokio::io::AsyncReadExt::take(opened, self.0.max_read),
                &mut bytes,
            )
            .await
            .map_err(|e| ToolError::Failed(format!("{path}: {e}")))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn files_inside_are_read_and_nothing_outside_is() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "outside").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("notes")).unwrap();
        std::fs::write(root.path().join("notes/a.txt"), "alpha").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link"))
            .unwrap();
        let workspace =
            Arc::new(Workspace::new(&[("docs".into(), root.path().to_path_buf())], 3).unwrap());
        let read = ReadFile(Arc::clone(&workspace));
        let list = ListFiles(Arc::clone(&workspace));
        let ask = |path: &str| json!({"workspace": "docs", "path": path});

        assert_eq!(read.call(ask("notes/a.txt")).await, Ok("alp".into()));
        assert_eq!(read.call(ask("/notes/a.txt")).await, Ok("alp".into()));
        assert_eq!(list.call(ask("")).await, Ok("link\nnotes/".into()));
        for escape in ["../secret", "notes/../../secret", "link"] {
            let refused = read.call(ask(escape)).await.unwrap_err();
            assert!(
                matches!(refused, ToolError::Failed(_)),
                "{escape}: {refused:?}"
            );
        }
        let absolute = outside.path().join("secret").display().to_string();
        assert!(read.call(ask(&absolute)).await.is_err());
        assert!(matches!(
            read.call(json!({"workspace": "other", "path": "a"})).await,
            Err(ToolError::InvalidArguments(_))
        ));
    }
}
