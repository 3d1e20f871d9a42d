//! tabagent's `ModelFiles` service: the worker asks for a model's files by model id and relative
//! path, and gets them in chunks. The path rules are the model hub's (`RepoPath`: relative, no
//! `..`, no empty or `.` parts); on top of them the file's real location, symbolic links
//! resolved, must stay inside the model's boundary (a Hugging Face snapshot's files link into
//! the repository's `blobs/`, so a snapshot's boundary is its repository's directory).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tabagent_hub::RepoPath;
use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pb;

/// The bytes each chunk carries.
const CHUNK: usize = 1 << 20;
/// The most files a model may list.
const MAX_FILES: usize = 10_000;

/// Where a model's files are.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory its relative paths start from.
    pub files: PathBuf,
    /// No file served may resolve (links followed) to a place outside this directory.
    pub boundary: PathBuf,
}

/// Finds models by id (tabagent's catalog).
pub trait ModelRoots: Send + Sync + 'static {
    /// The directory of model `model_id`, if there is such a model.
    fn locate(&self, model_id: &str) -> Option<ModelDir>;
}

/// The `ModelFiles` service over some [`ModelRoots`].
pub struct ModelFiles {
    roots: Arc<dyn ModelRoots>,
}

impl ModelFiles {
    /// A service finding models through `roots`.
    pub fn new(roots: Arc<dyn ModelRoots>) -> Self {
        Self { roots }
    }

    fn model(&self, model_id: &str) -> Result<ModelDir, Status> {
        self.roots
            .locate(model_id)
            .ok_or_else(|| Status::not_found(format!("no model `{model_id}` on this machine")))
    }

    /// The real location of `path` in `model_id`, checked.
    fn resolve(&self, model_id: &str, path: &str) -> Result<PathBuf, Status> {
        let model = self.model(model_id)?;
        let relative =
            RepoPath::parse(path).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let joined = model.files.join(relative.as_str());
        let real = joined
            .canonicalize()
            .map_err(|_| Status::not_found(format!("model `{model_id}` has no file `{path}`")))?;
        let boundary = model
            .boundary
            .canonicalize()
            .map_err(|_| Status::not_found(format!("model `{model_id}` is gone")))?;
        if !real.starts_with(&boundary) {
            return Err(Status::invalid_argument(format!(
                "`{path}` leads outside model `{model_id}`"
            )));
        }
        if !real.is_file() {
            return Err(Status::not_found(format!(
                "`{path}` in model `{model_id}` is not a file"
            )));
        }
        Ok(real)
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::FileChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::model_files_server::ModelFiles for ModelFiles {
    type GetStream = Chunks;

    async fn get(&self, request: Request<pb::FileRequest>) -> Result<Response<Chunks>, Status> {
        let request = request.into_inner();
        let real = self.resolve(&request.model_id, &request.path)?;
        let mut file = tokio::fs::File::open(&real)
            .await
            .map_err(|e| Status::not_found(format!("`{}`: {e}", request.path)))?;
        let total = file
            .metadata()
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .len();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let mut buffer = vec![0u8; CHUNK];
                let read = match file.read(&mut buffer).await {
                    Ok(read) => read,
                    Err(e) => {
                        let _ = sender.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                if read == 0 && !first {
                    return;
                }
                buffer.truncate(read);
                let chunk = pb::FileChunk {
                    data: buffer.into(),
                    total_size: if first { total } else { 0 },
                };
                first = false;
                // The worker went away: stop reading.
                if sender.send(Ok(chunk)).await.is_err() || read == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn list(
        &self,
        request: Request<pb::FileListRequest>,
    ) -> Result<Response<pb::FileListReply>, Status> {
        let model_id = request.into_inner().model_id;
        let model = self.model(&model_id)?;
        let paths = tokio::task::spawn_blocking(move || list_files(&model))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::FileListReply { paths }))
    }
}

/// Every file of `model` (links to files inside its boundary followed, links to directories
/// not), as relative paths with `/`, sorted.
fn list_files(model: &ModelDir) -> Result<Vec<String>, Status> {
    let root: &Path = &model.files;
    let boundary = model
        .boundary
        .canonicalize()
        .map_err(|e| Status::not_found(format!("the model is gone: {e}")))?;
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = std::fs::read_dir(root.join(&relative))
            .map_err(|e| Status::not_found(format!("{}: {e}", relative.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let path = relative.join(name);
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if entry
                .path()
                .canonicalize()
                .is_ok_and(|real| real.starts_with(&boundary) && real.is_file())
            {
                let text: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
                found.push(text.join("/"));
                if found.len() > MAX_FILES {
                    return Err(Status::failed_precondition(format!(
                        "the model has more than {MAX_FILES} files"
                    )));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::model_files_server::ModelFiles as _;
    use tokio_stream::StreamExt;

    struct OneDir(PathBuf);

    impl ModelRoots for OneDir {
        fn locate(&self, model_id: &str) -> Option<ModelDir> {
            (model_id == "m").then(|| ModelDir {
                files: self.0.join("model"),
                boundary: self.0.join("model"),
            })
        }
    }

    async fn read(service: &ModelFiles, path: &str) -> Result<Vec<u8>, Status> {
        let request = Request::new(pb::FileRequest {
            model_id: "m".into(),
            path: path.into(),
        });
        let mut stream = service.get(request).await?.into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend(chunk?.data);
        }
        Ok(data)
    }

    #[tokio::test]
    async fn files_are_served_in_chunks_and_never_from_outside_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        let big: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(model.join("weights.bin"), &big).unwrap();
        std::fs::write(model.join("sub/config.json"), b"{}").unwrap();
        std::fs::write(model.join("empty"), b"").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), model.join("escape")).unwrap();
        let service = ModelFiles::new(Arc::new(OneDir(dir.path().to_path_buf())));

        assert_eq!(read(&service, "weights.bin").await.unwrap(), big);
        assert_eq!(read(&service, "sub/config.json").await.unwrap(), b"{}");
        assert_eq!(read(&service, "empty").await.unwrap(), b"");
        for (path, code) in [
            ("../secret", tonic::Code::InvalidArgument),
            ("/etc/passwd", tonic::Code::InvalidArgument),
            ("escape", tonic::Code::InvalidArgument),
            ("sub", tonic::Code::NotFound),
            ("missing", tonic::Code::NotFound),
        ] {
            let err = read(&service, path).await.unwrap_err();
            assert_eq!(err.code(), code, "{path}: {err}");
        }
        let unknown = service
            .get(Request::new(pb::FileRequest {
                model_id: "other".into(),
                path: "weights.bin".into(),
            }))
            .await
            .err()
            .unwrap();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        let listed = service
            .list(Request::new(pb::FileListRequest {
                model_id: "m".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .paths;
        // The link out of the model is neither listed nor read.
        assert_eq!(listed, ["empty", "sub/config.json", "weights.bin"]);
    }
}
