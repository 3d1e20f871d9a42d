//! A safe handle on one hnswlib graph (vendored C++, `cpp/hnsw.cpp` is its C interface).
//!
//! Cosine spaces store unit vectors and search by inner product (distance `1 - cos`); Euclidean
//! spaces use squared distances. Keys are record ids. Changes need `&mut self`, searches `&self`:
//! hnswlib lets searches run concurrently with each other but not with changes, which is what
//! the memory's `RwLock` around its indexes gives.
#![allow(unsafe_code)] // FFI to the C++ index; every call is wrapped here and nowhere else.

use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use crate::vector::Metric;

#[repr(C)]
struct RawIndex {
    _private: [u8; 0],
}

type KeepFn = unsafe extern "C" fn(context: *mut c_void, key: u64) -> c_int;

type SearchFn = unsafe extern "C" fn(
    index: *const RawIndex,
    query: *const f32,
    count: usize,
    keep: Option<KeepFn>,
    context: *mut c_void,
    keys: *mut u64,
    distances: *mut f32,
    error: *mut c_char,
    error_len: usize,
) -> c_long;

extern "C" {
    fn tabagent_hnsw_kernels() -> *const c_char;
    fn tabagent_hnsw_new(
        dimensions: usize,
        metric: c_int,
        capacity: usize,
        m: usize,
        ef_construction: usize,
        ef_search: usize,
        error: *mut c_char,
        error_len: usize,
    ) -> *mut RawIndex;
    fn tabagent_hnsw_load(
        path: *const c_char,
        dimensions: usize,
        metric: c_int,
        ef_search: usize,
        error: *mut c_char,
        error_len: usize,
    ) -> *mut RawIndex;
    fn tabagent_hnsw_free(index: *mut RawIndex);
    fn tabagent_hnsw_save(
        index: *const RawIndex,
        path: *const c_char,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn tabagent_hnsw_add(
        index: *mut RawIndex,
        key: u64,
        vector: *const f32,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn tabagent_hnsw_remove(
        index: *mut RawIndex,
        key: u64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn tabagent_hnsw_search(
        index: *const RawIndex,
        query: *const f32,
        count: usize,
        keep: Option<KeepFn>,
        context: *mut c_void,
        keys: *mut u64,
        distances: *mut f32,
        error: *mut c_char,
        error_len: usize,
    ) -> c_long;
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    fn tabagent_hnsw_search_reference(
        index: *const RawIndex,
        query: *const f32,
        count: usize,
        keep: Option<KeepFn>,
        context: *mut c_void,
        keys: *mut u64,
        distances: *mut f32,
        error: *mut c_char,
        error_len: usize,
    ) -> c_long;
    fn tabagent_hnsw_get(index: *const RawIndex, key: u64, out: *mut f32) -> c_int;
    fn tabagent_hnsw_len(index: *const RawIndex) -> usize;
}

/// Room for the C++ side's error message.
struct ErrorBuffer([c_char; 256]);

impl ErrorBuffer {
    fn new() -> Self {
        Self([0; 256])
    }

    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }

    fn message(&self) -> String {
        // SAFETY: the buffer starts zeroed and the C++ side writes a NUL-terminated message
        // that fits it (it truncates), so there is always a terminator inside.
        unsafe { CStr::from_ptr(self.0.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }
}

/// What went wrong inside the index.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HnswError(String);

/// Graph parameters fixed when an index is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub dimensions: usize,
    pub metric: Metric,
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
}

/// One HNSW graph of `f32` vectors keyed by `u64`.
pub(crate) struct Hnsw {
    raw: NonNull<RawIndex>,
    dimensions: usize,
    metric: Metric,
}

// SAFETY: the C++ index has no thread affinity. Shared references only reach its thread-safe
// calls (search, get, len, save); changes take `&mut self`.
unsafe impl Send for Hnsw {}
// SAFETY: as above.
unsafe impl Sync for Hnsw {}

impl Drop for Hnsw {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `tabagent_hnsw_new`/`_load` and is freed only here.
        unsafe { tabagent_hnsw_free(self.raw.as_ptr()) }
    }
}

fn metric_code(metric: Metric) -> c_int {
    match metric {
        Metric::Cosine => 0,
        Metric::Euclidean => 1,
    }
}

fn path_string(path: &Path) -> Result<CString, HnswError> {
    CString::new(path.to_string_lossy().into_owned())
        .map_err(|_| HnswError(format!("path {} holds a NUL byte", path.display())))
}

/// The distance kernels this CPU runs (`avx512`, `avx2` or `portable`).
pub(crate) fn kernels() -> &'static str {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(tabagent_hnsw_kernels()) }
        .to_str()
        .unwrap_or("unknown")
}

impl Hnsw {
    /// An empty index with room for `capacity` vectors before it grows.
    pub(crate) fn new(shape: Shape, capacity: usize) -> Result<Self, HnswError> {
        let mut error = ErrorBuffer::new();
        // SAFETY: plain values in, an owned pointer or null out.
        let raw = unsafe {
            tabagent_hnsw_new(
                shape.dimensions,
                metric_code(shape.metric),
                capacity.max(1),
                shape.connectivity,
                shape.expansion_add,
                shape.expansion_search,
                error.ptr(),
                256,
            )
        };
        Self::wrap(raw, &error, shape)
    }

    /// An index saved by [`Hnsw::save`]; refused when it was saved with another width.
    pub(crate) fn load(path: &Path, shape: Shape) -> Result<Self, HnswError> {
        let path = path_string(path)?;
        let mut error = ErrorBuffer::new();
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let raw = unsafe {
            tabagent_hnsw_load(
                path.as_ptr(),
                shape.dimensions,
                metric_code(shape.metric),
                shape.expansion_search,
                error.ptr(),
                256,
            )
        };
        Self::wrap(raw, &error, shape)
    }

    fn wrap(raw: *mut RawIndex, error: &ErrorBuffer, shape: Shape) -> Result<Self, HnswError> {
        match NonNull::new(raw) {
            Some(raw) => Ok(Self {
                raw,
                dimensions: shape.dimensions,
                metric: shape.metric,
            }),
            None => Err(HnswError(error.message())),
        }
    }

    /// Writes the whole index to `path`.
    pub(crate) fn save(&self, path: &Path) -> Result<(), HnswError> {
        let path = path_string(path)?;
        let mut error = ErrorBuffer::new();
        // SAFETY: `raw` is live; `path` is NUL-terminated.
        let rc = unsafe { tabagent_hnsw_save(self.raw.as_ptr(), path.as_ptr(), error.ptr(), 256) };
        if rc == 0 {
            Ok(())
        } else {
            Err(HnswError(error.message()))
        }
    }

    fn check_width(&self, vector: &[f32]) -> Result<(), HnswError> {
        if vector.len() == self.dimensions {
            Ok(())
        } else {
            Err(HnswError(format!(
                "a vector of {} numbers for an index of {}",
                vector.len(),
                self.dimensions
            )))
        }
    }

    /// What the index stores for `vector`: its direction for cosine, itself for Euclidean.
    fn stored_form<'a>(&self, vector: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        match self.metric {
            Metric::Cosine => std::borrow::Cow::Owned(unit(vector)),
            Metric::Euclidean => std::borrow::Cow::Borrowed(vector),
        }
    }

    /// Adds `key`, or replaces its vector when it is already there.
    pub(crate) fn add(&mut self, key: u64, vector: &[f32]) -> Result<(), HnswError> {
        self.check_width(vector)?;
        let stored = self.stored_form(vector);
        let mut error = ErrorBuffer::new();
        // SAFETY: exclusive access; `stored` holds `dimensions` floats, as checked.
        let rc =
            unsafe { tabagent_hnsw_add(self.raw.as_ptr(), key, stored.as_ptr(), error.ptr(), 256) };
        if rc == 0 {
            Ok(())
        } else {
            Err(HnswError(error.message()))
        }
    }

    /// Removes `key`; whether it was there.
    pub(crate) fn remove(&mut self, key: u64) -> Result<bool, HnswError> {
        let mut error = ErrorBuffer::new();
        // SAFETY: exclusive access.
        let rc = unsafe { tabagent_hnsw_remove(self.raw.as_ptr(), key, error.ptr(), 256) };
        match rc {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(HnswError(error.message())),
        }
    }

    /// The `count` nearest keys accepted by `keep`, nearest first, with their distances
    /// (`1 - cos` or squared Euclidean).
    pub(crate) fn search(
        &self,
        query: &[f32],
        count: usize,
        keep: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<(u64, f32)>, HnswError> {
        self.search_with(tabagent_hnsw_search, query, count, keep)
    }

    fn search_with(
        &self,
        how: SearchFn,
        query: &[f32],
        count: usize,
        keep: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<(u64, f32)>, HnswError> {
        self.check_width(query)?;
        // Never more than the index holds: `count` sizes the buffers below.
        let count = count.min(self.len());
        if count == 0 {
            return Ok(Vec::new());
        }
        let query = self.stored_form(query);
        let mut keys = vec![0u64; count];
        let mut distances = vec![0f32; count];
        let mut error = ErrorBuffer::new();
        let mut keep = keep;
        let (callback, context): (Option<KeepFn>, *mut c_void) = match keep.as_mut() {
            Some(keep) => (
                Some(call_keep),
                keep as *mut &dyn Fn(u64) -> bool as *mut c_void,
            ),
            None => (None, std::ptr::null_mut()),
        };
        // SAFETY: `raw` is live; `query` holds `dimensions` floats; `keys` and `distances` hold
        // `count` slots, the most the C++ side writes; `context` points at `keep`, which
        // outlives the call, and is only read by `call_keep`.
        let found = unsafe {
            how(
                self.raw.as_ptr(),
                query.as_ptr(),
                count,
                callback,
                context,
                keys.as_mut_ptr(),
                distances.as_mut_ptr(),
                error.ptr(),
                256,
            )
        };
        let Ok(found) = usize::try_from(found) else {
            return Err(HnswError(error.message()));
        };
        Ok(keys.into_iter().zip(distances).take(found).collect())
    }

    /// The vector stored for `key` (a unit vector in a cosine space).
    pub(crate) fn get(&self, key: u64) -> Option<Vec<f32>> {
        let mut out = vec![0f32; self.dimensions];
        // SAFETY: `out` holds `dimensions` floats, what the C++ side copies.
        let found = unsafe { tabagent_hnsw_get(self.raw.as_ptr(), key, out.as_mut_ptr()) };
        (found == 1).then_some(out)
    }

    /// Vectors in the index.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: `raw` is live.
        unsafe { tabagent_hnsw_len(self.raw.as_ptr()) }
    }
}

/// The filter trampoline: `context` is a `&&dyn Fn(u64) -> bool`.
unsafe extern "C" fn call_keep(context: *mut c_void, key: u64) -> c_int {
    // SAFETY: `search` passes a pointer to its `&dyn Fn` that lives for the whole call.
    let keep = unsafe { &*(context as *const &dyn Fn(u64) -> bool) };
    // A panic must not unwind into C++: treat it as "not kept".
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| keep(key))).unwrap_or(false) as c_int
}

/// `vector` scaled to length 1 (a zero vector stays zero).
pub(crate) fn unit(vector: &[f32]) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return vector.to_vec();
    }
    vector.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(metric: Metric) -> Shape {
        Shape {
            dimensions: 4,
            metric,
            connectivity: 8,
            expansion_add: 32,
            expansion_search: 32,
        }
    }

    #[test]
    fn finds_updates_removes_and_grows() {
        // Growing from 2 slots to 30,000 resizes many times, the last ones past 2 MiB, where
        // the base layer moves to huge pages: every vector must survive each move.
        let mut index = Hnsw::new(shape(Metric::Euclidean), 2).unwrap();
        for key in 0..30_000u64 {
            let x = key as f32;
            index.add(key, &[x, 0.0, 0.0, 0.0]).unwrap();
        }
        assert_eq!(index.len(), 30_000);
        for key in (0..30_000u64).step_by(997) {
            assert_eq!(index.get(key).unwrap(), [key as f32, 0.0, 0.0, 0.0]);
        }
        let near = index.search(&[1500.2, 0.0, 0.0, 0.0], 2, None).unwrap();
        assert_eq!(near.iter().map(|h| h.0).collect::<Vec<_>>(), [1500, 1501]);
        assert!(
            (near[0].1 - 0.04).abs() < 1e-3,
            "squared distance, got {}",
            near[0].1
        );

        index.add(1500, &[-50.0, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!(index.len(), 30_000, "replacing keeps one entry per key");
        assert_eq!(index.get(1500).unwrap(), [-50.0, 0.0, 0.0, 0.0]);
        let near = index.search(&[-49.0, 0.0, 0.0, 0.0], 1, None).unwrap();
        assert_eq!(near[0].0, 1500);

        assert!(index.remove(1500).unwrap());
        assert!(
            !index.remove(1500).unwrap(),
            "a second removal finds nothing"
        );
        assert!(!index.remove(99_999).unwrap());
        assert_eq!(index.len(), 29_999);
        assert!(index.get(1500).is_none());
        let near = index.search(&[-49.0, 0.0, 0.0, 0.0], 1, None).unwrap();
        assert_eq!(near[0].0, 0, "a removed key is never found");

        // A new key takes the removed one's slot; the old key stays gone.
        index.add(70_000, &[-60.0, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!(index.len(), 30_000);
        assert!(index.get(1500).is_none());
        assert_eq!(
            index.search(&[-59.0, 0.0, 0.0, 0.0], 1, None).unwrap()[0].0,
            70_000
        );
        // And the removed key can come back.
        index.add(1500, &[50_000.0, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!(
            index.search(&[49_999.0, 0.0, 0.0, 0.0], 1, None).unwrap()[0].0,
            1500
        );
    }

    #[test]
    fn filters_and_cosine() {
        let mut index = Hnsw::new(shape(Metric::Cosine), 16).unwrap();
        index.add(1, &[10.0, 0.0, 0.0, 0.0]).unwrap();
        index.add(2, &[1.0, 1.0, 0.0, 0.0]).unwrap();
        index.add(3, &[0.0, 0.0, 3.0, 0.0]).unwrap();
        let near = index.search(&[2.0, 0.1, 0.0, 0.0], 3, None).unwrap();
        assert_eq!(near.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(
            near[0].1 < 0.01 && (near[2].1 - 1.0).abs() < 1e-5,
            "1 - cos: {near:?}"
        );
        let odd = |key: u64| key % 2 == 1;
        let kept = index.search(&[1.0, 1.0, 0.0, 0.0], 3, Some(&odd)).unwrap();
        assert_eq!(kept.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 3]);
        let stored = index.get(1).unwrap();
        assert_eq!(
            stored,
            [1.0, 0.0, 0.0, 0.0],
            "cosine spaces keep directions"
        );
        assert!(index.search(&[1.0, 0.0], 1, None).is_err(), "wrong width");
        let all = index
            .search(&[1.0, 0.0, 0.0, 0.0], usize::MAX, None)
            .unwrap();
        assert_eq!(all.len(), 3, "a huge count is cut to what the index holds");
        assert!(index.add(9, &[1.0; 5]).is_err(), "wrong width");
    }

    #[test]
    fn saves_and_loads_and_refuses_another_width() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("index.hnsw");
        let mut index = Hnsw::new(shape(Metric::Euclidean), 4).unwrap();
        for key in 0..100u64 {
            index.add(key, &[key as f32, 1.0, 2.0, 3.0]).unwrap();
        }
        index.remove(7).unwrap();
        index.save(&file).unwrap();
        let loaded = Hnsw::load(&file, shape(Metric::Euclidean)).unwrap();
        assert_eq!(loaded.len(), 99);
        assert!(loaded.get(7).is_none());
        assert_eq!(loaded.get(8).unwrap(), [8.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            loaded.search(&[50.1, 1.0, 2.0, 3.0], 1, None).unwrap()[0].0,
            50
        );

        let wider = Shape {
            dimensions: 8,
            ..shape(Metric::Euclidean)
        };
        let refused = Hnsw::load(&file, wider)
            .err()
            .expect("another width is refused");
        assert!(refused.to_string().contains("width"), "{refused}");
        assert!(Hnsw::load(&dir.path().join("missing"), shape(Metric::Euclidean)).is_err());
    }

    #[test]
    fn search_answers_exactly_as_hnswlibs_own() {
        // Clustered pseudo-random vectors, some removed, searched with and without a filter:
        // the prefetching search must visit what hnswlib's visits and return the same.
        let dims = 24;
        let shape = Shape {
            dimensions: dims,
            metric: Metric::Cosine,
            connectivity: 8,
            expansion_add: 40,
            expansion_search: 24,
        };
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        let mut index = Hnsw::new(shape, 64).unwrap();
        let centres: Vec<Vec<f32>> = (0..12)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        for key in 0..3000u64 {
            let centre = &centres[key as usize % centres.len()];
            let v: Vec<f32> = centre.iter().map(|c| c + 0.3 * next()).collect();
            index.add(key, &v).unwrap();
        }
        let queries: Vec<Vec<f32>> = (0..150)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        let compare = |index: &Hnsw, keep: Option<&dyn Fn(u64) -> bool>| {
            for query in &queries {
                for count in [1, 10, 50] {
                    let ours = index.search(query, count, keep).unwrap();
                    let theirs = index
                        .search_with(tabagent_hnsw_search_reference, query, count, keep)
                        .unwrap();
                    assert_eq!(ours, theirs);
                    assert_eq!(ours.len(), count);
                }
            }
        };
        compare(&index, None);
        let thirds = |key: u64| key.is_multiple_of(3);
        compare(&index, Some(&thirds));
        for key in (0..3000u64).step_by(7) {
            index.remove(key).unwrap();
        }
        compare(&index, None);
        compare(&index, Some(&thirds));
    }

    #[test]
    fn kernels_are_named() {
        assert!(["avx512", "avx2", "portable"].contains(&kernels()));
    }
}
