//! `/v1/files/{owner}/{name}/{path}`: a model repository's file for another process (a
//! Transformers loader, a script) from the Hugging Face cache. `GET` only reads the cache: a
//! request a web page can make without the user knowing (an `<img>`) must not download
//! anything; `POST` fetches the file from the Hub first when it is missing (unless offline). A
//! path is validated as a repository path and its cache entry must resolve inside the
//! repository's own cache folder.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Extension;
use tabagent_hub::{RepoId, RepoPath};
use tokio::io::AsyncReadExt;

use super::error::{ApiError, ErrorBody};
use crate::callers::Caller;
use crate::state::AppState;

/// Streams a file of a model repository from the Hugging Face cache; never downloads.
#[utoipa::path(
    get,
    path = "/v1/files/{owner}/{name}/{path}",
    tag = "models",
    params(
        ("owner" = String, Path, description = "Repository owner"),
        ("name" = String, Path, description = "Repository name"),
        ("path" = String, Path, description = "File path inside the repository"),
        ("revision" = Option<String>, Query, description = "Branch, tag or commit (default main)")
    ),
    responses(
        (status = 200, description = "The file's bytes"),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Not in the cache (`POST` fetches it)", body = ErrorBody)
    )
)]
pub async fn get_file(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    serve(state, None, rest, query, Fetch::Never).await
}

/// Streams a file of a model repository, fetching it from the Hub into the cache first when it
/// is not there.
#[utoipa::path(
    post,
    path = "/v1/files/{owner}/{name}/{path}",
    tag = "models",
    params(
        ("owner" = String, Path, description = "Repository owner"),
        ("name" = String, Path, description = "Repository name"),
        ("path" = String, Path, description = "File path inside the repository"),
        ("revision" = Option<String>, Query, description = "Branch, tag or commit (default main)")
    ),
    responses(
        (status = 200, description = "The file's bytes"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)
    )
)]
pub async fn fetch_file(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = caller.map(|Extension(caller)| caller);
    serve(state, caller, rest, query, Fetch::WhenMissing).await
}

/// What to do about a file the cache does not hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Never,
    WhenMissing,
}

async fn serve(
    state: AppState,
    caller: Option<Caller>,
    rest: String,
    query: Option<String>,
    fetch: Fetch,
) -> Result<Response, ApiError> {
    let mut revision = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "revision" => revision = Some(value.into_owned()),
            other => {
                return Err(ApiError::bad_request(
                    Some(other),
                    format!("unknown query parameter `{other}`; only `revision` is accepted"),
                ))
            }
        }
    }
    let mut parts = rest.splitn(3, '/');
    let (Some(owner), Some(name), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ApiError::bad_request(
            Some("path"),
            "expected /v1/files/OWNER/NAME/PATH",
        ));
    };
    let repo = RepoId::parse(&format!("{owner}/{name}"))?;
    let path = RepoPath::parse(path)?;
    let (revision, client) =
        super::pull::hub_request(&state, revision.as_deref(), caller.as_ref())?;
    let cache = client.cache().clone();
    let open = {
        let (cache, repo, revision, path) =
            (cache.clone(), repo.clone(), revision.clone(), path.clone());
        move || cache.open(&repo, &revision, &path)
    };
    let opened = match tokio::task::spawn_blocking(open.clone())
        .await
        .map_err(ApiError::internal)??
    {
        Some(found) => found,
        None if fetch == Fetch::Never => {
            return Err(ApiError::not_found(
                "file_not_cached",
                "path",
                format!(
                    "`{repo}/{path}` at `{revision}` is not in the cache; `POST` this address \
                     (or `tabagent pull`) fetches it"
                ),
            ))
        }
        None => {
            let _slot = super::pull::take_pull_slot(&state, caller.as_ref())?;
            client.download(&repo, &revision, &path, &()).await?;
            tokio::task::spawn_blocking(open)
                .await
                .map_err(ApiError::internal)??
                .ok_or_else(|| ApiError::internal("a downloaded file is missing from the cache"))?
        }
    };
    let (file, size) = opened;
    let stream =
        futures_util::stream::unfold(tokio::fs::File::from_std(file), |mut file| async move {
            let mut buffer = vec![0; 1 << 20];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), file))
                }
                Err(err) => Some((Err(err), file)),
            }
        });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}
