//! Secrets given to the server never come back out: not in `/v1/config`, `/metrics`, an error
//! message or the log (at debug level), and the operator's Hugging Face token serves only the
//! CLI and admin keys.

use serde_json::{json, Value};

use crate::server::{tabagent, Server, MODEL};

const API_KEY: &str = "apikey-0123456789-s3cret-one";
const ADMIN_KEY: &str = "adminkey-0123456789-s3cret-two";
const REMOTE_PASSWORD: &str = "remotepass-s3cret-three";
const REMOTE_KEY: &str = "remotekey-0123456789-s3cret-four";
const REDIS_PASSWORD: &str = "redispass-s3cret-five";
const HF_TOKEN: &str = "hf_tokenvalue-s3cret-six";
const POSTGRES_PASSWORD: &str = "pgpass-s3cret-seven";

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [
        API_KEY,
        ADMIN_KEY,
        REMOTE_PASSWORD,
        REMOTE_KEY,
        REDIS_PASSWORD,
        HF_TOKEN,
        POSTGRES_PASSWORD,
    ] {
        assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
    }
}

async fn text(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_the_config_never_come_back_out() {
    let dead = dead_port();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("tabagent.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\napi_keys = [\"{API_KEY}\"]\n\
             [scheduler.keys.operator]\nkey = \"{ADMIN_KEY}\"\nadmin = true\n\
             [memory]\nremote = \"http://memory:{REMOTE_PASSWORD}@127.0.0.1:{dead}\"\n\
             remote_api_key = \"{REMOTE_KEY}\"\n\
             [response_cache]\nenabled = true\n\
             redis_url = \"redis://:{REDIS_PASSWORD}@127.0.0.1:{dead}/0\"\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[
            ("RUST_LOG", "debug"),
            ("HF_TOKEN", HF_TOKEN),
            ("HF_ENDPOINT", &format!("http://127.0.0.1:{dead}")),
            ("TABAGENT_RESPONSE_CACHE__ENABLED", "true"),
        ],
        |_| {},
    );
    let get = |path: &str| {
        server
            .client
            .get(server.endpoint(path))
            .bearer_auth(API_KEY)
    };
    let post = |path: &str, body: Value| {
        server
            .client
            .post(server.endpoint(path))
            .bearer_auth(API_KEY)
            .json(&body)
    };

    let (status, config) = text(get("/v1/config")).await;
    assert_eq!(status, 200, "{config}");
    assert_no_secret("/v1/config", &config);
    // What is not secret still shows: where the memory and the cache are.
    assert!(config.contains(&format!("127.0.0.1:{dead}")), "{config}");

    let mut answers = Vec::new();
    // Work that touches each secret's service: the remote memory, Redis (the chat's cache),
    // the Hub (with the token), and a wrong key.
    answers.push(text(post("/v1/memory/search", json!({"query": "anything"}))).await);
    answers.push(
        text(post(
            "/v1/chat/completions",
            json!({"model": MODEL, "max_tokens": 2, "temperature": 0,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await,
    );
    answers.push(
        text(post(
            "/v1/models/pull",
            json!({"model": "owner/repo", "stream": false}),
        ))
        .await,
    );
    answers.push(
        text(
            server
                .client
                .get(server.endpoint("/v1/models"))
                .bearer_auth("not-the-key-not-the-key"),
        )
        .await,
    );
    answers.push(text(get("/metrics")).await);
    for (status, body) in &answers {
        assert_no_secret(&format!("an answer ({status})"), body);
    }
    // The memory search could not reach the remote memory: an error, not a secret.
    assert!(answers[0].0 >= 400, "{:?}", answers[0]);
    assert_no_secret("the log", &server.log());
}

#[test]
fn a_database_url_that_fails_is_not_repeated() {
    let data = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://tabagent:{POSTGRES_PASSWORD}@127.0.0.1:{}/tabagent",
        dead_port()
    );
    let out = tabagent(data.path())
        .args(["serve", "--port", "0"])
        .env("TABAGENT_MEMORY__POSTGRES", &url)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("memory.postgres"), "{said}");
    assert_no_secret("a failed start", &said);
}
