//! BERT-family encoders in safetensors, compiled into an ONNX graph that ONNX Runtime runs.
//!
//! Sentence-transformers models (all-MiniLM, bge, e5, gte of the BERT kind) and BERT
//! cross-encoders publish `config.json` and `model.safetensors`, not ONNX. Rather than a second
//! tensor runtime, their weights are laid into the graph that Hugging Face's `BertModel`
//! computes (embeddings, post-norm attention and feed-forward blocks, exact GELU), written as
//! plain ONNX operators so ONNX Runtime fuses and runs it like an exported model.
//! Task heads are left out: only the encoder's hidden states come out.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::graph::{Attr, Dim, GraphBuilder};
use crate::proto::data_type;
use crate::ModelError;

/// The fields of a Hugging Face `config.json` a BERT graph needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// `bert` (other model types are refused by name).
    pub model_type: String,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Positions the model was trained with.
    pub max_position_embeddings: usize,
    /// Activation of the feed-forward block.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    /// `absolute` is the only kind supported.
    #[serde(default = "default_position_kind")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".to_string()
}
fn default_eps() -> f32 {
    1e-12
}
fn default_position_kind() -> String {
    "absolute".to_string()
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| ModelError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ModelError> {
        let unsupported = |what: String| Err(ModelError::Unsupported(what));
        if self.model_type != "bert" {
            return unsupported(format!(
                "model_type `{}` (safetensors encoders of type `bert` are compiled; other architectures need an ONNX file)",
                self.model_type
            ));
        }
        if self.hidden_act != "gelu" && self.hidden_act != "relu" {
            return unsupported(format!("hidden_act `{}`", self.hidden_act));
        }
        if self.position_embedding_type != "absolute" {
            return unsupported(format!(
                "position_embedding_type `{}`",
                self.position_embedding_type
            ));
        }
        if self.num_attention_heads == 0
            || self.hidden_size == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return unsupported(format!(
                "hidden_size {} over {} attention heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// Names of the graph's inputs and outputs.
pub mod io {
    /// Token ids, `[batch, sequence]` int64.
    pub const INPUT_IDS: &str = "input_ids";
    /// 1 for real tokens, 0 for padding, `[batch, sequence]` int64.
    pub const ATTENTION_MASK: &str = "attention_mask";
    /// Segment ids (0 first text, 1 second), `[batch, sequence]` int64.
    pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
    /// `[batch, sequence, hidden]` float.
    pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
}

/// How the compiled graph holds the weights of its linear layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// As published (float32): the reference's numbers.
    #[default]
    Float32,
    /// int8 per output column, activations quantized on the fly (ONNX Runtime's
    /// `DynamicQuantizeMatMul`): faster matrix products on CPUs with fast int8 dot products,
    /// a little further from the reference.
    Int8,
}

/// Compiles `config.json` and `model.safetensors` into a serialized ONNX model.
pub fn compile(
    config: &BertConfig,
    weights_path: &Path,
    precision: Precision,
) -> Result<Vec<u8>, ModelError> {
    let bytes = std::fs::read(weights_path).map_err(|e| ModelError::io(weights_path, e))?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Invalid {
        path: weights_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut weights = Weights::new(&tensors, weights_path);
    weights.precision = precision;
    let model = build(config, &weights)?;
    Ok(prost::Message::encode_to_vec(&model))
}

/// Tensors by their Hugging Face names, with or without the `bert.` prefix task models add.
struct Weights<'a> {
    tensors: &'a SafeTensors<'a>,
    prefix: &'static str,
    path: &'a Path,
    precision: Precision,
}

impl<'a> Weights<'a> {
    fn new(tensors: &'a SafeTensors<'a>, path: &'a Path) -> Self {
        let prefixed = tensors
            .tensor("bert.embeddings.word_embeddings.weight")
            .is_ok();
        Self {
            tensors,
            prefix: if prefixed { "bert." } else { "" },
            path,
            precision: Precision::Float32,
        }
    }

    /// The encoder's tensor `name` (prefixed as the checkpoint is) as f32, with its shape.
    fn encoder(&self, name: &str) -> Result<(Vec<i64>, Vec<f32>), ModelError> {
        self.raw(&format!("{}{name}", self.prefix))
    }

    /// The first dimension of the encoder's tensor `name`, without reading its values.
    fn rows(&self, name: &str) -> Result<usize, ModelError> {
        let view = self.view(&format!("{}{name}", self.prefix))?;
        Ok(view.shape().first().copied().unwrap_or(0))
    }

    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'a>, ModelError> {
        self.tensors.tensor(name).map_err(|_| ModelError::Invalid {
            path: self.path.display().to_string(),
            reason: format!("tensor `{name}` is missing"),
        })
    }

    fn raw(&self, name: &str) -> Result<(Vec<i64>, Vec<f32>), ModelError> {
        let view = self.view(name)?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::Invalid {
                    path: self.path.display().to_string(),
                    reason: format!(
                        "tensor `{name}` has dtype {other:?}; F32, F16 or BF16 expected"
                    ),
                })
            }
        };
        let shape = view.shape().iter().map(|&d| d as i64).collect();
        Ok((shape, values))
    }
}

/// The tensor as f32, after checking its shape.
fn checked(w: &Weights<'_>, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
    let (shape, data) = w.encoder(name)?;
    let expected: Vec<i64> = expected.iter().map(|&d| d as i64).collect();
    if shape != expected {
        return Err(ModelError::Invalid {
            path: w.path.display().to_string(),
            reason: format!("tensor `{name}` has shape {shape:?}, the config implies {expected:?}"),
        });
    }
    Ok(data)
}

/// Adds the tensor as an initializer after checking its shape.
fn load(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    name: &str,
    expected: &[usize],
) -> Result<String, ModelError> {
    let data = checked(w, name, expected)?;
    let shape: Vec<i64> = expected.iter().map(|&d| d as i64).collect();
    Ok(g.f32s(name, &shape, &data))
}

fn build(c: &BertConfig, w: &Weights<'_>) -> Result<crate::proto::ModelProto, ModelError> {
    let h = c.hidden_size;
    let heads = c.num_attention_heads;
    let head_dim = h / heads;
    let mut g = GraphBuilder::new("bert");
    let batch_seq = [Dim::Symbol("batch"), Dim::Symbol("sequence")];
    let ids = g.input(io::INPUT_IDS, data_type::INT64, &batch_seq);
    let mask = g.input(io::ATTENTION_MASK, data_type::INT64, &batch_seq);
    let types = g.input(io::TOKEN_TYPE_IDS, data_type::INT64, &batch_seq);

    // Embeddings: word + position + token type, then a layer norm.
    let vocab = w.rows("embeddings.word_embeddings.weight")?;
    let type_vocab = w.rows("embeddings.token_type_embeddings.weight")?;
    let word_table = load(&mut g, w, "embeddings.word_embeddings.weight", &[vocab, h])?;
    let pos_table = load(
        &mut g,
        w,
        "embeddings.position_embeddings.weight",
        &[c.max_position_embeddings, h],
    )?;
    let type_table = load(
        &mut g,
        w,
        "embeddings.token_type_embeddings.weight",
        &[type_vocab, h],
    )?;
    let shape_bs = g.op("Shape", &[&ids], &[]);
    let one_index = g.i64s("index_1", &[], &[1]);
    let seq_len = g.op(
        "Gather",
        &[&shape_bs, &one_index],
        &[("axis", Attr::Int(0))],
    );
    let zero = g.i64s("zero_i64", &[], &[0]);
    let step = g.i64s("one_i64", &[], &[1]);
    let positions = g.op("Range", &[&zero, &seq_len, &step], &[]);
    let word = g.op("Gather", &[&word_table, &ids], &[]);
    let pos = g.op("Gather", &[&pos_table, &positions], &[]);
    let typ = g.op("Gather", &[&type_table, &types], &[]);
    let sum = g.op("Add", &[&word, &pos], &[]);
    let sum = g.op("Add", &[&sum, &typ], &[]);
    let flat_shape = g.i64s("flat_shape", &[2], &[-1, h as i64]);
    let x3 = layer_norm(&mut g, w, c, &sum, "embeddings.LayerNorm")?;
    let mut x = g.op("Reshape", &[&x3, &flat_shape], &[]);

    // Additive attention bias: 0 where the mask is 1, the lowest float where it is 0.
    let mask_f = g.op(
        "Cast",
        &[&mask],
        &[("to", Attr::Int(data_type::FLOAT.into()))],
    );
    let one_f = g.scalar("one_f32", 1.0);
    let inverted = g.op("Sub", &[&one_f, &mask_f], &[]);
    let lowest = g.scalar("lowest_f32", f32::MIN);
    let bias = g.op("Mul", &[&inverted, &lowest], &[]);
    let bias_axes = g.i64s("bias_axes", &[2], &[1, 2]);
    let bias = g.op("Unsqueeze", &[&bias, &bias_axes], &[]);
    let head_shape_tail = g.i64s("head_shape", &[2], &[heads as i64, head_dim as i64]);
    let split_shape = g.op(
        "Concat",
        &[&shape_bs, &head_shape_tail],
        &[("axis", Attr::Int(0))],
    );
    let scale = g.scalar("attention_scale", 1.0 / (head_dim as f32).sqrt());

    for layer in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{layer}");
        let q = linear(&mut g, w, &x, &format!("{p}.attention.self.query"), h, h)?;
        let k = linear(&mut g, w, &x, &format!("{p}.attention.self.key"), h, h)?;
        let v = linear(&mut g, w, &x, &format!("{p}.attention.self.value"), h, h)?;
        let q = g.op("Reshape", &[&q, &split_shape], &[]);
        let q = g.op(
            "Transpose",
            &[&q],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let k = g.op("Reshape", &[&k, &split_shape], &[]);
        let k = g.op(
            "Transpose",
            &[&k],
            &[("perm", Attr::Ints(vec![0, 2, 3, 1]))],
        );
        let v = g.op("Reshape", &[&v, &split_shape], &[]);
        let v = g.op(
            "Transpose",
            &[&v],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let scores = g.op("MatMul", &[&q, &k], &[]);
        let scores = g.op("Mul", &[&scores, &scale], &[]);
        let scores = g.op("Add", &[&scores, &bias], &[]);
        let probs = g.op("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        let context = g.op("MatMul", &[&probs, &v], &[]);
        let context = g.op(
            "Transpose",
            &[&context],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let context = g.op("Reshape", &[&context, &flat_shape], &[]);
        let attended = linear(
            &mut g,
            w,
            &context,
            &format!("{p}.attention.output.dense"),
            h,
            h,
        )?;
        let residual = g.op("Add", &[&attended, &x], &[]);
        x = layer_norm(
            &mut g,
            w,
            c,
            &residual,
            &format!("{p}.attention.output.LayerNorm"),
        )?;

        let up = linear(
            &mut g,
            w,
            &x,
            &format!("{p}.intermediate.dense"),
            h,
            c.intermediate_size,
        )?;
        let act = activation(&mut g, &up, &c.hidden_act);
        let down = linear(
            &mut g,
            w,
            &act,
            &format!("{p}.output.dense"),
            c.intermediate_size,
            h,
        )?;
        let residual = g.op("Add", &[&down, &x], &[]);
        x = layer_norm(&mut g, w, c, &residual, &format!("{p}.output.LayerNorm"))?;
    }

    let hidden_tail = g.i64s("hidden_tail", &[1], &[h as i64]);
    let out_shape = g.op(
        "Concat",
        &[&shape_bs, &hidden_tail],
        &[("axis", Attr::Int(0))],
    );
    let hidden = g.op("Reshape", &[&x, &out_shape], &[]);
    g.output(
        &hidden,
        io::LAST_HIDDEN_STATE,
        data_type::FLOAT,
        &[
            Dim::Symbol("batch"),
            Dim::Symbol("sequence"),
            Dim::Fixed(h as i64),
        ],
    );

    Ok(g.finish())
}

/// `x · Wᵀ + b` for a PyTorch `Linear` (weight `[out, in]`), as one `Gemm`.
fn linear(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    x: &str,
    name: &str,
    inputs: usize,
    outputs: usize,
) -> Result<String, ModelError> {
    let bias = load(g, w, &format!("{name}.bias"), &[outputs])?;
    let weight_name = format!("{name}.weight");
    if w.precision == Precision::Float32 {
        let weight = load(g, w, &weight_name, &[outputs, inputs])?;
        return Ok(g.op("Gemm", &[x, &weight, &bias], &[("transB", Attr::Int(1))]));
    }
    let weight = checked(w, &weight_name, &[outputs, inputs])?;
    let (quantized, scales) = quantize_columns(&weight, outputs, inputs);
    let b = g.i8s(
        &format!("{weight_name}.int8"),
        &[inputs as i64, outputs as i64],
        &quantized,
    );
    let scale = g.f32s(&format!("{weight_name}.scale"), &[outputs as i64], &scales);
    let zero = g.i8s(
        &format!("{weight_name}.zero"),
        &[outputs as i64],
        &vec![0; outputs],
    );
    Ok(g.microsoft_op("DynamicQuantizeMatMul", &[x, &b, &scale, &zero, &bias], &[]))
}

/// A PyTorch weight `[out, in]` as int8 `[in, out]` with one symmetric scale per output column.
fn quantize_columns(weight: &[f32], outputs: usize, inputs: usize) -> (Vec<i8>, Vec<f32>) {
    let mut quantized = vec![0i8; inputs * outputs];
    let mut scales = Vec::with_capacity(outputs);
    for (column, row) in weight.chunks_exact(inputs).enumerate() {
        let largest = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
        for (k, v) in row.iter().enumerate() {
            quantized[k * outputs + column] = (v / scale).round().clamp(-127.0, 127.0) as i8;
        }
        scales.push(scale);
    }
    (quantized, scales)
}

fn layer_norm(
    g: &mut GraphBuilder,
    w: &Weights<'_>,
    c: &BertConfig,
    x: &str,
    name: &str,
) -> Result<String, ModelError> {
    let h = c.hidden_size;
    let gamma = load(g, w, &format!("{name}.weight"), &[h])?;
    let beta = load(g, w, &format!("{name}.bias"), &[h])?;
    Ok(g.op(
        "LayerNormalization",
        &[x, &gamma, &beta],
        &[
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(c.layer_norm_eps)),
        ],
    ))
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, which ONNX Runtime fuses into one kernel; or ReLU.
fn activation(g: &mut GraphBuilder, x: &str, kind: &str) -> String {
    if kind == "relu" {
        return g.op("Relu", &[x], &[]);
    }
    let sqrt2 = g.scalar("sqrt2", std::f32::consts::SQRT_2);
    let half = g.scalar("half", 0.5);
    let one = g.scalar("one_gelu", 1.0);
    let scaled = g.op("Div", &[x, &sqrt2], &[]);
    let erf = g.op("Erf", &[&scaled], &[]);
    let shifted = g.op("Add", &[&erf, &one], &[]);
    let halved = g.op("Mul", &[x, &half], &[]);
    g.op("Mul", &[&halved, &shifted], &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_quantize_symmetrically_and_transpose() {
        // Two outputs over three inputs: rows are output columns of the result.
        let weight = [1.0, -0.5, 0.25, 0.0, 0.0, -2.0];
        let (q, scales) = quantize_columns(&weight, 2, 3);
        assert_eq!(scales, vec![1.0 / 127.0, 2.0 / 127.0]);
        // [in, out]: in 0 → (127, 0), in 1 → (-64, 0), in 2 → (32, -127).
        assert_eq!(q, vec![127, 0, -64, 0, 32, -127]);
    }

    #[test]
    fn an_all_zero_column_keeps_a_usable_scale() {
        let (q, scales) = quantize_columns(&[0.0, 0.0], 1, 2);
        assert_eq!(q, vec![0, 0]);
        assert_eq!(scales, vec![1.0]);
    }
}
