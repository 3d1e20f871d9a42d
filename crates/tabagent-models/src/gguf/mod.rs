//! Strict GGUF header, metadata and tensor-table validation.
//!
//! llama.cpp aborts the process, or worse, on some malformed GGUF files. [`inspect_file`] reads a
//! file's header, key-value metadata and tensor table (never the tensor data) and checks them
//! against the GGUF specification and the rules of llama.cpp's `gguf.cpp`, so that a truncated or
//! hostile file becomes a [`GgufError`] before llama.cpp sees it.
//!
//! **Invariants:** no input makes this module panic, allocate memory in proportion to a count or
//! length the file claims (only to bytes the file really has), or loop longer than the file is
//! long. When it returns `Ok`, every tensor's bytes `data_offset + offset .. + size_bytes` lie
//! inside the file, are aligned, and do not overlap.
//!
//! **Boundary:** this module does no IO beyond reading the one file it is given; it knows nothing
//! of llama.cpp's Rust bindings.

mod error;
mod model;
mod parse;
mod reader;
mod tensors;
mod types;

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub use error::GgufError;
pub use types::{ggml_type, GgmlType, GgmlTypeLookup};

/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most key-value pairs a file may declare.
pub const MAX_KV: u64 = 1 << 20;
/// Longest metadata key, in bytes.
pub const MAX_KEY_LEN: u64 = 64 * 1024;
/// Longest string value (alone or in an array), in bytes.
pub const MAX_STRING_LEN: u64 = 16 * 1024 * 1024;
/// Most elements in one array value (llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Longest tensor name, in bytes (ggml's `GGML_MAX_NAME` less the NUL).
pub const MAX_TENSOR_NAME_LEN: u64 = 63;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// What a valid GGUF file holds, less its array values and tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufInfo {
    /// Format version: 2 or 3.
    pub version: u32,
    /// Key-value pairs in file order; keys are unique.
    pub metadata: Vec<(String, MetadataValue)>,
    /// Tensor infos in file order; names are unique.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and of every tensor offset.
    pub alignment: u64,
    /// Where the data section starts in the file: the end of the tensor table rounded up to the
    /// alignment (not rounded when there are no tensors, as in llama.cpp).
    pub data_offset: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
}

impl GgufInfo {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The value of `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` if it is an integer of any width that is not negative.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// `general.architecture`, e.g. `"llama"`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`.
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// `tokenizer.chat_template`, the Jinja template the model was trained with.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// `{architecture}.context_length`: the context the model was trained for.
    pub fn context_length(&self) -> Option<u64> {
        let arch = self.architecture()?;
        self.get_u64(&format!("{arch}.context_length"))
    }

    /// Parameters: elements over all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.n_elements()))
    }

    /// `general.file_type` by its llama.cpp name (`Q4_K_M`): how the file was quantized as a
    /// whole, which is what a file's name says (its largest tensors may be of another type).
    pub fn file_type(&self) -> Option<&'static str> {
        const NAMES: &[(u64, &str)] = &[
            (0, "F32"),
            (1, "F16"),
            (2, "Q4_0"),
            (3, "Q4_1"),
            (7, "Q8_0"),
            (8, "Q5_0"),
            (9, "Q5_1"),
            (10, "Q2_K"),
            (11, "Q3_K_S"),
            (12, "Q3_K_M"),
            (13, "Q3_K_L"),
            (14, "Q4_K_S"),
            (15, "Q4_K_M"),
            (16, "Q5_K_S"),
            (17, "Q5_K_M"),
            (18, "Q6_K"),
            (19, "IQ2_XXS"),
            (20, "IQ2_XS"),
            (21, "Q2_K_S"),
            (22, "IQ3_XS"),
            (23, "IQ3_XXS"),
            (24, "IQ1_S"),
            (25, "IQ4_NL"),
            (26, "IQ3_S"),
            (27, "IQ3_M"),
            (28, "IQ2_S"),
            (29, "IQ2_M"),
            (30, "IQ4_XS"),
            (31, "IQ1_M"),
            (32, "BF16"),
            (36, "TQ1_0"),
            (37, "TQ2_0"),
            (38, "MXFP4_MOE"),
        ];
        let code = self.get_u64("general.file_type")?;
        NAMES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, name)| *name)
    }

    /// The weight type holding most bytes among the matrices, e.g. `Q4_K`: what a file's
    /// quantization is called.
    pub fn quantization(&self) -> Option<String> {
        let mut bytes: Vec<(&str, u64)> = Vec::new();
        for tensor in self.tensors.iter().filter(|t| t.dims.len() >= 2) {
            match bytes.iter_mut().find(|(name, _)| *name == tensor.type_name) {
                Some((_, total)) => *total = total.saturating_add(tensor.size_bytes),
                None => bytes.push((tensor.type_name, tensor.size_bytes)),
            }
        }
        bytes
            .into_iter()
            .max_by_key(|(_, total)| *total)
            .map(|(name, _)| name.to_ascii_uppercase())
    }

    /// What loading this model with `context_tokens` of KV cache in all (every sequence
    /// together) costs in memory: the weights (mapped from the file), an f16 key and value per
    /// layer, head and position, and an allowance for llama.cpp's compute buffers.
    pub fn memory_estimate(&self, context_tokens: u64) -> MemoryEstimate {
        let weights = self.tensor_data_bytes();
        let arch = self.architecture().unwrap_or("");
        let key = |name: &str| self.get_u64(&format!("{arch}.{name}"));
        let layers = key("block_count").unwrap_or(0);
        let embedding = key("embedding_length").unwrap_or(0);
        let heads = key("attention.head_count").unwrap_or(1).max(1);
        let heads_kv = key("attention.head_count_kv").unwrap_or(heads);
        let key_length = key("attention.key_length").unwrap_or(embedding / heads);
        let value_length = key("attention.value_length").unwrap_or(embedding / heads);
        let kv_cache = layers
            .saturating_mul(context_tokens)
            .saturating_mul(heads_kv)
            .saturating_mul(key_length.saturating_add(value_length))
            .saturating_mul(2);
        // Compute buffers and the output logits: measured at 40-120 MiB for the small models
        // here; a tenth of the weights covers larger ones.
        let overhead = (weights / 10).max(128 << 20);
        MemoryEstimate {
            weights,
            kv_cache,
            overhead,
        }
    }

    /// Sum of the tensors' data sizes, padding excluded.
    pub fn tensor_data_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.size_bytes))
    }
}

/// Bytes a loaded model holds, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Tensor data.
    pub weights: u64,
    /// Keys and values for the whole context.
    pub kv_cache: u64,
    /// Compute buffers and the like.
    pub overhead: u64,
}

impl MemoryEstimate {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.overhead)
    }
}

/// A metadata value. Arrays keep only their element type and length: tokenizer vocabularies have
/// 50k–150k entries that nobody needs before llama.cpp loads the model.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// `string`; invalid UTF-8 is replaced with U+FFFD, except in the keys that must be valid.
    String(String),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
    /// `array`: its elements were checked and skipped.
    Array {
        /// Type of every element.
        element_type: ValueType,
        /// Number of elements.
        len: u64,
    },
}

impl MetadataValue {
    /// The value as `u64` if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The type tag of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
            Self::Array { .. } => ValueType::Array,
        }
    }
}

/// The GGUF value type tags (`gguf_type`), 0 to 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// 0
    U8,
    /// 1
    I8,
    /// 2
    U16,
    /// 3
    I16,
    /// 4
    U32,
    /// 5
    I32,
    /// 6
    F32,
    /// 7
    Bool,
    /// 8
    String,
    /// 9
    Array,
    /// 10
    U64,
    /// 11
    I64,
    /// 12
    F64,
}

impl ValueType {
    /// The type for a tag, or `None` for tags past 12.
    pub fn from_tag(tag: u32) -> Option<Self> {
        Some(match tag {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// The tag stored in the file.
    pub fn tag(self) -> u32 {
        match self {
            Self::U8 => 0,
            Self::I8 => 1,
            Self::U16 => 2,
            Self::I16 => 3,
            Self::U32 => 4,
            Self::I32 => 5,
            Self::F32 => 6,
            Self::Bool => 7,
            Self::String => 8,
            Self::Array => 9,
            Self::U64 => 10,
            Self::I64 => 11,
            Self::F64 => 12,
        }
    }

    /// Bytes of one value of a fixed-size type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            Self::U8 | Self::I8 | Self::Bool => Some(1),
            Self::U16 | Self::I16 => Some(2),
            Self::U32 | Self::I32 | Self::F32 => Some(4),
            Self::U64 | Self::I64 | Self::F64 => Some(8),
            Self::String | Self::Array => None,
        }
    }

    /// Whether values of this type are integers (of any width and sign).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Self::U8
                | Self::I8
                | Self::U16
                | Self::I16
                | Self::U32
                | Self::I32
                | Self::U64
                | Self::I64
        )
    }

    /// The fewest bytes one value of this type takes in a file: a string is at least its `u64`
    /// length, an array at least its element tag and `u64` length.
    pub fn min_encoded_size(self) -> u64 {
        match self {
            Self::String => 8,
            Self::Array => 12,
            fixed => fixed.fixed_size().unwrap_or(1),
        }
    }
}

impl fmt::Display for ValueType {
    /// The type's name in the GGUF specification, e.g. `uint32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::U8 => "uint8",
            Self::I8 => "int8",
            Self::U16 => "uint16",
            Self::I16 => "int16",
            Self::U32 => "uint32",
            Self::I32 => "int32",
            Self::F32 => "float32",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Array => "array",
            Self::U64 => "uint64",
            Self::I64 => "int64",
            Self::F64 => "float64",
        })
    }
}

/// One tensor of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Unique, non-empty name of at most 63 bytes.
    pub name: String,
    /// Elements along each dimension, innermost first; 1 to 4 entries, each at least 1.
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// ggml's name for the type, e.g. `"q4_0"`.
    pub type_name: &'static str,
    /// Start of the tensor's bytes, relative to [`GgufInfo::data_offset`].
    pub offset: u64,
    /// Bytes of tensor data, without padding.
    pub size_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of `dims`); validated to fit in an `i64`.
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .fold(1u64, |product, &d| product.saturating_mul(d))
    }
}

/// Inspects the GGUF file at `path`, reading only its header, metadata and tensor table.
///
/// Tensor byte ranges are checked against the file size taken from the file system before reading.
pub fn inspect_file(path: &Path) -> Result<GgufInfo, GgufError> {
    let open_err = |source| GgufError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if meta.is_dir() {
        return Err(GgufError::invalid(format!(
            "'{}' is a directory, not a file",
            path.display()
        )));
    }
    parse::parse(BufReader::with_capacity(64 * 1024, file), meta.len())
}

/// Inspects a GGUF file held in memory.
pub fn inspect_bytes(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
    parse::parse(bytes, bytes.len() as u64)
}
