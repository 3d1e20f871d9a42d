//! `/v1/onnx`: a plain ONNX model (the `mul_1.onnx` graph from the onnxruntime wheel: Y is X
//! multiplied element-wise by its constant [[1, 2], [3, 4], [5, 6]])
//! named in `models.directories`, described and run over HTTP.

use serde_json::json;

use crate::server::{assert_error, find, Server};

fn start() -> Server {
    let library = std::env::var("TABAGENT_TEST_ORT_LIB").expect("scripts/test sets it");
    let graph = std::path::Path::new(&library)
        .parent()
        .unwrap()
        .join("mul_1.onnx");
    Server::start_with(
        &[],
        &[(
            "TABAGENT_MODELS__DIRECTORIES__SCALE",
            graph.to_str().unwrap(),
        )],
        |_| {},
    )
}

#[tokio::test]
async fn a_plain_onnx_model_is_described_and_run_on_named_tensors() {
    let server = start();
    let (_, models) = server.get_json("/v1/models").await;
    assert_eq!(
        find(&models["data"], "id", "scale")["kind"],
        "onnx",
        "{models}"
    );

    // A GET loads nothing: a web page could send one without the user knowing.
    let (status, body) = server.get_json("/v1/onnx/scale").await;
    assert_eq!(assert_error(status, &body, 409)["code"], "model_not_loaded");
    let (status, body) = server.get_json("/v1/onnx/nothing-by-this-name").await;
    assert_error(status, &body, 404);
    let (status, body) = server.post_json("/v1/models/scale/load", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, info) = server.get_json("/v1/onnx/scale").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info["inputs"],
        json!([{"name": "X", "element_type": "float32", "shape": [3, 2]}])
    );
    assert_eq!(info["outputs"][0]["name"], "Y");

    let (status, body) = server
        .post_json(
            "/v1/onnx/run",
            &json!({"model": "scale", "inputs": [
                {"name": "X", "shape": [3, 2], "type": "float32", "data": [1, 2, 3, -4, 0.5, 6]}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["outputs"],
        json!([{"name": "Y", "shape": [3, 2], "type": "float32", "data": [1.0, 4.0, 9.0, -16.0, 2.5, 36.0]}])
    );
}

#[tokio::test]
async fn tensors_that_do_not_fit_and_wrong_endpoints_get_400s() {
    let server = start();
    let run = |inputs: serde_json::Value| json!({"model": "scale", "inputs": inputs});
    for (request, words) in [
        (
            run(json!([{"name": "X", "shape": [2, 2], "type": "float32", "data": [1, 2, 3, 4]}])),
            "fixes it at 3",
        ),
        (
            run(
                json!([{"name": "X", "shape": [3, 2], "type": "int64", "data": [1, 2, 3, 4, 5, 6]}]),
            ),
            "element type int64",
        ),
        (
            run(json!([{"name": "X", "shape": [3, 2], "type": "float32", "data": [1]}])),
            "1 were given",
        ),
        (run(json!([])), "input `X` is missing"),
        (
            run(json!([{"name": "X", "shape": [3, 2], "type": "complex", "data": []}])),
            "complex",
        ),
    ] {
        let (status, body) = server.post_json("/v1/onnx/run", &request).await;
        let error = assert_error(status, &body, 400);
        assert!(
            error["message"].as_str().unwrap().contains(words),
            "{request} -> {body} lacks {words:?}"
        );
    }
    let (status, body) = server
        .post_json("/v1/embeddings", &json!({"model": "scale", "input": "hi"}))
        .await;
    assert_eq!(
        assert_error(status, &body, 400)["code"],
        "model_kind_mismatch"
    );
    let (status, body) = server
        .post_json(
            &format!("/v1/models/{}/load", crate::server::MODEL),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get_json(&format!("/v1/onnx/{}", crate::server::MODEL))
        .await;
    assert_eq!(
        assert_error(status, &body, 400)["code"],
        "model_kind_mismatch"
    );
}
