//! `/v1/tokenize` and `/v1/detokenize` with the real SmolLM2 vocabulary.

use serde_json::json;

use crate::server::{assert_error, chat, Server, MODEL};

#[tokio::test]
async fn a_conversation_counts_as_many_tokens_as_the_chat_request_uses() {
    let server = Server::start(&[]);
    let request = chat("What is the capital of France? Answer in one word.", 2);
    let (status, reply) = server.post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{reply}");

    let (status, body) = server
        .post_json(
            "/v1/tokenize",
            &json!({"model": MODEL, "messages": request["messages"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["count"], reply["usage"]["prompt_tokens"], "{body}");
    assert_eq!(
        body["tokens"].as_array().unwrap().len() as u64,
        body["count"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn text_round_trips_through_tokens_and_pieces() {
    let server = Server::start(&[]);
    let text = "Tokenizers split words: unbelievable, naïve café, 42 × 7 = 294.";
    let (status, body) = server
        .post_json(
            "/v1/tokenize",
            &json!({"model": MODEL, "text": text, "add_special_tokens": false, "with_pieces": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let tokens = body["tokens"].as_array().unwrap().clone();
    assert!(tokens.len() > 10 && tokens.len() < text.len(), "{body}");
    let pieces: String = body["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    // Pieces of multi-byte characters may be split bytes; all-ASCII pieces join exactly.
    assert!(
        pieces.starts_with("Tokenizers split words: unbelievable,"),
        "{pieces}"
    );

    let (status, body) = server
        .post_json("/v1/detokenize", &json!({"model": MODEL, "tokens": tokens}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], text);

    let (status, body) = server
        .post_json("/v1/detokenize", &json!({"model": MODEL, "tokens": []}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], "");
}

#[tokio::test]
async fn bad_token_requests_get_clear_errors() {
    let server = Server::start(&[]);
    let cases = [
        ("/v1/tokenize", json!({"model": MODEL}), 400, None),
        (
            "/v1/tokenize",
            json!({"model": MODEL, "text": "a", "messages": [{"role": "user", "content": "a"}]}),
            400,
            None,
        ),
        (
            "/v1/tokenize",
            json!({"model": MODEL, "messages": [{"role": "wizard", "content": "a"}]}),
            400,
            Some("messages[0].role"),
        ),
        (
            "/v1/tokenize",
            json!({"model": "no-such-model", "text": "a"}),
            404,
            None,
        ),
        (
            "/v1/detokenize",
            json!({"model": MODEL, "tokens": [1, 2, 1_000_000_000]}),
            400,
            Some("tokens"),
        ),
        (
            "/v1/detokenize",
            json!({"model": MODEL, "tokens": [-1]}),
            400,
            Some("tokens"),
        ),
        (
            "/v1/detokenize",
            json!({"model": MODEL, "tokens": [9_000_000_000_i64]}),
            400,
            Some("tokens"),
        ),
        (
            "/v1/detokenize",
            json!({"model": MODEL, "tokens": "1 2 3"}),
            400,
            Some("tokens"),
        ),
    ];
    for (path, request, expected, param) in cases {
        let (status, body) = server.post_json(path, &request).await;
        let error = assert_error(status, &body, expected);
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{request}: {body}");
        }
    }
    // Still serving after all that.
    let (status, body) = server
        .post_json("/v1/tokenize", &json!({"model": MODEL, "text": "ok"}))
        .await;
    assert_eq!(status, 200, "{body}");
}
