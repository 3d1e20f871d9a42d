//! The parser: header, key-value metadata, then (in [`super::tensors`]) the tensor table and layout.
//!
//! Every count is checked against the bytes left in the file before anything is read for it, and
//! every length before anything is allocated for it, so a claim the file cannot back fails at once.

use std::collections::HashSet;
use std::io::BufRead;

use super::error::GgufError;
use super::model;
use super::reader::{Context, Reader};
use super::tensors;
use super::{
    GgufInfo, MetadataValue, ValueType, DEFAULT_ALIGNMENT, MAX_ARRAY_LEN, MAX_KEY_LEN, MAX_KV,
    MAX_STRING_LEN, MAX_TENSORS,
};

/// The fewest bytes a key-value pair takes: a one-byte key, its length, a type tag, a `u8` value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;

/// Keys whose string values must be valid UTF-8 (and must be strings) rather than lossily decoded.
const UTF8_KEYS: [&str; 3] = [
    "general.architecture",
    "general.name",
    "tokenizer.chat_template",
];

/// The key that sets the data alignment.
const ALIGNMENT_KEY: &str = "general.alignment";

/// Parses a whole GGUF file of `file_size` bytes from `source`, positioned at its start.
pub(crate) fn parse<R: BufRead>(source: R, file_size: u64) -> Result<GgufInfo, GgufError> {
    let mut r = Reader::new(source, file_size);
    read_magic(&mut r)?;
    let version = read_version(&mut r)?;
    let n_tensors = r.u64().ctx(|| "the tensor count".into())?;
    let n_kv = r.u64().ctx(|| "the metadata count".into())?;
    check_counts(n_tensors, n_kv, r.remaining())?;

    let mut kept = Vec::new();
    let metadata = read_metadata(&mut r, n_kv, &mut kept)?;
    let alignment = alignment(&metadata)?;
    let tensors = tensors::read_table(&mut r, n_tensors, alignment)?;
    let data_offset = tensors::check_layout(&tensors, r.pos(), alignment, file_size)?;

    let info = GgufInfo {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        file_size,
    };
    model::check(&info, &kept)?;
    Ok(info)
}

/// Quotes a name from the file for an error message: escaped, and cut short if long.
pub(crate) fn show(name: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out: String = name
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().nth(MAX_CHARS).is_some() {
        out.push_str("...");
    }
    format!("'{out}'")
}

/// Reads a `u64` length, checks it against `max` and the bytes left, then reads that many bytes.
/// `what` names the string for errors, e.g. "the value of key 'general.name'".
pub(crate) fn read_string_bytes<R: BufRead>(
    r: &mut Reader<R>,
    max: u64,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>, GgufError> {
    let len = string_len(r, max, what)?;
    r.bytes(len).ctx(what)
}

/// Reads and checks a string length like [`read_string_bytes`] without reading the string.
fn string_len<R: BufRead>(
    r: &mut Reader<R>,
    max: u64,
    what: &dyn Fn() -> String,
) -> Result<u64, GgufError> {
    let len = r.u64().ctx(|| format!("the length of {}", what()))?;
    if len > max {
        return Err(GgufError::limit(
            format!("the length of {}", what()),
            len,
            max,
        ));
    }
    let left = r.remaining();
    if len > left {
        return Err(GgufError::truncated(format!(
            "{} ({len} bytes declared, {left} left in the file)",
            what()
        )));
    }
    Ok(len)
}

fn read_magic<R: BufRead>(r: &mut Reader<R>) -> Result<(), GgufError> {
    const MAGIC: &[u8; 4] = b"GGUF";
    let n = r.remaining().min(4);
    let got = r.bytes(n).ctx(|| "the magic".into())?;
    if !MAGIC.starts_with(&got) {
        return Err(GgufError::NotGguf);
    }
    if got.len() < MAGIC.len() {
        return Err(GgufError::truncated(format!(
            "the file header (the file is only {n} bytes long)"
        )));
    }
    Ok(())
}

fn read_version<R: BufRead>(r: &mut Reader<R>) -> Result<u32, GgufError> {
    let version = r.u32().ctx(|| "the version".into())?;
    match version {
        2 | 3 => Ok(version),
        // A little-endian reader sees a big-endian 3 as 0x03000000: the low half is zero.
        v if v != 0 && v & 0xFFFF == 0 => Err(GgufError::BigEndian(v)),
        v => Err(GgufError::UnsupportedVersion(v)),
    }
}

/// Rejects counts over the caps, and counts that the bytes left cannot hold even at the minimum
/// encoded size of each entry.
fn check_counts(n_tensors: u64, n_kv: u64, left: u64) -> Result<(), GgufError> {
    if n_tensors > MAX_TENSORS {
        return Err(GgufError::limit("the tensor count", n_tensors, MAX_TENSORS));
    }
    if n_kv > MAX_KV {
        return Err(GgufError::limit("the metadata count", n_kv, MAX_KV));
    }
    let need = n_kv
        .saturating_mul(MIN_KV_BYTES)
        .saturating_add(n_tensors.saturating_mul(tensors::MIN_TENSOR_INFO_BYTES));
    if need > left {
        return Err(GgufError::truncated(format!(
            "the metadata and tensor table (the header declares {n_kv} key-value pairs and \
             {n_tensors} tensors, which need at least {need} bytes, but only {left} follow)"
        )));
    }
    Ok(())
}

/// The metadata; the integer arrays [`model::keeps_array`] names go to `kept`.
fn read_metadata<R: BufRead>(
    r: &mut Reader<R>,
    n_kv: u64,
    kept: &mut Vec<(String, Vec<i64>)>,
) -> Result<Vec<(String, MetadataValue)>, GgufError> {
    // Not `with_capacity(n_kv)`: the count is a claim, the pushes below are backed by bytes read.
    let mut metadata = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..n_kv {
        let key = read_key(r, i)?;
        if !seen.insert(key.clone()) {
            return Err(GgufError::invalid(format!(
                "metadata key {} appears more than once",
                show(&key)
            )));
        }
        let value = read_value(r, &key, kept)?;
        metadata.push((key, value));
    }
    Ok(metadata)
}

fn read_key<R: BufRead>(r: &mut Reader<R>, index: u64) -> Result<String, GgufError> {
    let what = || format!("the key of metadata entry {index}");
    let bytes = read_string_bytes(r, MAX_KEY_LEN, &what)?;
    if bytes.is_empty() {
        return Err(GgufError::invalid(format!(
            "metadata entry {index} has an empty key"
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        GgufError::invalid(format!(
            "metadata entry {index} has a key that is not UTF-8"
        ))
    })
}

fn read_type<R: BufRead>(r: &mut Reader<R>, key: &str, what: &str) -> Result<ValueType, GgufError> {
    let tag = r.u32().ctx(|| format!("the {what} of key {}", show(key)))?;
    ValueType::from_tag(tag).ok_or_else(|| {
        GgufError::invalid(format!(
            "key {} has unknown {what} {tag} (valid types are 0 to 12)",
            show(key)
        ))
    })
}

fn read_value<R: BufRead>(
    r: &mut Reader<R>,
    key: &str,
    kept: &mut Vec<(String, Vec<i64>)>,
) -> Result<MetadataValue, GgufError> {
    let value_type = read_type(r, key, "value type")?;
    let utf8_key = UTF8_KEYS.contains(&key);
    if utf8_key && value_type != ValueType::String {
        return Err(GgufError::invalid(format!(
            "key {} must be a string but is {value_type}",
            show(key)
        )));
    }
    let what = || format!("the value of key {}", show(key));
    let value = match value_type {
        ValueType::U8 => MetadataValue::U8(r.u8().ctx(what)?),
        ValueType::I8 => MetadataValue::I8(i8::from_le_bytes([r.u8().ctx(what)?])),
        ValueType::U16 => MetadataValue::U16(r.u16().ctx(what)?),
        ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(r.u16().ctx(what)?.to_le_bytes())),
        ValueType::U32 => MetadataValue::U32(r.u32().ctx(what)?),
        ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(r.u32().ctx(what)?.to_le_bytes())),
        ValueType::F32 => MetadataValue::F32(f32::from_bits(r.u32().ctx(what)?)),
        ValueType::U64 => MetadataValue::U64(r.u64().ctx(what)?),
        ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(r.u64().ctx(what)?.to_le_bytes())),
        ValueType::F64 => MetadataValue::F64(f64::from_bits(r.u64().ctx(what)?)),
        ValueType::Bool => match r.u8().ctx(what)? {
            0 => MetadataValue::Bool(false),
            1 => MetadataValue::Bool(true),
            b => {
                return Err(GgufError::invalid(format!(
                    "key {} has bool value {b} (must be 0 or 1)",
                    show(key)
                )))
            }
        },
        ValueType::String => {
            let bytes = read_string_bytes(r, MAX_STRING_LEN, &what)?;
            let text = if utf8_key {
                String::from_utf8(bytes).map_err(|_| {
                    GgufError::invalid(format!("the value of key {} is not UTF-8", show(key)))
                })?
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            MetadataValue::String(text)
        }
        ValueType::Array => {
            let element_type = read_type(r, key, "array element type")?;
            let len = r
                .u64()
                .ctx(|| format!("the array length of key {}", show(key)))?;
            if key == model::TOKENS_KEY && element_type == ValueType::String {
                read_tokens(r, len)?;
            } else if model::keeps_array(key)
                && len <= model::MAX_KEPT_ARRAY
                && element_type.is_integer()
            {
                kept.push((key.to_string(), read_integers(r, key, element_type, len)?));
            } else {
                skip_array(r, key, element_type, len, 0)?;
            }
            MetadataValue::Array { element_type, len }
        }
    };
    Ok(value)
}

/// Reads the vocabulary's tokens, refusing one that repeats an earlier one (llama.cpp asserts
/// that its tokens are unique). Memory grows with the tokens the file really holds.
fn read_tokens<R: BufRead>(r: &mut Reader<R>, len: u64) -> Result<(), GgufError> {
    let key = model::TOKENS_KEY;
    check_array_room(r, key, ValueType::String, len)?;
    let mut tokens = model::TokenSet::default();
    for i in 0..len {
        let what = || format!("string {i} of the array value of key {}", show(key));
        let token = read_string_bytes(r, MAX_STRING_LEN, &what)?;
        tokens.add(i, token)?;
    }
    Ok(())
}

/// Reads a short integer array (its length was checked against [`model::MAX_KEPT_ARRAY`]).
fn read_integers<R: BufRead>(
    r: &mut Reader<R>,
    key: &str,
    element_type: ValueType,
    len: u64,
) -> Result<Vec<i64>, GgufError> {
    check_array_room(r, key, element_type, len)?;
    let what = || format!("the array value of key {}", show(key));
    let mut values = Vec::new();
    for _ in 0..len {
        let value = match element_type {
            ValueType::U8 => i64::from(r.u8().ctx(what)?),
            ValueType::I8 => i64::from(i8::from_le_bytes([r.u8().ctx(what)?])),
            ValueType::U16 => i64::from(r.u16().ctx(what)?),
            ValueType::I16 => i64::from(i16::from_le_bytes(r.u16().ctx(what)?.to_le_bytes())),
            ValueType::U32 => i64::from(r.u32().ctx(what)?),
            ValueType::I32 => i64::from(i32::from_le_bytes(r.u32().ctx(what)?.to_le_bytes())),
            ValueType::U64 => i64::try_from(r.u64().ctx(what)?).unwrap_or(i64::MAX),
            _ => i64::from_le_bytes(r.u64().ctx(what)?.to_le_bytes()),
        };
        values.push(value);
    }
    Ok(values)
}

/// Refuses an array longer than the cap, or than the bytes left could hold.
fn check_array_room<R: BufRead>(
    r: &Reader<R>,
    key: &str,
    element_type: ValueType,
    len: u64,
) -> Result<(), GgufError> {
    if len > MAX_ARRAY_LEN {
        return Err(GgufError::limit(
            format!("the array length of key {}", show(key)),
            len,
            MAX_ARRAY_LEN,
        ));
    }
    let left = r.remaining();
    let need = len.saturating_mul(element_type.min_encoded_size());
    if need > left {
        return Err(GgufError::truncated(format!(
            "the array value of key {} ({len} elements of type {element_type} need at least \
             {need} bytes, {left} left in the file)",
            show(key)
        )));
    }
    Ok(())
}

/// Arrays may hold arrays, those may not: llama.cpp reads no deeper.
const MAX_ARRAY_DEPTH: u32 = 1;

/// Checks and skips the elements of an array value whose element type and length were just read.
fn skip_array<R: BufRead>(
    r: &mut Reader<R>,
    key: &str,
    element_type: ValueType,
    len: u64,
    depth: u32,
) -> Result<(), GgufError> {
    check_array_room(r, key, element_type, len)?;
    let need = len.saturating_mul(element_type.min_encoded_size());
    match element_type {
        ValueType::String => {
            for i in 0..len {
                let what = || format!("string {i} of the array value of key {}", show(key));
                let n = string_len(r, MAX_STRING_LEN, &what)?;
                r.skip(n).ctx(what)?;
            }
        }
        ValueType::Array => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::invalid(format!(
                    "key {} has arrays nested more than {MAX_ARRAY_DEPTH} level deep",
                    show(key)
                )));
            }
            for _ in 0..len {
                let inner_type = read_type(r, key, "nested array element type")?;
                let inner_len = r
                    .u64()
                    .ctx(|| format!("a nested array length of key {}", show(key)))?;
                skip_array(r, key, inner_type, inner_len, depth + 1)?;
            }
        }
        // `need` is exactly the size of the elements here, and it was checked against `left`.
        fixed => r
            .skip(need)
            .ctx(|| format!("the array value of key {} ({fixed})", show(key)))?,
    }
    Ok(())
}

/// The data alignment: `general.alignment` if present (a `uint32` power of two), else 32.
fn alignment(metadata: &[(String, MetadataValue)]) -> Result<u64, GgufError> {
    let Some((_, value)) = metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match *value {
        MetadataValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        MetadataValue::U32(a) => Err(GgufError::invalid(format!(
            "key '{ALIGNMENT_KEY}' is {a}, which is not a power of two"
        ))),
        ref other => Err(GgufError::invalid(format!(
            "key '{ALIGNMENT_KEY}' must be a uint32 but is {}",
            other.value_type()
        ))),
    }
}
