//! The ggml tensor type table: block size and bytes per block of every type id.
//!
//! Copied from `type_traits` in llama.cpp's `ggml/src/ggml.c` (vendored by llama-cpp-sys-2 0.1.161);
//! the block byte sizes are `sizeof(block_*)` from `ggml-common.h`, measured with the C compiler.
//! Removed ids (Q4_2, Q4_3, the Q4_0/IQ4_NL interleaved repacks) have no size in ggml and are
//! rejected here with the reason llama.cpp gives.

/// Size facts of one ggml tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    /// The type id stored in GGUF tensor infos.
    pub id: u32,
    /// ggml's short name, e.g. `"q4_0"`.
    pub name: &'static str,
    /// Elements per block; a row (`dims[0]`) must be a multiple of it.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

/// What a type id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlTypeLookup {
    /// A type llama.cpp can load.
    Known(GgmlType),
    /// An id whose support was removed from GGUF files; the text says what replaced it.
    Removed(&'static str),
    /// An id ggml never defined.
    Unknown,
}

/// Looks up a ggml type id.
pub fn ggml_type(id: u32) -> GgmlTypeLookup {
    let index = match usize::try_from(id) {
        Ok(i) => i,
        Err(_) => return GgmlTypeLookup::Unknown,
    };
    match TABLE.get(index) {
        Some(Entry::Known(name, block_size, type_size)) => GgmlTypeLookup::Known(GgmlType {
            id,
            name,
            block_size: *block_size,
            type_size: *type_size,
        }),
        Some(Entry::Removed(why)) => GgmlTypeLookup::Removed(why),
        None => GgmlTypeLookup::Unknown,
    }
}

/// Elements per block of the K-quants and most i-quants.
const QK_K: u64 = 256;

enum Entry {
    /// name, elements per block, bytes per block
    Known(&'static str, u64, u64),
    Removed(&'static str),
}

use Entry::{Known, Removed};

/// Indexed by type id; ids past the end are unknown.
const TABLE: [Entry; 43] = [
    Known("f32", 1, 4),                                                         // 0
    Known("f16", 1, 2),                                                         // 1
    Known("q4_0", 32, 18),                                                      // 2
    Known("q4_1", 32, 20),                                                      // 3
    Removed("Q4_2 (type 4) support has been removed from ggml"),                // 4
    Removed("Q4_3 (type 5) support has been removed from ggml"),                // 5
    Known("q5_0", 32, 22),                                                      // 6
    Known("q5_1", 32, 24),                                                      // 7
    Known("q8_0", 32, 34),                                                      // 8
    Known("q8_1", 32, 36),                                                      // 9
    Known("q2_K", QK_K, 84),                                                    // 10
    Known("q3_K", QK_K, 110),                                                   // 11
    Known("q4_K", QK_K, 144),                                                   // 12
    Known("q5_K", QK_K, 176),                                                   // 13
    Known("q6_K", QK_K, 210),                                                   // 14
    Known("q8_K", QK_K, 292),                                                   // 15
    Known("iq2_xxs", QK_K, 66),                                                 // 16
    Known("iq2_xs", QK_K, 74),                                                  // 17
    Known("iq3_xxs", QK_K, 98),                                                 // 18
    Known("iq1_s", QK_K, 50),                                                   // 19
    Known("iq4_nl", 32, 18),                                                    // 20
    Known("iq3_s", QK_K, 110),                                                  // 21
    Known("iq2_s", QK_K, 82),                                                   // 22
    Known("iq4_xs", QK_K, 136),                                                 // 23
    Known("i8", 1, 1),                                                          // 24
    Known("i16", 1, 2),                                                         // 25
    Known("i32", 1, 4),                                                         // 26
    Known("i64", 1, 8),                                                         // 27
    Known("f64", 1, 8),                                                         // 28
    Known("iq1_m", QK_K, 56),                                                   // 29
    Known("bf16", 1, 2),                                                        // 30
    Removed("Q4_0_4_4 (type 31) was removed, use Q4_0 with runtime repacking"), // 31
    Removed("Q4_0_4_8 (type 32) was removed, use Q4_0 with runtime repacking"), // 32
    Removed("Q4_0_8_8 (type 33) was removed, use Q4_0 with runtime repacking"), // 33
    Known("tq1_0", QK_K, 54),                                                   // 34
    Known("tq2_0", QK_K, 66),                                                   // 35
    Removed("IQ4_NL_4_4 (type 36) was removed, use IQ4_NL with runtime repacking"), // 36
    Removed("IQ4_NL_4_8 (type 37) was removed, use IQ4_NL with runtime repacking"), // 37
    Removed("IQ4_NL_8_8 (type 38) was removed, use IQ4_NL with runtime repacking"), // 38
    Known("mxfp4", 32, 17),                                                     // 39
    Known("nvfp4", 64, 36),                                                     // 40
    Known("q1_0", 128, 18),                                                     // 41
    Known("q2_0", 64, 18),                                                      // 42
];
