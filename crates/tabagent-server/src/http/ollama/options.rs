//! Ollama's `options`, `format`, `keep_alive` and `think` → generation parameters, checked with
//! the same ranges as the OpenAI endpoints.

use serde_json::{Map, Value};
use tabagent_core::{GenerationParams, OutputConstraint};

use super::super::convert;
use super::super::error::ApiError;
use super::super::wire::{SamplingFields, StopSpec};
use crate::keep_alive::KeepAlive;

/// Options that size or place the runner: the server's configuration decides them, so they
/// are accepted and left alone.
const RUNNER_OPTIONS: &[&str] = &[
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "num_keep",
    "use_mmap",
    "use_mlock",
    "low_vram",
    "numa",
    "f16_kv",
    "vocab_only",
    "penalize_newline",
    "typical_p",
    "tfs_z",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
];

/// The longest window the repeat penalty looks back over.
const MAX_REPEAT_LAST_N: u32 = 8192;

/// Sampling and limits from `options` (absent or `null`: the defaults).
pub fn params(options: Option<&Value>) -> Result<GenerationParams, ApiError> {
    let empty = Map::new();
    let options = match options {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(options)) => options,
        Some(_) => return Err(bad("options", "`options` must be an object")),
    };
    let mut fields = SamplingFields::default();
    for (name, value) in options {
        let param = format!("options.{name}");
        match name.as_str() {
            "temperature" => fields.temperature = Some(number(value, &param)? as f32),
            "top_p" => fields.top_p = Some(number(value, &param)? as f32),
            "min_p" => fields.min_p = Some(number(value, &param)? as f32),
            "top_k" => fields.top_k = Some(integer(value, &param)?),
            "repeat_penalty" => fields.repeat_penalty = Some(number(value, &param)? as f32),
            "presence_penalty" => fields.presence_penalty = Some(number(value, &param)? as f32),
            "frequency_penalty" => fields.frequency_penalty = Some(number(value, &param)? as f32),
            "seed" => fields.seed = Some(integer(value, &param)?),
            "num_predict" => {
                fields.max_tokens = match integer(value, &param)? {
                    // -1: until the model stops; -2: until the context is full.
                    -1 | -2 => None,
                    n if n >= 1 => Some(n),
                    n => {
                        return Err(bad(
                            &param,
                            &format!("`num_predict` must be -1, -2 or at least 1, not {n}"),
                        ))
                    }
                }
            }
            "repeat_last_n" => {
                integer(value, &param)?;
            }
            "stop" => {
                let stops = match value {
                    Value::String(one) => vec![one.clone()],
                    Value::Array(many) => many
                        .iter()
                        .map(|s| s.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad(&param, "`stop` must be a list of strings"))?,
                    Value::Null => Vec::new(),
                    _ => return Err(bad(&param, "`stop` must be a list of strings")),
                };
                fields.stop = Some(StopSpec::Many(stops));
            }
            known if RUNNER_OPTIONS.contains(&known) => {}
            // As Ollama does: an option it does not know is logged and left out, so a client
            // written for another version still works.
            other => tracing::warn!(option = other, "unknown Ollama option ignored"),
        }
    }
    let mut params = convert::generation(&fields, None, None)?;
    if let Some(n) = options.get("repeat_last_n").and_then(Value::as_i64) {
        // -1 means the whole context; the window is a buffer the sampler allocates, so it is
        // capped.
        params.sampling.repeat_last_n = match u32::try_from(n) {
            Ok(n) => n.min(MAX_REPEAT_LAST_N),
            Err(_) => MAX_REPEAT_LAST_N,
        };
    }
    Ok(params)
}

/// `format`: `"json"` (any JSON value... an object, as Ollama's grammar does) or a JSON Schema.
pub fn format(format: Option<&Value>) -> Result<OutputConstraint, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(OutputConstraint::None),
        Some(Value::String(text)) if text.is_empty() => Ok(OutputConstraint::None),
        Some(Value::String(text)) if text == "json" => Ok(OutputConstraint::JsonObject),
        Some(schema @ Value::Object(_)) => Ok(OutputConstraint::JsonSchema(schema.clone())),
        Some(_) => Err(bad(
            "format",
            "`format` must be \"json\" or a JSON Schema object",
        )),
    }
}

/// `keep_alive`, when given.
pub fn keep_alive(value: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    convert::keep_alive(value)
}

/// `think`: thinking output is not produced, so only "off" is accepted.
pub fn think(value: Option<&Value>, model: &str) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        _ => Err(bad(
            "think",
            &format!("\"{model}\" does not support thinking"),
        )),
    }
}

fn number(value: &Value, param: &str) -> Result<f64, ApiError> {
    value
        .as_f64()
        .ok_or_else(|| bad(param, &format!("`{param}` must be a number")))
}

fn integer(value: &Value, param: &str) -> Result<i64, ApiError> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| bad(param, &format!("`{param}` must be a whole number"))),
        _ => Err(bad(param, &format!("`{param}` must be a whole number"))),
    }
}

fn bad(param: &str, message: &str) -> ApiError {
    ApiError::bad_request(Some(param), message.to_string())
}
