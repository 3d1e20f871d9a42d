//! A test-only GGUF writer: valid minimal files, and every knob needed to make hostile ones.
//!
//! Offsets are laid out as llama.cpp expects (table order, each tensor padded to the alignment)
//! unless a tensor is given an explicit offset; the data section is not padded at its end, so
//! every strict prefix of a built file is truncated.

use tabagent_models::gguf::{ggml_type, GgmlTypeLookup};

/// ggml type ids used by the tests.
pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q8_0: u32 = 8;

/// GGUF value type tags.
pub mod tag {
    pub const U8: u32 = 0;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const U32: u32 = 4;
}

/// A little-endian byte encoder.
#[derive(Debug, Default, Clone)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// A GGUF string: `u64` length then the bytes.
    pub fn str(self, s: impl AsRef<[u8]>) -> Self {
        let s = s.as_ref();
        self.u64(s.len() as u64).raw(s)
    }
    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}

/// One tensor info to write.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: Vec<u8>,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// `None`: the next packed offset.
    pub offset: Option<u64>,
}

/// A GGUF file under construction.
#[derive(Debug, Clone)]
pub struct GgufBuilder {
    pub magic: [u8; 4],
    pub version: u32,
    /// Encoded key-value entries, written in order.
    pub kvs: Vec<Vec<u8>>,
    pub tensors: Vec<TensorSpec>,
    /// Overrides the tensor count written in the header.
    pub n_tensors: Option<u64>,
    /// Overrides the key-value count written in the header.
    pub n_kv: Option<u64>,
    /// Alignment used to lay out the data (independent of any `general.alignment` entry).
    pub alignment: u64,
    /// Overrides the data section length (default: up to the end of the last tensor, at most
    /// 1 MiB).
    pub data_len: Option<u64>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self {
            magic: *b"GGUF",
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
            n_tensors: None,
            n_kv: None,
            alignment: 32,
            data_len: None,
        }
    }
}

/// Bytes of a tensor of `ggml_type` with `dims`, by the library's table; 0 for unknown types.
pub fn tensor_bytes(ggml_type_id: u32, dims: &[u64]) -> u64 {
    match ggml_type(ggml_type_id) {
        GgmlTypeLookup::Known(t) => {
            let n = dims.iter().fold(1u64, |p, &d| p.saturating_mul(d));
            (n / t.block_size).saturating_mul(t.type_size)
        }
        _ => 0,
    }
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl GgufBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an encoded entry: key, type tag, then `value` bytes as given.
    pub fn kv_raw(mut self, key: impl AsRef<[u8]>, type_tag: u32, value: Enc) -> Self {
        let entry = Enc::new().str(key).u32(type_tag).raw(&value.0);
        self.kvs.push(entry.bytes());
        self
    }
    pub fn kv_str(self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.kv_raw(key, tag::STRING, Enc::new().str(value))
    }
    pub fn kv_u32(self, key: &str, value: u32) -> Self {
        self.kv_raw(key, tag::U32, Enc::new().u32(value))
    }
    pub fn kv_u64(self, key: &str, value: u64) -> Self {
        self.kv_raw(key, tag::U64, Enc::new().u64(value))
    }
    pub fn kv_i32(self, key: &str, value: i32) -> Self {
        self.kv_raw(key, tag::I32, Enc::new().raw(&value.to_le_bytes()))
    }
    pub fn kv_f32(self, key: &str, value: f32) -> Self {
        self.kv_raw(key, tag::F32, Enc::new().u32(value.to_bits()))
    }
    pub fn kv_bool(self, key: &str, value: bool) -> Self {
        self.kv_raw(key, tag::BOOL, Enc::new().u8(value.into()))
    }
    pub fn kv_str_array(self, key: &str, values: &[&str]) -> Self {
        let mut value = Enc::new().u32(tag::STRING).u64(values.len() as u64);
        for v in values {
            value = value.str(v);
        }
        self.kv_raw(key, tag::ARRAY, value)
    }
    pub fn kv_u32_array(self, key: &str, values: &[u32]) -> Self {
        let mut value = Enc::new().u32(tag::U32).u64(values.len() as u64);
        for v in values {
            value = value.u32(*v);
        }
        self.kv_raw(key, tag::ARRAY, value)
    }

    pub fn tensor(self, name: &str, dims: &[u64], ggml_type: u32) -> Self {
        self.tensor_spec(name.as_bytes(), dims, ggml_type, None)
    }
    pub fn tensor_at(self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> Self {
        self.tensor_spec(name.as_bytes(), dims, ggml_type, Some(offset))
    }
    pub fn tensor_spec(
        mut self,
        name: &[u8],
        dims: &[u64],
        ggml_type: u32,
        offset: Option<u64>,
    ) -> Self {
        self.tensors.push(TensorSpec {
            name: name.to_vec(),
            dims: dims.to_vec(),
            ggml_type,
            offset,
        });
        self
    }

    /// The offsets the tensors get, relative to the data section.
    pub fn offsets(&self) -> Vec<u64> {
        let mut cursor = 0;
        self.tensors
            .iter()
            .map(|t| {
                let offset = t.offset.unwrap_or(cursor);
                let end = offset.saturating_add(tensor_bytes(t.ggml_type, &t.dims));
                cursor = end.saturating_add(self.alignment - 1) / self.alignment * self.alignment;
                offset
            })
            .collect()
    }

    /// The bytes of everything before the data section's padding.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Enc::new()
            .raw(&self.magic)
            .u32(self.version)
            .u64(self.n_tensors.unwrap_or(self.tensors.len() as u64))
            .u64(self.n_kv.unwrap_or(self.kvs.len() as u64));
        for kv in &self.kvs {
            out = out.raw(kv);
        }
        for (t, offset) in self.tensors.iter().zip(self.offsets()) {
            out = out.str(&t.name).u32(t.dims.len() as u32);
            for d in &t.dims {
                out = out.u64(*d);
            }
            out = out.u32(t.ggml_type).u64(offset);
        }
        out.bytes()
    }

    /// Where the data section starts.
    pub fn data_offset(&self) -> u64 {
        let end = self.header_bytes().len() as u64;
        if self.tensors.is_empty() {
            end
        } else {
            align_up(end, self.alignment)
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        let data_offset = self.data_offset();
        out.resize(data_offset as usize, 0);
        let natural = self
            .tensors
            .iter()
            .zip(self.offsets())
            .map(|(t, o)| o.saturating_add(tensor_bytes(t.ggml_type, &t.dims)))
            .max()
            .unwrap_or(0);
        // Hostile shapes and offsets can claim exabytes: never write more than 1 MiB unasked.
        let data_len = self.data_len.unwrap_or(natural.min(1 << 20));
        out.extend((0..data_len).map(|i| (i.wrapping_mul(31) % 251) as u8));
        out
    }
}

/// The chat template of the valid test model.
pub const CHAT_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
                                 {{ m.content }}<|im_end|>\n{% endfor %}";

/// A small valid model: scalar and array metadata, four tensors of four types.
pub fn valid_model() -> GgufBuilder {
    GgufBuilder::new()
        .kv_str("general.architecture", "llama")
        .kv_str("general.name", "tiny test model")
        .kv_u32("llama.context_length", 2048)
        .kv_i32("llama.rope.scaling", -3)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_bool("tokenizer.ggml.add_bos_token", true)
        .kv_u64("general.parameter_count", 1234)
        .kv_str("tokenizer.chat_template", CHAT_TEMPLATE)
        .kv_str_array("tokenizer.ggml.tokens", &["<s>", "</s>", "hello", "world"])
        .kv_u32_array("tokenizer.ggml.token_type", &[3, 3, 1, 1])
        .tensor("token_embd.weight", &[8, 4], F32)
        .tensor("blk.0.attn_q.weight", &[8, 8], F16)
        .tensor("blk.0.ffn_up.weight", &[64, 2], Q4_0)
        .tensor("output.weight", &[32, 3], Q8_0)
}
