//! `GET /v1/files/{owner}/{name}/{path}`: a model repository's file for another process (the
//! Python worker's file provider asks for `config.json`, tokenizers and weights this way instead
//! of downloading them itself). Served from the Hugging Face cache, fetched from the Hub first
//! when missing (unless offline). A path is validated as a repository path and its cache entry
//! must resolve inside the repository's own cache folder.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use tabagent_hub::{RepoId, RepoPath};
use tokio::io::AsyncReadExt;

use super::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Streams a file of a model repository from the Hugging Face cache.
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
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)
    )
)]
pub async fn get_file(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
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
    let (revision, client) = super::pull::hub_request(&state, revision.as_deref())?;
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
        None => {
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
