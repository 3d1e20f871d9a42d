//! `/v1/embeddings`, `/v1/rerank` and encoder tokenization over HTTP, with the real
//! all-MiniLM-L6-v2 served from a configured directory, checked against sentence-transformers.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::server::{assert_error, minilm_dir, tabagent, Server, MODEL};

const ENCODER: &str = "minilm";

fn start(extra_env: &[(&str, &str)]) -> Server {
    let dir = minilm_dir();
    let mut env = vec![(
        "TABAGENT_MODELS__DIRECTORIES__MINILM",
        dir.to_str().unwrap(),
    )];
    env.extend_from_slice(extra_env);
    Server::start_with(&[], &env, |_| {})
}

/// sentence-transformers' reference cases (text, tokens, vector).
fn golden() -> Vec<(String, u64, Vec<f32>)> {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let text =
        std::fs::read_to_string(root.join("../tabagent-onnx/tests/golden/all-MiniLM-L6-v2.json"))
            .unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    value["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["tokens"].as_u64().unwrap(),
                floats(&c["embedding"]),
            )
        })
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test]
async fn embeddings_match_sentence_transformers_with_real_usage() {
    let server = start(&[]);
    let cases = golden();
    let texts: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    let (status, body) = server
        .post_json("/v1/embeddings", &json!({"model": ENCODER, "input": texts}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], ENCODER);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), cases.len());
    for (i, (item, (text, _, reference))) in data.iter().zip(&cases).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let similarity = cosine(&floats(&item["embedding"]), reference);
        assert!(similarity >= 0.999, "{text:?}: cosine {similarity}");
    }
    let tokens: u64 = cases.iter().map(|c| c.1).sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens, "{}", body["usage"]);
    assert_eq!(body["usage"]["total_tokens"], tokens);

    // The model lists as an embedding model.
    let (_, models) = server.get_json("/v1/models").await;
    let listed = crate::server::find(&models["data"], "id", ENCODER);
    assert_eq!(listed["kind"], "embedding", "{models}");
    assert_eq!(
        crate::server::find(&models["data"], "id", MODEL)["kind"],
        "llm"
    );
}

#[tokio::test]
async fn base64_dimensions_and_token_inputs_agree_with_floats() {
    let server = start(&[]);
    let text = "The cat sits on the mat.";
    let (_, floats_body) = server
        .post_json("/v1/embeddings", &json!({"model": ENCODER, "input": text}))
        .await;
    let full = floats(&floats_body["data"][0]["embedding"]);
    assert_eq!(full.len(), 384);

    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &json!({"model": ENCODER, "input": [text], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, full);

    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &json!({"model": ENCODER, "input": text, "dimensions": 8}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cut = floats(&body["data"][0]["embedding"]);
    assert_eq!(cut.len(), 8);
    let norm: f32 = cut.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "re-normalised: {norm}");
    assert!(
        cosine(&cut, &full[..8]) > 0.9999,
        "the first 8 values, scaled"
    );

    // Token ids from /v1/tokenize (special tokens included) embed as the text does.
    let (status, tokenized) = server
        .post_json("/v1/tokenize", &json!({"model": ENCODER, "text": text}))
        .await;
    assert_eq!(status, 200, "{tokenized}");
    let ids = tokenized["tokens"].clone();
    for input in [ids.clone(), json!([ids])] {
        let (status, body) = server
            .post_json("/v1/embeddings", &json!({"model": ENCODER, "input": input}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(cosine(&floats(&body["data"][0]["embedding"]), &full) > 0.99999);
        assert_eq!(body["usage"]["prompt_tokens"], tokenized["count"]);
    }
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_vectors() {
    let server = std::sync::Arc::new(start(&[]));
    let cases = std::sync::Arc::new(golden());
    let mut tasks = Vec::new();
    for caller in 0..12usize {
        let server = std::sync::Arc::clone(&server);
        let cases = std::sync::Arc::clone(&cases);
        tasks.push(tokio::spawn(async move {
            let picked: Vec<usize> = (0..1 + caller % 4)
                .map(|k| (caller * 5 + k) % cases.len())
                .collect();
            let texts: Vec<&str> = picked.iter().map(|&i| cases[i].0.as_str()).collect();
            let (status, body) = server
                .post_json("/v1/embeddings", &json!({"model": ENCODER, "input": texts}))
                .await;
            assert_eq!(status, 200, "{body}");
            let data = body["data"].as_array().unwrap();
            assert_eq!(data.len(), picked.len());
            for (item, &i) in data.iter().zip(&picked) {
                let similarity = cosine(&floats(&item["embedding"]), &cases[i].2);
                assert!(
                    similarity >= 0.999,
                    "caller {caller}, case {i}: {similarity}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn bad_embedding_requests_get_clear_400s() {
    let server = start(&[("TABAGENT_ONNX__MAX_INPUTS_PER_REQUEST", "4")]);
    let long = "word ".repeat(400);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"model": ENCODER, "input": ""}),
            "input",
            "empty string",
        ),
        (
            json!({"model": ENCODER, "input": []}),
            "input",
            "empty array",
        ),
        (
            json!({"model": ENCODER, "input": ["a", ""]}),
            "input",
            "input[1]",
        ),
        (
            json!({"model": ENCODER, "input": ["a", "b", "c", "d", "e"]}),
            "input",
            "at most 4",
        ),
        (
            json!({"model": ENCODER, "input": ["a", 1]}),
            "input",
            "must be a string",
        ),
        (
            json!({"model": ENCODER, "input": [[101, -3]]}),
            "input",
            "not a token id",
        ),
        (
            json!({"model": ENCODER, "input": [101, 999999]}),
            "input",
            "outside the vocabulary",
        ),
        (
            json!({"model": ENCODER, "input": long, "truncate": false}),
            "input",
            "longer than the model's 256 tokens",
        ),
        (
            json!({"model": ENCODER, "input": "a", "encoding_format": "int8"}),
            "encoding_format",
            "float",
        ),
        (
            json!({"model": ENCODER, "input": "a", "dimensions": 0}),
            "dimensions",
            "between 1 and 384",
        ),
        (
            json!({"model": ENCODER, "input": "a", "dimensions": 385}),
            "dimensions",
            "between 1 and 384",
        ),
        (
            json!({"model": MODEL, "input": "a"}),
            "model",
            "language model",
        ),
    ];
    for (request, param, words) in cases {
        let (status, body) = server.post_json("/v1/embeddings", &request).await;
        let error = assert_error(status, &body, 400);
        assert_eq!(error["param"], param, "{request} -> {body}");
        assert!(
            error["message"].as_str().unwrap().contains(words),
            "{request} -> {body} lacks {words:?}"
        );
    }
    // A long input is cut to the model's limit by default, and usage says so.
    let (status, body) = server
        .post_json("/v1/embeddings", &json!({"model": ENCODER, "input": long}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 256);
    // An embedding model cannot chat.
    let (status, body) = server
        .post_json(
            "/v1/chat/completions",
            &json!({"model": ENCODER, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let error = assert_error(status, &body, 400);
    assert_eq!(error["code"], "model_kind_mismatch");
}

#[tokio::test]
async fn rerank_orders_documents_by_similarity() {
    let server = start(&[]);
    let documents = [
        "The stock market fell sharply today.",
        "Cats are small, furry animals often kept as pets.",
        "A recipe for tomato soup.",
        "Kittens are young cats.",
    ];
    let (status, body) = server
        .post_json(
            "/v1/rerank",
            &json!({"model": ENCODER, "query": "Tell me about cats", "documents": documents, "return_documents": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let order: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert!(
        order[..2].contains(&1) && order[..2].contains(&3),
        "cat documents first: {order:?}"
    );
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["relevance_score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "descending: {scores:?}"
    );
    assert_eq!(results[0]["document"]["text"], documents[order[0] as usize]);
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 20);

    let (status, body) = server
        .post_json(
            "/v1/rerank",
            &json!({"model": ENCODER, "query": "cats", "documents": documents, "top_n": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    assert!(body["results"][0].get("document").is_none());

    for (request, param) in [
        (
            json!({"model": ENCODER, "query": "cats", "documents": []}),
            "documents",
        ),
        (
            json!({"model": ENCODER, "query": "", "documents": ["a"]}),
            "query",
        ),
        (
            json!({"model": ENCODER, "query": "cats", "documents": ["a", ""]}),
            "documents",
        ),
    ] {
        let (status, body) = server.post_json("/v1/rerank", &request).await;
        assert_eq!(assert_error(status, &body, 400)["param"], param, "{body}");
    }
}

#[tokio::test]
async fn encoder_tokenizer_round_trips_and_config_shows_providers() {
    let server = start(&[]);
    let (status, body) = server
        .post_json(
            "/v1/tokenize",
            &json!({"model": ENCODER, "text": "Hello world", "with_pieces": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pieces"], json!(["[CLS]", "hello", "world", "[SEP]"]));
    let (status, text) = server
        .post_json(
            "/v1/detokenize",
            &json!({"model": ENCODER, "tokens": body["tokens"]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text["text"], "[CLS] hello world [SEP]");
    let (status, body) = server
        .post_json(
            "/v1/detokenize",
            &json!({"model": ENCODER, "tokens": [101, 40000]}),
        )
        .await;
    assert!(assert_error(status, &body, 400)["message"]
        .as_str()
        .unwrap()
        .contains("40000"));
    let (status, body) = server
        .post_json(
            "/v1/tokenize",
            &json!({"model": ENCODER, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_error(status, &body, 400);

    let (status, config) = server.get_json("/v1/config").await;
    assert_eq!(status, 200);
    let onnx = &config["onnx_runtime"];
    assert_eq!(onnx["available"], true, "{onnx}");
    assert_eq!(onnx["chosen"], json!(["cpu"]), "{onnx}");
    let cuda = crate::server::find(&onnx["providers"], "provider", "cuda");
    assert_eq!(cuda["chosen"], false);
    assert!(
        cuda["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{cuda}"
    );
}

#[test]
fn hw_lists_providers_and_names_a_missing_runtime() {
    let data = tempfile::tempdir().unwrap();
    let out = tabagent(data.path()).arg("hw").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cpu        chosen"), "{text}");
    assert!(text.contains("coreml     no: runs on macos only"), "{text}");

    let out = tabagent(data.path())
        .args(["hw", "--json"])
        .env(
            "TABAGENT_ONNX__RUNTIME_LIBRARY",
            data.path().join("missing.so"),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["onnx_runtime"]["available"], false);
    assert!(
        report["onnx_runtime"]["error"]
            .as_str()
            .unwrap()
            .contains("missing.so"),
        "{report}"
    );

    let out = tabagent(data.path())
        .args(["hw"])
        .env("TABAGENT_ONNX__PROVIDERS", "[\"quantum\"]")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown execution provider `quantum`"));
}
