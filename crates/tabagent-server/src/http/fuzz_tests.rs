//! The main endpoints' bodies under a mutation fuzzer (`tabagent_testhub::fuzz`) over the
//! corpora in `tests/corpus`: a chat request's JSON through parsing and conversion, and
//! multipart uploads through the upload reader. Whatever the bytes, the answer is a value or a
//! client error (4xx), never a panic or a server error.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;

use super::error::ApiError;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus")
        .join(name);
    tabagent_testhub::fuzz::corpus(&dir).unwrap()
}

fn a_client_error(err: ApiError) {
    let status = err.into_response().status();
    assert!(status.is_client_error(), "a server error: {status}");
}

#[test]
fn fuzzed_chat_bodies_are_parsed_or_refused_as_the_callers_mistake() {
    let seeds = corpus("chat-json");
    for seed in &seeds {
        let request = super::json::parse::<super::wire::ChatCompletionRequest>(seed).unwrap();
        super::convert::chat(request).unwrap();
    }
    tabagent_testhub::fuzz::run(&seeds, 100_000, |input| {
        match super::json::parse::<super::wire::ChatCompletionRequest>(input) {
            Ok(request) => {
                if let Err(err) = super::convert::chat(request) {
                    a_client_error(err);
                }
            }
            Err(err) => a_client_error(err),
        }
    });
}

#[test]
fn fuzzed_multipart_uploads_are_read_or_refused_as_the_callers_mistake() {
    let seeds = corpus("multipart");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for seed in &seeds {
        let body = axum::body::Bytes::copy_from_slice(seed);
        let upload = runtime.block_on(super::upload::read(&headers, None, body, "file"));
        if let Err(err) = upload {
            panic!("a seed is refused: {}", err.message());
        }
    }
    tabagent_testhub::fuzz::run(&seeds, 50_000, |input| {
        let body = axum::body::Bytes::copy_from_slice(input);
        if let Err(err) = runtime.block_on(super::upload::read(&headers, None, body, "file")) {
            a_client_error(err);
        }
    });
}
