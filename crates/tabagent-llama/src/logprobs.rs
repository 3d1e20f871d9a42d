//! Log probabilities of generated tokens, from the logits llama.cpp computed for them.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tabagent_core::{TokenLogprob, TopLogprob};

/// The chosen `token`'s log probability under the model's distribution at this position (the
/// softmax of the raw `logits`, before sampling settings reshape it, as OpenAI reports), with
/// the `top` likeliest tokens.
pub(crate) fn at(model: &LlamaModel, logits: &[f32], token: LlamaToken, top: u8) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_sum = sum.ln() as f32;
    let logprob_of = |logit: f32| logit - max - log_sum;
    let chosen = usize::try_from(token.0)
        .ok()
        .and_then(|i| logits.get(i))
        .map_or(f32::NEG_INFINITY, |&l| logprob_of(l));
    let (text, bytes) = piece(model, token);
    TokenLogprob {
        token: text,
        bytes,
        logprob: chosen,
        top: likeliest(logits, usize::from(top))
            .into_iter()
            .map(|(id, logit)| {
                let (token, bytes) = piece(model, LlamaToken(id));
                TopLogprob {
                    token,
                    bytes,
                    logprob: logprob_of(logit),
                }
            })
            .collect(),
    }
}

/// The `n` highest logits with their token ids, highest first.
fn likeliest(logits: &[f32], n: usize) -> Vec<(i32, f32)> {
    let mut best: Vec<(i32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return best;
    }
    for (id, &logit) in logits.iter().enumerate() {
        if best.len() == n && best.last().is_some_and(|&(_, low)| logit <= low) {
            continue;
        }
        let at = best.partition_point(|&(_, l)| l >= logit);
        best.insert(at, (i32::try_from(id).unwrap_or(i32::MAX), logit));
        best.truncate(n);
    }
    best
}

/// A token's bytes, and its text with bytes that are not whole UTF-8 characters replaced.
fn piece(model: &LlamaModel, token: LlamaToken) -> (String, Vec<u8>) {
    let bytes = model.vocab().token_to_piece(token, true, None);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// A fresh tool-call id, `call_` and 24 random alphanumerics (OpenAI's shape).
pub(crate) fn call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut id = String::from("call_");
    let state = std::collections::hash_map::RandomState::new();
    for i in 0..24u64 {
        let mut hasher = state.build_hasher();
        hasher.write_u64(i);
        let pick = (hasher.finish() % ALPHABET.len() as u64) as usize;
        id.push(char::from(ALPHABET[pick]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::likeliest;

    #[test]
    fn the_likeliest_come_first_and_ties_keep_the_lower_id() {
        let logits = [0.5, 3.0, -1.0, 3.0, 2.0];
        assert_eq!(likeliest(&logits, 3), vec![(1, 3.0), (3, 3.0), (4, 2.0)]);
        assert!(likeliest(&logits, 0).is_empty());
        assert_eq!(likeliest(&logits, 9).len(), 5);
    }
}
