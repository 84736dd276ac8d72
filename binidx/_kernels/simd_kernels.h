// Per-CPU kernels of binidx: code scan (RaBitQ-style estimator, by byte look-up tables or
// AND + popcount) and float distances.
//
// Each kernel body is written once as an always-inline function and instantiated in a
// few thin wrappers compiled for different instruction sets with
// __attribute__((target(...))).  The library is built for baseline x86-64 (never
// -march=native); `select_kernels()` picks the best wrappers at run time from
// __builtin_cpu_supports.  All paths perform the same IEEE operations in the same order
// (no FMA contraction: -ffp-contract=off, fixed 16-lane accumulation), so every path
// returns bit-identical results and search results do not depend on the CPU.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#define BINIDX_X86 1
#include <immintrin.h>
#endif

namespace binidx {

// The asymmetric estimator for one (query, bucket) pair; see "Codes" in docs/design.md.
// The query side is w, the rotated residual of the query to the bucket's centroid,
// quantised to 5-bit symmetric levels: w_d ~ delta * u_d, u_d in [-15, 15] (quantize).
// For vector i with code bits b and per-vector factors (a_i, rn2_i):
//   T   = sum_d (2 b_d - 1) u_d                 (an exact integer, the same on every path)
//   s.w = delta * T                             (estimate of <2b-1, w>)
//   out = alpha * (a_i * s.w) + beta + gamma * rn2_i
// How T is computed depends on the path: from 5 bit planes of u + 15 and popcounts
// (generic, AVX2), or from byte look-up tables of 4-dimension partial sums (AVX-512
// VBMI).  `pack` turns the levels into the path's table and sets t_bias, the constant
// of its formula for T.  The factors are stored as bytes (Factor) in steps of a
// per-bucket scale; the search folds the scales into alpha and gamma, so the kernels use
// the bytes as they are.
struct ScanConsts {
    float delta;        // step of the query levels
    int32_t level_sum;  // sum_d u_d (quantize)
    int32_t t_bias;     // the path's constant in T (pack)
    float alpha;
    float beta;
    float gamma;
};

// Levels of the query side: the largest |u_d|, and the uint64 words of scan table that
// `pack` writes per 64-bit code word (the larger of the two layouts: 5 planes, or 256
// bytes of look-up tables).
static const int LEVEL_MAX = 15;
static const int TABLE_WORDS = 32;

// A per-vector factor: one byte, the factor in steps of its bucket's scale.
typedef uint8_t Factor;

// One entry of the candidate buffer of a search: an estimate and the vector's slot,
// packed into one integer whose order is the order by (estimate, slot):
//   high 32 bits: order_bits(estimate), low 32 bits: slot (>= 0).
// Selecting among integers costs a quarter of selecting among {float, int} structs
// compared field by field (320 entries: 0.8 us instead of 3.5 us, branchy float
// compares and tie tests mispredict).
typedef uint64_t Candidate;

// Monotone map of a float to uint32 (x < y iff order_bits(x) < order_bits(y), for all
// non-NaN floats); -0 is first made +0, so equal floats map to equal keys.
static inline __attribute__((always_inline)) uint32_t order_bits(float x) {
    x += 0.0f;  // -0 + +0 = +0
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

static inline __attribute__((always_inline)) float order_value(uint32_t k) {
    const uint32_t u = k ^ ((k & 0x80000000u) ? 0x80000000u : 0xFFFFFFFFu);
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

static inline __attribute__((always_inline)) Candidate make_candidate(float key, int32_t slot) {
    return ((uint64_t)order_bits(key) << 32) | (uint32_t)slot;
}
static inline __attribute__((always_inline)) float candidate_key(Candidate c) {
    return order_value((uint32_t)(c >> 32));
}
static inline __attribute__((always_inline)) int32_t candidate_slot(Candidate c) {
    return (int32_t)(uint32_t)c;
}

// The bucket the search scans next (see scan_admit below).
struct NextBucket {
    const uint64_t* codes = nullptr;
    const Factor* factors = nullptr;
    const int32_t* slots = nullptr;
    int64_t blocks = 0;  // 0: no next bucket
};

// Admission of a bucket's estimates into the candidate buffer (see scan_admit below).
struct AdmitTarget {
    Candidate* out;          // the buffer; room for cap + ADMIT_SLACK entries
    int64_t m;               // entries in use, updated by the scan
    int64_t cap;             // the scan returns once m >= cap
    float threshold;         // admit est <= threshold
    NextBucket next;         // prefetched at the end of this bucket's scan
};

typedef void (*scan_fn)(const uint64_t* codes, const Factor* factors, int64_t n, int n_words,
                        const uint64_t* table, const ScanConsts* c, float* out);
typedef int64_t (*scan_admit_fn)(const uint64_t* codes, const Factor* factors,
                                 const int32_t* slots, int64_t n, int64_t first_block,
                                 int n_words, const uint64_t* table, const ScanConsts* c,
                                 AdmitTarget* t);
typedef float (*dist_fn)(const float* a, const float* b, int64_t d);
typedef void (*quantize_fn)(const float* a, const float* b, float* w, int64_t n_bits,
                            int8_t* levels, ScanConsts* c);
typedef void (*pack_fn)(const int8_t* levels, int n_words, uint64_t* table, ScanConsts* c);
typedef void (*matvec_fn)(const float* at, const float* q, int64_t dim, int64_t n, float* out);
typedef void (*matmat_fn)(const float* at, const float* q, int64_t m, int64_t dim, int64_t n,
                          float* out);
typedef void (*matrows_fn)(const float* a, const float* q, int64_t m, int64_t dim, int64_t n,
                           float* out);

// The kernel paths, best last (the index of each in _search.pyx's PATH_NAMES).
enum KernelPath { PATH_GENERIC = 0, PATH_AVX2 = 1, PATH_AVX512 = 2 };

struct Kernels {
    int path;                  // the KernelPath these kernels were compiled for
    scan_fn scan;              // every estimate of a bucket (tests, micro-benchmarks)
    scan_admit_fn scan_admit;  // the search's scan: only the admitted candidates
    quantize_fn quantize;      // the query side's levels
    pack_fn pack;              // levels -> this path's scan table
    matvec_fn matvec_t;  // out[i] = sum_j q[j] * at[j * n + i]
    matmat_fn matmat_t;  // matvec_t for m vectors q[r * dim ...] -> out[r * n ...]
    matrows_fn matrows;  // out[r * n + i] = dot(a[i * dim ...], q[r * dim ...]), a row-major
    dist_fn l2;   // squared L2 distance
    dist_fn dot;  // inner product
    const char* name;
};

// ---------------------------------------------------------------------------------------
// Bodies (always inlined into the per-target wrappers below).

// Codes and factors of a bucket are stored in blocks of 8 vectors (BLOCK):
//   codes[block][word][lane]   uint64, n_words words per code
//   factors[block][0][lane] = a,  factors[block][1][lane] = rn2   (Factor bytes)
// so that one 512-bit load holds the same word of 8 codes and the scan needs no
// horizontal sums.  Vector i of a bucket is block i / 8, lane i % 8; the last block is
// padded, and the scan writes estimates for whole blocks (out has room for them).
static const int BLOCK = 8;

// Entries of the candidate buffer beyond its cap: a scan writes whole vectors of
// Candidates past the last admitted one (two blocks' worth on the AVX-512 path).
static const int ADMIT_SLACK = 2 * BLOCK;

// The fused scan prefetches its three streams (codes, factors, slots) a fixed distance
// ahead, in blocks: about 8 kB, at least 8 and at most 32 blocks.  The search's buckets
// form one virtual stream: near the end of a bucket the prefetches run on into the next
// one, so its first blocks, at a random address, arrive in time (a bucket of a few kB is
// too short for the hardware prefetcher to ramp up).
static inline __attribute__((always_inline)) int64_t prefetch_distance(int n_words) {
    const int64_t d = 8192 / (n_words * 64 + 2 * BLOCK * (int)sizeof(Factor) + 4 * BLOCK);
    return d < 8 ? 8 : (d > 32 ? 32 : d);
}

// Every helper that only prefetches must be always_inline: GCC's IPA deems a function
// whose only effect is __builtin_prefetch free of side effects and deletes its calls
// (GCC 12, at -O1 and above), so a plain `inline` helper or a lambda prefetches nothing.
static inline __attribute__((always_inline)) void prefetch_range(const void* p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch((const char*)p + off);
}

static inline __attribute__((always_inline)) void prefetch_block(
        const uint64_t* codes, const Factor* factors, const int32_t* slots, int64_t blk, int n_words) {
    const char* c = (const char*)(codes + blk * n_words * BLOCK);
    for (int w = 0; w < n_words; ++w) __builtin_prefetch(c + 64 * w);
    __builtin_prefetch(factors + blk * 2 * BLOCK);
    __builtin_prefetch(slots + blk * BLOCK);
}

// Prefetch for the scan of block blk of n_blocks: block blk + dist of this bucket, or of
// the next one past the end.  A bucket shorter than dist prefetches the first blocks of
// the next one when its scan starts.
static inline __attribute__((always_inline)) void prefetch_ahead(
        const uint64_t* codes, const Factor* factors, const int32_t* slots, int64_t blk,
        int64_t n_blocks, int64_t dist, int n_words, const NextBucket& nx) {
    const int64_t ahead = blk + dist;
    if (ahead < n_blocks)
        prefetch_block(codes, factors, slots, ahead, n_words);
    else if (ahead - n_blocks < nx.blocks)
        prefetch_block(nx.codes, nx.factors, nx.slots, ahead - n_blocks, n_words);
}

static inline __attribute__((always_inline)) void prefetch_short_bucket(
        int64_t first_block, int64_t n_blocks, int64_t dist, int n_words, const NextBucket& nx) {
    if (first_block == 0)
        for (int64_t j = 0; j < dist - n_blocks && j < nx.blocks; ++j)
            prefetch_block(nx.codes, nx.factors, nx.slots, j, n_words);
}

static inline __attribute__((always_inline)) float finish_estimate(
        int64_t t, float a, float rn2, const ScanConsts* c) {
    const float sw = c->delta * (float)t;
    return c->alpha * (a * sw) + c->beta + c->gamma * rn2;
}

// Estimates of the 8 lanes of one block, lane by lane, from the 5 bit planes of u + 15
// (pack_planes_body): sum over set bits of (u_d + 15) is sum_j 2^j popcount(b & plane_j),
// so T = 2 (that - 15 popcount(b)) - sum_d u_d.
static inline __attribute__((always_inline)) void block_estimates_scalar(
        const uint64_t* block, const Factor* f, int n_words, const uint64_t* planes,
        const ScanConsts* c, float* est) {
    for (int lane = 0; lane < BLOCK; ++lane) {
        int64_t pc = 0, acc = 0;
        for (int w = 0; w < n_words; ++w) {
            const uint64_t x = block[w * BLOCK + lane];
            pc += __builtin_popcountll(x);
            for (int j = 0; j < 5; ++j)
                acc += (int64_t)__builtin_popcountll(x & planes[j * n_words + w]) << j;
        }
        const int64_t t = 2 * (acc - LEVEL_MAX * pc) - c->t_bias;
        est[lane] = finish_estimate(t, (float)f[lane], (float)f[BLOCK + lane], c);
    }
}

static inline __attribute__((always_inline)) void scan_scalar_body(
        const uint64_t* codes, const Factor* factors, int64_t n, int n_words,
        const uint64_t* table, const ScanConsts* c, float* out) {
    const int64_t n_blocks = (n + BLOCK - 1) / BLOCK;
    for (int64_t blk = 0; blk < n_blocks; ++blk)
        block_estimates_scalar(codes + blk * n_words * BLOCK, factors + blk * 2 * BLOCK, n_words,
                               table, c, out + blk * BLOCK);
}

// The scan of a search, fused with the admission test: from block first_block on,
// vector i (slot slots[i]) joins the candidate buffer when its estimate is <= the
// threshold, in bucket order.  The scan returns the next block to scan as soon as the
// buffer holds cap or more entries (then the caller shrinks the buffer and lowers the
// threshold), or the number of blocks when the bucket is done.  Filters (allowed slots,
// removed slots) are applied by the caller to the admitted few, when it shrinks the
// buffer: a look-up per admitted slot inside this loop would put a random memory access
// on its critical path.
//
// Admitting ties (<=) makes the final selection exact whatever the threshold in force:
// a rejected estimate is strictly worse than n_rerank others, so the kept candidates are
// the n_rerank best by (estimate, slot), independent of when the buffer was refreshed,
// and so of the kernel path.
static inline __attribute__((always_inline)) int64_t scan_admit_scalar_body(
        const uint64_t* codes, const Factor* factors, const int32_t* slots, int64_t n,
        int64_t first_block, int n_words, const uint64_t* table, const ScanConsts* c,
        AdmitTarget* t) {
    const int64_t n_blocks = (n + BLOCK - 1) / BLOCK;
    const float threshold = t->threshold;
    Candidate* out = t->out;
    int64_t m = t->m;
    const int64_t dist = prefetch_distance(n_words);
    prefetch_short_bucket(first_block, n_blocks, dist, n_words, t->next);
    for (int64_t blk = first_block; blk < n_blocks; ++blk) {
        prefetch_ahead(codes, factors, slots, blk, n_blocks, dist, n_words, t->next);
        float est[BLOCK];
        block_estimates_scalar(codes + blk * n_words * BLOCK, factors + blk * 2 * BLOCK, n_words,
                               table, c, est);
        const int lanes = n - blk * BLOCK < BLOCK ? (int)(n - blk * BLOCK) : BLOCK;
        for (int lane = 0; lane < lanes; ++lane) {
            const int32_t s = slots[blk * BLOCK + lane];
            if (est[lane] <= threshold)
                out[m++] = make_candidate(est[lane], s);
        }
        if (m >= t->cap) {
            t->m = m;
            return blk + 1;
        }
    }
    t->m = m;
    return n_blocks;
}

// Pairwise sum of 16 lanes: 4 dependent steps instead of 15, the same order everywhere.
static inline __attribute__((always_inline)) float reduce16(float* acc) {
    for (int j = 0; j < 8; ++j) acc[j] += acc[j + 8];
    for (int j = 0; j < 4; ++j) acc[j] += acc[j + 4];
    acc[0] += acc[2];
    acc[1] += acc[3];
    return acc[0] + acc[1];
}

// 16 independent lanes: vectorised by the compiler for the target of the wrapper, and the
// same sequence of float operations on every target.
static inline __attribute__((always_inline)) float l2_body(const float* a, const float* b,
                                                           int64_t d) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
        for (int j = 0; j < 16; ++j) {
            const float t = a[i + j] - b[i + j];
            acc[j] += t * t;
        }
    }
    for (int j = 0; i < d; ++i, ++j) {
        const float t = a[i] - b[i];
        acc[j] += t * t;
    }
    return reduce16(acc);
}

static inline __attribute__((always_inline)) float dot_body(const float* a, const float* b,
                                                            int64_t d) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
        for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
    }
    for (int j = 0; i < d; ++i, ++j) acc[j] += a[i] * b[i];
    return reduce16(acc);
}

// Matrix-vector product with the matrix stored transposed, (dim, n) row-major: the loop
// runs along the n outputs, so it vectorises without horizontal sums, and each output is
// accumulated over j in the same order on every target.
static inline __attribute__((always_inline)) void matvec_t_body(
        const float* at, const float* q, int64_t dim, int64_t n, float* out) {
    // 64 outputs at a time stay in registers across the whole j loop.
    int64_t i0 = 0;
    for (; i0 + 64 <= n; i0 += 64) {
        float acc[64];
        for (int k = 0; k < 64; ++k) acc[k] = 0.0f;
        for (int64_t j = 0; j < dim; ++j) {
            const float qj = q[j];
            const float* row = at + j * n + i0;
            for (int k = 0; k < 64; ++k) acc[k] += qj * row[k];
        }
        for (int k = 0; k < 64; ++k) out[i0 + k] = acc[k];
    }
    for (int64_t i = i0; i < n; ++i) out[i] = 0.0f;
    for (int64_t j = 0; j < dim; ++j) {
        const float qj = q[j];
        const float* row = at + j * n;
        for (int64_t i = i0; i < n; ++i) out[i] += qj * row[i];
    }
}

// matvec_t_body for m vectors at once: out[r * n + i] = sum_j q[r * dim + j] * at[j * n + i].
// Every output is accumulated with the same operations in the same order as matvec_t_body
// (so a batch gets bit-identical coarse keys to one query at a time), but a 64-column tile
// of `at` (dim * 256 bytes: L1/L2) is read for all m vectors before the next tile, and
// MATMAT_ROWS vectors share each load of a tile row.  One query at a time streams the
// whole matrix (1.1 MB for 2,000 centroids at dim 128, out of L2) per query: ~45 us of a
// sift-1m query; this reads it once per batch of m.
static const int64_t MATMAT_ROWS = 4;

static inline __attribute__((always_inline)) void matmat_t_body(
        const float* at, const float* q, int64_t m, int64_t dim, int64_t n, float* out) {
    const int64_t full_rows = m - m % MATMAT_ROWS;
    int64_t i0 = 0;
    for (; i0 + 64 <= n; i0 += 64) {
        for (int64_t r0 = 0; r0 < full_rows; r0 += MATMAT_ROWS) {
            float acc[MATMAT_ROWS][64];
            for (int r = 0; r < MATMAT_ROWS; ++r)
                for (int k = 0; k < 64; ++k) acc[r][k] = 0.0f;
            const float* q0 = q + r0 * dim;
            for (int64_t j = 0; j < dim; ++j) {
                const float* row = at + j * n + i0;
                for (int r = 0; r < MATMAT_ROWS; ++r) {
                    const float qj = q0[r * dim + j];
                    for (int k = 0; k < 64; ++k) acc[r][k] += qj * row[k];
                }
            }
            for (int r = 0; r < MATMAT_ROWS; ++r)
                for (int k = 0; k < 64; ++k) out[(r0 + r) * n + i0 + k] = acc[r][k];
        }
    }
    // The tail columns of every full row block, as matvec_t_body's tail loop does them.
    for (int64_t r = 0; r < full_rows; ++r) {
        float* o = out + r * n;
        for (int64_t i = i0; i < n; ++i) o[i] = 0.0f;
        for (int64_t j = 0; j < dim; ++j) {
            const float qj = q[r * dim + j];
            const float* row = at + j * n;
            for (int64_t i = i0; i < n; ++i) o[i] += qj * row[i];
        }
    }
    for (int64_t r = full_rows; r < m; ++r) matvec_t_body(at, q + r * dim, dim, n, out + r * n);
}

// Products with a matrix stored by rows, (n, dim) row-major, for m vectors:
// out[r * n + i] = dot_body(a + i * dim, q + r * dim, dim), so each output has dot_body's
// operations in dot_body's order whatever m and the target (the coarse step of an index
// whose centroids are kept only rotated, see search_impl.h).  Rows are taken 16 at a time
// (16 x dim floats stay in L1 for all m vectors); the AVX-512 target folds the 16 rows'
// lanes together with the same pairwise additions as reduce16 (matrows_avx512).
static inline __attribute__((always_inline)) void matrows_body(
        const float* a, const float* q, int64_t m, int64_t dim, int64_t n, float* out) {
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
        const int64_t i1 = i0 + 16 < n ? i0 + 16 : n;
        for (int64_t r = 0; r < m; ++r)
            for (int64_t i = i0; i < i1; ++i) out[r * n + i] = dot_body(a + i * dim, q + r * dim, dim);
    }
}

// The step of the query levels for a largest |w_d| of m: 0 for a (numerically) zero
// residual, whose levels are then all 0, rather than an overflowing 1 / delta.
static inline __attribute__((always_inline)) float level_step(float m, float* inv) {
    const float delta = m / (float)LEVEL_MAX;
    *inv = delta > 1e-30f ? 1.0f / delta : 0.0f;
    return *inv > 0.0f ? delta : 0.0f;
}

// The level of one coordinate: round(w * inv) clamped to [-15, 15], computed as
// trunc(w * inv + 15.5) - 15 on a non-negative value (truncation is then the floor, as
// the vector conversion does), with the same IEEE operations on every path.
static inline __attribute__((always_inline)) int32_t level_of(float w, float inv) {
    int32_t v = (int32_t)(w * inv + ((float)LEVEL_MAX + 0.5f));
    v = v < 0 ? 0 : (v > 2 * LEVEL_MAX ? 2 * LEVEL_MAX : v);
    return v - LEVEL_MAX;
}

// 5-bit symmetric scalar quantisation of the rotated query residual w = a - b (b may be
// null: w = a; n_bits floats, a multiple of 64; wbuf is scratch space): levels u_d with
// w_d ~ delta * u_d, and delta and sum_d u_d in c.  A symmetric grid needs no popcount of
// the code in the estimator (its zero is w = 0), and 31 levels over [-max|w|, max|w|]
// are about twice as fine as the 16 levels over [min w, max w] before.
static inline __attribute__((always_inline)) void quantize_body(
        const float* a, const float* b, float* wbuf, int64_t n_bits, int8_t* levels,
        ScanConsts* c) {
    const float* w = a;
    if (b != nullptr) {
        for (int64_t i = 0; i < n_bits; ++i) wbuf[i] = a[i] - b[i];
        w = wbuf;
    }
    float m = 0.0f;
    for (int64_t i = 0; i < n_bits; ++i) {
        const float x = w[i] < 0.0f ? -w[i] : w[i];
        m = x > m ? x : m;
    }
    float inv;
    c->delta = level_step(m, &inv);
    int32_t sum = 0;
    for (int64_t i = 0; i < n_bits; ++i) {
        const int32_t u = level_of(w[i], inv);
        levels[i] = (int8_t)u;
        sum += u;
    }
    c->level_sum = sum;
}

// The scan table of the popcount paths: 5 bit planes of v_d = u_d + 15 in [0, 30],
// table[j * n_words + word] bit i = bit j of v at dimension 64 word + i.
static inline __attribute__((always_inline)) void pack_planes_body(
        const int8_t* levels, int n_words, uint64_t* table, ScanConsts* c) {
    for (int word = 0; word < n_words; ++word) {
        uint64_t p[5] = {0, 0, 0, 0, 0};
        for (int i = 0; i < 64; ++i) {
            const uint32_t v = (uint32_t)(levels[64 * word + i] + LEVEL_MAX);
            for (int j = 0; j < 5; ++j) p[j] |= (uint64_t)((v >> j) & 1u) << i;
        }
        for (int j = 0; j < 5; ++j) table[j * n_words + word] = p[j];
    }
    c->t_bias = c->level_sum;
}

// ---------------------------------------------------------------------------------------
// Baseline x86-64 (SSE2, software popcount).

static void scan_generic(const uint64_t* codes, const Factor* factors, int64_t n, int n_words,
                         const uint64_t* table, const ScanConsts* c, float* out) {
    scan_scalar_body(codes, factors, n, n_words, table, c, out);
}
static int64_t scan_admit_generic(const uint64_t* codes, const Factor* factors,
                                  const int32_t* slots, int64_t n, int64_t first_block,
                                  int n_words, const uint64_t* table, const ScanConsts* c,
                                  AdmitTarget* t) {
    return scan_admit_scalar_body(codes, factors, slots, n, first_block, n_words, table, c, t);
}
static float l2_generic(const float* a, const float* b, int64_t d) { return l2_body(a, b, d); }
static float dot_generic(const float* a, const float* b, int64_t d) { return dot_body(a, b, d); }
static void matvec_t_generic(const float* at, const float* q, int64_t dim, int64_t n,
                             float* out) {
    matvec_t_body(at, q, dim, n, out);
}
static void matmat_t_generic(const float* at, const float* q, int64_t m, int64_t dim,
                             int64_t n, float* out) {
    matmat_t_body(at, q, m, dim, n, out);
}
static void matrows_generic(const float* a, const float* q, int64_t m, int64_t dim, int64_t n,
                            float* out) {
    matrows_body(a, q, m, dim, n, out);
}
static void quantize_generic(const float* a, const float* b, float* w, int64_t n_bits,
                             int8_t* levels, ScanConsts* c) {
    quantize_body(a, b, w, n_bits, levels, c);
}
static void pack_generic(const int8_t* levels, int n_words, uint64_t* table, ScanConsts* c) {
    pack_planes_body(levels, n_words, table, c);
}

#ifdef BINIDX_X86
// x86-64-v3: hardware popcnt, AVX2 for the float loops.
__attribute__((target("popcnt,avx2,bmi2"))) static void scan_avx2(
        const uint64_t* codes, const Factor* factors, int64_t n, int n_words,
        const uint64_t* table, const ScanConsts* c, float* out) {
    scan_scalar_body(codes, factors, n, n_words, table, c, out);
}
__attribute__((target("popcnt,avx2,bmi2"))) static int64_t scan_admit_avx2(
        const uint64_t* codes, const Factor* factors, const int32_t* slots, int64_t n,
        int64_t first_block, int n_words, const uint64_t* table, const ScanConsts* c,
        AdmitTarget* t) {
    return scan_admit_scalar_body(codes, factors, slots, n, first_block, n_words, table, c, t);
}
__attribute__((target("avx2"))) static float l2_avx2(const float* a, const float* b, int64_t d) {
    return l2_body(a, b, d);
}
__attribute__((target("avx2"))) static float dot_avx2(const float* a, const float* b, int64_t d) {
    return dot_body(a, b, d);
}
__attribute__((target("avx2"))) static void matvec_t_avx2(const float* at, const float* q,
                                                          int64_t dim, int64_t n, float* out) {
    matvec_t_body(at, q, dim, n, out);
}
__attribute__((target("avx2"))) static void matmat_t_avx2(const float* at, const float* q,
                                                          int64_t m, int64_t dim, int64_t n,
                                                          float* out) {
    matmat_t_body(at, q, m, dim, n, out);
}
__attribute__((target("avx2"))) static void matrows_avx2(const float* a, const float* q,
                                                         int64_t m, int64_t dim, int64_t n,
                                                         float* out) {
    matrows_body(a, q, m, dim, n, out);
}
__attribute__((target("avx2,bmi2"))) static void quantize_avx2(
        const float* a, const float* b, float* w, int64_t n_bits, int8_t* levels, ScanConsts* c) {
    quantize_body(a, b, w, n_bits, levels, c);
}
__attribute__((target("avx2,bmi2"))) static void pack_avx2(const int8_t* levels, int n_words,
                                                           uint64_t* table, ScanConsts* c) {
    pack_planes_body(levels, n_words, table, c);
}

// AVX-512 with VBMI: one 512-bit register holds word w of the 8 codes of a block.  Each
// nibble of it (4 code bits) indexes a 16-entry table of the partial sums of the 4 query
// levels it covers; VPERMI2B looks up all 128 nibbles of the register in two instructions,
// the nibble's position in its 64-bit word selecting one of 8 tables (its 3 bits sit
// above the 4 nibble bits of the index).  VPSADBW then sums each code's 16 looked-up
// bytes.  Per block and word that is 8 instructions where the popcount form needs 18
// (5 ANDs, 6 popcounts, shifts and adds).  The estimator is evaluated 8 lanes at a time
// with the same float operations, in the same order, as finish_estimate (no FMA).
#define BINIDX_AVX512_TARGET "popcnt,avx2,avx512f,avx512vl,avx512bw,avx512dq,avx512vbmi"

// Look-up table entries carry this offset, so that every entry (offset + a sum of 4
// levels, in [4, 124]) and every sum of two (<= 248) is an unsigned byte for VPSADBW.
static const int LUT_OFFSET = 64;

// Estimator constants broadcast once per bucket.
struct ScanConsts256 {
    __m256 delta, alpha, beta, gamma;
    __m512i t_bias;
};

__attribute__((target(BINIDX_AVX512_TARGET))) static inline __attribute__((always_inline))
ScanConsts256 broadcast_consts(const ScanConsts* c) {
    return ScanConsts256{_mm256_set1_ps(c->delta), _mm256_set1_ps(c->alpha),
                         _mm256_set1_ps(c->beta), _mm256_set1_ps(c->gamma),
                         _mm512_set1_epi64(c->t_bias)};
}

// The 8 estimates of one block.  table holds, per code word, four 64-byte tables: low
// nibbles of bytes 0-3, of bytes 4-7, then high nibbles likewise (pack_avx512).
__attribute__((target(BINIDX_AVX512_TARGET))) static inline __attribute__((always_inline))
__m256 block_estimates_avx512(const uint64_t* block, const Factor* f, int n_words,
                              const uint64_t* table, const ScanConsts256& k) {
    // Byte j of a word gets (j % 8) << 4: the table of its position in the word.
    const __m512i position = _mm512_set1_epi64(0x7060504030201000LL);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i zero = _mm512_setzero_si512();
    __m512i acc = zero;
    for (int w = 0; w < n_words; ++w) {
        const __m512i x = _mm512_loadu_si512((const void*)(block + w * BLOCK));
        const uint64_t* t = table + w * TABLE_WORDS;
        // (x & 0x0F) | position, and the same of the high nibbles: 0xEA is (A & B) | C.
        const __m512i lo = _mm512_ternarylogic_epi64(x, low4, position, 0xEA);
        const __m512i hi = _mm512_ternarylogic_epi64(_mm512_srli_epi16(x, 4), low4, position, 0xEA);
        const __m512i sums = _mm512_add_epi8(
            _mm512_permutex2var_epi8(_mm512_loadu_si512((const void*)t), lo,
                                     _mm512_loadu_si512((const void*)(t + 8))),
            _mm512_permutex2var_epi8(_mm512_loadu_si512((const void*)(t + 16)), hi,
                                     _mm512_loadu_si512((const void*)(t + 24))));
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(sums, zero));
    }
    const __m512i t = _mm512_sub_epi64(_mm512_slli_epi64(acc, 1), k.t_bias);
    // The 16 factor bytes of the block (8 a, then 8 rn2) widened to floats at once.
    const __m512 f16 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)f)));
    const __m256 a = _mm512_castps512_ps256(f16), rn2 = _mm512_extractf32x8_ps(f16, 1);
    const __m256 sw = _mm256_mul_ps(k.delta, _mm512_cvtepi64_ps(t));
    return _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(k.alpha, _mm256_mul_ps(a, sw)), k.beta),
                         _mm256_mul_ps(k.gamma, rn2));
}

__attribute__((target(BINIDX_AVX512_TARGET))) static void scan_avx512(
        const uint64_t* codes, const Factor* factors, int64_t n, int n_words,
        const uint64_t* table, const ScanConsts* c, float* out) {
    const int64_t n_blocks = (n + BLOCK - 1) / BLOCK;
    const ScanConsts256 k = broadcast_consts(c);
    for (int64_t blk = 0; blk < n_blocks; ++blk)
        _mm256_storeu_ps(out + blk * BLOCK,
                         block_estimates_avx512(codes + blk * n_words * BLOCK,
                                                factors + blk * 2 * BLOCK, n_words, table, k));
}

// scan_admit_scalar_body with the admission test in registers, two blocks (16 codes) at a
// time: one compare of the 16 estimates gives the mask of admitted lanes, and their order
// keys and positions in the bucket are compressed (VPCOMPRESSD, 16 lanes each) and
// interleaved into Candidates.  Per 16 codes that is half the admission instructions of a
// block at a time (which compressed 8 ready-made Candidates per block); the second 8
// Candidates are stored only when more than 8 lanes pass (rare once the buffer has filled,
// so the branch predicts well).  Positions become slots only for the admitted few, at the
// end: the hot loop reads two streams (codes, factors), not three, and nothing in it waits
// for the compare.  Compresses go to registers and whole 64-byte vectors are stored (the
// buffer has ADMIT_SLACK entries of slack): the memory form of VPCOMPRESS is microcoded
// and slow on AMD Zen 4.
__attribute__((target(BINIDX_AVX512_TARGET))) static int64_t scan_admit_avx512(
        const uint64_t* codes, const Factor* factors, const int32_t* slots, int64_t n,
        int64_t first_block, int n_words, const uint64_t* table, const ScanConsts* c,
        AdmitTarget* t) {
    const int64_t n_blocks = (n + BLOCK - 1) / BLOCK;
    const ScanConsts256 k = broadcast_consts(c);
    const __m512 threshold = _mm512_set1_ps(t->threshold);
    // Candidate j of a compressed group: position j in the low dword, key j in the high
    // one (positions are operand a, indices 0-15; keys operand b, 16-31).
    const __m512i first8 = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i second8 = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512i sixteen = _mm512_set1_epi32(2 * BLOCK);
    __m512i pos = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(first_block * BLOCK)),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const int tail = (int)(n - (n_blocks - 1) * BLOCK);
    // Lanes of the last block that hold codes (the rest is padding).
    const uint32_t last_valid = (1u << tail) - 1u;
    Candidate* out = t->out;
    const int64_t m0 = t->m;
    int64_t m = m0;
    const int64_t dist = prefetch_distance(n_words);
    prefetch_short_bucket(first_block, n_blocks, dist, n_words, t->next);
    int64_t blk = first_block;
    while (blk < n_blocks) {
        // The slots are prefetched too: they are read back at the end for admitted lanes.
        prefetch_ahead(codes, factors, slots, blk, n_blocks, dist, n_words, t->next);
        prefetch_ahead(codes, factors, slots, blk + 1, n_blocks, dist, n_words, t->next);
        const __m256 est0 = block_estimates_avx512(codes + blk * n_words * BLOCK,
                                                   factors + blk * 2 * BLOCK, n_words, table, k);
        // An odd last block pairs with itself; its second copy is masked off below.
        const int64_t blk1 = blk + 1 < n_blocks ? blk + 1 : blk;
        const __m256 est1 = block_estimates_avx512(codes + blk1 * n_words * BLOCK,
                                                   factors + blk1 * 2 * BLOCK, n_words, table, k);
        uint32_t valid = 0xFFFFu;
        if (blk + 1 >= n_blocks) valid = last_valid;                 // one block left
        else if (blk + 2 == n_blocks) valid = 0xFFu | (last_valid << BLOCK);
        const __m512 est = _mm512_insertf32x8(_mm512_castps256_ps512(est0), est1, 1);
        const __mmask16 admit = _mm512_mask_cmp_ps_mask((__mmask16)valid, est, threshold, _CMP_LE_OQ);
        // order_bits of the 16 estimates.
        const __m512i bits = _mm512_castps_si512(_mm512_add_ps(est, _mm512_setzero_ps()));
        const __m512i keys = _mm512_xor_si512(bits, _mm512_or_si512(_mm512_srai_epi32(bits, 31), sign));
        const __m512i ck = _mm512_maskz_compress_epi32(admit, keys);
        const __m512i cp = _mm512_maskz_compress_epi32(admit, pos);
        const int count = __builtin_popcount((unsigned)admit);
        _mm512_storeu_si512((void*)(out + m), _mm512_permutex2var_epi32(cp, first8, ck));
        if (count > BLOCK)
            _mm512_storeu_si512((void*)(out + m + BLOCK), _mm512_permutex2var_epi32(cp, second8, ck));
        pos = _mm512_add_epi32(pos, sixteen);
        m += count;
        blk += 2;
        if (m >= t->cap) break;
    }
    blk = blk < n_blocks ? blk : n_blocks;
    for (int64_t i = m0; i < m; ++i)
        out[i] = (out[i] & 0xFFFFFFFF00000000ull) | (uint32_t)slots[(uint32_t)out[i]];
    t->m = m;
    return blk;
}

__attribute__((target(BINIDX_AVX512_TARGET))) static float l2_avx512(const float* a,
                                                                     const float* b, int64_t d) {
    return l2_body(a, b, d);
}
__attribute__((target(BINIDX_AVX512_TARGET))) static float dot_avx512(const float* a,
                                                                      const float* b, int64_t d) {
    return dot_body(a, b, d);
}
// reduce16 of 16 vectors at once: lane i of the result is reduce16(acc[i]), folded with the
// same pairwise additions (lanes j + 8, then j + 4, j + 2, j + 1), two, four, eight and
// finally sixteen rows per register.
__attribute__((target(BINIDX_AVX512_TARGET))) static inline __attribute__((always_inline))
__m512 reduce16_x16(const __m512* acc) {
    __m512 b[8], c[4], g[2];
    for (int p = 0; p < 8; ++p)  // b[p]: row 2p's 8 sums in lanes 0-7, row 2p+1's in 8-15
        b[p] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * p], acc[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(acc[2 * p], acc[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int t = 0; t < 4; ++t)  // c[t]: rows 4t .. 4t+3, 4 sums each, one 128-bit quarter per row
        c[t] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * t], b[2 * t + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(b[2 * t], b[2 * t + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int u = 0; u < 2; ++u)  // quarter q of g[u]: 2 sums of row 8u+q, then 2 of row 8u+4+q
        g[u] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * u], c[2 * u + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(c[2 * u], c[2 * u + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    // Lane 4q + t now holds row 4t + q: put row i in lane i.
    const __m512 f = _mm512_add_ps(_mm512_shuffle_ps(g[0], g[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(g[0], g[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), f);
}

// matrows_body with the 16 rows' accumulators in registers (dim a multiple of 16).
__attribute__((target(BINIDX_AVX512_TARGET))) static void matrows_avx512(
        const float* a, const float* q, int64_t m, int64_t dim, int64_t n, float* out) {
    if (dim % 16) {
        matrows_body(a, q, m, dim, n, out);
        return;
    }
    const int64_t full = n - n % 16;
    for (int64_t i0 = 0; i0 < full; i0 += 16) {
        const float* rows = a + i0 * dim;
        for (int64_t r = 0; r < m; ++r) {
            const float* qr = q + r * dim;
            __m512 acc[16];
            for (int k = 0; k < 16; ++k) acc[k] = _mm512_setzero_ps();
            for (int64_t j = 0; j < dim; j += 16) {
                const __m512 qv = _mm512_loadu_ps(qr + j);
                for (int k = 0; k < 16; ++k)
                    acc[k] = _mm512_add_ps(acc[k], _mm512_mul_ps(_mm512_loadu_ps(rows + k * dim + j), qv));
            }
            _mm512_storeu_ps(out + r * n + i0, reduce16_x16(acc));
        }
    }
    for (int64_t r = 0; r < m; ++r)
        for (int64_t i = full; i < n; ++i) out[r * n + i] = dot_body(a + i * dim, q + r * dim, dim);
}

__attribute__((target(BINIDX_AVX512_TARGET))) static void matvec_t_avx512(
        const float* at, const float* q, int64_t dim, int64_t n, float* out) {
    matvec_t_body(at, q, dim, n, out);
}
__attribute__((target(BINIDX_AVX512_TARGET))) static void matmat_t_avx512(
        const float* at, const float* q, int64_t m, int64_t dim, int64_t n, float* out) {
    matmat_t_body(at, q, m, dim, n, out);
}
// The same arithmetic as quantize_body, 16 values at a time (max is exact in any order,
// the rounding expression is evaluated with the same float operations).
__attribute__((target(BINIDX_AVX512_TARGET))) static void quantize_avx512(
        const float* a, const float* b, float* wbuf, int64_t n_bits, int8_t* levels,
        ScanConsts* c) {
    const float* w = a;
    if (b != nullptr) {
        for (int64_t i = 0; i < n_bits; i += 16)
            _mm512_storeu_ps(wbuf + i, _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
        w = wbuf;
    }
    __m512 vmax = _mm512_setzero_ps();
    for (int64_t i = 0; i < n_bits; i += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(w + i)));
    float inv;
    c->delta = level_step(_mm512_reduce_max_ps(vmax), &inv);
    const __m512 vinv = _mm512_set1_ps(inv), shift = _mm512_set1_ps((float)LEVEL_MAX + 0.5f);
    const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(2 * LEVEL_MAX);
    const __m512i level_max = _mm512_set1_epi32(LEVEL_MAX);
    __m512i vsum = _mm512_setzero_si512();
    for (int64_t i = 0; i < n_bits; i += 16) {
        // level_of, 16 lanes: the conversion truncates a non-negative value, as the cast does.
        __m512i v = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(w + i), vinv), shift));
        v = _mm512_sub_epi32(_mm512_min_epi32(_mm512_max_epi32(v, zero), top), level_max);
        vsum = _mm512_add_epi32(vsum, v);
        _mm_storeu_si128((__m128i*)(levels + i), _mm512_cvtepi32_epi8(v));
    }
    c->level_sum = _mm512_reduce_add_epi32(vsum);
}

// The look-up tables of block_estimates_avx512: per code word, 4 tables of 64 bytes,
// byte (k % 4) * 16 + n of table 2 h + s = LUT_OFFSET + the sum of the levels of
// dimensions 64 word + 8 k + 4 h + i over the set bits i of the nibble n, for the code
// bytes k = 4 s .. 4 s + 3 (h = 0: low nibbles, 1: high).  Each table is 4 x 4 masked
// byte adds of levels broadcast by VPERMB.
__attribute__((target(BINIDX_AVX512_TARGET))) static void pack_avx512(
        const int8_t* levels, int n_words, uint64_t* table, ScanConsts* c) {
    // Byte j of a table belongs to code byte j / 16 of its half: dimension 8 (j / 16) + ...
    alignas(64) static const int8_t first_dim[64] = {
        0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
        8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,
        16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
        24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24};
    // Bit j of has_bit[i]: nibble j % 16 has bit i set.
    static const __mmask64 has_bit[4] = {0xAAAAAAAAAAAAAAAAull, 0xCCCCCCCCCCCCCCCCull,
                                         0xF0F0F0F0F0F0F0F0ull, 0xFF00FF00FF00FF00ull};
    const __m512i base = _mm512_load_si512((const void*)first_dim);
    const __m512i offset = _mm512_set1_epi8(LUT_OFFSET);
    for (int word = 0; word < n_words; ++word) {
        const __m512i lv = _mm512_loadu_si512((const void*)(levels + 64 * word));
        for (int h = 0; h < 2; ++h)
            for (int s = 0; s < 2; ++s) {
                __m512i e = offset;
                for (int i = 0; i < 4; ++i) {
                    const __m512i dims = _mm512_add_epi8(base, _mm512_set1_epi8((char)(32 * s + 4 * h + i)));
                    e = _mm512_mask_add_epi8(e, has_bit[i], e, _mm512_permutexvar_epi8(dims, lv));
                }
                _mm512_storeu_si512((void*)(table + word * TABLE_WORDS + 8 * (2 * h + s)), e);
            }
    }
    // Each code word adds 16 entries' offsets to the sum of the looked-up bytes.
    c->t_bias = c->level_sum + 2 * 16 * LUT_OFFSET * n_words;
}
#endif  // BINIDX_X86

// ---------------------------------------------------------------------------------------
// Machine bounds for the micro-benchmarks (benchmarks/micro/kernel_limits.py), not used
// by the index: a streaming read, and a prefetched gather of float rows.

// XOR of n 64-bit words (n a multiple of 32), read once in order: the single-core read
// bandwidth when the array does not fit in cache.
static inline __attribute__((always_inline)) uint64_t read_stream_body(const uint64_t* p,
                                                                       int64_t n) {
    uint64_t acc[32] = {0};
    for (int64_t i = 0; i < n; i += 32)
        for (int j = 0; j < 32; ++j) acc[j] ^= p[i + j];
    uint64_t x = 0;
    for (int j = 0; j < 32; ++j) x ^= acc[j];
    return x;
}

// Sum of the rows rows[0..n) of a (?, dim) float array (dim a multiple of 16), each row
// prefetched `ahead` rows in advance: the floor of a rerank that reads the same rows.
static inline __attribute__((always_inline)) float gather_sum_body(
        const float* vectors, int64_t dim, const int32_t* rows, int64_t n, int64_t ahead) {
    float acc[16] = {0};
    for (int64_t i = 0; i < n; ++i) {
        if (i + ahead < n) {
            const float* p = vectors + (int64_t)rows[i + ahead] * dim;
            for (int64_t off = 0; off < dim; off += 16) __builtin_prefetch(p + off);
        }
        const float* row = vectors + (int64_t)rows[i] * dim;
        for (int64_t j = 0; j < dim; j += 16)
            for (int l = 0; l < 16; ++l) acc[l] += row[j + l];
    }
    return reduce16(acc);
}

typedef uint64_t (*read_stream_fn)(const uint64_t* p, int64_t n);
typedef float (*gather_sum_fn)(const float* vectors, int64_t dim, const int32_t* rows,
                               int64_t n, int64_t ahead);

static uint64_t read_stream_generic(const uint64_t* p, int64_t n) { return read_stream_body(p, n); }
static float gather_sum_generic(const float* vectors, int64_t dim, const int32_t* rows,
                                int64_t n, int64_t ahead) {
    return gather_sum_body(vectors, dim, rows, n, ahead);
}
#ifdef BINIDX_X86
__attribute__((target(BINIDX_AVX512_TARGET))) static uint64_t read_stream_avx512(
        const uint64_t* p, int64_t n) {
    return read_stream_body(p, n);
}
__attribute__((target(BINIDX_AVX512_TARGET))) static float gather_sum_avx512(
        const float* vectors, int64_t dim, const int32_t* rows, int64_t n, int64_t ahead) {
    return gather_sum_body(vectors, dim, rows, n, ahead);
}
__attribute__((target("avx2"))) static uint64_t read_stream_avx2(const uint64_t* p, int64_t n) {
    return read_stream_body(p, n);
}
__attribute__((target("avx2"))) static float gather_sum_avx2(
        const float* vectors, int64_t dim, const int32_t* rows, int64_t n, int64_t ahead) {
    return gather_sum_body(vectors, dim, rows, n, ahead);
}
#endif

// ---------------------------------------------------------------------------------------
// Run-time selection.

static inline int best_supported_path() {
#ifdef BINIDX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vbmi") &&
        __builtin_cpu_supports("popcnt"))
        return PATH_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") &&
        __builtin_cpu_supports("bmi2"))
        return PATH_AVX2;
#endif
    return PATH_GENERIC;
}

static inline Kernels kernels_for_path(int path) {
#ifdef BINIDX_X86
    if (path == PATH_AVX512) return Kernels{PATH_AVX512, scan_avx512, scan_admit_avx512, quantize_avx512, pack_avx512, matvec_t_avx512, matmat_t_avx512, matrows_avx512, l2_avx512, dot_avx512, "avx512-vbmi"};
    if (path == PATH_AVX2) return Kernels{PATH_AVX2, scan_avx2, scan_admit_avx2, quantize_avx2, pack_avx2, matvec_t_avx2, matmat_t_avx2, matrows_avx2, l2_avx2, dot_avx2, "avx2-popcnt"};
#endif
    (void)path;
    return Kernels{PATH_GENERIC, scan_generic, scan_admit_generic, quantize_generic, pack_generic, matvec_t_generic, matmat_t_generic, matrows_generic, l2_generic, dot_generic, "generic"};
}

static inline read_stream_fn read_stream_for_path(int path) {
#ifdef BINIDX_X86
    if (path == PATH_AVX512) return read_stream_avx512;
    if (path == PATH_AVX2) return read_stream_avx2;
#endif
    (void)path;
    return read_stream_generic;
}

static inline gather_sum_fn gather_sum_for_path(int path) {
#ifdef BINIDX_X86
    if (path == PATH_AVX512) return gather_sum_avx512;
    if (path == PATH_AVX2) return gather_sum_avx2;
#endif
    (void)path;
    return gather_sum_generic;
}

}  // namespace binidx
