// A C interface to hnswlib for tabagent's vector index (crates/tabagent-memory/src/hnsw.rs).
//
// Every function catches C++ exceptions and reports them as a message, since unwinding across
// the FFI boundary is undefined. Mutating calls (add, remove, free) need the caller to hold the
// index exclusively; searches, reads and saves may run concurrently with each other (hnswlib
// gives each search its own visited list).
//
// Distances use kernels chosen at run time for the CPU (AVX-512, AVX2 + FMA, or portable code),
// instead of hnswlib's own, which pick their instruction set when compiled and so would tie the
// binary to the build machine's CPU or leave it at SSE.

// Not NO_MANUAL_VECTORIZATION: that would also drop hnswlib's prefetches (under USE_SSE, which
// x86-64's baseline gives), which its search depends on. Its own SSE distances are compiled but
// unused.
#include "hnswlib/hnswlib.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TABAGENT_X86_KERNELS 1
#include <immintrin.h>
#endif

namespace {

// Eight partial sums break the add-latency chain; compilers vectorize this shape without
// -ffast-math.
float dot_portable(const float *a, const float *b, size_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

float l2sq_portable(const float *a, const float *b, size_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float d = a[i + j] - b[i + j];
            s[j] += d * d;
        }
    float sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) {
        float d = a[i] - b[i];
        sum += d * d;
    }
    return sum;
}

#ifdef TABAGENT_X86_KERNELS
__attribute__((target("avx512f"))) float dot_avx512(const float *a, const float *b, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

__attribute__((target("avx512f"))) float l2sq_avx512(const float *a, const float *b, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        s0 = _mm512_fmadd_ps(d0, d0, s0);
        s1 = _mm512_fmadd_ps(d1, d1, s1);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        s0 = _mm512_fmadd_ps(d, d, s0);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < n; i++) {
        float d = a[i] - b[i];
        sum += d * d;
    }
    return sum;
}

__attribute__((target("avx2,fma"))) float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) float dot_avx2(const float *a, const float *b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

__attribute__((target("avx2,fma"))) float l2sq_avx2(const float *a, const float *b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        s0 = _mm256_fmadd_ps(d0, d0, s0);
        s1 = _mm256_fmadd_ps(d1, d1, s1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(d, d, s0);
    }
    float sum = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) {
        float d = a[i] - b[i];
        sum += d * d;
    }
    return sum;
}
#endif

// hnswlib calls a distance as f(a, b, param) with param pointing at the width. One function
// per kernel, picked once per space, so each call is a single indirect call with the kernel
// inlined in it (a dispatch inside every call cost ~20% of search time).
template <float (*Dot)(const float *, const float *, size_t)>
float inner_product_distance(const void *a, const void *b, const void *param) {
    return 1.0f - Dot(static_cast<const float *>(a), static_cast<const float *>(b),
                      *static_cast<const size_t *>(param));
}

template <float (*L2sq)(const float *, const float *, size_t)>
float l2sq_distance(const void *a, const void *b, const void *param) {
    return L2sq(static_cast<const float *>(a), static_cast<const float *>(b),
                *static_cast<const size_t *>(param));
}

struct Kernels {
    hnswlib::DISTFUNC<float> inner_product;
    hnswlib::DISTFUNC<float> l2sq;
    const char *name;
};

Kernels pick_kernels() {
#ifdef TABAGENT_X86_KERNELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return {inner_product_distance<dot_avx512>, l2sq_distance<l2sq_avx512>, "avx512"};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return {inner_product_distance<dot_avx2>, l2sq_distance<l2sq_avx2>, "avx2"};
#endif
    return {inner_product_distance<dot_portable>, l2sq_distance<l2sq_portable>, "portable"};
}

const Kernels &kernels() {
    static const Kernels chosen = pick_kernels();
    return chosen;
}

// metric 0: 1 - dot product (cosine, given unit vectors); metric 1: squared Euclidean.
class Space : public hnswlib::SpaceInterface<float> {
   public:
    Space(size_t dimensions, int metric)
        : dimensions_(dimensions),
          distance_(metric == 0 ? kernels().inner_product : kernels().l2sq) {}
    size_t get_data_size() override { return dimensions_ * sizeof(float); }
    hnswlib::DISTFUNC<float> get_dist_func() override { return distance_; }
    void *get_dist_func_param() override { return &dimensions_; }

   private:
    size_t dimensions_;
    hnswlib::DISTFUNC<float> distance_;
};

typedef int (*KeepFn)(void *context, uint64_t key);

class Filter : public hnswlib::BaseFilterFunctor {
   public:
    Filter(KeepFn keep, void *context) : keep_(keep), context_(context) {}
    bool operator()(hnswlib::labeltype key) override { return keep_(context_, key) != 0; }

   private:
    KeepFn keep_;
    void *context_;
};

// Moves the base layer (every vector with its links, the memory a search reads at random) onto
// 2 MiB pages where the kernel offers them on request (transparent huge pages in `madvise`
// mode, the common default). With 4 KiB pages nearly every vector a search visits costs a TLB
// miss, and in a virtual machine a miss is a two-level page walk: on 100k x 384 vectors this
// made searches ~1.4x faster. Best effort: any failure keeps the block where it is.
void place_base_layer(hnswlib::HierarchicalNSW<float> *g) {
#ifdef __linux__
    const size_t huge = size_t(2) << 20;
    size_t bytes = g->max_elements_ * g->size_data_per_element_;
    if (bytes < huge) return;
    size_t rounded = (bytes + huge - 1) & ~(huge - 1);
    void *block = nullptr;
    if (posix_memalign(&block, huge, rounded) != 0) return;
    madvise(block, rounded, MADV_HUGEPAGE);
    std::memcpy(block, g->data_level0_memory_, g->cur_element_count * g->size_data_per_element_);
    std::free(g->data_level0_memory_);
    g->data_level0_memory_ = static_cast<char *>(block);
#else
    (void)g;
#endif
}

inline void prefetch(const void *address) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(address, 0, 3);
#else
    (void)address;
#endif
}

typedef hnswlib::HierarchicalNSW<float> Graph;
typedef std::pair<float, hnswlib::tableint> Scored;
typedef std::priority_queue<Scored, std::vector<Scored>, Graph::CompareByFirst> Heap;

// hnswlib's searchKnn, step for step (the same nodes visited in the same order, so the same
// results), except in how it waits for memory. hnswlib prefetches one neighbour's vector while
// it scores the one before, so nearly every distance stalls on a cache miss; this first marks
// all unvisited neighbours of a node and prefetches every one of their vectors, then scores
// them, so the misses overlap. It also skips hnswlib's shared atomic statistics counters,
// which concurrent searches would fight over. `keep` may be null.
size_t search_prefetched(const Graph *g, const float *query, size_t k,
                         hnswlib::BaseFilterFunctor *keep, uint64_t *keys, float *distances) {
    if (g->cur_element_count == 0 || k == 0) return 0;
    hnswlib::DISTFUNC<float> distance = g->fstdistfunc_;
    void *param = g->dist_func_param_;

    hnswlib::tableint current = g->enterpoint_node_;
    float current_distance = distance(query, g->getDataByInternalId(current), param);
    for (int level = g->maxlevel_; level > 0; level--) {
        bool changed = true;
        while (changed) {
            changed = false;
            unsigned int *links = g->get_linklist(current, level);
            int count = g->getListCount(links);
            hnswlib::tableint *neighbours = reinterpret_cast<hnswlib::tableint *>(links + 1);
            for (int i = 0; i < count; i++) prefetch(g->getDataByInternalId(neighbours[i]));
            for (int i = 0; i < count; i++) {
                hnswlib::tableint candidate = neighbours[i];
                if (candidate > g->max_elements_) throw std::runtime_error("cand error");
                float d = distance(query, g->getDataByInternalId(candidate), param);
                if (d < current_distance) {
                    current_distance = d;
                    current = candidate;
                    changed = true;
                }
            }
        }
    }

    size_t ef = g->ef_ > k ? g->ef_ : k;
    bool bare = g->num_deleted_ == 0 && keep == nullptr;
    auto wanted = [&](hnswlib::tableint id) {
        return bare || (!g->isMarkedDeleted(id) && (keep == nullptr || (*keep)(g->getExternalLabel(id))));
    };

    hnswlib::VisitedList *visited_list = g->visited_list_pool_->getFreeVisitedList();
    hnswlib::vl_type *visited = visited_list->mass;
    hnswlib::vl_type tag = visited_list->curV;
    Heap top, candidates;
    float lower_bound;
    if (wanted(current)) {
        float d = distance(query, g->getDataByInternalId(current), param);
        lower_bound = d;
        top.emplace(d, current);
        candidates.emplace(-d, current);
    } else {
        lower_bound = std::numeric_limits<float>::max();
        candidates.emplace(-lower_bound, current);
    }
    visited[current] = tag;

    std::vector<hnswlib::tableint> fresh(g->maxM0_ + 1);
    while (!candidates.empty()) {
        Scored next = candidates.top();
        float candidate_distance = -next.first;
        bool stop = bare ? candidate_distance > lower_bound
                         : candidate_distance > lower_bound && top.size() == ef;
        if (stop) break;
        candidates.pop();

        int *links = reinterpret_cast<int *>(g->get_linklist0(next.second));
        size_t count = g->getListCount(reinterpret_cast<hnswlib::linklistsizeint *>(links));
        if (count > g->maxM0_) throw std::runtime_error("link list too long");
        size_t unvisited = 0;
        for (size_t j = 1; j <= count; j++) {
            hnswlib::tableint id = static_cast<hnswlib::tableint>(links[j]);
            if (visited[id] == tag) continue;
            visited[id] = tag;
            fresh[unvisited++] = id;
            prefetch(g->getDataByInternalId(id));
        }
        for (size_t j = 0; j < unvisited; j++) {
            hnswlib::tableint id = fresh[j];
            float d = distance(query, g->getDataByInternalId(id), param);
            if (top.size() < ef || lower_bound > d) {
                candidates.emplace(-d, id);
                prefetch(g->get_linklist0(candidates.top().second));
                if (wanted(id)) top.emplace(d, id);
                while (top.size() > ef) top.pop();
                if (!top.empty()) lower_bound = top.top().first;
            }
        }
    }
    g->visited_list_pool_->releaseVisitedList(visited_list);

    while (top.size() > k) top.pop();
    size_t found = top.size();
    for (size_t i = found; i-- > 0;) {
        keys[i] = g->getExternalLabel(top.top().second);
        distances[i] = top.top().first;
        top.pop();
    }
    return found;
}

void report(char *error, size_t error_len, const char *message) {
    if (error == nullptr || error_len == 0) return;
    size_t n = std::strlen(message);
    if (n >= error_len) n = error_len - 1;
    std::memcpy(error, message, n);
    error[n] = 0;
}

template <typename F>
int guarded(char *error, size_t error_len, F body) {
    try {
        body();
        return 0;
    } catch (const std::bad_alloc &) {
        report(error, error_len, "out of memory");
    } catch (const std::exception &e) {
        report(error, error_len, e.what());
    } catch (...) {
        report(error, error_len, "unknown C++ exception");
    }
    return -1;
}

}  // namespace

struct tabagent_hnsw {
    Space space;
    hnswlib::HierarchicalNSW<float> *graph;
    size_t dimensions;

    tabagent_hnsw(size_t dimensions, int metric) : space(dimensions, metric), graph(nullptr), dimensions(dimensions) {}
    ~tabagent_hnsw() { delete graph; }
};

extern "C" {

const char *tabagent_hnsw_kernels() { return kernels().name; }

tabagent_hnsw *tabagent_hnsw_new(size_t dimensions, int metric, size_t capacity, size_t m,
                                 size_t ef_construction, size_t ef_search, char *error,
                                 size_t error_len) {
    tabagent_hnsw *index = nullptr;
    int rc = guarded(error, error_len, [&] {
        index = new tabagent_hnsw(dimensions, metric);
        index->graph = new hnswlib::HierarchicalNSW<float>(&index->space, capacity, m,
                                                           ef_construction, 100, true);
        place_base_layer(index->graph);
        index->graph->setEf(ef_search);
    });
    if (rc != 0) {
        delete index;
        return nullptr;
    }
    return index;
}

tabagent_hnsw *tabagent_hnsw_load(const char *path, size_t dimensions, int metric,
                                  size_t ef_search, char *error, size_t error_len) {
    tabagent_hnsw *index = nullptr;
    int rc = guarded(error, error_len, [&] {
        index = new tabagent_hnsw(dimensions, metric);
        index->graph =
            new hnswlib::HierarchicalNSW<float>(&index->space, std::string(path), false, 0, true);
        // The file carries its own layout: refuse one written for another width.
        if (index->graph->label_offset_ != index->graph->offsetData_ + dimensions * sizeof(float))
            throw std::runtime_error("the saved index holds vectors of another width");
        place_base_layer(index->graph);
        index->graph->setEf(ef_search);
    });
    if (rc != 0) {
        delete index;
        return nullptr;
    }
    return index;
}

void tabagent_hnsw_free(tabagent_hnsw *index) { delete index; }

int tabagent_hnsw_save(const tabagent_hnsw *index, const char *path, char *error,
                       size_t error_len) {
    return guarded(error, error_len, [&] { index->graph->saveIndex(std::string(path)); });
}

// Adds or replaces `key`'s vector, reusing a deleted slot or growing the index when full.
int tabagent_hnsw_add(tabagent_hnsw *index, uint64_t key, const float *vector, char *error,
                      size_t error_len) {
    return guarded(error, error_len, [&] {
        auto *g = index->graph;
        bool known = false, deleted = false;
        {
            std::unique_lock<std::mutex> lock(g->label_lookup_lock);
            auto found = g->label_lookup_.find(key);
            if (found != g->label_lookup_.end()) {
                known = true;
                deleted = g->isMarkedDeleted(found->second);
            }
        }
        if (known) {
            // The key keeps its slot: one slot per key, so reusing a vacant slot never
            // unmaps a key that is still alive.
            if (deleted) g->unmarkDelete(key);
            g->addPoint(vector, key, false);
            return;
        }
        if (g->getDeletedCount() == 0 && g->getCurrentElementCount() >= g->getMaxElements()) {
            size_t grown = g->getMaxElements() * 2;
            g->resizeIndex(grown < 1024 ? 1024 : grown);
            place_base_layer(g);
        }
        g->addPoint(vector, key, true);
    });
}

// 1 when `key` was present and is now deleted, 0 when it was absent or already deleted.
int tabagent_hnsw_remove(tabagent_hnsw *index, uint64_t key, char *error, size_t error_len) {
    int removed = 0;
    int rc = guarded(error, error_len, [&] {
        auto *g = index->graph;
        bool alive = false;
        {
            std::unique_lock<std::mutex> lock(g->label_lookup_lock);
            auto found = g->label_lookup_.find(key);
            alive = found != g->label_lookup_.end() && !g->isMarkedDeleted(found->second);
        }
        if (alive) {
            g->markDelete(key);
            removed = 1;
        }
    });
    return rc != 0 ? rc : removed;
}

// Writes up to `count` keys and distances, nearest first; returns how many, or -1.
long tabagent_hnsw_search(const tabagent_hnsw *index, const float *query, size_t count,
                          KeepFn keep, void *context, uint64_t *keys, float *distances,
                          char *error, size_t error_len) {
    long found = 0;
    int rc = guarded(error, error_len, [&] {
        Filter filter(keep, context);
        found = static_cast<long>(search_prefetched(index->graph, query, count,
                                                    keep ? &filter : nullptr, keys, distances));
    });
    return rc != 0 ? -1 : found;
}

// hnswlib's own searchKnn, for tests that hold `tabagent_hnsw_search` to the same answers.
long tabagent_hnsw_search_reference(const tabagent_hnsw *index, const float *query, size_t count,
                                    KeepFn keep, void *context, uint64_t *keys,
                                    float *distances, char *error, size_t error_len) {
    long found = 0;
    int rc = guarded(error, error_len, [&] {
        Filter filter(keep, context);
        auto result = index->graph->searchKnn(query, count, keep ? &filter : nullptr);
        found = static_cast<long>(result.size());
        // hnswlib's queue pops the farthest first.
        for (long i = found - 1; i >= 0; i--) {
            keys[i] = result.top().second;
            distances[i] = result.top().first;
            result.pop();
        }
    });
    return rc != 0 ? -1 : found;
}

// Copies `key`'s stored vector into `out`: 1 when found, 0 when absent or deleted.
int tabagent_hnsw_get(const tabagent_hnsw *index, uint64_t key, float *out) {
    auto *g = index->graph;
    std::unique_lock<std::mutex> lock(g->label_lookup_lock);
    auto found = g->label_lookup_.find(key);
    if (found == g->label_lookup_.end() || g->isMarkedDeleted(found->second)) return 0;
    std::memcpy(out, g->getDataByInternalId(found->second), index->dimensions * sizeof(float));
    return 1;
}

// Vectors present (deleted ones not counted).
size_t tabagent_hnsw_len(const tabagent_hnsw *index) {
    return index->graph->getCurrentElementCount() - index->graph->getDeletedCount();
}

}  // extern "C"
