use serde_json::Value;

use crate::server::{assert_error, chat, Server};

async fn status_and_body(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_foreign_host_header_is_refused() {
    let server = Server::start(&[]);
    // DNS rebinding: a page on attacker.example resolved to 127.0.0.1.
    let request = server
        .client
        .get(server.endpoint("/v1/models"))
        .header("host", "attacker.example");
    let (status, body) = status_and_body(request).await;
    assert_eq!(assert_error(status, &body, 403)["code"], "host_not_allowed");
    let request = server
        .client
        .get(server.endpoint("/v1/models"))
        .header("host", "localhost");
    assert_eq!(status_and_body(request).await.0, 200);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_a_configured_one_allowed() {
    let server = Server::start_with(
        &[],
        &[(
            "TABAGENT_SERVER__CORS_ORIGINS",
            "[\"chrome-extension://abcdefghijklmnop\"]",
        )],
        |_| {},
    );
    let request = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .json(&chat("hi", 1));
    let (status, body) = status_and_body(request).await;
    assert_eq!(
        assert_error(status, &body, 403)["code"],
        "origin_not_allowed"
    );

    let allowed = server
        .client
        .get(server.endpoint("/v1/models"))
        .header("origin", "chrome-extension://abcdefghijklmnop")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "chrome-extension://abcdefghijklmnop"
    );
}

#[tokio::test]
async fn an_api_key_when_set_is_required_except_for_health() {
    let server = Server::start(&["--api-key", "correct-horse-battery-staple"]);
    let (status, body) = status_and_body(server.client.get(server.endpoint("/v1/models"))).await;
    assert_eq!(assert_error(status, &body, 401)["code"], "invalid_api_key");
    let (status, body) = status_and_body(
        server
            .client
            .get(server.endpoint("/v1/models"))
            .bearer_auth("wrong-key-wrong-key"),
    )
    .await;
    assert_error(status, &body, 401);
    let (status, _) = status_and_body(
        server
            .client
            .get(server.endpoint("/v1/models"))
            .bearer_auth("correct-horse-battery-staple"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = status_and_body(server.client.get(server.endpoint("/v1/health"))).await;
    assert_eq!(status, 200);
}
