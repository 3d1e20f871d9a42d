//! The base Gemma 3 270M has no chat template: chat is refused clearly, completions work.

use serde_json::json;

use crate::server::{assert_error, Server};

fn gemma_path() -> std::path::PathBuf {
    let Some(path) = std::env::var_os("TABAGENT_TEST_GEMMA_GGUF") else {
        panic!("TABAGENT_TEST_GEMMA_GGUF is not set: run the tests with scripts/test, which fetches the model");
    };
    path.into()
}

#[tokio::test]
async fn chat_to_a_base_model_is_a_400_and_completions_work() {
    let server = Server::start_with(&[], &[], |dir| {
        crate::server::import(dir, &gemma_path(), "gemma-base")
    });
    let chat = json!({"model": "gemma-base", "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = server.post_json("/v1/chat/completions", &chat).await;
    let error = assert_error(status, &body, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/v1/completions"),
        "{body}"
    );

    let completion = json!({"model": "gemma-base", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0});
    let (status, body) = server.post_json("/v1/completions", &completion).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["choices"][0]["text"].as_str().unwrap().is_empty(),
        "{body}"
    );
    assert_eq!(body["usage"]["completion_tokens"], 4);

    let (_, models) = server.get_json("/v1/models/gemma-base").await;
    assert_eq!(models["id"], "gemma-base");
}
