//! The tensor table and the layout of tensor data in the file.
//!
//! Shapes and types are checked as each entry is read; byte ranges are checked once the table is
//! read and the start of the data section is known.

use std::collections::HashSet;
use std::io::BufRead;

use super::error::GgufError;
use super::parse::{read_string_bytes, show};
use super::reader::{Context, Reader};
use super::types::{ggml_type, GgmlTypeLookup};
use super::{TensorInfo, MAX_DIMS, MAX_TENSOR_NAME_LEN};

/// The fewest bytes a tensor info takes: a one-byte name, its length, one dimension, the dimension
/// count, the type and the offset.
pub(crate) const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

/// Reads and checks `n_tensors` tensor infos.
pub(crate) fn read_table<R: BufRead>(
    r: &mut Reader<R>,
    n_tensors: u64,
    alignment: u64,
) -> Result<Vec<TensorInfo>, GgufError> {
    let left = r.remaining();
    let need = n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES);
    if need > left {
        return Err(GgufError::truncated(format!(
            "the tensor table ({n_tensors} tensors need at least {need} bytes, {left} left in the file)"
        )));
    }
    // Not `with_capacity(n_tensors)`: each push below is backed by bytes read.
    let mut tensors = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..n_tensors {
        let tensor = read_tensor(r, i, alignment)?;
        if !seen.insert(tensor.name.clone()) {
            return Err(GgufError::invalid(format!(
                "tensor name {} appears more than once",
                show(&tensor.name)
            )));
        }
        tensors.push(tensor);
    }
    Ok(tensors)
}

fn read_tensor<R: BufRead>(
    r: &mut Reader<R>,
    index: u64,
    alignment: u64,
) -> Result<TensorInfo, GgufError> {
    let name = read_name(r, index)?;
    let shown = show(&name);

    let n_dims = r.u32().ctx(|| format!("tensor {shown} dimension count"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::invalid(format!(
            "tensor {shown} has {n_dims} dimensions (must be 1 to {MAX_DIMS})"
        )));
    }
    let mut dims = Vec::new();
    let mut n_elements: u64 = 1;
    for j in 0..n_dims {
        let dim = r.u64().ctx(|| format!("tensor {shown} dims"))?;
        if dim == 0 {
            return Err(GgufError::invalid(format!(
                "tensor {shown} has size 0 in dimension {j}"
            )));
        }
        dims.push(dim);
        n_elements = n_elements
            .checked_mul(dim)
            .filter(|&n| i64::try_from(n).is_ok())
            .ok_or_else(|| {
                GgufError::invalid(format!(
                    "tensor {shown} has shape {dims:?}, whose element count overflows a 64-bit integer"
                ))
            })?;
    }

    let type_id = r.u32().ctx(|| format!("tensor {shown} type"))?;
    let ty = match ggml_type(type_id) {
        GgmlTypeLookup::Known(ty) => ty,
        GgmlTypeLookup::Removed(why) => {
            return Err(GgufError::invalid(format!(
                "tensor {shown} has an unsupported ggml type: {why}"
            )))
        }
        GgmlTypeLookup::Unknown => {
            return Err(GgufError::invalid(format!(
                "tensor {shown} has unknown ggml type id {type_id}"
            )))
        }
    };
    let row = dims.first().copied().unwrap_or(1);
    if row.checked_rem(ty.block_size) != Some(0) {
        return Err(GgufError::invalid(format!(
            "tensor {shown} of type {} has rows of {row} elements, not a multiple of the block size {}",
            ty.name, ty.block_size
        )));
    }
    // n_elements is a multiple of the row length, hence of the block size.
    let size_bytes = n_elements
        .checked_div(ty.block_size)
        .and_then(|blocks| blocks.checked_mul(ty.type_size))
        .ok_or_else(|| {
            GgufError::invalid(format!(
                "tensor {shown} with shape {dims:?} of type {} has a byte size that overflows a \
                 64-bit integer",
                ty.name
            ))
        })?;

    let offset = r.u64().ctx(|| format!("tensor {shown} offset"))?;
    if offset.checked_rem(alignment) != Some(0) {
        return Err(GgufError::invalid(format!(
            "tensor {shown} has data offset {offset}, not a multiple of the alignment {alignment}"
        )));
    }

    Ok(TensorInfo {
        name,
        dims,
        ggml_type: type_id,
        type_name: ty.name,
        offset,
        size_bytes,
    })
}

fn read_name<R: BufRead>(r: &mut Reader<R>, index: u64) -> Result<String, GgufError> {
    let what = || format!("the name of tensor {index}");
    // The cap is ggml's, a format rule rather than a resource limit: report it as invalid.
    let bytes = match read_string_bytes(r, MAX_TENSOR_NAME_LEN, &what) {
        Err(GgufError::LimitExceeded { value, .. }) => {
            return Err(GgufError::invalid(format!(
                "tensor {index} has a name of {value} bytes (ggml allows at most \
                 {MAX_TENSOR_NAME_LEN})"
            )))
        }
        other => other?,
    };
    if bytes.is_empty() {
        return Err(GgufError::invalid(format!(
            "tensor {index} has an empty name"
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| GgufError::invalid(format!("tensor {index} has a name that is not UTF-8")))
}

/// Checks where the tensor data lies and returns the start of the data section.
///
/// `header_end` is the file position after the tensor table. The data section starts there,
/// rounded up to `alignment` when there are tensors (as llama.cpp does). Every tensor must lie
/// inside the file, no two may overlap, and, as llama.cpp requires, they must be packed in table
/// order, each padded to the alignment.
pub(crate) fn check_layout(
    tensors: &[TensorInfo],
    header_end: u64,
    alignment: u64,
    file_size: u64,
) -> Result<u64, GgufError> {
    if tensors.is_empty() {
        return Ok(header_end);
    }
    let data_offset = align_up(header_end, alignment).ok_or_else(|| {
        GgufError::invalid("the tensor data section starts beyond 2^64 bytes".to_string())
    })?;
    if data_offset > file_size {
        return Err(GgufError::truncated(format!(
            "the padding before the tensor data (data starts at byte {data_offset}, the file has \
             {file_size} bytes)"
        )));
    }

    let mut ranges = Vec::new();
    for (index, t) in tensors.iter().enumerate() {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size_bytes));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(GgufError::invalid(format!(
                "tensor {} has data offset {} past the 64-bit range",
                show(&t.name),
                t.offset
            )));
        };
        if end > file_size {
            return Err(GgufError::truncated(format!(
                "the data of tensor {} (bytes {start}..{end}, the file has {file_size} bytes)",
                show(&t.name)
            )));
        }
        ranges.push((start, end, index));
    }

    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = *pair {
            if end_a > start_b {
                return Err(GgufError::invalid(format!(
                    "the data of tensors {} and {} overlap at bytes {start_b}..{end_a}",
                    name_of(tensors, a),
                    name_of(tensors, b),
                )));
            }
        }
    }

    let mut expected: u64 = 0;
    for t in tensors {
        if t.offset != expected {
            return Err(GgufError::invalid(format!(
                "tensor {} has data offset {}, but llama.cpp expects {expected}: tensor data must \
                 be packed in table order, each padded to the alignment {alignment}",
                show(&t.name),
                t.offset
            )));
        }
        expected = align_up(t.size_bytes, alignment)
            .and_then(|padded| expected.checked_add(padded))
            .ok_or_else(|| {
                GgufError::invalid(format!(
                    "tensor {} ends past the 64-bit range once padded",
                    show(&t.name)
                ))
            })?;
    }
    Ok(data_offset)
}

fn name_of(tensors: &[TensorInfo], index: usize) -> String {
    tensors
        .get(index)
        .map_or_else(|| format!("#{index}"), |t| show(&t.name))
}

/// `value` rounded up to a multiple of `alignment` (non-zero), or `None` on overflow.
fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    value.checked_add(mask).map(|v| v / alignment * alignment)
}
