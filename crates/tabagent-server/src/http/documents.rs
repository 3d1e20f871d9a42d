//! `/v1/documents`: documents in the memory. `POST` takes a file (multipart `file`, base64 JSON,
//! or the body itself, with `filename`) or `{"path": ...}` naming a file inside
//! `librarian.folders`; it answers once the document is searchable. `GET` lists them or shows
//! one (with `?passages=true`, its passages and where each is); `DELETE` removes one and the
//! passages only it cites.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::Value;
use tabagent_librarian::{
    Citation, DocumentInfo, DocumentSource, ExtractError, IngestError, IngestOutcome,
};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::librarian::LibraryEvent;
use crate::state::AppState;

/// A document as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentObject {
    /// `document`.
    pub object: &'static str,
    /// What the request did: `added`, `replaced`, `unchanged`, `moved` (absent on reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub outcome: Option<IngestOutcome>,
    /// The document: `id`, `name`, `path`, `format`, `title`, `sha256`, `bytes`, `pages`,
    /// `chunks`, `chars`, `status` (`ready` or `failed`), `error`, `warnings`, `created_ms`,
    /// `updated_ms`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub document: DocumentInfo,
    /// Its passages, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passages: Option<Vec<PassageObject>>,
}

/// A passage of a document and where it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassageObject {
    /// The memory record holding it (in `knowledge`).
    pub record: i64,
    /// The page, from 1 (formats with pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Its first character in the page's text.
    pub start: usize,
    /// One past its last.
    pub end: usize,
    /// Its text.
    pub text: String,
}

/// The documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    /// `list`.
    pub object: &'static str,
    /// Newest first.
    pub data: Vec<DocumentObject>,
    /// Whether more follow (pass the last id as `after`).
    pub has_more: bool,
    /// The id of the last document shown.
    pub last_id: Option<String>,
}

/// The most documents one page lists.
const MAX_PAGE: usize = 1000;

fn object(document: DocumentInfo, outcome: Option<IngestOutcome>) -> DocumentObject {
    DocumentObject {
        object: "document",
        outcome,
        document,
        passages: None,
    }
}

/// Maps a librarian error to the API's: the document's fault is a 4xx naming it.
fn api_error(error: IngestError) -> ApiError {
    match error {
        IngestError::Extract(e) => {
            let code = match &e {
                ExtractError::Unsupported => "unsupported_document",
                ExtractError::Encrypted => "encrypted_document",
                ExtractError::NoText { .. } => "no_text_layer",
                ExtractError::Empty => "empty_document",
                ExtractError::Malformed(_) => "malformed_document",
                ExtractError::NoPdfium(_) => {
                    return ApiError::unavailable("pdf_unavailable", e.to_string())
                }
            };
            ApiError::unprocessable(code, e.to_string())
        }
        IngestError::FileTooLarge { .. } | IngestError::TooLarge { .. } => {
            ApiError::unprocessable("document_too_large", error.to_string())
        }
        IngestError::NotFound(id) => {
            ApiError::not_found("document_not_found", "id", format!("no document `{id}`"))
        }
        IngestError::Io { .. } => ApiError::bad_request(Some("path"), error.to_string()),
        IngestError::Embed(e) => ApiError::unavailable("embedding_failed", e.to_string()),
        IngestError::Memory(e) => e.into(),
    }
}

/// Adds a document, or finds it unchanged.
#[utoipa::path(post, path = "/v1/documents", tag = "documents",
    request_body(content = String, description = "multipart/form-data with `file` (and `filename` when the part has none), JSON `{\"path\": \"/in/a/librarian/folder\"}` or `{\"file\": base64, \"filename\": ...}`, or the file as the body with `?filename=`"),
    responses(
        (status = 201, description = "Added (or replaced: the same path with new content)", body = DocumentObject),
        (status = 200, description = "Already there with the same content", body = DocumentObject),
        (status = 400, description = "No file, or a path outside librarian.folders", body = ErrorBody),
        (status = 422, description = "Not a document the librarian reads: unsupported, encrypted, no text layer, malformed, too large", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<DocumentObject>), ApiError> {
    let shelf = state.librarian().await?;
    let result = match path_in_json(&headers, &body)? {
        Some(path) => {
            let path = inside_folders(&state, &path)?;
            shelf.ingest_file(&path).await
        }
        None => {
            let upload = super::upload::read(&headers, query.as_deref(), body, "file").await?;
            let name = upload
                .fields
                .get("filename")
                .cloned()
                .or_else(|| upload.file_name.clone())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        Some("filename"),
                        "name the file (`filename`): its extension says what it is",
                    )
                })?;
            let name = plain_name(&name)?;
            if upload.file.len() as u64 > shelf.max_file_bytes() {
                return Err(api_error(IngestError::FileTooLarge {
                    bytes: upload.file.len() as u64,
                    max: shelf.max_file_bytes(),
                }));
            }
            shelf
                .ingest(DocumentSource::Upload { name }, upload.file.to_vec(), None)
                .await
        }
    };
    let (document, outcome) = result.map_err(api_error)?;
    state.library_event(LibraryEvent::Ingested {
        path: document.path.clone(),
        outcome,
        document: document.clone(),
    });
    let status = match outcome {
        IngestOutcome::Unchanged | IngestOutcome::Moved => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    Ok((status, Json(object(document, Some(outcome)))))
}

/// The `path` of a JSON body that names one (a JSON body with `file` is an upload).
fn path_in_json(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(None, format!("the body is not JSON: {e}")))?;
    match value.get("path") {
        None => Ok(None),
        Some(Value::String(path)) if value.get("file").is_none() => Ok(Some(path.clone())),
        Some(Value::String(_)) => Err(ApiError::bad_request(
            Some("path"),
            "send either `path` or `file`, not both",
        )),
        Some(_) => Err(ApiError::bad_request(
            Some("path"),
            "`path` must be a string",
        )),
    }
}

/// `path` resolved (links followed), if it lies inside one of `librarian.folders`.
fn inside_folders(state: &AppState, path: &str) -> Result<PathBuf, ApiError> {
    crate::librarian::file_in_folders(&state.config().librarian, path)
        .map_err(|why| ApiError::bad_request(Some("path"), why))
}

/// A file name without folders (a client's name is a label, never a path).
fn plain_name(name: &str) -> Result<String, ApiError> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if base.is_empty()
        || base == "."
        || base == ".."
        || base.len() > 255
        || base.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            Some("filename"),
            "`filename` must be a file name (at most 255 bytes)",
        ));
    }
    Ok(base.to_string())
}

/// The documents, newest first, a page at a time: `limit` (default 100, at most 1000) and
/// `after` (the last id of the page before), as OpenAI's lists page.
#[utoipa::path(get, path = "/v1/documents", tag = "documents",
    params(("limit" = Option<usize>, Query, description = "Documents a page (1 to 1000; default 100)"),
           ("after" = Option<String>, Query, description = "The last id of the page before")),
    responses((status = 200, body = DocumentList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<DocumentList>, ApiError> {
    let mut limit = 100;
    let mut after = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            Some("limit"),
                            format!("`limit` must be 1 to {MAX_PAGE}"),
                        )
                    })?;
            }
            "after" => after = Some(value.into_owned()),
            _ => {}
        }
    }
    let shelf = state.librarian().await?;
    let documents = shelf.list().await.map_err(api_error)?;
    let start = match &after {
        Some(id) => {
            documents.iter().position(|d| &d.id == id).ok_or_else(|| {
                ApiError::bad_request(Some("after"), format!("no document `{id}` to list after"))
            })? + 1
        }
        None => 0,
    };
    let has_more = documents.len() > start + limit;
    let data: Vec<DocumentObject> = documents
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|d| object(d, None))
        .collect();
    Ok(Json(DocumentList {
        object: "list",
        last_id: data.last().map(|d| d.document.id.clone()),
        has_more,
        data,
    }))
}

/// One document; `?passages=true` adds its passages.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "The document's id")),
    responses((status = 200, body = DocumentObject), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<DocumentObject>, ApiError> {
    let shelf = state.librarian().await?;
    let document = shelf
        .get(&id)
        .await
        .map_err(api_error)?
        .ok_or_else(|| api_error(IngestError::NotFound(id.clone())))?;
    let wanted = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "passages" && v == "true");
    let mut shown = object(document, None);
    if wanted {
        let passages = shelf.passages(&id).await.map_err(api_error)?;
        shown.passages = Some(
            passages
                .into_iter()
                .map(
                    |(
                        Citation {
                            page, start, end, ..
                        },
                        record,
                    )| PassageObject {
                        record: record.id,
                        page,
                        start,
                        end,
                        text: record.text,
                    },
                )
                .collect(),
        );
    }
    Ok(Json(shown))
}

/// Removes a document and the passages only it cites.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "The document's id")),
    responses((status = 200, body = DocumentObject), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DocumentObject>, ApiError> {
    let shelf = state.librarian().await?;
    let document = shelf.remove(&id).await.map_err(api_error)?;
    state.library_event(LibraryEvent::Removed {
        path: document.path.clone(),
        document: document.clone(),
    });
    Ok(Json(object(document, None)))
}

/// What the librarian does, as server-sent events: first a `status` (the folders followed, and
/// whether their scan at start has ended), then `ingested`, `removed`, `failed` and `scanned` as
/// they happen (a listener that falls behind gets `lagged`).
#[utoipa::path(get, path = "/v1/documents/events", tag = "documents",
    responses((status = 200, description = "text/event-stream of JSON objects with a `type`")))]
pub async fn events(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.memory().is_none() {
        return Err(crate::error::ServiceError::memory_off().into());
    }
    // Subscribed before the status is read: nothing between the two is missed.
    let receiver = state.library_events();
    let settings = &state.config().librarian;
    let following = match settings.watch {
        true => crate::librarian::folders(settings)
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        false => Vec::new(),
    };
    let status = LibraryEvent::Status {
        following,
        scanned: state.library_scanned(),
    };
    let later = futures_util::stream::unfold(receiver, |mut receiver| async move {
        use tokio::sync::broadcast::error::RecvError;
        match receiver.recv().await {
            Ok(event) => Some((event, receiver)),
            Err(RecvError::Lagged(missed)) => Some((LibraryEvent::Lagged { missed }, receiver)),
            Err(RecvError::Closed) => None,
        }
    });
    let stream = futures_util::stream::once(async move { status })
        .chain(later)
        .map(|event| {
            Ok::<_, Infallible>(
                Event::default().data(serde_json::to_string(&event).unwrap_or_default()),
            )
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
