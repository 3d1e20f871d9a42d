//! Text to token ids with a model's `tokenizer.json` (the `tokenizers` crate).

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::ModelError;

/// One tokenized input, ready for an encoder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<i64>,
    /// Segment ids (0 for the first text, 1 for the second of a pair).
    pub type_ids: Vec<i64>,
    /// Whether it was cut to the model's limit.
    pub truncated: bool,
}

/// A token's id and its text, for `/v1/tokenize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The id.
    pub id: u32,
    /// Its text in the vocabulary.
    pub text: String,
}

/// A Hugging Face tokenizer, set to truncate at the model's limit and never pad (batches pad).
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same without truncation, for showing a whole text's tokens.
    untruncated: Tokenizer,
    max_tokens: usize,
}

impl TextTokenizer {
    /// Reads `tokenizer.json`, cutting inputs at `max_tokens` (special tokens included).
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self, ModelError> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| ModelError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        inner.with_padding(None);
        let mut untruncated = inner.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| ModelError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner,
            untruncated,
            max_tokens,
        })
    }

    /// The longest input, in tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokens `text` takes, without the model's special tokens and without truncation.
    pub fn count(&self, text: &str) -> usize {
        self.untruncated
            .encode_fast(text, false)
            .map_or_else(|_| text.chars().count(), |e| e.get_ids().len())
    }

    /// Ids in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// One text, with the model's special tokens.
    pub fn encode(&self, text: &str) -> Result<Encoded, ModelError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encoded(&encoding))
    }

    /// A pair (a query and a document, for a cross-encoder), the longer cut first.
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<Encoded, ModelError> {
        let encoding = self
            .inner
            .encode((first, second), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encoded(&encoding))
    }

    /// Ids and their pieces, without truncation; `special` adds the model's special tokens.
    pub fn pieces(&self, text: &str, special: bool) -> Result<Vec<Piece>, ModelError> {
        let encoding = self
            .untruncated
            .encode(text, special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .map(|(&id, text)| Piece {
                id,
                text: text.clone(),
            })
            .collect())
    }

    /// Text for `ids`; an id outside the vocabulary is an error naming it.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        let vocab = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::Tokenizer(format!(
                "token id {bad} is outside the vocabulary (0..{vocab})"
            )));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }
}

fn encoded(encoding: &tokenizers::Encoding) -> Encoded {
    Encoded {
        ids: encoding.get_ids().iter().map(|&i| i64::from(i)).collect(),
        type_ids: encoding
            .get_type_ids()
            .iter()
            .map(|&i| i64::from(i))
            .collect(),
        truncated: !encoding.get_overflowing().is_empty(),
    }
}
