// The search path of binidx for a batch of queries, one query per OpenMP task:
//   coarse probe selection -> per-bucket 5-bit query quantisation -> code scan
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

#ifdef BINIDX_PROFILE
#include <x86intrin.h>
#endif

namespace binidx {

// Where a search's time goes, for profiling builds only (compiled with -DBINIDX_PROFILE,
// see benchmarks/micro/search_profile.py): time-stamp-counter cycles per phase and a few
// event counts, per thread, summed into prof_total when a batch ends.  perf is not
// available on the development machines, and these cost ~2% of a search.
enum ProfPhase {
    PROF_MATVEC, PROF_COARSE, PROF_ROTATE, PROF_DROP, PROF_QUANTIZE, PROF_SCAN, PROF_REFRESH, PROF_SELECT,
    PROF_RERANK, PROF_TOPK, PROF_GROUP, PROF_N_PHASES
};
enum ProfCount { PROF_QUERIES, PROF_PAIRS, PROF_CODES, PROF_ADMITTED, PROF_REFRESHES, PROF_N_COUNTS };
struct Profile {
    uint64_t cycles[PROF_N_PHASES];
    uint64_t counts[PROF_N_COUNTS];
};
static Profile prof_total{};
#ifdef BINIDX_PROFILE
static thread_local Profile prof_local{};
#define BINIDX_PROF_START(name) const uint64_t prof_t0_##name = __rdtsc()
#define BINIDX_PROF_STOP(name, phase) prof_local.cycles[phase] += __rdtsc() - prof_t0_##name
#define BINIDX_PROF_COUNT(what, n) (prof_local.counts[what] += (uint64_t)(n))
static inline void prof_flush() {
#pragma omp critical(binidx_prof)
    {
        for (int i = 0; i < PROF_N_PHASES; ++i) prof_total.cycles[i] += prof_local.cycles[i];
        for (int i = 0; i < PROF_N_COUNTS; ++i) prof_total.counts[i] += prof_local.counts[i];
    }
    prof_local = Profile{};
}
static inline uint64_t prof_tsc() { return __rdtsc(); }
static const bool PROFILING = true;
#else
#define BINIDX_PROF_START(name) ((void)0)
#define BINIDX_PROF_STOP(name, phase) ((void)0)
#define BINIDX_PROF_COUNT(what, n) ((void)0)
static inline void prof_flush() {}
static inline uint64_t prof_tsc() { return 0; }
static const bool PROFILING = false;
#endif

enum Metric { METRIC_L2 = 0, METRIC_IP = 1 };

// Read-only view of an index, assembled by the Cython layer from NumPy arrays.
struct IndexView {
    int64_t dim;
    int64_t n_bits;
    int n_words;
    int metric;
    int64_t n_lists;
    const float* centroids_t;        // (dim, n_lists): centroids, transposed; null when P
                                     // preserves inner products (n_bits >= dim): the coarse
                                     // step then uses <P q, P c> from centroids_rot
    const float* centroid_norms;     // (n_lists,): squared norms of the centroids
    const float* centroids_rot;      // (n_lists, n_bits): P c, used by l2
    const float* projection_t;       // (dim, n_bits): P, transposed
    const uint64_t* const* codes;    // per bucket: (blocks, n_words, 8), see simd_kernels.h
    const Factor* const* factors;    // per bucket: (blocks, 2, 8) bytes
    const float* factor_scales;      // (n_lists, 2): the step of bucket b's a and rn2 bytes
    const int32_t* const* slots;     // per bucket: (size,)
    const int64_t* sizes;            // (n_lists,)
    const float* vectors;            // (capacity, dim), indexed by slot
    const int64_t* slot_ids;         // (capacity,), external id of each slot
    const uint8_t* allowed;          // (capacity,) 0/1 per slot, or null: no filter
    const uint8_t* const* dead;      // tombstone bitmap pages, or null: no tombstones
    int dead_shift;                  // slot s is bit s mod 2^dead_shift of page s >> dead_shift
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

// Scratch space of select_smallest.
static const int SELECT_BINS_LOG = 10;
struct SelectScratch {
    std::vector<Candidate> tmp;
    uint32_t hist[1 << SELECT_BINS_LOG];
    std::vector<int32_t> mins, work;  // the probe selection's (select_probes_*)
};

// Rearrange a[0, m) so that a[0, k) hold its k smallest entries, in no particular order,
// with the largest of them at a[k - 1]; 0 < k <= m.  Used for every selection of a search
// (the probes among all centroids, the n_rerank best in a full candidate buffer).
//
// A radix select on the high 32 bits (the order bits of the estimate): a histogram of
// 1,024 bins over the range of the keys finds the bin that holds the k-th smallest, one
// branch-free pass moves the entries of lower bins to the front and those of that bin
// after them, and the bin is searched again with a finer range.  One round usually
// suffices.  std::nth_element's branches on random keys mispredict about every other
// comparison: 14 us for 2,182 keys and 5.5 us for 648 in a standalone test, 4.7 us and
// 1.8 us here; in a sift-1m search (n_probe 48 of 2,182, n_rerank 160) the two
// selections were a quarter of the time.  Exact: Candidates are distinct (their slots
// are), so the k smallest are one set whatever the method.
static void select_smallest(Candidate* a, int64_t m, int64_t k, SelectScratch& s) {
    if ((int64_t)s.tmp.size() < m) s.tmp.resize((size_t)m);
    Candidate* tmp = s.tmp.data();
    while (m > 64 && k < m) {
        uint32_t lo4[4] = {UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX}, hi4[4] = {0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 4 <= m; i += 4)
            for (int j = 0; j < 4; ++j) {
                const uint32_t x = (uint32_t)(a[i + j] >> 32);
                lo4[j] = x < lo4[j] ? x : lo4[j];
                hi4[j] = x > hi4[j] ? x : hi4[j];
            }
        for (; i < m; ++i) {
            const uint32_t x = (uint32_t)(a[i] >> 32);
            lo4[0] = x < lo4[0] ? x : lo4[0];
            hi4[0] = x > hi4[0] ? x : hi4[0];
        }
        const uint32_t lo = std::min(std::min(lo4[0], lo4[1]), std::min(lo4[2], lo4[3]));
        const uint32_t hi = std::max(std::max(hi4[0], hi4[1]), std::max(hi4[2], hi4[3]));
        if (lo == hi) break;  // equal estimates: the slots decide
        int shift = 0;
        while (((hi - lo) >> shift) >= (1u << SELECT_BINS_LOG)) ++shift;
        std::memset(s.hist, 0, (((hi - lo) >> shift) + 1) * sizeof(uint32_t));
        for (i = 0; i < m; ++i) ++s.hist[((uint32_t)(a[i] >> 32) - lo) >> shift];
        uint32_t bin = 0;
        int64_t below = 0;
        while (below + s.hist[bin] < k) below += s.hist[bin++];
        // Entries of lower bins to tmp[0, f), of this bin to tmp(back, m): both stores
        // always happen, the counters say which one counts.
        int64_t f = 0, back = m - 1;
        for (i = 0; i < m; ++i) {
            const Candidate c = a[i];
            const uint32_t b = ((uint32_t)(c >> 32) - lo) >> shift;
            tmp[f] = c;
            tmp[back] = c;
            f += b < bin;
            back -= b == bin;
        }
        const int64_t e = m - 1 - back;
        std::memcpy(a, tmp, (size_t)f * sizeof(Candidate));
        std::memcpy(a + f, tmp + back + 1, (size_t)e * sizeof(Candidate));
        a += f;
        m = e;
        k -= f;
    }
    if (k < m)
        std::nth_element(a, a + (k - 1), a + m);
    else
        std::iter_swap(std::max_element(a, a + m), a + (m - 1));
}

// ---------------------------------------------------------------------------------------
// Coarse probe selection: the np smallest (key, bucket) pairs among all n_lists centroids,
// in order.  The old way (a Candidate per centroid, select_smallest, a sort of the np kept)
// spent ~3 ns per centroid, 6.8 us per sift-1m query (48 of 2,048), in its passes over
// 64-bit candidates (make, min/max, histogram, partition).  Here a threshold T that
// at least np keys reach is found first from the minima of small groups of keys, and only
// the few keys <= T become Candidates:
//   1. group the keys (g consecutive 16-key vectors, one group per lane) and take each
//      group's minimum: ~6 np groups.  Each group whose minimum is <= T holds a key <= T,
//      so T = the np-th smallest group minimum has at least np keys <= T;
//   2. find such a T by a binary search over the group minima (int32 compares, branch-free
//      counts); any T that counts np to np + np / 8 + 4 minima is taken;
//   3. compress the indexes of the keys <= T (AVX-512: vpcompressd; else bit masks), and
//      place each at its rank among them (the number of them below it) when that is < np:
//      O(survivors^2) compares, but branch-free and vectorised, for ~50-140 survivors.
// Exact: every key < the np-th smallest is <= T, ties at T are all kept, and the
// Candidates (unique: the bucket breaks ties) are sorted as before, so the probes and their
// order are those of a full sort.  A NaN key (ip only; l2 keys are clamped at 0) or a
// selection of a large share of the centroids falls back to the old way.

// Groups per probe in step 1: more groups cost more in step 2, fewer leave more survivors.
static const int64_t PROBE_GROUPS_PER_PROBE = 6;
// Below this many centroids per probe the grouping cannot leave few survivors.
static const int64_t PROBE_MIN_LISTS_PER_PROBE = 4;

// Keys per group (in 16-key vectors), or 0 when the old way is used.
static inline int64_t probe_group_vectors(int64_t n, int64_t np) {
    if (np <= 0 || n < 64 || n < PROBE_MIN_LISTS_PER_PROBE * np) return 0;
    const int64_t g = n / (PROBE_GROUPS_PER_PROBE * np);
    return g < 1 ? 1 : (g > 16 ? 16 : g);
}

// Step 2: a T with np <= count(mins <= T) (and at most np + np / 8 + 4 when the binary
// search stops early); needs m >= np.
static inline __attribute__((always_inline)) int32_t probe_threshold(const int32_t* mins,
                                                                     int64_t m, int64_t np) {
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    for (int64_t i = 0; i < m; ++i) {
        lo = mins[i] < lo ? mins[i] : lo;
        hi = mins[i] > hi ? mins[i] : hi;
    }
    const int64_t enough = np + np / 8 + 4;
    while (lo < hi) {
        const int32_t mid = (int32_t)(((int64_t)lo + (int64_t)hi) >> 1);
        int32_t c = 0;
        for (int64_t i = 0; i < m; ++i) c += mins[i] <= mid;
        if (c >= np) {
            hi = mid;
            if (c <= enough) break;
        } else {
            lo = mid + 1;
        }
    }
    return hi;
}

// Step 3's end: out[0, m) (m >= np) sorted, the first np kept.
static inline void finish_probes(Candidate* out, int64_t m, int64_t np, SelectScratch& s) {
    if (m > 2 * np) select_smallest(out, m, np, s);
    std::sort(out, out + (m > 2 * np ? np : m));
}

// The old way, for the cases the grouping does not suit.
static void select_probes_full(const float* keys, int64_t n, int64_t np, Candidate* out,
                               SelectScratch& s) {
    for (int64_t c = 0; c < n; ++c) out[c] = make_candidate(keys[c], (int32_t)c);
    if (np > 0) select_smallest(out, n, np, s);
    std::sort(out, out + np);
}

// Steps 1-3 in portable code, which the compiler vectorises (generic and AVX2 wrappers
// below).  keys: (n,).
static inline __attribute__((always_inline)) void select_probes_body(
        const float* keys, int64_t n, int64_t np, Candidate* out, SelectScratch& s) {
    const int64_t g = probe_group_vectors(n, np);
    if (g == 0) return select_probes_full(keys, n, np, out, s);
    const int64_t full = n / 16;  // whole 16-key vectors; the rest are groups of one
    s.work.resize((size_t)n + 2 * (size_t)(4 * np + 4));
    s.mins.resize((size_t)(16 * ((full + g - 1) / g) + 16));
    int32_t* mono = s.work.data();
    int32_t* mins = s.mins.data();
    // The keys' signed order images (order_bits with its top bit flipped: x < y iff
    // mono[x] < mono[y] for non-NaN floats, so compares vectorise as int32), and NaN
    // tests as integer compares, in a loop that vectorises.
    uint32_t nan = 0;
    for (int64_t c = 0; c < n; ++c) {
        const float x = keys[c] + 0.0f;
        uint32_t u;
        std::memcpy(&u, &x, 4);
        nan |= (uint32_t)((u & 0x7FFFFFFFu) > 0x7F800000u);
        mono[c] = (int32_t)(u ^ ((uint32_t)((int32_t)u >> 31) >> 1));
    }
    if (nan) return select_probes_full(keys, n, np, out, s);
    int64_t m = 0;
    for (int64_t v0 = 0; v0 < full; v0 += g, m += 16) {
        int32_t lane[16];
        for (int l = 0; l < 16; ++l) lane[l] = INT32_MAX;
        for (int64_t v = v0; v < std::min(full, v0 + g); ++v)
            for (int l = 0; l < 16; ++l)
                lane[l] = mono[v * 16 + l] < lane[l] ? mono[v * 16 + l] : lane[l];
        std::memcpy(mins + m, lane, sizeof(lane));
    }
    for (int64_t c = full * 16; c < n; ++c) mins[m++] = mono[c];
    if (m < np) return select_probes_full(keys, n, np, out, s);
    const int32_t t = probe_threshold(mins, m, np);
    // The keys <= t, 64 at a time as a bit mask, then its set bits: one mispredicted
    // branch per word and per survivor rather than one per key.  Their (mono, index)
    // pairs go to sm / si.
    const int64_t cap = 4 * np + 4;
    int32_t* sm = mono + n;
    int32_t* si = sm + cap;
    int64_t kept = 0;
    for (int64_t c0 = 0; c0 < n; c0 += 64) {
        uint64_t bits = 0;
        int64_t c = c0;
#ifdef BINIDX_X86
        const __m128i tt = _mm_set1_epi32(t);
        for (; c + 4 <= std::min(n, c0 + 64); c += 4) {
            const __m128i gt = _mm_cmpgt_epi32(_mm_loadu_si128((const __m128i*)(mono + c)), tt);
            bits |= (uint64_t)(~_mm_movemask_ps(_mm_castsi128_ps(gt)) & 15) << (c - c0);
        }
#endif
        for (; c < std::min(n, c0 + 64); ++c) bits |= (uint64_t)(mono[c] <= t) << (c - c0);
        for (; bits != 0; bits &= bits - 1) {
            const int32_t k = (int32_t)(c0 + __builtin_ctzll(bits));
            if (kept < cap) {
                sm[kept] = mono[k];
                si[kept] = k;
            }
            out[kept++] = make_candidate(keys[k], k);
        }
    }
    if (kept > cap) return finish_probes(out, kept, np, s);  // (many equal keys)
    // Sorted by rank, as in the AVX-512 path, on (mono, index) pairs of int32s, which
    // vectorise where 64-bit unsigned compares do not (also faster than std::sort with
    // 138 survivors: 4,690 against 3,330 ns per dev-text query, 128 of 1,024, AVX2).
    for (int64_t i = 0; i < kept; ++i) {
        const int32_t mi = sm[i], ii = si[i];
        int32_t rank = 0;
        for (int64_t j = 0; j < kept; ++j)
            rank += (sm[j] < mi) | ((sm[j] == mi) & (si[j] < ii));
        if (rank < np) out[rank] = make_candidate(keys[ii], ii);
    }
}

static void select_probes_generic(const float* keys, int64_t n, int64_t np, Candidate* out,
                                  SelectScratch& s) {
    select_probes_body(keys, n, np, out, s);
}

#ifdef BINIDX_X86
__attribute__((target("avx2"))) static void select_probes_avx2(
        const float* keys, int64_t n, int64_t np, Candidate* out, SelectScratch& s) {
    select_probes_body(keys, n, np, out, s);
}
#endif

#ifdef BINIDX_X86
// 16 coarse keys from AVX-512, as start_query's scalar loops compute them: l2
// max(0, (qnorm + norms) - 2 dots) (norms non-null), ip -dots (the sign bit flipped).
__attribute__((target(BINIDX_AVX512_TARGET))) static inline __attribute__((always_inline))
__m512 coarse_keys16(const float* dots, const float* norms, __m512 qnorm, __mmask16 mask) {
    const __m512 d = _mm512_maskz_loadu_ps(mask, dots);
    if (norms == nullptr)
        return _mm512_castsi512_ps(
            _mm512_xor_si512(_mm512_castps_si512(d), _mm512_set1_epi32(INT32_MIN)));
    const __m512 t = _mm512_add_ps(qnorm, _mm512_maskz_loadu_ps(mask, norms));
    return _mm512_max_ps(_mm512_sub_ps(t, _mm512_mul_ps(_mm512_set1_ps(2.0f), d)),
                         _mm512_setzero_ps());
}

// The signed order images of 16 keys (as select_probes_body's): x + 0 (no -0), then the
// low 31 bits of negatives flipped.
__attribute__((target(BINIDX_AVX512_TARGET))) static inline __attribute__((always_inline))
__m512i mono_key16(__m512 k) {
    const __m512i u = _mm512_castps_si512(_mm512_add_ps(k, _mm512_setzero_ps()));
    return _mm512_xor_si512(u, _mm512_and_si512(_mm512_srai_epi32(u, 31),
                                                _mm512_set1_epi32(INT32_MAX)));
}

// Steps 1-3 with AVX-512, the keys computed in step 1's pass.  norms: the centroids'
// squared norms for l2, null for ip.  Writes the keys to keys[0, n) (may alias dots).
__attribute__((target(BINIDX_AVX512_TARGET))) static void select_probes_avx512(
        const float* dots, const float* norms, float qnorm, int64_t n, int64_t np,
        float* keys, Candidate* out, SelectScratch& s) {
    const int64_t g = probe_group_vectors(n, np);
    const int64_t full = n / 16, rest = n - full * 16;
    const __mmask16 tail = (__mmask16)((1u << rest) - 1);
    const __m512 qn = _mm512_set1_ps(qnorm);
    if (g == 0) {
        for (int64_t c = 0; c < full * 16; c += 16)
            _mm512_storeu_ps(keys + c, coarse_keys16(dots + c, norms ? norms + c : nullptr, qn,
                                                     (__mmask16)0xFFFF));
        if (rest > 0)
            _mm512_mask_storeu_ps(keys + full * 16, tail,
                                  coarse_keys16(dots + full * 16,
                                                norms ? norms + full * 16 : nullptr, qn, tail));
        return select_probes_full(keys, n, np, out, s);
    }
    s.mins.resize((size_t)(16 * ((full + g - 1) / g) + 16));
    int32_t* mins = s.mins.data();
    __mmask16 nan = 0;
    int64_t m = 0;
    for (int64_t v0 = 0; v0 < full; v0 += g, m += 16) {
        __m512i lane = _mm512_set1_epi32(INT32_MAX);
        const int64_t v1 = std::min(full, v0 + g);
        for (int64_t c = v0 * 16; c < v1 * 16; c += 16) {
            const __m512 k = coarse_keys16(dots + c, norms ? norms + c : nullptr, qn,
                                           (__mmask16)0xFFFF);
            _mm512_storeu_ps(keys + c, k);
            nan |= _mm512_cmp_ps_mask(k, k, _CMP_UNORD_Q);
            lane = _mm512_min_epi32(lane, mono_key16(k));
        }
        _mm512_storeu_si512(mins + m, lane);
    }
    if (rest > 0) {
        // The last keys, each its own group.
        const __m512 k = coarse_keys16(dots + full * 16, norms ? norms + full * 16 : nullptr,
                                       qn, tail);
        _mm512_mask_storeu_ps(keys + full * 16, tail, k);
        nan |= _mm512_mask_cmp_ps_mask(tail, k, k, _CMP_UNORD_Q);
        _mm512_mask_storeu_epi32(mins + m, tail, mono_key16(k));
        m += rest;
    }
    if (nan || m < np) return select_probes_full(keys, n, np, out, s);
    const int32_t t = probe_threshold(mins, m, np);
    s.work.resize((size_t)n + 16);  // the kept indexes
    int32_t* idx = s.work.data();
    const __m512i tt = _mm512_set1_epi32(t), step = _mm512_set1_epi32(16);
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t kept = 0;
    for (int64_t c = 0; c < n; c += 16, iota = _mm512_add_epi32(iota, step)) {
        const __mmask16 valid = c + 16 <= n ? (__mmask16)0xFFFF : tail;
        const __mmask16 le = _mm512_mask_cmple_epi32_mask(
            valid, mono_key16(_mm512_maskz_loadu_ps(valid, keys + c)), tt);
        // Compressed in a register and stored whole: a compressing store to memory is
        // microcoded on AMD cores.
        _mm512_storeu_si512(idx + kept, _mm512_maskz_compress_epi32(le, iota));
        kept += __builtin_popcount((unsigned)le);
    }
    if (kept > 4 * np) {  // (many equal keys)
        for (int64_t i = 0; i < kept; ++i) out[i] = make_candidate(keys[idx[i]], idx[i]);
        return finish_probes(out, kept, np, s);
    }
    // Sorted by rank: each survivor's rank is the number of survivors below it (they are
    // distinct), counted 8 at a time; branch-free, where std::sort's compares of random
    // keys mispredict (~1 us for 50 survivors).
    if ((int64_t)s.tmp.size() < kept + 8) s.tmp.resize((size_t)kept + 8);
    Candidate* c = s.tmp.data();
    for (int64_t i = 0; i < kept; ++i) c[i] = make_candidate(keys[idx[i]], idx[i]);
    for (int64_t i = kept; i < kept + 8; ++i) c[i] = UINT64_MAX;  // never below a survivor
    // Four survivors at a time share the loads (the padding makes up the last four).
    for (int64_t i = 0; i < kept; i += 4) {
        const __m512i c0 = _mm512_set1_epi64((long long)c[i]),
                      c1 = _mm512_set1_epi64((long long)c[i + 1]),
                      c2 = _mm512_set1_epi64((long long)c[i + 2]),
                      c3 = _mm512_set1_epi64((long long)c[i + 3]);
        int64_t r0 = 0, r1 = 0, r2 = 0, r3 = 0;
        for (int64_t j = 0; j < kept; j += 8) {
            const __m512i cj = _mm512_loadu_si512(c + j);
            r0 += __builtin_popcount((unsigned)_mm512_cmplt_epu64_mask(cj, c0));
            r1 += __builtin_popcount((unsigned)_mm512_cmplt_epu64_mask(cj, c1));
            r2 += __builtin_popcount((unsigned)_mm512_cmplt_epu64_mask(cj, c2));
            r3 += __builtin_popcount((unsigned)_mm512_cmplt_epu64_mask(cj, c3));
        }
        if (r0 < np) out[r0] = c[i];
        if (r1 < np && i + 1 < kept) out[r1] = c[i + 1];
        if (r2 < np && i + 2 < kept) out[r2] = c[i + 2];
        if (r3 < np && i + 3 < kept) out[r3] = c[i + 3];
    }
}
#endif

// The state of one query between its phases: what the scan of its buckets needs, and
// its candidate buffer.  search_one keeps one; the shared-pass batch keeps one per query
// of a chunk.
struct QueryState {
    const float* q = nullptr;
    std::vector<int32_t> probes;     // buckets to scan, nearest first
    std::vector<float> probe_keys;   // their coarse keys: ||q - c||^2 (l2) or -<q, c> (ip)
    std::vector<float> qrot;         // P q
    std::vector<uint64_t> table;     // ip: P q quantised once per query, as a scan table
    ScanConsts consts{};             // ip: its constants
    std::vector<Candidate> cands;    // the candidate buffer (cap + ADMIT_SLACK entries)
    AdmitTarget admit{};
    int64_t checked = 0;             // cands[0, checked) passed the filters
    int64_t keep = 0;
};

// Per-thread scratch space, reused across the queries a thread handles.
struct Workspace {
    std::vector<Candidate> coarse;  // (coarse key, bucket)
    std::vector<float> dots, w;
    std::vector<int8_t> levels;     // the quantised query side being packed
    std::vector<uint64_t> table;    // l2: scan table of the (query, bucket) pair being scanned
    std::vector<Result> results;
    SelectScratch select;           // select_smallest's
    QueryState one;                 // search_one's query
    std::vector<QueryState> chunk;  // search_chunk_shared's queries
    std::vector<float> group_dots;  // coarse_group: <q, c> of a group of queries
    std::vector<float> group_qrot;  // coarse_group: their P q
    // search_chunk_shared's (query, probe) pairs by bucket, and the order of the buckets.
    std::vector<int64_t> pair_start, rank_sum, rank_start;
    std::vector<std::pair<int32_t, int32_t>> pairs;
    std::vector<int32_t> bucket_order;

    void reserve(const IndexView& v) {
        coarse.resize((size_t)v.n_lists);
        dots.resize((size_t)v.n_lists);
        w.resize((size_t)v.n_bits);
        levels.resize((size_t)v.n_bits);
        table.resize(TABLE_WORDS * (size_t)v.n_words);
    }
};

// Prefetch the first prefetch_distance() blocks of a bucket (codes, factors, slots); the
// scan prefetches the rest, that far ahead.
static inline __attribute__((always_inline)) void prefetch_bucket_start(
        const uint64_t* codes, const Factor* factors, const int32_t* slots, int64_t size,
        int n_words) {
    const int64_t blocks = std::min<int64_t>(prefetch_distance(n_words), (size + BLOCK - 1) / BLOCK);
    prefetch_range(codes, blocks * n_words * BLOCK * 8);
    prefetch_range(factors, blocks * 2 * BLOCK * (int64_t)sizeof(Factor));
    prefetch_range(slots, blocks * BLOCK * 4);
}

// Exact keys (squared l2, or -inner product) and ids of the r candidates of query q.  The
// rows are prefetched RERANK_AHEAD candidates in advance, so that many cache misses are in
// flight at once.
static const int64_t RERANK_AHEAD = 8;

// Queries whose coarse products (all centroids, and the rotation) are computed together:
// each 64-centroid tile is then read once per group rather than once per query.  16 keeps
// a group's products (16 x n_lists floats) well inside L2.
static const int64_t COARSE_GROUP = 16;

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

// Adaptive probing: how many of a query's np probes (nearest first) to scan.  A query
// close to one centroid and far from the others has its neighbours in few buckets; one
// among many equidistant centroids needs them all.  So the count is the number of probes
// whose centroid lies within probe_ratio times the squared l2 distance of the first
// probe's, and at least a quarter of np (a query very near a centroid would otherwise
// scan almost nothing).  The l2 distance is used for inner-product indexes too (it ranks
// buckets by how far the query is from them, where -<q, c> favours long centroids):
// ||q||^2 + ||c||^2 + 2 key with key = -<q, c>.  On sift-1m, dev-sift and dev-text this
// scans 1.1-1.37x fewer codes than a fixed n_probe for the same share of true neighbours
// in the scanned buckets (benchmarks/micro/probe_ceiling.py, docs/design.md).
static inline int64_t adaptive_probe_count(const IndexView& v, const QueryState& s,
                                           float qnorm, float probe_ratio) {
    const int64_t np = (int64_t)s.probes.size();
    const bool l2 = v.metric == METRIC_L2;
    auto distance = [&](int64_t p) {
        const float key = s.probe_keys[(size_t)p];
        return l2 ? key : (qnorm + v.centroid_norms[s.probes[(size_t)p]]) + 2.0f * key;
    };
    const float bound = probe_ratio * distance(0);
    int64_t count = 0;
    for (int64_t p = 0; p < np; ++p) count += distance(p) <= bound;
    return std::max(count, (np + 3) / 4);
}

// Phase 1 of a query: coarse probe selection, rotation, and an empty candidate buffer.
// dots / qrot, when given, are <q, c> for every centroid and P q, computed for a group of
// queries at once (coarse_group); otherwise they are computed here.
static void start_query(const IndexView& v, const Kernels& K, const float* q, int n_probe,
                        float probe_ratio, int64_t n_rerank, Workspace& ws, QueryState& s,
                        const float* dots = nullptr, const float* qrot = nullptr) {
    const int64_t dim = v.dim;
    const bool l2 = v.metric == METRIC_L2;
    s.q = q;
    BINIDX_PROF_COUNT(PROF_QUERIES, 1);

    // Rotate the query once: qrot = P q.
    s.qrot.resize((size_t)v.n_bits);
    if (qrot == nullptr) {
        BINIDX_PROF_START(rotate);
        K.matvec_t(v.projection_t, q, dim, v.n_bits, s.qrot.data());
        BINIDX_PROF_STOP(rotate, PROF_ROTATE);
    } else {
        std::copy(qrot, qrot + v.n_bits, s.qrot.begin());
    }

    // The n_probe nearest (l2) or best-scoring (ip) centroids.
    // ||q - c||^2 = ||q||^2 + ||c||^2 - 2 <q, c>, all <q, c> in one mat-vec (<P q, P c>
    // when P preserves inner products: the index then keeps only the rotated centroids).
    if (dots == nullptr) {
        BINIDX_PROF_START(matvec);
        if (v.centroids_t != nullptr)
            K.matvec_t(v.centroids_t, q, dim, v.n_lists, ws.dots.data());
        else
            K.matrows(v.centroids_rot, s.qrot.data(), 1, v.n_bits, v.n_lists, ws.dots.data());
        BINIDX_PROF_STOP(matvec, PROF_MATVEC);
        dots = ws.dots.data();
    }
    BINIDX_PROF_START(coarse_sel);
    // The np best (key, bucket) pairs, nearest first (select_probes_*, above).  Keys are
    // unique (the bucket breaks ties), so the probes and their order are those of a full
    // sort.  (A threshold buffer refreshed by nth_element, or a bounded heap, spend most of
    // their time in mispredicted branches: on real sift-1m keys, 48 of 2,182 centroids,
    // 10.7 us per query for the buffer against 6.6 us for a radix select of all of them.)
    const float qnorm = l2 ? K.dot(q, q, dim) : 0.0f;
    const int64_t np = std::min<int64_t>(n_probe, v.n_lists);
    Candidate* buf = ws.coarse.data();
    float* keys = ws.dots.data();  // the keys replace the products (or are written there)
#ifdef BINIDX_X86
    if (K.path == PATH_AVX512) {
        select_probes_avx512(dots, l2 ? v.centroid_norms : nullptr, qnorm, v.n_lists, np, keys,
                             buf, ws.select);
    } else
#endif
    {
        // Keys first, in a loop that vectorises.
        if (l2) {
            const float* norms = v.centroid_norms;
            for (int64_t c = 0; c < v.n_lists; ++c)
                keys[c] = std::max(0.0f, qnorm + norms[c] - 2.0f * dots[c]);
        } else {
            for (int64_t c = 0; c < v.n_lists; ++c) keys[c] = -dots[c];
        }
#ifdef BINIDX_X86
        if (K.path == PATH_AVX2)
            select_probes_avx2(keys, v.n_lists, np, buf, ws.select);
        else
#endif
            select_probes_generic(keys, v.n_lists, np, buf, ws.select);
    }
    s.probes.resize((size_t)np);
    s.probe_keys.resize((size_t)np);
    for (int64_t p = 0; p < np; ++p) {
        const int32_t b = candidate_slot(buf[p]);
        s.probes[(size_t)p] = b;
        s.probe_keys[(size_t)p] = ws.dots[(size_t)b];  // the estimator's beta for bucket b
    }
    if (probe_ratio > 0.0f && np > 1) {
        const int64_t used = adaptive_probe_count(v, s, l2 ? qnorm : K.dot(q, q, dim), probe_ratio);
        s.probes.resize((size_t)used);
        s.probe_keys.resize((size_t)used);
    }
    BINIDX_PROF_STOP(coarse_sel, PROF_COARSE);
    BINIDX_PROF_START(rotate);
    if (!l2) {
        // Inner product: the estimate uses P q itself, quantised once per query.
        s.table.resize(TABLE_WORDS * (size_t)v.n_words);
        K.quantize(s.qrot.data(), nullptr, ws.w.data(), v.n_bits, ws.levels.data(), &s.consts);
        K.pack(ws.levels.data(), v.n_words, s.table.data(), &s.consts);
        s.consts.alpha = -1.0f;
        s.consts.gamma = 0.0f;
    }
    BINIDX_PROF_STOP(rotate, PROF_ROTATE);

    // Candidates are kept in a buffer of 4 * n_rerank entries (at least 256): when it is full, the
    // n_rerank best stay and the worst of them becomes the admission threshold, so most
    // estimates of far buckets cost one comparison (amortised O(1) per scanned code).  The
    // scan itself applies the threshold (scan_admit) and may overshoot cap by up to ADMIT_SLACK.
    s.keep = std::max<int64_t>(n_rerank, 1);
    const size_t cap = std::max<size_t>(4 * (size_t)s.keep, 256);
    if (s.cands.size() < cap + ADMIT_SLACK) s.cands.resize(cap + ADMIT_SLACK);
    s.admit = AdmitTarget{s.cands.data(), 0, (int64_t)cap, std::numeric_limits<float>::infinity(),
                          NextBucket{}};
    s.checked = 0;
}

// Whether slot s's row is a tombstone: a vector removed before the snapshot being
// searched was published (later removals set bits in pages this snapshot does not hold).
static inline bool is_dead(const IndexView& v, int32_t s) {
    const uint8_t* page = v.dead[s >> v.dead_shift];
    return (page[(s & ((1 << v.dead_shift) - 1)) >> 3] >> (s & 7)) & 1;
}

// Whether a slot may be a result: it is not a tombstone and it passes the filter.
static inline bool admissible(const IndexView& v, int32_t s) {
    return (v.dead == nullptr || !is_dead(v, s)) && (v.allowed == nullptr || v.allowed[s]);
}

// Drop the candidates admitted since the last check that fail the filters.  The scan
// admits on the threshold alone; testing here, in one pass over the new entries, lets
// their independent random look-ups overlap instead of stalling the scan one by one.
static const int64_t DROP_AHEAD = 16;

static inline __attribute__((always_inline)) void prefetch_admissible(const IndexView& v,
                                                                      int32_t s) {
    if (v.allowed != nullptr) __builtin_prefetch(v.allowed + s);
}

static inline void drop_inadmissible(const IndexView& v, QueryState& s) {
    BINIDX_PROF_START(drop);
    if (v.allowed != nullptr || v.dead != nullptr) {
        // A filter test is a random read of allowed[slot] (a tombstone test reads the
        // bitmap, n / 8 bytes: mostly in cache): the filter entries DROP_AHEAD places on
        // are prefetched, so that many misses overlap instead of the loop waiting on each.
        Candidate* c = s.cands.data();
        const int64_t end = s.admit.m;
        for (int64_t i = s.checked; i < std::min(s.checked + DROP_AHEAD, end); ++i)
            prefetch_admissible(v, candidate_slot(c[i]));
        int64_t m = s.checked;
        for (int64_t i = s.checked; i < end; ++i) {
            if (i + DROP_AHEAD < end) prefetch_admissible(v, candidate_slot(c[i + DROP_AHEAD]));
            if (admissible(v, candidate_slot(c[i]))) c[m++] = c[i];
        }
        s.admit.m = m;
    }
    s.checked = s.admit.m;
    BINIDX_PROF_STOP(drop, PROF_DROP);
}

// The buffer is full: drop what the filters reject, and if it is still full keep the
// n_rerank best, whose worst becomes the threshold.
static inline void refresh(const IndexView& v, QueryState& s, SelectScratch& sel) {
    BINIDX_PROF_COUNT(PROF_REFRESHES, 1);
    drop_inadmissible(v, s);
    BINIDX_PROF_START(refresh);
    if (s.admit.m >= s.admit.cap) {
        select_smallest(s.cands.data(), s.admit.m, s.keep, sel);
        s.admit.threshold = candidate_key(s.cands[(size_t)(s.keep - 1)]);
        s.admit.m = s.keep;
        s.checked = s.keep;
    }
    BINIDX_PROF_STOP(refresh, PROF_REFRESH);
}

// Phase 2, once per probed bucket: scan probe p of the query into its buffer; the scan
// prefetches the start of `next` (the bucket scanned after this one, or none).
static void scan_probe(const IndexView& v, const Kernels& K, QueryState& s, int64_t p,
                       const NextBucket& next, Workspace& ws) {
    const int32_t b = s.probes[(size_t)p];
    const int64_t size = v.sizes[b];
    if (size == 0) return;
    BINIDX_PROF_COUNT(PROF_PAIRS, 1);
    BINIDX_PROF_COUNT(PROF_CODES, size);
    ScanConsts consts = s.consts;
    const uint64_t* table = s.table.data();
    BINIDX_PROF_START(quantize);
    if (v.metric == METRIC_L2) {
        // The residual to the bucket's centroid, quantised per (query, bucket).
        K.quantize(s.qrot.data(), v.centroids_rot + (int64_t)b * v.n_bits, ws.w.data(), v.n_bits,
                   ws.levels.data(), &consts);
        K.pack(ws.levels.data(), v.n_words, ws.table.data(), &consts);
        table = ws.table.data();
        consts.alpha = -2.0f;
        consts.gamma = 1.0f;
    }
    consts.beta = s.probe_keys[(size_t)p];
    // The bucket's factor bytes count in steps of its scales.
    consts.alpha *= v.factor_scales[2 * (int64_t)b];
    consts.gamma *= v.factor_scales[2 * (int64_t)b + 1];
    BINIDX_PROF_STOP(quantize, PROF_QUANTIZE);
    s.admit.next = next;
    const int64_t n_blocks = (size + BLOCK - 1) / BLOCK;
    for (int64_t blk = 0; blk < n_blocks;) {
        BINIDX_PROF_START(scan);
        [[maybe_unused]] const int64_t m0 = s.admit.m;
        blk = K.scan_admit(v.codes[b], v.factors[b], v.slots[b], size, blk, v.n_words, table,
                           &consts, &s.admit);
        BINIDX_PROF_COUNT(PROF_ADMITTED, s.admit.m - m0);
        BINIDX_PROF_STOP(scan, PROF_SCAN);
        if (s.admit.m >= s.admit.cap) refresh(v, s, ws.select);
    }
}

static inline NextBucket next_bucket(const IndexView& v, int32_t b) {
    return NextBucket{v.codes[b], v.factors[b], v.slots[b], (v.sizes[b] + BLOCK - 1) / BLOCK};
}

// Phase 3: the n_rerank best estimates, reranked exactly; the top k, best first, ties
// broken by the smaller id.  out_d / out_i have room for k results.
static void finish_query(const IndexView& v, const Kernels& K, QueryState& s, int k,
                         Workspace& ws, float* out_d, int64_t* out_i) {
    const bool l2 = v.metric == METRIC_L2;
    drop_inadmissible(v, s);
    BINIDX_PROF_START(select);
    const int64_t m = s.admit.m;
    const int64_t r = std::min(s.keep, m);
    if (r > 0 && r < m) select_smallest(s.cands.data(), m, r, ws.select);
    BINIDX_PROF_STOP(select, PROF_SELECT);
    BINIDX_PROF_START(rerank);
    ws.results.resize((size_t)r);
    rerank(v, K, s.q, s.cands.data(), r, ws.results.data());
    BINIDX_PROF_STOP(rerank, PROF_RERANK);
    BINIDX_PROF_START(topk);
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
    BINIDX_PROF_STOP(topk, PROF_TOPK);
}

// The coarse products of m queries at once: ws.group_dots (m, n_lists) = <q, c> and
// ws.group_qrot (m, n_bits) = P q, bit-identical to start_query's own mat-vecs.
static void coarse_group(const IndexView& v, const Kernels& K, const float* queries, int64_t m,
                         Workspace& ws) {
    ws.group_dots.resize((size_t)(m * v.n_lists));
    ws.group_qrot.resize((size_t)(m * v.n_bits));
    BINIDX_PROF_START(rotate);
    K.matmat_t(v.projection_t, queries, m, v.dim, v.n_bits, ws.group_qrot.data());
    BINIDX_PROF_STOP(rotate, PROF_ROTATE);
    BINIDX_PROF_START(matmat);
    if (v.centroids_t != nullptr)
        K.matmat_t(v.centroids_t, queries, m, v.dim, v.n_lists, ws.group_dots.data());
    else
        K.matrows(v.centroids_rot, ws.group_qrot.data(), m, v.n_bits, v.n_lists,
                  ws.group_dots.data());
    BINIDX_PROF_STOP(matmat, PROF_MATVEC);
}

// Search one query.  out_d / out_i have room for k results.
static void search_one(const IndexView& v, const Kernels& K, const float* q, int n_probe,
                       float probe_ratio, int64_t n_rerank, int k, Workspace& ws, float* out_d, int64_t* out_i,
                       const float* dots = nullptr, const float* qrot = nullptr) {
    QueryState& s = ws.one;
    start_query(v, K, q, n_probe, probe_ratio, n_rerank, ws, s, dots, qrot);
    // Buckets live at scattered addresses: the scan of one prefetches the start of the
    // next, and the rotated centroid of the next is prefetched here.
    const int64_t np = (int64_t)s.probes.size();
    const bool l2 = v.metric == METRIC_L2;
    if (np > 0) {
        const int32_t b0 = s.probes[0];
        prefetch_bucket_start(v.codes[b0], v.factors[b0], v.slots[b0], v.sizes[b0], v.n_words);
        if (l2) prefetch_range(v.centroids_rot + (int64_t)b0 * v.n_bits, v.n_bits * 4);
    }
    for (int64_t p = 0; p < np; ++p) {
        NextBucket next{};
        if (p + 1 < np) {
            const int32_t nb = s.probes[(size_t)p + 1];
            next = next_bucket(v, nb);
            if (l2) prefetch_range(v.centroids_rot + (int64_t)nb * v.n_bits, v.n_bits * 4);
        }
        scan_probe(v, K, s, p, next, ws);
    }
    finish_query(v, K, s, k, ws, out_d, out_i);
}

// Search m queries one after the other, their coarse products computed together.
static void search_group(const IndexView& v, const Kernels& K, const float* queries, int64_t m,
                         int n_probe, float probe_ratio, int64_t n_rerank, int k, Workspace& ws,
                         float* out_d, int64_t* out_i) {
    if (m == 1) {
        search_one(v, K, queries, n_probe, probe_ratio, n_rerank, k, ws, out_d, out_i);
        return;
    }
    coarse_group(v, K, queries, m, ws);
    for (int64_t i = 0; i < m; ++i)
        search_one(v, K, queries + i * v.dim, n_probe, probe_ratio, n_rerank, k, ws, out_d + i * k,
                   out_i + i * k, ws.group_dots.data() + i * v.n_lists,
                   ws.group_qrot.data() + i * v.n_bits);
}

// Prefetch what scan_probe reads of query s for its probe p besides the bucket: the
// rotated query (l2), the tail of its candidate buffer, the probe's coarse key.  In a
// shared pass consecutive scans belong to different queries, whose states (a few kB each,
// a chunk's worth ~1.5 MB) are not in L1.
static inline __attribute__((always_inline)) void prefetch_query_state(
        const IndexView& v, const QueryState& s, int64_t p) {
    if (v.metric == METRIC_L2) prefetch_range(s.qrot.data(), v.n_bits * 4);
    __builtin_prefetch(s.cands.data() + s.admit.m, 1);
    __builtin_prefetch(s.probe_keys.data() + p);
}

// Search a chunk of queries with one pass over each probed bucket (issue 8): every query
// first scans its nearest bucket alone (which sets a tight admission threshold early),
// then each bucket the chunk probes further is scanned for all the queries that probe it
// in a row, while its codes are in L1/L2.  Buckets go in the order of the mean probe rank
// of their queries, so those near to most of their queries come first and the thresholds
// tighten early, as they do when one query scans its buckets nearest first.  The
// admission rule makes the kept candidates independent of the scan order, so the results
// equal search_one's.
static void search_chunk_shared(const IndexView& v, const Kernels& K, const float* queries,
                                int64_t nq, int n_probe, float probe_ratio, int64_t n_rerank, int k,
                                Workspace& ws, float* out_d, int64_t* out_i) {
    if ((int64_t)ws.chunk.size() < nq) ws.chunk.resize((size_t)nq);
    std::vector<QueryState>& qs = ws.chunk;
    for (int64_t g = 0; g < nq; g += COARSE_GROUP) {
        const int64_t m = std::min(COARSE_GROUP, nq - g);
        coarse_group(v, K, queries + g * v.dim, m, ws);
        for (int64_t i = g; i < g + m; ++i)
            start_query(v, K, queries + i * v.dim, n_probe, probe_ratio, n_rerank, ws, qs[(size_t)i],
                        ws.group_dots.data() + (i - g) * v.n_lists,
                        ws.group_qrot.data() + (i - g) * v.n_bits);
    }
    // The most probes of any query (adaptive probing gives each query its own count).
    int64_t np = 0;
    for (int64_t i = 0; i < nq; ++i) np = std::max(np, (int64_t)qs[(size_t)i].probes.size());
    if (np == 0) {
        for (int64_t i = 0; i < nq; ++i)
            finish_query(v, K, qs[(size_t)i], k, ws, out_d + i * k, out_i + i * k);
        return;
    }
    // Rank 0 of every query, in turn; the next query's nearest bucket is prefetched.
    const int32_t first = qs[0].probes[0];
    prefetch_bucket_start(v.codes[first], v.factors[first], v.slots[first], v.sizes[first],
                          v.n_words);
    for (int64_t i = 0; i < nq; ++i) {
        const NextBucket next = i + 1 < nq ? next_bucket(v, qs[(size_t)i + 1].probes[0]) : NextBucket{};
        scan_probe(v, K, qs[(size_t)i], 0, next, ws);
    }

    // The (query, probe rank) pairs of ranks >= 1 grouped by bucket (a counting sort over
    // bucket ids), and the buckets ordered by the mean rank of their pairs (a counting
    // sort over the rounded mean, which lies in [1, np)).
    BINIDX_PROF_START(group);
    std::vector<int64_t>& start = ws.pair_start;
    std::vector<int64_t>& rank_sum = ws.rank_sum;
    start.assign((size_t)v.n_lists + 1, 0);
    rank_sum.assign((size_t)v.n_lists, 0);
    for (int64_t i = 0; i < nq; ++i)
        for (int64_t p = 1; p < (int64_t)qs[(size_t)i].probes.size(); ++p) {
            const int32_t b = qs[(size_t)i].probes[(size_t)p];
            ++start[(size_t)b + 1];
            rank_sum[(size_t)b] += p;
        }
    std::vector<int64_t>& by_rank = ws.rank_start;
    by_rank.assign((size_t)np + 1, 0);
    for (int64_t b = 0; b < v.n_lists; ++b) {
        const int64_t c = start[(size_t)b + 1];
        if (c > 0) ++by_rank[(size_t)((rank_sum[(size_t)b] + c / 2) / c) + 1];
    }
    for (int64_t r = 0; r < np; ++r) by_rank[(size_t)r + 1] += by_rank[(size_t)r];
    std::vector<int32_t>& order = ws.bucket_order;
    order.resize((size_t)by_rank[(size_t)np]);
    for (int64_t b = 0; b < v.n_lists; ++b) {
        const int64_t c = start[(size_t)b + 1];
        if (c > 0) order[(size_t)by_rank[(size_t)((rank_sum[(size_t)b] + c / 2) / c)]++] = (int32_t)b;
    }
    for (int64_t b = 0; b < v.n_lists; ++b) start[(size_t)b + 1] += start[(size_t)b];
    std::vector<int64_t>& fill = ws.rank_sum;  // reused: no longer needed
    std::copy(start.begin(), start.end() - 1, fill.begin());
    std::vector<std::pair<int32_t, int32_t>>& pairs = ws.pairs;
    pairs.resize((size_t)start[(size_t)v.n_lists]);
    for (int64_t i = 0; i < nq; ++i)
        for (int64_t p = 1; p < (int64_t)qs[(size_t)i].probes.size(); ++p)
            pairs[(size_t)fill[(size_t)qs[(size_t)i].probes[(size_t)p]]++] = {(int32_t)i, (int32_t)p};
    BINIDX_PROF_STOP(group, PROF_GROUP);

    const bool l2 = v.metric == METRIC_L2;
    for (size_t o = 0; o < order.size(); ++o) {
        const int32_t b = order[o];
        // The first scan of a bucket reads it from memory; it prefetches the start of the
        // bucket visited next, and the rotated centroid of that one is prefetched here.
        NextBucket next{};
        if (o + 1 < order.size()) {
            next = next_bucket(v, order[o + 1]);
            if (l2) prefetch_range(v.centroids_rot + (int64_t)order[o + 1] * v.n_bits, v.n_bits * 4);
        }
        const int64_t end = start[(size_t)b + 1];
        for (int64_t j = start[(size_t)b]; j < end; ++j) {
            if (j + 1 < end)
                prefetch_query_state(v, qs[(size_t)pairs[(size_t)j + 1].first],
                                     pairs[(size_t)j + 1].second);
            const auto [i, p] = pairs[(size_t)j];
            scan_probe(v, K, qs[(size_t)i], p, j == start[(size_t)b] ? next : NextBucket{}, ws);
        }
    }
    for (int64_t i = 0; i < nq; ++i)
        finish_query(v, K, qs[(size_t)i], k, ws, out_d + i * k, out_i + i * k);
}

// shared_chunk > 0: queries are searched in chunks of that many with
// search_chunk_shared (one pass over each probed bucket per chunk); 0: one at a time.
static void search_batch(const IndexView& v, const Kernels& K, const float* queries, int64_t nq,
                         int n_probe, float probe_ratio, int64_t n_rerank, int k, int n_threads,
                         float* out_d, int64_t* out_i, int64_t shared_chunk = 0) {
    // Without a shared pass, queries go in groups that share their coarse products: up to
    // COARSE_GROUP, fewer when the batch is small, so that every thread still gets a few.
    const int64_t group = std::max<int64_t>(1, std::min<int64_t>(
        COARSE_GROUP, nq / (4 * std::max(n_threads, 1))));
    const int64_t step = shared_chunk > 0 ? shared_chunk : group;
    const int64_t n_steps = (nq + step - 1) / step;
    auto run = [&](Workspace& ws, int64_t t) {
        const int64_t i = t * step;
        if (shared_chunk > 0)
            search_chunk_shared(v, K, queries + i * v.dim, std::min(step, nq - i), n_probe,
                                probe_ratio, n_rerank, k, ws, out_d + i * k, out_i + i * k);
        else
            search_group(v, K, queries + i * v.dim, std::min(step, nq - i), n_probe,
                         probe_ratio, n_rerank, k, ws, out_d + i * k, out_i + i * k);
    };
    if (n_threads <= 1 || n_steps == 1) {
        // No parallel region: starting one costs microseconds, a lot for a single query.
        Workspace ws;
        ws.reserve(v);
        for (int64_t t = 0; t < n_steps; ++t) run(ws, t);
        prof_flush();
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
        for (int64_t t = 0; t < n_steps; ++t) run(ws, t);
        prof_flush();
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
