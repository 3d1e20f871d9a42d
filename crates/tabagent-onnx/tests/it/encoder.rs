use tabagent_onnx::{EncoderModel, EncoderSettings, GraphSource, Pooling};

use crate::common::{minilm_dir, runtime};

#[test]
fn minilm_from_safetensors_embeds() {
    let model = EncoderModel::load(&runtime(), &minilm_dir(), EncoderSettings::default())
        .expect("MiniLM loads");
    let info = model.info();
    assert_eq!(info.dimensions, 384);
    assert_eq!(info.max_tokens, 256);
    assert_eq!(info.pooling, Pooling::Mean);
    assert!(info.normalized);
    assert!(matches!(info.source, GraphSource::Safetensors(_)));
    let inputs = ["hello world", "The cat sits on the mat."]
        .iter()
        .map(|t| model.tokenizer().encode(t).expect("tokenized"))
        .collect();
    let vectors = model.encode_blocking(inputs).expect("encoded");
    println!("{:?}", &vectors[0][..8]);
}
