// The search path of binidx for a batch of queries, one query per OpenMP task:
//   coarse probe selection -> per-bucket 4-bit query quantisation -> code scan
//   (simd_kernels.h) -> select the n_rerank best estimates -> exact float rerank -> top k.
// Queries are independent, so results never depend on the number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef BINIDX_HAVE_OPENMP
#include <omp.h>
#endif

#include "simd_kernels.h"

namespace binidx {

enum Metric { METRIC_L2 = 0, METRIC_IP = 1 };

// Read-only view of an index, assembled by the Cython layer from NumPy arrays.
struct IndexView {
    int64_t dim;
    int64_t n_bits;
    int n_words;
    int metric;
    int64_t n_lists;
    const float* centroids_t;        // (dim, n_lists): centroids, transposed
    const float* centroid_norms;     // (n_lists,): squared norms of the centroids
    const float* centroids_rot;      // (n_lists, n_bits): P c, used by l2
    const float* projection_t;       // (dim, n_bits): P, transposed
    const uint64_t* const* codes;    // per bucket: (blocks, n_words, 8), see simd_kernels.h
    const float* const* factors;     // per bucket: (blocks, 2, 8)
    const int32_t* const* slots;     // per bucket: (size,)
    const int64_t* sizes;            // (n_lists,)
    const float* vectors;            // (capacity, dim), indexed by slot
    const int64_t* slot_ids;         // (capacity,), external id of each slot
    const uint8_t* allowed;          // (capacity,) 0/1 per slot, or null: no filter
    const int64_t* death;            // (capacity,) write batch that removed the slot, or null
    int64_t epoch;                   // the snapshot's batch: slots with death <= epoch are gone
};

struct Result {
    float key;
    int64_t id;
};

// A function object, not a function: std::partial_sort then inlines it.
struct ResultLess {
    bool operator()(const Result& a, const Result& b) const {
        return a.key < b.key || (a.key == b.key && a.id < b.id);
    }
};
static const ResultLess result_less{};

// Per-thread scratch space, reused across the queries a thread handles.
struct Workspace {
    std::vector<Candidate> coarse;  // (coarse key, bucket)
    std::vector<float> dots, qrot, w;
    std::vector<uint64_t> planes;
    std::vector<Candidate> cands;
    std::vector<Result> results;

    void reserve(const IndexView& v) {
        coarse.resize((size_t)v.n_lists);
        dots.resize((size_t)v.n_lists);
        qrot.resize((size_t)v.n_bits);
        w.resize((size_t)v.n_bits);
        planes.resize(4 * (size_t)v.n_words);
    }
};

// Prefetch the first prefetch_distance() blocks of a bucket (codes, factors, slots); the
// scan prefetches the rest, that far ahead.
static inline __attribute__((always_inline)) void prefetch_bucket_start(
        const uint64_t* codes, const float* factors, const int32_t* slots, int64_t size,
        int n_words) {
    const int64_t blocks = std::min<int64_t>(prefetch_distance(n_words), (size + BLOCK - 1) / BLOCK);
    prefetch_range(codes, blocks * n_words * BLOCK * 8);
    prefetch_range(factors, blocks * 2 * BLOCK * 4);
    prefetch_range(slots, blocks * BLOCK * 4);
}

// Exact keys (squared l2, or -inner product) and ids of the r candidates of query q.  The
// rows are prefetched RERANK_AHEAD candidates in advance, so that many cache misses are in
// flight at once.
static const int64_t RERANK_AHEAD = 8;

static inline __attribute__((always_inline)) void prefetch_candidate(const IndexView& v,
                                                                     Candidate c) {
    const int32_t s = candidate_slot(c);
    prefetch_range(v.vectors + (int64_t)s * v.dim, v.dim * 4);
    __builtin_prefetch(v.slot_ids + s);  // a random 8-byte read: a miss of its own
}

static void rerank(const IndexView& v, const Kernels& K, const float* q, const Candidate* cands,
                   int64_t r, Result* out) {
    const int64_t dim = v.dim;
    const bool l2 = v.metric == METRIC_L2;
    for (int64_t i = 0; i < std::min(RERANK_AHEAD, r); ++i) prefetch_candidate(v, cands[i]);
    for (int64_t i = 0; i < r; ++i) {
        if (i + RERANK_AHEAD < r) prefetch_candidate(v, cands[i + RERANK_AHEAD]);
        const int32_t s = candidate_slot(cands[i]);
        const float* vec = v.vectors + (int64_t)s * dim;
        const float key = l2 ? K.l2(q, vec, dim) : -K.dot(q, vec, dim);
        out[i] = Result{key, v.slot_ids[s]};
    }
}

// Search one query.  out_d / out_i have room for k results.
static void search_one(const IndexView& v, const Kernels& K, const float* q, int n_probe,
                       int64_t n_rerank, int k, Workspace& ws, float* out_d, int64_t* out_i) {
    const int64_t dim = v.dim;
    const bool l2 = v.metric == METRIC_L2;

    // 1. Coarse quantiser: the n_probe nearest (l2) or best-scoring (ip) centroids.
    //    ||q - c||^2 = ||q||^2 + ||c||^2 - 2 <q, c>, all <q, c> in one mat-vec.
    K.matvec_t(v.centroids_t, q, dim, v.n_lists, ws.dots.data());
    const float qnorm = l2 ? K.dot(q, q, dim) : 0.0f;
    for (int64_t c = 0; c < v.n_lists; ++c) {
        const float key = l2 ? std::max(0.0f, qnorm + v.centroid_norms[c] - 2.0f * ws.dots[(size_t)c])
                             : -ws.dots[(size_t)c];
        ws.dots[(size_t)c] = key;  // kept for the estimator constants of the bucket
        ws.coarse[(size_t)c] = make_candidate(key, (int32_t)c);
    }
    const int64_t np = std::min<int64_t>(n_probe, v.n_lists);
    if (np < v.n_lists)
        std::nth_element(ws.coarse.begin(), ws.coarse.begin() + np, ws.coarse.end());
    std::sort(ws.coarse.begin(), ws.coarse.begin() + np);

    // 2. Rotate the query once: qrot = P q.
    K.matvec_t(v.projection_t, q, dim, v.n_bits, ws.qrot.data());

    // Candidates are kept in a buffer of 4 * n_rerank entries (at least 256): when it is full, the
    // n_rerank best stay and the worst of them becomes the admission threshold, so most
    // estimates of far buckets cost one comparison (amortised O(1) per scanned code).  The
    // scan itself applies the threshold (scan_admit) and may overshoot cap by up to a block.
    const int64_t keep = std::max<int64_t>(n_rerank, 1);
    const size_t cap = std::max<size_t>(4 * (size_t)keep, 256);
    if (ws.cands.size() < cap + BLOCK) ws.cands.resize(cap + BLOCK);
    AdmitTarget admit{ws.cands.data(), 0, (int64_t)cap, std::numeric_limits<float>::infinity(),
                      v.allowed, v.death, v.epoch};

    ScanConsts consts;
    if (!l2) {
        // Inner product: the estimate uses P q itself, quantised once per query.
        K.quantize(ws.qrot.data(), nullptr, ws.w.data(), v.n_bits, v.n_words, ws.planes.data(),
                   &consts);
        consts.alpha = -1.0f;
        consts.gamma = 0.0f;
    }

    // 3. Scan the probed buckets.  Buckets live at scattered addresses: the scan of one
    //    prefetches the start of the next (admit.next), and the rotated centroid of the
    //    next is prefetched here.
    if (np > 0) {
        const int32_t b0 = candidate_slot(ws.coarse[0]);
        prefetch_bucket_start(v.codes[b0], v.factors[b0], v.slots[b0], v.sizes[b0], v.n_words);
        if (l2) prefetch_range(v.centroids_rot + (int64_t)b0 * v.n_bits, v.n_bits * 4);
    }
    for (int64_t p = 0; p < np; ++p) {
        admit.next = NextBucket{};
        if (p + 1 < np) {
            const int32_t nb = candidate_slot(ws.coarse[(size_t)p + 1]);
            admit.next = NextBucket{v.codes[nb], v.factors[nb], v.slots[nb],
                                    (v.sizes[nb] + BLOCK - 1) / BLOCK};
            if (l2) prefetch_range(v.centroids_rot + (int64_t)nb * v.n_bits, v.n_bits * 4);
        }
        const int32_t b = candidate_slot(ws.coarse[(size_t)p]);
        const int64_t size = v.sizes[b];
        if (size == 0) continue;
        if (l2) {
            const float* cr = v.centroids_rot + (int64_t)b * v.n_bits;
            K.quantize(ws.qrot.data(), cr, ws.w.data(), v.n_bits, v.n_words, ws.planes.data(),
                       &consts);
            consts.alpha = -2.0f;
            consts.beta = ws.dots[(size_t)b];  // ||q - c||^2
            consts.gamma = 1.0f;
        } else {
            consts.beta = ws.dots[(size_t)b];  // -<q, c>
        }
        const int64_t n_blocks = (size + BLOCK - 1) / BLOCK;
        for (int64_t blk = 0; blk < n_blocks;) {
            blk = K.scan_admit(v.codes[b], v.factors[b], v.slots[b], size, blk, v.n_words,
                               ws.planes.data(), &consts, &admit);
            if (admit.m >= admit.cap) {
                std::nth_element(ws.cands.begin(), ws.cands.begin() + (keep - 1),
                                 ws.cands.begin() + admit.m);
                admit.threshold = candidate_key(ws.cands[(size_t)(keep - 1)]);
                admit.m = keep;
            }
        }
    }
    const int64_t m = admit.m;

    // 4. Keep the n_rerank best estimates.
    int64_t r = std::min(keep, m);
    if (r < m)
        std::nth_element(ws.cands.begin(), ws.cands.begin() + r, ws.cands.begin() + m);

    // 5. Exact rerank with the float vectors.
    ws.results.resize((size_t)r);
    rerank(v, K, q, ws.cands.data(), r, ws.results.data());

    // 6. Top k, best first, ties broken by the smaller id.
    const int64_t kk = std::min<int64_t>(k, r);
    std::partial_sort(ws.results.begin(), ws.results.begin() + kk, ws.results.begin() + r,
                      result_less);
    for (int64_t i = 0; i < kk; ++i) {
        out_d[i] = l2 ? ws.results[(size_t)i].key : -ws.results[(size_t)i].key;
        out_i[i] = ws.results[(size_t)i].id;
    }
    const float pad = l2 ? std::numeric_limits<float>::infinity()
                         : -std::numeric_limits<float>::infinity();
    for (int64_t i = kk; i < k; ++i) {
        out_d[i] = pad;
        out_i[i] = -1;
    }
}

static void search_batch(const IndexView& v, const Kernels& K, const float* queries, int64_t nq,
                         int n_probe, int64_t n_rerank, int k, int n_threads, float* out_d,
                         int64_t* out_i) {
    if (n_threads <= 1 || nq == 1) {
        // No parallel region: starting one costs microseconds, a lot for a single query.
        Workspace ws;
        ws.reserve(v);
        for (int64_t i = 0; i < nq; ++i)
            search_one(v, K, queries + i * v.dim, n_probe, n_rerank, k, ws, out_d + i * k,
                       out_i + i * k);
        return;
    }
#ifdef BINIDX_HAVE_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        Workspace ws;
        ws.reserve(v);
#ifdef BINIDX_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t i = 0; i < nq; ++i) {
            search_one(v, K, queries + i * v.dim, n_probe, n_rerank, k, ws, out_d + i * k,
                       out_i + i * k);
        }
    }
}

// Exact search restricted to the given slots (a selective filter): every listed vector is
// compared with every query, no codes involved.  Same output convention as search_batch.
static void search_subset(const IndexView& v, const Kernels& K, const float* queries, int64_t nq,
                          const int32_t* subset, int64_t m, int k, int n_threads, float* out_d,
                          int64_t* out_i) {
    const bool l2 = v.metric == METRIC_L2;
    const int64_t dim = v.dim;
#ifdef BINIDX_HAVE_OPENMP
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && nq > 1)
#endif
    {
        std::vector<Result> results((size_t)m);
#ifdef BINIDX_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t qi = 0; qi < nq; ++qi) {
            const float* q = queries + qi * dim;
            for (int64_t i = 0; i < m; ++i) {
                if (i + 8 < m) __builtin_prefetch(v.vectors + (int64_t)subset[i + 8] * dim);
                const float* vec = v.vectors + (int64_t)subset[i] * dim;
                const float key = l2 ? K.l2(q, vec, dim) : -K.dot(q, vec, dim);
                results[(size_t)i] = Result{key, v.slot_ids[subset[i]]};
            }
            const int64_t kk = std::min<int64_t>(k, m);
            std::partial_sort(results.begin(), results.begin() + kk, results.begin() + m,
                              result_less);
            for (int64_t i = 0; i < kk; ++i) {
                out_d[qi * k + i] = l2 ? results[(size_t)i].key : -results[(size_t)i].key;
                out_i[qi * k + i] = results[(size_t)i].id;
            }
            const float pad = l2 ? std::numeric_limits<float>::infinity()
                                 : -std::numeric_limits<float>::infinity();
            for (int64_t i = kk; i < k; ++i) {
                out_d[qi * k + i] = pad;
                out_i[qi * k + i] = -1;
            }
        }
    }
    (void)n_threads;
}

}  // namespace binidx
