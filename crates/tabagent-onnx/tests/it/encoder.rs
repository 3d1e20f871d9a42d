use std::sync::Arc;

use tabagent_onnx::{BatchLimits, EncoderModel, EncoderSettings, GraphSource, Pooling, Precision};

use crate::common::{cosine, golden, minilm_dir, minilm_int8_dir, runtime};

fn load(dir: &std::path::Path) -> EncoderModel {
    EncoderModel::load(&runtime(), dir, EncoderSettings::default()).expect("encoder loads")
}

fn embed(model: &EncoderModel, texts: &[&str]) -> Vec<Vec<f32>> {
    let inputs = texts
        .iter()
        .map(|t| model.tokenizer().encode(t).expect("tokenized"))
        .collect();
    model.encode_blocking(inputs).expect("encoded")
}

#[test]
fn minilm_from_safetensors_matches_sentence_transformers() {
    let model = load(&minilm_dir());
    let info = model.info();
    assert_eq!(info.dimensions, 384);
    assert_eq!(
        info.max_tokens, 256,
        "sentence_bert_config.json's max_seq_length"
    );
    assert_eq!(info.pooling, Pooling::Mean);
    assert!(info.normalized);
    assert!(matches!(info.source, GraphSource::Safetensors(_)));

    let cases = golden();
    assert!(cases.len() >= 20);
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    // All at once (padded batches), and one at a time (no padding): both must match.
    let together = embed(&model, &texts);
    for (case, vector) in cases.iter().zip(&together) {
        let encoded = model.tokenizer().encode(&case.text).expect("tokenized");
        assert_eq!(
            encoded.ids.len(),
            case.tokens,
            "token count of {:?}",
            case.text
        );
        let similarity = cosine(vector, &case.embedding);
        assert!(similarity >= 0.999, "{:?}: cosine {similarity}", case.text);
        let alone = embed(&model, &[case.text.as_str()]);
        let similarity = cosine(&alone[0], &case.embedding);
        assert!(
            similarity >= 0.999,
            "{:?} alone: cosine {similarity}",
            case.text
        );
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
    let long = cases.last().expect("cases");
    assert!(
        model
            .tokenizer()
            .encode(&long.text)
            .expect("tokenized")
            .truncated
    );
}

#[test]
fn minilm_int8_onnx_file_runs_close_to_the_float_model() {
    let model = load(&minilm_int8_dir());
    let info = model.info();
    assert!(
        matches!(info.source, GraphSource::Onnx(_)),
        "{:?}",
        info.source
    );
    assert_eq!(info.dimensions, 384);
    let cases = golden();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let vectors = embed(&model, &texts);
    let worst = cases
        .iter()
        .zip(&vectors)
        .map(|(case, v)| cosine(v, &case.embedding))
        .fold(f32::INFINITY, f32::min);
    // Quantization costs a little: it stays close to the float reference, not identical.
    assert!(worst >= 0.98, "int8 worst cosine {worst}");
}

#[test]
fn minilm_compiled_to_int8_stays_close_to_the_reference() {
    let settings = EncoderSettings {
        precision: Precision::Int8,
        ..EncoderSettings::default()
    };
    let model = EncoderModel::load(&runtime(), &minilm_dir(), settings).expect("int8 graph loads");
    assert_eq!(model.info().precision, Precision::Int8);
    let cases = golden();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let vectors = embed(&model, &texts);
    let similarities: Vec<f32> = cases
        .iter()
        .zip(&vectors)
        .map(|(case, v)| cosine(v, &case.embedding))
        .collect();
    let worst = similarities.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = similarities.iter().sum::<f32>() / similarities.len() as f32;
    println!("int8-compiled cosine to sentence-transformers: worst {worst:.5}, mean {mean:.5}");
    assert!(worst >= 0.98, "int8 worst cosine {worst}");
    // Quantized, so not the float numbers: the option must change something.
    assert!(
        mean < 0.99999,
        "int8 gave the float vectors (mean cosine {mean})"
    );
}

#[test]
fn concurrent_callers_get_their_own_vectors_in_order() {
    let model = Arc::new(
        EncoderModel::load(
            &runtime(),
            &minilm_dir(),
            EncoderSettings {
                sessions: 1,
                limits: BatchLimits {
                    max_items: 8,
                    ..BatchLimits::default()
                },
                ..EncoderSettings::default()
            },
        )
        .expect("encoder loads"),
    );
    let cases = Arc::new(golden());
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let model = Arc::clone(&model);
            let cases = Arc::clone(&cases);
            std::thread::spawn(move || {
                // Each caller sends a different, rotated slice of the cases.
                let picked: Vec<usize> = (0..1 + caller % 5)
                    .map(|k| (caller * 3 + k) % cases.len())
                    .collect();
                let inputs = picked
                    .iter()
                    .map(|&i| model.tokenizer().encode(&cases[i].text).expect("tokenized"))
                    .collect();
                let vectors = model.encode_blocking(inputs).expect("encoded");
                assert_eq!(vectors.len(), picked.len());
                for (&i, vector) in picked.iter().zip(&vectors) {
                    let similarity = cosine(vector, &cases[i].embedding);
                    assert!(
                        similarity >= 0.999,
                        "caller {caller}, case {i}: cosine {similarity}"
                    );
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("caller passed");
    }
}

#[test]
fn a_directory_without_weights_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy");
    assert!(!EncoderModel::recognizes(dir.path()));
    let err = EncoderModel::load(&runtime(), dir.path(), EncoderSettings::default())
        .expect_err("no weights");
    assert!(err.to_string().contains("neither"), "{err}");
}

#[test]
fn an_unsupported_architecture_is_refused_by_name() {
    let err =
        load_with_config_edit("\"bert\"", "\"roberta\"").expect_err("roberta is not compiled");
    assert!(err.to_string().contains("roberta"), "{err}");
}

#[test]
fn weights_that_disagree_with_the_config_are_refused() {
    let err = load_with_config_edit("\"intermediate_size\": 1536", "\"intermediate_size\": 1024")
        .expect_err("shape mismatch");
    assert!(
        err.to_string().contains("intermediate.dense") && err.to_string().contains("1024"),
        "{err}"
    );
}

/// Loads MiniLM's tokenizer and weights with its `config.json` edited (`from` → `to`).
fn load_with_config_edit(from: &str, to: &str) -> Result<EncoderModel, tabagent_onnx::ModelError> {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["tokenizer.json", "model.safetensors"] {
        std::os::unix::fs::symlink(minilm_dir().join(file), dir.path().join(file)).expect("link");
    }
    let config = std::fs::read_to_string(minilm_dir().join("config.json")).expect("config");
    assert!(config.contains(from), "config.json has no {from}");
    std::fs::write(dir.path().join("config.json"), config.replace(from, to)).expect("write");
    EncoderModel::load(&runtime(), dir.path(), EncoderSettings::default())
}
