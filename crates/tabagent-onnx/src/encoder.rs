//! Text encoders that turn inputs into vectors (sentence embeddings), served with dynamic
//! batching.
//!
//! A model is a directory as Hugging Face and sentence-transformers lay it out: `tokenizer.json`,
//! and either `config.json` + `model.safetensors` (a BERT encoder, compiled to ONNX) or an ONNX
//! file (`model.onnx`, or `onnx/model.onnx`). `1_Pooling/config.json` says how token states
//! become one vector (mean by default) and `modules.json` whether it is L2-normalised.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::{Tensor, ValueType};
use serde::{Deserialize, Serialize};

use crate::batcher::{BatchLimits, BatchQueue, Reply, Slot};
use crate::bert::{self, io, BertConfig, Precision};
use crate::runtime::OnnxRuntime;
use crate::text::{Encoded, TextTokenizer};
use crate::ModelError;

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over real tokens.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The element-wise maximum over real tokens.
    Max,
    /// The model's own output is already one vector per input.
    Model,
}

/// Where the graph came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum GraphSource {
    /// `model.safetensors`, compiled into an ONNX graph.
    Safetensors(PathBuf),
    /// An ONNX file, run as it is.
    Onnx(PathBuf),
}

/// Facts about a loaded encoder.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderInfo {
    /// Width of its vectors.
    pub dimensions: usize,
    /// Longest input in tokens (longer ones are cut, or refused by the caller).
    pub max_tokens: usize,
    /// Pooling.
    pub pooling: Pooling,
    /// Whether vectors have unit length.
    pub normalized: bool,
    /// The graph it runs.
    pub source: GraphSource,
    /// Sessions (workers) serving it.
    pub sessions: usize,
    /// How a compiled graph holds its linear weights (ONNX files run as they are).
    pub precision: Precision,
}

/// Settings for loading an encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    /// Sessions, each on its own worker thread.
    pub sessions: usize,
    /// Batch limits.
    pub limits: BatchLimits,
    /// Weights of graphs compiled from safetensors.
    pub precision: Precision,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        Self {
            sessions: 1,
            limits: BatchLimits::default(),
            precision: Precision::Float32,
        }
    }
}

/// Why an encoding failed after its inputs were accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

/// A loaded encoder: its tokenizer, and workers each running batches on a session.
pub struct EncoderModel {
    tokenizer: Arc<TextTokenizer>,
    info: EncoderInfo,
    queue: Arc<BatchQueue>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EncoderModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderModel")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// What a worker needs to turn a batch into vectors.
struct Forward {
    pooling: Pooling,
    normalized: bool,
    /// Whether the graph takes `token_type_ids`.
    wants_type_ids: bool,
    /// The output holding token states (or pooled vectors).
    output: String,
}

impl EncoderModel {
    /// Whether `dir` looks like an encoder this crate can serve.
    pub fn recognizes(dir: &Path) -> bool {
        dir.join("tokenizer.json").is_file()
            && (dir.join("model.safetensors").is_file() || onnx_file(dir).is_some())
    }

    /// Loads the encoder in `dir`.
    pub fn load(
        runtime: &Arc<OnnxRuntime>,
        dir: &Path,
        settings: EncoderSettings,
    ) -> Result<Self, ModelError> {
        let files = ModelFiles::read(dir)?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), files.max_tokens)?;
        let (source, make): (GraphSource, Box<dyn Fn() -> Result<Session, ModelError>>) =
            match (&files.bert, onnx_file(dir)) {
                (Some(config), _) if dir.join("model.safetensors").is_file() => {
                    let weights = dir.join("model.safetensors");
                    let bytes = bert::compile(config, &weights, settings.precision)?;
                    let runtime = Arc::clone(runtime);
                    let origin = weights.clone();
                    (
                        GraphSource::Safetensors(weights),
                        Box::new(move || runtime.session_from_bytes(&bytes, &origin)),
                    )
                }
                (_, Some(file)) => {
                    let runtime = Arc::clone(runtime);
                    let path = file.clone();
                    (
                        GraphSource::Onnx(file),
                        Box::new(move || runtime.session_from_file(&path)),
                    )
                }
                _ => {
                    return Err(ModelError::Unsupported(format!(
                        "{} has neither a BERT config.json with model.safetensors nor an ONNX file",
                        dir.display()
                    )))
                }
            };
        let sessions: Vec<Session> = (0..settings.sessions.max(1))
            .map(|_| make())
            .collect::<Result<_, _>>()?;
        let (forward, dimensions) = plan(&sessions[0], &files, dir)?;
        let forward = Arc::new(forward);
        let queue = BatchQueue::new(settings.limits);
        let workers = sessions
            .into_iter()
            .enumerate()
            .map(|(n, session)| {
                let queue = Arc::clone(&queue);
                let forward = Arc::clone(&forward);
                std::thread::Builder::new()
                    .name(format!("encoder-{n}"))
                    .spawn(move || work(&queue, session, &forward))
                    .map_err(|e| ModelError::io(dir, e))
            })
            .collect::<Result<_, _>>()?;
        let info = EncoderInfo {
            dimensions,
            max_tokens: tokenizer.max_tokens(),
            pooling: forward.pooling,
            normalized: forward.normalized,
            precision: match &source {
                GraphSource::Safetensors(_) => settings.precision,
                GraphSource::Onnx(_) => Precision::Float32,
            },
            source,
            sessions: settings.sessions.max(1),
        };
        Ok(Self {
            tokenizer: Arc::new(tokenizer),
            info,
            queue,
            workers,
        })
    }

    /// Facts about it.
    pub fn info(&self) -> &EncoderInfo {
        &self.info
    }

    /// Its tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Its tokenizer, to keep beyond the model (a chunker sizing passages in its tokens).
    pub fn shared_tokenizer(&self) -> Arc<TextTokenizer> {
        Arc::clone(&self.tokenizer)
    }

    /// One vector per input, in order, computed in batches with other callers' inputs.
    pub async fn encode(&self, inputs: Vec<Encoded>) -> Result<Vec<Vec<f32>>, EncodeError> {
        let reply = self.queue.submit(inputs).await;
        flatten(reply.map_err(|_| EncodeError("the encoder stopped".to_string())))
    }

    /// [`EncoderModel::encode`] for callers off the async runtime.
    pub fn encode_blocking(&self, inputs: Vec<Encoded>) -> Result<Vec<Vec<f32>>, EncodeError> {
        let reply = self.queue.submit(inputs).blocking_recv();
        flatten(reply.map_err(|_| EncodeError("the encoder stopped".to_string())))
    }
}

fn flatten(reply: Result<Reply, EncodeError>) -> Result<Vec<Vec<f32>>, EncodeError> {
    reply?.map_err(EncodeError)
}

impl Drop for EncoderModel {
    fn drop(&mut self) {
        self.queue.close();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The sentence-transformers files beside the weights, each optional.
struct ModelFiles {
    bert: Option<BertConfig>,
    pooling: Option<Pooling>,
    normalized: bool,
    max_tokens: usize,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

impl ModelFiles {
    fn read(dir: &Path) -> Result<Self, ModelError> {
        let config_path = dir.join("config.json");
        let bert = if config_path.is_file() && dir.join("model.safetensors").is_file() {
            Some(BertConfig::read(&config_path)?)
        } else {
            None
        };
        let pooling = read_json::<PoolingConfig>(&dir.join("1_Pooling/config.json"))?.map(|p| {
            if p.pooling_mode_cls_token {
                Pooling::Cls
            } else if p.pooling_mode_max_tokens {
                Pooling::Max
            } else {
                Pooling::Mean
            }
        });
        let normalized = read_json::<Vec<Module>>(&dir.join("modules.json"))?
            .is_some_and(|m| m.iter().any(|m| m.kind.ends_with(".Normalize")));
        let positions = match &bert {
            Some(c) => Some(c.max_position_embeddings),
            None => read_json::<serde_json::Value>(&config_path)?
                .and_then(|v| v.get("max_position_embeddings")?.as_u64())
                .map(|v| v as usize),
        };
        let seq = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.max_seq_length);
        let max_tokens = match (seq, positions) {
            (Some(s), Some(p)) => s.min(p),
            (Some(s), None) => s,
            (None, Some(p)) => p,
            (None, None) => 512,
        };
        Ok(Self {
            bert,
            pooling,
            normalized,
            max_tokens,
        })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ModelError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ModelError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

/// `model.onnx` or `onnx/model.onnx`, as Hugging Face repositories place them.
fn onnx_file(dir: &Path) -> Option<PathBuf> {
    ["model.onnx", "onnx/model.onnx"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.is_file())
}

/// Checks the graph's inputs and picks its output; returns the plan and the vector width.
fn plan(session: &Session, files: &ModelFiles, dir: &Path) -> Result<(Forward, usize), ModelError> {
    let invalid = |reason: String| ModelError::Invalid {
        path: dir.display().to_string(),
        reason,
    };
    let input_names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    for required in [io::INPUT_IDS, io::ATTENTION_MASK] {
        if !input_names.contains(&required) {
            return Err(invalid(format!(
                "the graph has no `{required}` input (its inputs: {})",
                input_names.join(", ")
            )));
        }
    }
    if let Some(other) = input_names
        .iter()
        .find(|n| ![io::INPUT_IDS, io::ATTENTION_MASK, io::TOKEN_TYPE_IDS].contains(n))
    {
        return Err(invalid(format!(
            "the graph takes an input `{other}` an encoder does not supply"
        )));
    }
    // Token states ([batch, seq, width]) are pooled here; a [batch, width] output is taken as is.
    let outputs = session.outputs();
    let chosen = outputs
        .iter()
        .find(|o| o.name() == io::LAST_HIDDEN_STATE)
        .or_else(|| outputs.first())
        .ok_or_else(|| invalid("the graph has no outputs".to_string()))?;
    let ValueType::Tensor { shape, .. } = chosen.dtype() else {
        return Err(invalid(format!(
            "output `{}` is not a tensor",
            chosen.name()
        )));
    };
    let width = shape.last().copied().unwrap_or(-1);
    let pooling = match shape.len() {
        3 => files.pooling.unwrap_or(Pooling::Mean),
        2 => Pooling::Model,
        rank => {
            return Err(invalid(format!(
                "output `{}` has rank {rank}; 2 or 3 expected",
                chosen.name()
            )))
        }
    };
    let dimensions = usize::try_from(width)
        .ok()
        .filter(|&w| w > 0)
        .ok_or_else(|| invalid(format!("output `{}` has no fixed width", chosen.name())))?;
    Ok((
        Forward {
            pooling,
            normalized: files.normalized,
            wants_type_ids: input_names.contains(&io::TOKEN_TYPE_IDS),
            output: chosen.name().to_string(),
        },
        dimensions,
    ))
}

/// A worker: takes batches until the queue closes.
fn work(queue: &BatchQueue, mut session: Session, forward: &Forward) {
    while let Some(batch) = queue.next_batch() {
        let result = run_batch(&mut session, forward, &batch);
        if let Err(reason) = &result {
            tracing::warn!(%reason, inputs = batch.len(), "an encoder batch failed");
        }
        queue.finish(batch, result);
    }
}

fn run_batch(
    session: &mut Session,
    forward: &Forward,
    batch: &[Slot],
) -> Result<Vec<Vec<f32>>, String> {
    let rows = batch.len();
    let cols = batch
        .iter()
        .map(|s| s.encoded.ids.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut ids = vec![0i64; rows * cols];
    let mut mask = vec![0i64; rows * cols];
    let mut types = vec![0i64; rows * cols];
    for (r, slot) in batch.iter().enumerate() {
        let e = &slot.encoded;
        let at = r * cols;
        ids[at..at + e.ids.len()].copy_from_slice(&e.ids);
        types[at..at + e.type_ids.len()].copy_from_slice(&e.type_ids);
        mask[at..at + e.ids.len()].fill(1);
    }
    let shape = [rows as i64, cols as i64];
    let tensor = |data: Vec<i64>| Tensor::from_array((shape, data)).map_err(|e| e.to_string());
    let mut inputs = vec![
        (io::INPUT_IDS, tensor(ids)?.into_dyn()),
        (io::ATTENTION_MASK, tensor(mask.clone())?.into_dyn()),
    ];
    if forward.wants_type_ids {
        inputs.push((io::TOKEN_TYPE_IDS, tensor(types)?.into_dyn()));
    }
    let outputs = session.run(inputs).map_err(|e| e.to_string())?;
    let value = outputs
        .get(forward.output.as_str())
        .ok_or_else(|| format!("output `{}` missing", forward.output))?;
    let (out_shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let mut vectors = pool(forward.pooling, out_shape, data, &mask, rows, cols)?;
    if forward.normalized {
        vectors.iter_mut().for_each(|v| normalize(v));
    }
    Ok(vectors)
}

/// One vector per row from `[rows, cols, width]` token states (or `[rows, width]` as is).
fn pool(
    pooling: Pooling,
    shape: &[i64],
    data: &[f32],
    mask: &[i64],
    rows: usize,
    cols: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let width = shape.last().copied().unwrap_or(0) as usize;
    let expected = match pooling {
        Pooling::Model => rows * width,
        _ => rows * cols * width,
    };
    if width == 0 || data.len() != expected {
        return Err(format!(
            "output shape {shape:?} does not match a batch of {rows}×{cols}"
        ));
    }
    if pooling == Pooling::Model {
        return Ok(data.chunks_exact(width).map(<[f32]>::to_vec).collect());
    }
    Ok((0..rows)
        .map(|r| {
            let states = &data[r * cols * width..(r + 1) * cols * width];
            let real = &mask[r * cols..(r + 1) * cols];
            match pooling {
                Pooling::Cls => states[..width].to_vec(),
                Pooling::Max => {
                    let mut out = vec![f32::NEG_INFINITY; width];
                    for (t, state) in states.chunks_exact(width).enumerate() {
                        if real[t] == 1 {
                            out.iter_mut().zip(state).for_each(|(o, s)| *o = o.max(*s));
                        }
                    }
                    out
                }
                _ => {
                    let mut out = vec![0f32; width];
                    let mut count = 0f32;
                    for (t, state) in states.chunks_exact(width).enumerate() {
                        if real[t] == 1 {
                            out.iter_mut().zip(state).for_each(|(o, s)| *o += s);
                            count += 1.0;
                        }
                    }
                    let count = count.max(1.0);
                    out.iter_mut().for_each(|o| *o /= count);
                    out
                }
            }
        })
        .collect())
}

/// Scales `v` to unit length (a zero vector stays zero), as `torch.nn.functional.normalize`.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding() {
        // Two rows of two tokens, width 2; the second row's second token is padding.
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0, 100.0];
        let mask = [1, 1, 1, 0];
        let pooled = pool(Pooling::Mean, &[2, 2, 2], &data, &mask, 2, 2).expect("pooled");
        assert_eq!(pooled, vec![vec![2.0, 3.0], vec![5.0, 6.0]]);
        let maxed = pool(Pooling::Max, &[2, 2, 2], &data, &mask, 2, 2).expect("pooled");
        assert_eq!(maxed, vec![vec![3.0, 4.0], vec![5.0, 6.0]]);
        let cls = pool(Pooling::Cls, &[2, 2, 2], &data, &mask, 2, 2).expect("pooled");
        assert_eq!(cls, vec![vec![1.0, 2.0], vec![5.0, 6.0]]);
    }

    #[test]
    fn a_mismatched_output_is_an_error_not_a_panic() {
        assert!(pool(Pooling::Mean, &[2, 2, 2], &[1.0; 7], &[1; 4], 2, 2).is_err());
    }

    #[test]
    fn normalizing_gives_unit_length_and_leaves_zero_alone() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0, 0.0];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }
}
