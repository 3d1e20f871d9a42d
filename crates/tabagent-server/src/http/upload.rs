//! A file a client sends, however it sends it: `multipart/form-data` (OpenAI's audio API, HTML
//! forms), JSON with the file as base64 (or a `data:` URL), or the file itself as the body
//! (`curl --data-binary @face.jpg -H 'content-type: image/jpeg'`). Other settings come as form
//! fields, JSON members or query parameters.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use base64::Engine as _;

use super::error::ApiError;

/// The most settings one request may carry, and the longest a setting may be.
const MAX_FIELDS: usize = 32;
const MAX_FIELD_BYTES: usize = 64 * 1024;

/// A file and the settings sent with it.
#[derive(Debug, Default)]
pub struct Upload {
    /// The file's bytes.
    pub file: Bytes,
    /// The file name a multipart part gave (a label, never a path to use).
    pub file_name: Option<String>,
    /// Settings by name (form fields, JSON members, query parameters).
    pub fields: BTreeMap<String, String>,
}

impl Upload {
    /// A setting, parsed, or `None` when absent; a 400 naming it when it does not parse.
    pub fn get<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                ApiError::bad_request(Some(name), format!("`{name}` has a bad value `{text}`"))
            }),
        }
    }
}

/// Reads the upload of `body`; the file is the form field or JSON member named `file_field`.
pub async fn read(
    headers: &HeaderMap,
    query: Option<&str>,
    body: Bytes,
    file_field: &str,
) -> Result<Upload, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The media type is case-insensitive, the boundary is not (browsers mix cases in theirs).
    let media_type = content_type.to_ascii_lowercase();
    let mut upload = if media_type.starts_with("multipart/form-data") {
        multipart(content_type, body, file_field).await?
    } else if media_type.starts_with("application/json") {
        json(&body, file_field)?
    } else {
        Upload {
            file: body,
            file_name: None,
            fields: BTreeMap::new(),
        }
    };
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if upload.fields.len() >= MAX_FIELDS {
                return Err(too_many());
            }
            upload
                .fields
                .entry(name.into_owned())
                .or_insert(value.into_owned());
        }
    }
    if upload.file.is_empty() {
        return Err(ApiError::bad_request(
            Some(file_field),
            format!("no `{file_field}` was sent (a form field, a base64 JSON member, or the body itself)"),
        ));
    }
    Ok(upload)
}

fn too_many() -> ApiError {
    ApiError::bad_request(None, format!("at most {MAX_FIELDS} settings a request"))
}

async fn multipart(content_type: &str, body: Bytes, file_field: &str) -> Result<Upload, ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::bad_request(None, format!("bad multipart body: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut upload = Upload::default();
    let bad = |e: multer::Error| ApiError::bad_request(None, format!("bad multipart body: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(bad)?;
        if name == file_field {
            upload.file = data;
            upload.file_name = file_name;
            continue;
        }
        if upload.fields.len() >= MAX_FIELDS {
            return Err(too_many());
        }
        if data.len() > MAX_FIELD_BYTES {
            return Err(ApiError::bad_request(
                Some(&name),
                format!("`{name}` is longer than {MAX_FIELD_BYTES} bytes"),
            ));
        }
        let text = String::from_utf8(data.to_vec())
            .map_err(|_| ApiError::bad_request(Some(&name), format!("`{name}` is not text")))?;
        upload.fields.insert(name, text);
    }
    Ok(upload)
}

fn json(body: &[u8], file_field: &str) -> Result<Upload, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(None, format!("the body is not JSON: {e}")))?;
    let serde_json::Value::Object(members) = value else {
        return Err(ApiError::bad_request(
            None,
            "the body must be a JSON object",
        ));
    };
    if members.len() > MAX_FIELDS + 1 {
        return Err(too_many());
    }
    let mut upload = Upload::default();
    for (name, value) in members {
        if name == file_field {
            let serde_json::Value::String(text) = value else {
                return Err(ApiError::bad_request(
                    Some(file_field),
                    format!("`{file_field}` must be a base64 string or a data: URL"),
                ));
            };
            upload.file = Bytes::from(decode_base64(&text, file_field)?);
            continue;
        }
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => continue,
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string(),
            _ => {
                return Err(ApiError::bad_request(
                    Some(&name),
                    format!("`{name}` must be a string, number or boolean"),
                ))
            }
        };
        upload.fields.insert(name, text);
    }
    Ok(upload)
}

/// Base64 (standard or URL-safe, padded or not), or a `data:…;base64,` URL.
fn decode_base64(text: &str, param: &str) -> Result<Vec<u8>, ApiError> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(";base64,") {
            Some((_, payload)) => payload,
            None => {
                return Err(ApiError::bad_request(
                    Some(param),
                    "a data: URL must be base64 (`data:image/png;base64,...`)",
                ))
            }
        },
        None => text,
    };
    let payload: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|engine| engine.decode(&payload).ok())
        .ok_or_else(|| ApiError::bad_request(Some(param), format!("`{param}` is not valid base64")))
}
