//! A JSON body extractor whose every rejection is an [`ApiError`] naming the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::state::AppState;

/// A JSON request body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config().server.max_body_bytes;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(limit)
                } else {
                    ApiError::bad_request(
                        None,
                        format!("cannot read the request body: {rejection}"),
                    )
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses `bytes` as `T`, reporting the path of the first bad field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            None,
            "the request body is empty; send a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => deserializer.end().map(|()| value).map_err(|err| {
            ApiError::bad_request(
                None,
                format!("invalid JSON after the request object: {err}"),
            )
        }),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::bad_request(
                    None,
                    format!("the request body is not valid JSON: {inner}"),
                ))
            } else if path == "." {
                Err(ApiError::bad_request(
                    None,
                    format!("invalid request: {inner}"),
                ))
            } else {
                Err(ApiError::bad_request(
                    Some(&path),
                    format!("invalid `{path}`: {inner}"),
                ))
            }
        }
    }
}
