//! What llama.cpp assumes of a model's metadata and asserts (aborting the process) when it is
//! not so: a vocabulary without duplicate tokens, per-token arrays as long as the vocabulary,
//! special token ids inside it, a layer count it can hold, expert counts that agree, attention
//! heads it can divide by. A file that breaks one of these is refused here, with the rule it
//! broke, before llama.cpp opens it.
//!
//! Each check applies when the file has the keys it reads; a file that lacks a key llama.cpp
//! needs is refused by llama.cpp itself, without aborting.

use std::collections::HashMap;

use super::error::GgufError;
use super::{GgufInfo, MetadataValue};

/// The vocabulary's tokens.
pub(crate) const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
/// llama.cpp's `LLAMA_MAX_LAYERS`.
const MAX_LAYERS: u64 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS`.
const MAX_EXPERTS: u64 = 1024;
/// Integer arrays (per-layer values) kept for these checks, when no longer than this.
pub(crate) const MAX_KEPT_ARRAY: u64 = MAX_LAYERS;

/// Whether the integer array under `key` is one the checks read (per-layer head and expert
/// counts).
pub(crate) fn keeps_array(key: &str) -> bool {
    [".attention.head_count", ".expert_used_count"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
}

/// Finds the first token that repeats an earlier one, as tokens are read.
#[derive(Default)]
pub(crate) struct TokenSet {
    seen: HashMap<Vec<u8>, u64>,
}

impl TokenSet {
    /// Adds token `index`; an error when it repeats an earlier token.
    pub(crate) fn add(&mut self, index: u64, token: Vec<u8>) -> Result<(), GgufError> {
        if let Some(first) = self.seen.insert(token.clone(), index) {
            return Err(GgufError::invalid(format!(
                "the vocabulary ({TOKENS_KEY}) holds token {} twice, as ids {first} and {index} \
                 (llama.cpp aborts on such a vocabulary)",
                super::parse::show(&String::from_utf8_lossy(&token))
            )));
        }
        Ok(())
    }
}

/// The checks on a parsed file; `arrays` are the integer arrays [`keeps_array`] named.
pub(crate) fn check(info: &GgufInfo, arrays: &[(String, Vec<i64>)]) -> Result<(), GgufError> {
    check_vocabulary(info)?;
    let Some(arch) = info.architecture() else {
        return Ok(());
    };
    let key = |name: &str| format!("{arch}.{name}");
    let scalar = |name: &str| info.get(&key(name)).and_then(MetadataValue::as_u64);
    let values = |name: &str| -> Vec<i64> {
        let full = key(name);
        match info.get(&full) {
            Some(MetadataValue::Array { .. }) => arrays
                .iter()
                .find(|(k, _)| *k == full)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            Some(value) => value
                .as_u64()
                .map(|v| vec![i64::try_from(v).unwrap_or(i64::MAX)])
                .unwrap_or_else(|| vec![-1]),
            None => Vec::new(),
        }
    };
    let bad = |what: String| {
        Err(GgufError::invalid(format!(
            "{what} (llama.cpp aborts on it)"
        )))
    };

    if let Some(layers) = scalar("block_count") {
        if !(1..=MAX_LAYERS).contains(&layers) {
            return bad(format!(
                "{} is {layers}; it must be 1 to {MAX_LAYERS}",
                key("block_count")
            ));
        }
        if let Some(nextn) = scalar("nextn_predict_layers") {
            if nextn > layers {
                return bad(format!(
                    "{} is {nextn}, more than the {layers} layers",
                    key("nextn_predict_layers")
                ));
            }
        }
    }
    // llama.cpp divides the embedding width by the first layer's head count.
    if let Some(first) = values("attention.head_count").first() {
        if *first <= 0 {
            return bad(format!(
                "{} starts with {first}; it must be at least 1",
                key("attention.head_count")
            ));
        }
    }
    check_experts(&key, &scalar, &values)
}

fn check_experts(
    key: &dyn Fn(&str) -> String,
    scalar: &dyn Fn(&str) -> Option<u64>,
    values: &dyn Fn(&str) -> Vec<i64>,
) -> Result<(), GgufError> {
    let bad = |what: String| {
        Err(GgufError::invalid(format!(
            "{what} (llama.cpp aborts on it)"
        )))
    };
    let experts = scalar("expert_count").unwrap_or(0);
    let groups = scalar("expert_group_count").unwrap_or(0);
    if experts > MAX_EXPERTS {
        return bad(format!(
            "{} is {experts}; at most {MAX_EXPERTS}",
            key("expert_count")
        ));
    }
    // llama.cpp counts one expert as none.
    if experts <= 1 {
        if groups != 0 {
            return bad(format!(
                "{} is {groups} with no experts",
                key("expert_group_count")
            ));
        }
        return Ok(());
    }
    let used = values("expert_used_count");
    let most_used = used.iter().copied().max().unwrap_or(0);
    if used.iter().any(|&n| n < 0) || most_used < 1 || most_used as u64 > experts {
        return bad(format!(
            "{} must be 1 to the {experts} experts in every layer",
            key("expert_used_count")
        ));
    }
    if groups >= experts {
        return bad(format!(
            "{} is {groups}; it must be fewer than the {experts} experts",
            key("expert_group_count")
        ));
    }
    if groups > 1 {
        let group_used = scalar("expert_group_used_count").unwrap_or(0);
        if !experts.is_multiple_of(groups) || group_used == 0 || group_used >= groups {
            return bad(format!(
                "{} experts in {groups} groups, {group_used} used: the groups must divide the \
                 experts and 1 to {} of them be used",
                experts,
                groups - 1
            ));
        }
    }
    Ok(())
}

/// Arrays per token as long as the vocabulary, special token ids inside it, and the token
/// embedding as wide as it.
fn check_vocabulary(info: &GgufInfo) -> Result<(), GgufError> {
    let Some(MetadataValue::Array { len: n_vocab, .. }) = info.get(TOKENS_KEY) else {
        return Ok(());
    };
    let n_vocab = *n_vocab;
    for per_token in ["tokenizer.ggml.token_type", "tokenizer.ggml.scores"] {
        if let Some(MetadataValue::Array { len, .. }) = info.get(per_token) {
            if *len != n_vocab {
                return Err(GgufError::invalid(format!(
                    "{per_token} has {len} entries for a vocabulary of {n_vocab} tokens"
                )));
            }
        }
    }
    for (key, value) in &info.metadata {
        let special = key.starts_with("tokenizer.ggml.") && key.ends_with("_token_id");
        if !special {
            continue;
        }
        // A negative id means "none" to llama.cpp.
        let id = match *value {
            MetadataValue::I32(id) if id < 0 => continue,
            MetadataValue::I64(id) if id < 0 => continue,
            ref value => value.as_u64(),
        };
        match id {
            Some(id) if id < n_vocab => {}
            Some(id) => {
                return Err(GgufError::invalid(format!(
                    "{key} is {id}, outside the vocabulary of {n_vocab} tokens"
                )))
            }
            None => {
                return Err(GgufError::invalid(format!(
                    "{key} must be an integer token id but is {}",
                    value.value_type()
                )))
            }
        }
    }
    if let Some(embedding) = info.tensors.iter().find(|t| t.name == "token_embd.weight") {
        if let Some(&width) = embedding.dims.get(1) {
            if width != n_vocab {
                return Err(GgufError::invalid(format!(
                    "token_embd.weight has {width} rows for a vocabulary of {n_vocab} tokens"
                )));
            }
        }
    }
    Ok(())
}
