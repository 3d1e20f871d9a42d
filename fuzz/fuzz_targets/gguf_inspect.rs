//! Fuzzes `tabagent_models::gguf::inspect_bytes`: no input may panic, abort, exhaust memory or
//! hang, and whenever it accepts a file, every tensor's bytes lie inside the file, aligned and
//! without overlap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabagent_models::gguf::inspect_bytes;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = inspect_bytes(data) else {
        return;
    };
    let len = data.len() as u64;
    assert_eq!(info.file_size, len);
    assert!(info.alignment.is_power_of_two());
    let mut ranges = Vec::with_capacity(info.tensors.len());
    for t in &info.tensors {
        let start = info.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= len && s % info.alignment == 0 => ranges.push((s, e)),
            _ => panic!("accepted tensor {:?} outside the file: {t:?} in {info:?}", t.name),
        }
        assert!(!t.dims.is_empty() && t.dims.len() <= 4 && !t.dims.contains(&0));
    }
    ranges.sort_unstable();
    assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0), "overlap in {info:?}");
});
