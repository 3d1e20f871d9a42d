//! WebRTC: signaling with its errors and limits (offers made by str0m acting as the browser),
//! and a real headless Chromium that opens tabagent's `/webrtc` page, streams a chat over a data
//! channel and sends its fake camera, whose frames the server decodes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{Server, MODEL};

const PATIENCE: Duration = Duration::from_secs(300);

/// An SDP offer with one data channel, as a browser's would be.
fn offer() -> String {
    static CRYPTO: std::sync::Once = std::sync::Once::new();
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut change = rtc.sdp_api();
    change.add_channel("api".to_string());
    let (offer, _pending) = change.apply().expect("an offer");
    offer.to_sdp_string()
}

async fn post(server: &Server, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = server.client.post(server.endpoint(path)).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn add_candidate(server: &Server, session: &str, candidate: &str) -> (u16, Value) {
    let path = format!("/v1/webrtc/sessions/{session}/candidates");
    post(server, &path, None, &json!({ "candidate": candidate })).await
}

async fn get(server: &Server, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = server.client.get(server.endpoint(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn signaling_answers_offers_and_refuses_bad_ones() {
    let server = Server::start_with(
        &[],
        &[
            ("TABAGENT_WEBRTC__MAX_SESSIONS", "2"),
            ("TABAGENT_WEBRTC__CONNECT_TIMEOUT_SECS", "2"),
        ],
        |_| {},
    );
    let (status, answer) = post(
        &server,
        "/v1/webrtc/offer",
        None,
        &json!({"type": "offer", "sdp": offer()}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "answer");
    let sdp = answer["sdp"].as_str().unwrap();
    // Our candidate is on loopback, like the HTTP listener, and the answer has a data channel.
    assert!(
        sdp.contains("a=candidate:") && sdp.contains("127.0.0.1"),
        "{sdp}"
    );
    assert!(sdp.contains("webrtc-datachannel"), "{sdp}");
    let id = answer["session_id"].as_str().unwrap().to_string();
    let (status, session) = get(&server, &format!("/v1/webrtc/sessions/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(session["state"], "connecting");

    for (body, param) in [
        (json!({"type": "offer", "sdp": "not sdp"}), "sdp"),
        (json!({"type": "answer", "sdp": offer()}), "type"),
        (json!({"type": "offer"}), "sdp"),
    ] {
        let (status, error) = post(&server, "/v1/webrtc/offer", None, &body).await;
        assert_eq!(status, 400, "{body} → {error}");
        if status == 400 && param != "sdp" {
            assert_eq!(error["error"]["param"], param, "{error}");
        }
    }
    let host = "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host";
    let (status, error) = add_candidate(&server, "nope", host).await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = add_candidate(&server, &id, "candidate:garbage").await;
    assert_eq!(status, 400, "{error}");
    let (status, added) = add_candidate(&server, &id, host).await;
    assert_eq!((status, added["added"].clone()), (200, json!(true)));
    // Chromium names its host candidates by mDNS unless the page may use the camera: not an
    // error, but nothing the session can use (it learns the address from the checks).
    let mdns = "candidate:3 1 udp 2113937151 0b5f2e1c-2a3d-4b6f-9c1e-7d8e9f0a1b2c.local 54321 typ host generation 0";
    let (status, added) = add_candidate(&server, &id, mdns).await;
    assert_eq!(
        (status, added["added"].clone()),
        (200, json!(false)),
        "{added}"
    );

    // max_sessions = 2.
    let (status, _) = post(&server, "/v1/webrtc/offer", None, &json!({"sdp": offer()})).await;
    assert_eq!(status, 200);
    let (status, error) = post(&server, "/v1/webrtc/offer", None, &json!({"sdp": offer()})).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "webrtc_sessions_full");

    // Closing one frees its slot.
    let response = server
        .client
        .delete(server.endpoint(&format!("/v1/webrtc/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let deadline = Instant::now() + PATIENCE;
    while get(&server, &format!("/v1/webrtc/sessions/{id}"), None)
        .await
        .0
        != 404
    {
        assert!(
            Instant::now() < deadline,
            "the closed session is still listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other one never connects: it ends after connect_timeout_secs.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = get(&server, "/v1/webrtc/sessions", None).await;
        if list["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an unconnected session outlived its connect timeout: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_idle_session_is_closed_and_the_browser_is_told() {
    let server = Server::start_with(&[], &[("TABAGENT_WEBRTC__IDLE_TIMEOUT_SECS", "1")], |_| {});
    // The page connects, then sends nothing and waits for its channel to close: only the
    // server's idle timeout can close it (the browser stays up until the page reports).
    let outcome = run_page(&server.url, json!({"until_closed": true}), &[]).await;
    assert_eq!(outcome["errors"], json!([]), "{outcome}");
    assert_eq!(outcome["done"], true, "{outcome}");
    // Closed with a DTLS close_notify, not found out by failing connectivity checks.
    assert_eq!(outcome["closed_by_server"]["dtls"], "closed", "{outcome}");
    let id = outcome["session_id"].as_str().unwrap();
    let (status, _) = get(&server, &format!("/v1/webrtc/sessions/{id}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn one_caller_cannot_take_every_session() {
    let alice = "alice-key-0123456789abcdef";
    let bob = "bob-key-0123456789abcdefgh";
    let server = Server::start_with(
        &[],
        &[
            (
                "TABAGENT_SERVER__API_KEYS",
                &format!("[\"{alice}\",\"{bob}\"]"),
            ),
            ("TABAGENT_WEBRTC__MAX_SESSIONS_PER_CALLER", "2"),
        ],
        |_| {},
    );
    let open = |key: &'static str| {
        let server = &server;
        async move {
            post(
                server,
                "/v1/webrtc/offer",
                Some(key),
                &json!({"sdp": offer()}),
            )
            .await
        }
    };
    for _ in 0..2 {
        let (status, answer) = open(alice).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, body) = open(alice).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "webrtc_sessions_per_caller");
    // Another caller still gets one.
    let (status, answer) = open(bob).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn sessions_belong_to_the_key_that_opened_them() {
    let alice = "alice-key-0123456789abcdef";
    let bob = "bob-key-0123456789abcdefgh";
    let server = Server::start_with(
        &[],
        &[(
            "TABAGENT_SERVER__API_KEYS",
            &format!("[\"{alice}\",\"{bob}\"]"),
        )],
        |_| {},
    );
    let (status, answer) = post(
        &server,
        "/v1/webrtc/offer",
        Some(alice),
        &json!({"sdp": offer()}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["session_id"].as_str().unwrap();
    let (status, _) = post(&server, "/v1/webrtc/offer", None, &json!({"sdp": offer()})).await;
    assert_eq!(status, 401);
    let (_, mine) = get(&server, "/v1/webrtc/sessions", Some(alice)).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    let (_, theirs) = get(&server, "/v1/webrtc/sessions", Some(bob)).await;
    assert_eq!(theirs["data"], json!([]));
    let (status, _) = get(&server, &format!("/v1/webrtc/sessions/{id}"), Some(bob)).await;
    assert_eq!(status, 404);
    let response = server
        .client
        .delete(server.endpoint(&format!("/v1/webrtc/sessions/{id}")))
        .bearer_auth(bob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn http_mode_has_no_webrtc_and_webrtc_mode_only_signaling() {
    let server = Server::start(&["--mode", "http"]);
    let (status, error) = post(&server, "/v1/webrtc/offer", None, &json!({"sdp": offer()})).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "webrtc_off");
    drop(server);
    let server = Server::start(&["--mode", "webrtc"]);
    let (status, _) = post(&server, "/v1/webrtc/offer", None, &json!({"sdp": offer()})).await;
    assert_eq!(status, 200);
    let (status, _) = get(&server, "/v1/models", None).await;
    assert_eq!(status, 404);
}

/// Drives the `/webrtc` page of the server at `server_url` in headless Chromium, as its user
/// would (tests/browser/webrtc_driver.js with `options`), and returns what happened.
pub async fn run_page(server_url: &str, options: Value, extra_args: &[String]) -> Value {
    let (url, args) = (server_url.to_string(), extra_args.to_vec());
    tokio::task::spawn_blocking(move || crate::browser::drive_webrtc_page(&url, &options, &args))
        .await
        .unwrap()
}

#[tokio::test]
async fn chromium_streams_a_chat_over_a_data_channel_and_its_camera_reaches_the_server() {
    let server = Server::start(&[]);
    let prompt = "Name a colour.";
    let options = json!({"model": MODEL, "prompt": prompt, "max_tokens": 16, "camera": true,
                         "frames": 10, "connections": 2});
    let outcome = run_page(&server.url, options, &[]).await;
    assert_eq!(outcome["done"], true, "{outcome}");
    assert_eq!(outcome["errors"], json!([]), "{outcome}");
    let text: String = outcome["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let (status, whole) = server
        .post_json(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200);
    // Greedy decoding: the data channel carried, token by token, what HTTP answers.
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        outcome["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    // Two more connections from the same page, each opened and closed before the chat.
    let more = outcome["more_setups"].as_array().unwrap();
    assert_eq!(more.len(), 2, "{outcome}");
    assert!(
        more.iter().all(|m| m["setup_ms"].as_f64().unwrap() > 0.0),
        "{outcome}"
    );
    let video = &outcome["video"];
    assert!(video["frames_decoded"].as_u64().unwrap() >= 10, "{outcome}");
    assert!(
        video["width"].as_u64().unwrap() > 0 && video["height"].as_u64().unwrap() > 0,
        "{outcome}"
    );
}

/// SDP offers (`tests/corpus/sdp`: a data channel; a camera and a data channel), mutated: the
/// parser that reads what a browser sends either reads an offer or refuses it, never panics;
/// and an offer it reads, the server answers or refuses with a 400, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_offers_are_read_or_refused() {
    static CRYPTO: std::sync::Once = std::sync::Once::new();
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/sdp");
    let seeds = tabagent_testhub::fuzz::corpus(&dir).unwrap();
    let mut parsed = Vec::new();
    tabagent_testhub::fuzz::run(&seeds, 20_000, |input| {
        if let Ok(text) = std::str::from_utf8(input) {
            if str0m::change::SdpOffer::from_sdp_string(text).is_ok() && parsed.len() < 24 {
                parsed.push(text.to_string());
            }
        }
    });
    assert!(
        parsed.len() >= seeds.len(),
        "the seeds themselves are offers"
    );
    // The offers the parser took, as the server gets them (with room for all their sessions).
    let server = Server::start_with(
        &[],
        &[
            ("TABAGENT_WEBRTC__MAX_SESSIONS", "32"),
            ("TABAGENT_WEBRTC__MAX_SESSIONS_PER_CALLER", "32"),
        ],
        |_| {},
    );
    for offer in parsed {
        let (status, body) = post(&server, "/v1/webrtc/offer", None, &json!({"sdp": offer})).await;
        assert!(status == 200 || status == 400, "{status}: {body}");
    }
}
