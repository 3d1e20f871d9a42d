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

#[tokio::test]
async fn the_mcp_endpoint_is_behind_the_api_key_and_the_host_check() {
    let server = Server::start(&["--api-key", "correct-horse-battery-staple"]);
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}},
    });
    let post = |key: Option<&str>| {
        let request = server
            .client
            .post(server.endpoint("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    };
    let (status, body) = status_and_body(post(None)).await;
    assert_eq!(assert_error(status, &body, 401)["code"], "invalid_api_key");
    let answered = post(Some("correct-horse-battery-staple"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert!(answered.headers().contains_key("mcp-session-id"));
    let text = answered.text().await.unwrap();
    assert!(
        text.contains("\"serverInfo\"") && text.contains("tabagent"),
        "{text}"
    );
    // A page that rebinds a name of its own to this address is refused before the SDK sees it.
    let (status, body) = status_and_body(
        post(Some("correct-horse-battery-staple")).header("host", "evil.example:80"),
    )
    .await;
    assert_error(status, &body, 403);
}

#[tokio::test]
async fn what_a_page_on_another_site_makes_the_browser_send_is_refused() {
    let listed = "http://localhost:5173";
    let server = Server::start_with(
        &[],
        &[("TABAGENT_SERVER__CORS_ORIGINS", &format!("[\"{listed}\"]"))],
        |_| {},
    );
    // What browsers mark a request with, and whether it may pass. An `<img>` or a no-cors
    // fetch from another site carries `Sec-Fetch-Site` but no Origin; `same-site` is another
    // port of this host.
    let get = |site: &'static str, origin: Option<&'static str>| {
        let mut request = server
            .client
            .get(server.endpoint("/v1/models"))
            .header("sec-fetch-site", site);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request
    };
    for site in ["cross-site", "same-site"] {
        let (status, body) = status_and_body(get(site, None)).await;
        assert_eq!(
            assert_error(status, &body, 403)["code"],
            "cross_site_request",
            "{site}"
        );
    }
    assert_eq!(status_and_body(get("same-origin", None)).await.0, 200);
    assert_eq!(status_and_body(get("none", None)).await.0, 200);
    assert_eq!(status_and_body(get("same-site", Some(listed))).await.0, 200);

    // A form a page submits to us (a simple request: no preflight) gets nothing either.
    let form = server
        .client
        .post(server.endpoint("/v1/models/pull"))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("model=owner/repo");
    let (status, body) = status_and_body(form).await;
    assert_eq!(
        assert_error(status, &body, 403)["code"],
        "cross_site_request"
    );

    // A link to one of our pages from elsewhere opens it (it does nothing by itself and may
    // not be framed); a link to the API does not.
    let navigate = |path: &str| {
        server
            .client
            .get(server.endpoint(path))
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", "document")
    };
    for page in ["/docs/", "/webrtc"] {
        let response = navigate(page).send().await.unwrap();
        assert_eq!(response.status(), 200, "{page}");
    }
    let (status, body) = status_and_body(navigate("/v1/models")).await;
    assert_error(status, &body, 403);
}

#[tokio::test]
async fn no_page_may_be_framed_and_each_has_a_content_policy() {
    let server = Server::start(&[]);
    for page in ["/docs/", "/webrtc"] {
        let response = server
            .client
            .get(server.endpoint(page))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{page}");
        let headers = response.headers();
        assert_eq!(headers["x-frame-options"], "DENY", "{page}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{page}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(policy.contains(directive), "{page}: {policy}");
        }
        let scripts = policy
            .split(';')
            .map(str::trim)
            .find(|directive| directive.starts_with("script-src"))
            .unwrap_or_else(|| panic!("{page}: no script-src in {policy}"));
        assert!(!scripts.contains("unsafe"), "{page}: {policy}");
    }
    let api = server
        .client
        .get(server.endpoint("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    assert_eq!(api.headers()["x-frame-options"], "DENY");
}

/// A page served from another port of this machine, as any site the user visits could be.
async fn serve_page(html: String) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_port_gets_nothing_through_the_users_browser() {
    use std::sync::atomic::Ordering;
    const REPO: &str = "someone/some-model";
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "{}").unwrap();
    let repo = tabagent_testhub::Repo::new(REPO)
        .file("config.json", file.path())
        .unwrap();
    let hub = tabagent_testhub::TestHub::start(vec![repo], None)
        .await
        .unwrap();
    let library = std::env::var("TABAGENT_TEST_ORT_LIB").expect("scripts/test sets it");
    let graph = std::path::Path::new(&library)
        .parent()
        .unwrap()
        .join("mul_1.onnx");
    let server = Server::start_with(
        &[],
        &[
            ("HF_ENDPOINT", &hub.endpoint()),
            (
                "TABAGENT_MODELS__DIRECTORIES__SCALE",
                graph.to_str().unwrap(),
            ),
        ],
        |_| {},
    );
    let target = &server.url;
    // Everything a page can make a browser send without CORS' consent: images (GETs with no
    // Origin), a no-cors fetch (a POST with a text/plain body), and a form posted into a
    // hidden frame. Each is waited for until the browser is done with it.
    let page = serve_page(format!(
        r#"<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="load" method="POST" target="sink" action="{target}/v1/models/scale/load"></form>
<script>
function image(src) {{
  return new Promise((done) => {{ const i = new Image(); i.onload = i.onerror = done; i.src = src; }});
}}
async function attack() {{
  await image("{target}/v1/files/{REPO}/config.json");
  await image("{target}/v1/onnx/scale");
  await fetch("{target}/v1/chat/completions", {{ method: "POST", mode: "no-cors",
    body: JSON.stringify({{ messages: [{{ role: "user", content: "leak" }}], max_tokens: 1 }}) }}).catch(() => {{}});
  await fetch("{target}/v1/models/pull", {{ method: "POST", mode: "no-cors",
    body: JSON.stringify({{ model: "{REPO}:config.json" }}) }}).catch(() => {{}});
  await new Promise((done) => {{
    document.querySelector("iframe").onload = done;
    document.getElementById("load").submit();
  }});
  return "tried";
}}
</script></body></html>"#
    ))
    .await;
    let tried = tokio::task::spawn_blocking(move || {
        let mut browser = crate::browser::Browser::launch(&[]);
        let tab = browser.open(&page);
        browser.evaluate(&tab, "attack()")
    })
    .await
    .unwrap();
    assert_eq!(tried, "tried");

    // Nothing was downloaded, loaded or generated.
    assert_eq!(
        hub.stats().heads.load(Ordering::Relaxed),
        0,
        "the Hub was asked"
    );
    assert_eq!(hub.stats().cdn_requests.load(Ordering::Relaxed), 0);
    let (_, models) = server.get_json("/v1/models").await;
    let scale = crate::server::find(&models["data"], "id", "scale");
    assert_ne!(scale["state"], "loaded", "{models}");
    let metrics = server
        .client
        .get(server.endpoint("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("/v1/chat/completions") && !metrics.contains("/v1/models/pull"),
        "{metrics}"
    );
}
