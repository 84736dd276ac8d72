# cython: language_level=3
"""Compiled search kernels of binidx (private).

A thin Cython layer over ``search_impl.h`` / ``simd_kernels.h``: it checks nothing that
the public Python layer has not already validated, takes typed C-contiguous memoryviews,
and releases the GIL for all the work.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t, uintptr_t
from libcpp.vector cimport vector

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "simd_kernels.h" namespace "binidx":
    ctypedef struct ScanConsts:
        float delta
        int32_t level_sum
        int32_t t_bias
        float alpha
        float beta
        float gamma

    ctypedef uint8_t Factor
    ctypedef void (*scan_fn)(const uint64_t*, const Factor*, int64_t, int, const uint64_t*,
                             const ScanConsts*, float*) noexcept nogil
    ctypedef float (*dist_fn)(const float*, const float*, int64_t) noexcept nogil

    ctypedef uint64_t Candidate
    float candidate_key(Candidate c) nogil
    int32_t candidate_slot(Candidate c) nogil

    ctypedef struct NextBucket:
        const uint64_t* codes
        const Factor* factors
        const int32_t* slots
        int64_t blocks

    ctypedef struct AdmitTarget:
        Candidate* out
        int64_t m
        int64_t cap
        float threshold
        NextBucket next

    ctypedef int64_t (*scan_admit_fn)(const uint64_t*, const Factor*, const int32_t*, int64_t,
                                      int64_t, int, const uint64_t*, const ScanConsts*,
                                      AdmitTarget*) noexcept nogil

    ctypedef void (*quantize_fn)(const float*, const float*, float*, int64_t, int8_t*,
                                 ScanConsts*) noexcept nogil
    ctypedef void (*pack_fn)(const int8_t*, int, uint64_t*, ScanConsts*) noexcept nogil

    ctypedef void (*matvec_fn)(const float*, const float*, int64_t, int64_t,
                               float*) noexcept nogil
    ctypedef void (*matmat_fn)(const float*, const float*, int64_t, int64_t, int64_t,
                               float*) noexcept nogil
    ctypedef void (*matrows_fn)(const float*, const float*, int64_t, int64_t, int64_t,
                                float*) noexcept nogil

    ctypedef struct Kernels:
        scan_fn scan
        scan_admit_fn scan_admit
        quantize_fn quantize
        pack_fn pack
        matvec_fn matvec_t
        matmat_fn matmat_t
        matrows_fn matrows
        dist_fn l2
        dist_fn dot
        const char* name

    int BLOCK
    int ADMIT_SLACK
    int TABLE_WORDS
    ctypedef uint64_t (*read_stream_fn)(const uint64_t*, int64_t) noexcept nogil
    ctypedef float (*gather_sum_fn)(const float*, int64_t, const int32_t*, int64_t,
                                    int64_t) noexcept nogil
    read_stream_fn read_stream_for_path(int path) nogil
    gather_sum_fn gather_sum_for_path(int path) nogil
    Candidate make_candidate(float key, int32_t slot) nogil
    int best_supported_path() nogil
    Kernels kernels_for_path(int path) nogil


cdef extern from "search_impl.h" namespace "binidx":
    ctypedef struct IndexView:
        int64_t dim
        int64_t n_bits
        int n_words
        int metric
        int64_t n_lists
        const float* centroids_t
        const float* centroid_norms
        const float* centroids_rot
        const float* projection_t
        const uint64_t* const* codes
        const Factor* const* factors
        const float* factor_scales
        const int32_t* const* slots
        const int64_t* sizes
        const float* vectors
        const int64_t* slot_ids
        const uint8_t* allowed
        const uint8_t* const* dead
        int dead_shift

    ctypedef struct Result:
        float key
        int64_t id

    void prefetch_bucket_start(const uint64_t* codes, const Factor* factors,
                               const int32_t* slots, int64_t size, int n_words) nogil
    void rerank(const IndexView& v, const Kernels& K, const float* q, const Candidate* cands,
                int64_t r, Result* out) nogil
    void search_batch(const IndexView& v, const Kernels& K, const float* queries, int64_t nq,
                      int n_probe, float probe_ratio, int64_t n_rerank, int k, int n_threads,
                      float* out_d, int64_t* out_i, int64_t shared_chunk) nogil
    void search_subset(const IndexView& v, const Kernels& K, const float* queries, int64_t nq,
                       const int32_t* subset, int64_t m, int k, int n_threads, float* out_d,
                       int64_t* out_i) nogil

    int PROF_N_PHASES
    int PROF_N_COUNTS
    ctypedef struct Profile:
        uint64_t cycles[11]
        uint64_t counts[5]
    Profile prof_total
    bint PROFILING
    uint64_t prof_tsc() nogil


PATH_NAMES = ("generic", "avx2", "avx512")

cdef int _best_path = best_supported_path()
cdef int _active_path = _best_path


def best_path():
    """Name of the fastest kernel path this CPU supports."""
    return PATH_NAMES[_best_path]


def active_path():
    """Name of the kernel path in use."""
    return PATH_NAMES[_active_path]


def kernel_name():
    """Descriptive name of the kernels in use (e.g. ``"avx512-vbmi"``)."""
    return kernels_for_path(_active_path).name.decode()


def set_path(name):
    """Select a kernel path by name; refuse paths this CPU cannot run.

    Used by tests (every path must give identical results) and by benchmarks.
    """
    global _active_path
    if name not in PATH_NAMES:
        raise ValueError(f"unknown kernel path {name!r}; choose one of {PATH_NAMES}")
    path = PATH_NAMES.index(name)
    if path > _best_path:
        raise ValueError(f"this CPU cannot run the {name!r} kernels (best: {PATH_NAMES[_best_path]!r})")
    _active_path = path


def has_openmp():
    """True when the kernels were compiled with OpenMP (parallel batches)."""
    return bool(_HAVE_OPENMP)


cdef extern from *:
    """
    #ifdef BINIDX_HAVE_OPENMP
    #define BINIDX_OPENMP_FLAG 1
    #else
    #define BINIDX_OPENMP_FLAG 0
    #endif
    """
    int BINIDX_OPENMP_FLAG

_HAVE_OPENMP = BINIDX_OPENMP_FLAG


PROFILE_PHASES = ("matvec", "coarse", "rotate", "drop", "quantize", "scan", "refresh", "select", "rerank", "topk",
                  "group")
PROFILE_COUNTS = ("queries", "pairs", "codes", "admitted", "refreshes")


def profile(bint reset=True):
    """Cycles per search phase and event counts summed since the last reset, or None
    when the kernels were built without ``-DBINIDX_PROFILE`` (the normal build).

    Returns a dict: phase name -> time-stamp-counter cycles, count name -> count.
    """
    if not PROFILING:
        return None
    assert PROF_N_PHASES == len(PROFILE_PHASES) and PROF_N_COUNTS == len(PROFILE_COUNTS)
    out = {name: int(prof_total.cycles[i]) for i, name in enumerate(PROFILE_PHASES)}
    out.update({name: int(prof_total.counts[i]) for i, name in enumerate(PROFILE_COUNTS)})
    if reset:
        for i in range(PROF_N_PHASES):
            prof_total.cycles[i] = 0
        for i in range(PROF_N_COUNTS):
            prof_total.counts[i] = 0
    return out


def tsc():
    """The time-stamp counter (profiling builds; 0 otherwise)."""
    return prof_tsc()


def search(const float[:, ::1] queries, int k, int n_probe, int64_t n_rerank, int n_threads,
           int metric, const float[:, ::1] centroids_t, const float[::1] centroid_norms,
           const float[:, ::1] centroids_rot, const float[:, ::1] projection_t,
           const uintptr_t[::1] code_ptrs,
           const uintptr_t[::1] factor_ptrs, const float[:, ::1] factor_scales,
           const uintptr_t[::1] slot_ptrs,
           const int64_t[::1] sizes, const float[:, ::1] vectors, const int64_t[::1] slot_ids,
           float[:, ::1] out_d, int64_t[:, ::1] out_i, const uint8_t[::1] allowed=None,
           const uintptr_t[::1] dead_pages=None, int dead_shift=0, int64_t shared_chunk=0,
           float probe_ratio=0.0):
    """Search a batch of queries; results are written into ``out_d`` / ``out_i``.

    ``factor_scales`` (n_lists, 2) is the step of each bucket's factor bytes.
    ``allowed`` (one byte per slot) restricts the candidates to slots marked 1.
    ``dead_pages`` (pointers to the pages of the tombstone bitmap, slot s being bit
    ``s mod 2**dead_shift`` of page ``s >> dead_shift``) hides removed vectors whose bucket
    rows remain; None when there are none.
    ``shared_chunk`` > 0 searches the queries in chunks of that many, with one pass over
    each probed bucket per chunk (same results; pays off when the codes are out of cache).
    ``probe_ratio`` > 0 scans, of the ``n_probe`` nearest buckets, those whose centroid is
    within that ratio of the first one's squared distance (at least a quarter of them);
    0 scans all ``n_probe``.
    """
    cdef IndexView v
    v.allowed = &allowed[0] if allowed is not None and allowed.shape[0] > 0 else NULL
    v.dead = <const uint8_t* const*> &dead_pages[0] if dead_pages is not None and dead_pages.shape[0] > 0 else NULL
    v.dead_shift = dead_shift
    v.dim = queries.shape[1]
    v.n_bits = projection_t.shape[1]
    v.n_words = <int>((v.n_bits + 63) // 64)
    v.metric = metric
    v.n_lists = centroid_norms.shape[0]
    # No transposed centroids (0 columns): the coarse step uses the rotated ones.
    v.centroids_t = &centroids_t[0, 0] if centroids_t.shape[1] > 0 else NULL
    v.centroid_norms = &centroid_norms[0]
    v.centroids_rot = &centroids_rot[0, 0]
    v.projection_t = &projection_t[0, 0]
    v.codes = <const uint64_t* const*> &code_ptrs[0]
    v.factors = <const Factor* const*> &factor_ptrs[0]
    v.factor_scales = &factor_scales[0, 0]
    v.slots = <const int32_t* const*> &slot_ptrs[0]
    v.sizes = &sizes[0]
    v.vectors = &vectors[0, 0] if vectors.shape[0] > 0 else NULL
    v.slot_ids = &slot_ids[0] if slot_ids.shape[0] > 0 else NULL
    cdef Kernels K = kernels_for_path(_active_path)
    cdef int64_t nq = queries.shape[0]
    if nq == 0:
        return
    with nogil:
        search_batch(v, K, &queries[0, 0], nq, n_probe, probe_ratio, n_rerank, k, n_threads,
                     &out_d[0, 0], &out_i[0, 0], shared_chunk)


def search_exact_subset(const float[:, ::1] queries, int k, int n_threads, int metric,
                        const int32_t[::1] subset, const float[:, ::1] vectors,
                        const int64_t[::1] slot_ids, float[:, ::1] out_d, int64_t[:, ::1] out_i):
    """Exact top k of each query among the vectors of ``subset`` (slots)."""
    cdef IndexView v
    v.allowed = NULL
    v.dead = NULL
    v.dim = queries.shape[1]
    v.metric = metric
    v.vectors = &vectors[0, 0] if vectors.shape[0] > 0 else NULL
    v.slot_ids = &slot_ids[0] if slot_ids.shape[0] > 0 else NULL
    cdef Kernels K = kernels_for_path(_active_path)
    cdef int64_t nq = queries.shape[0], m = subset.shape[0]
    cdef const int32_t* sub = &subset[0] if m > 0 else NULL
    if nq == 0:
        return
    with nogil:
        search_subset(v, K, &queries[0, 0], nq, sub, m, k, n_threads, &out_d[0, 0], &out_i[0, 0])


def quantize(const float[::1] w):
    """The query side of the estimator, quantised by the active kernel: ``(levels, delta,
    level_sum)``, int8 levels in [-15, 15] with ``w ~ delta * levels``."""
    cdef int64_t n_bits = w.shape[0]
    if n_bits == 0 or n_bits % 64:
        raise ValueError(f"{n_bits} values given; the kernels quantise a multiple of 64")
    levels = np.empty(n_bits, dtype=np.int8)
    cdef int8_t[::1] lv = levels
    cdef ScanConsts c
    cdef Kernels K = kernels_for_path(_active_path)
    K.quantize(&w[0], NULL, NULL, n_bits, &lv[0], &c)
    return levels, c.delta, c.level_sum


cdef ScanConsts _packed(const int8_t[::1] levels, int32_t level_sum, float delta, float alpha,
                        float beta, float gamma, int n_words, uint64_t[::1] table) except *:
    """Pack levels into the active path's scan table; the constants that go with it."""
    if levels.shape[0] != 64 * n_words:
        raise ValueError(f"{levels.shape[0]} query levels for codes of {n_words} 64-bit words")
    cdef ScanConsts c
    c.delta = delta; c.level_sum = level_sum
    c.alpha = alpha; c.beta = beta; c.gamma = gamma
    cdef Kernels K = kernels_for_path(_active_path)
    K.pack(&levels[0], n_words, &table[0], &c)
    return c


def scan(codes, factors, const int8_t[::1] levels, float delta, int32_t level_sum,
         float alpha, float beta, float gamma):
    """Run the active scan kernel over one bucket (for tests and micro-benchmarks).

    ``codes`` (n, n_words) and ``factors`` (n, 2) uint8 are given row by row and laid out
    in blocks of 8 here, as the index stores them; the factor bytes are used as they are
    (the search folds the buckets' scales into ``alpha`` and ``gamma``).  ``levels``,
    ``delta`` and ``level_sum`` are the query side (:func:`quantize`).
    """
    from binidx._storage import to_blocks

    cdef int64_t n = codes.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.float32)
    return scan_blocks(*to_blocks(codes, factors), n, levels, delta, level_sum, alpha, beta,
                       gamma)


def scan_blocks(const uint64_t[:, :, ::1] codes, const uint8_t[:, :, ::1] factors, int64_t n,
                const int8_t[::1] levels, float delta, int32_t level_sum, float alpha,
                float beta, float gamma):
    """Run the active scan kernel over blocked codes (blocks, n_words, 8); n estimates."""
    if n > codes.shape[0] * 8 or factors.shape[0] < codes.shape[0]:
        raise ValueError(f"{n} estimates asked of {codes.shape[0]} blocks of codes and "
                         f"{factors.shape[0]} of factors (8 vectors a block)")
    out = np.empty(codes.shape[0] * 8, dtype=np.float32)
    if n == 0:
        return out[:0]
    cdef int n_words = <int>codes.shape[1]
    table = np.zeros(TABLE_WORDS * n_words, dtype=np.uint64)
    cdef ScanConsts c = _packed(levels, level_sum, delta, alpha, beta, gamma, n_words, table)
    cdef uint64_t[::1] tv = table
    cdef float[::1] ov = out
    cdef Kernels K = kernels_for_path(_active_path)
    with nogil:
        K.scan(&codes[0, 0, 0], &factors[0, 0, 0], n, n_words, &tv[0], &c, &ov[0])
    return out[:n]


def scan_admit(const uint64_t[:, :, ::1] codes, const uint8_t[:, :, ::1] factors,
               const int32_t[::1] slots, int64_t n, const int8_t[::1] levels, float delta,
               int32_t level_sum, float alpha, float beta, float gamma, float threshold,
               int64_t cap, int64_t first_block=0):
    """One call of the active fused scan + admission kernel (for tests).

    Scans blocked codes from ``first_block`` into an empty candidate buffer that the
    kernel leaves once it holds ``cap`` or more entries.  Returns ``(keys, slots,
    next_block)``: the admitted estimates and their slots in scan order, and the block
    the scan stopped before.
    """
    cdef int n_words = <int>codes.shape[1]
    table = np.zeros(TABLE_WORDS * n_words, dtype=np.uint64)
    cdef ScanConsts c = _packed(levels, level_sum, delta, alpha, beta, gamma, n_words, table)
    cdef uint64_t[::1] tv = table
    cands = np.zeros(cap + ADMIT_SLACK, dtype=np.uint64)
    cdef uint64_t[::1] cv = cands
    cdef AdmitTarget t
    t.out = <Candidate*> &cv[0]
    t.m = 0
    t.cap = cap
    t.threshold = threshold
    t.next.blocks = 0
    cdef Kernels K = kernels_for_path(_active_path)
    cdef int64_t next_block = 0, i
    if n > 0:
        with nogil:
            next_block = K.scan_admit(&codes[0, 0, 0], &factors[0, 0, 0], &slots[0], n,
                                      first_block, n_words, &tv[0], &c, &t)
    keys = np.empty(t.m, dtype=np.float32)
    out_slots = np.empty(t.m, dtype=np.int32)
    cdef float[::1] kv = keys
    cdef int32_t[::1] sv = out_slots
    for i in range(t.m):
        kv[i] = candidate_key(cv[i])
        sv[i] = candidate_slot(cv[i])
    return keys, out_slots, next_block


def pairwise(const float[:, ::1] a, const float[:, ::1] b, int metric):
    """Row-wise distances a[i] vs b[i] with the active kernels (squared l2 or dot)."""
    cdef int64_t n = a.shape[0], d = a.shape[1], i
    out = np.empty(n, dtype=np.float32)
    cdef float[::1] ov = out
    cdef Kernels K = kernels_for_path(_active_path)
    with nogil:
        for i in range(n):
            ov[i] = K.l2(&a[i, 0], &b[i, 0], d) if metric == 0 else K.dot(&a[i, 0], &b[i, 0], d)
    return out


# ------------------------------------------------------------------------------------------
# Parts of the search and machine bounds, for benchmarks/micro/kernel_limits.py.

def read_stream(const uint64_t[::1] words):
    """XOR of all ``words`` (length a multiple of 32), read in order: times a streaming read."""
    cdef read_stream_fn f = read_stream_for_path(_active_path)
    cdef uint64_t x
    with nogil:
        x = f(&words[0], words.shape[0])
    return x


def gather_sum(const float[:, ::1] vectors, const int32_t[::1] rows, int64_t ahead):
    """Sum of the given rows (dim a multiple of 16), each prefetched ``ahead`` rows before
    it is read: the memory floor of a rerank over the same rows."""
    cdef gather_sum_fn f = gather_sum_for_path(_active_path)
    cdef float x
    with nogil:
        x = f(&vectors[0, 0], vectors.shape[1], &rows[0], rows.shape[0], ahead)
    return x


def coarse_products(const float[:, ::1] at, const float[:, ::1] queries, bint batched,
                    bint by_rows=False):
    """``queries @ at`` as the search computes it: ``batched`` with the kernel that serves a
    group of queries at once (matmat_t), else one query at a time (matvec_t).  With
    ``by_rows`` the matrix is given by rows (``queries @ at.T``, the coarse step from
    rotated centroids: matrows, dot_body's sums).  For tests: batched and one at a time
    must agree bit for bit."""
    cdef int64_t m = queries.shape[0], i, step
    cdef int64_t dim = at.shape[1] if by_rows else at.shape[0]
    cdef int64_t n = at.shape[0] if by_rows else at.shape[1]
    if queries.shape[1] != dim:
        raise ValueError(f"queries have {queries.shape[1]} columns, the matrix {dim}")
    out = np.empty((m, n), dtype=np.float32)
    cdef float[:, ::1] ov = out
    cdef Kernels K = kernels_for_path(_active_path)
    if m == 0 or n == 0:
        return out
    step = m if batched else 1
    with nogil:
        if by_rows:
            for i in range(m // step):
                K.matrows(&at[0, 0], &queries[i * step, 0], step, dim, n, &ov[i * step, 0])
        elif batched:
            K.matmat_t(&at[0, 0], &queries[0, 0], m, dim, n, &ov[0, 0])
        else:
            for i in range(m):
                K.matvec_t(&at[0, 0], &queries[i, 0], dim, n, &ov[i, 0])
    return out


def rerank_rows(const float[:, ::1] queries, const float[:, ::1] vectors,
                const int64_t[::1] slot_ids, const int32_t[:, ::1] rows, int metric):
    """The search's rerank step alone: exact keys and ids of ``rows[i]`` for query i."""
    cdef int64_t nq = rows.shape[0], r = rows.shape[1], i, j
    keys = np.empty((nq, r), dtype=np.float32)
    ids = np.empty((nq, r), dtype=np.int64)
    cdef float[:, ::1] kv = keys
    cdef int64_t[:, ::1] iv = ids
    cdef IndexView v
    v.dim = vectors.shape[1]
    v.metric = metric
    v.vectors = &vectors[0, 0]
    v.slot_ids = &slot_ids[0]
    cdef Kernels K = kernels_for_path(_active_path)
    cands = np.empty(r, dtype=np.uint64)
    cdef uint64_t[::1] cv = cands
    cdef vector[Result] res_buf = vector[Result](r)
    cdef Result* res = res_buf.data()
    with nogil:
        for i in range(nq):
            for j in range(r):
                cv[j] = make_candidate(0.0, rows[i, j])
            rerank(v, K, &queries[i, 0], &cv[0], r, res)
            for j in range(r):
                kv[i, j] = res[j].key
                iv[i, j] = res[j].id
    return keys, ids


def scan_buckets(const uint64_t[:, :, ::1] codes, const uint8_t[:, :, ::1] factors,
                 const int32_t[::1] slots, const int64_t[::1] first_blocks,
                 const int64_t[::1] sizes, const int32_t[::1] order,
                 const int8_t[::1] levels, float delta, int32_t level_sum, float alpha,
                 float beta, float gamma, float threshold, int64_t cap):
    """Scan buckets in the given order as the search does (fused scan + admission, the
    start of the next bucket prefetched near the end of the current one), with a fixed
    threshold and one query side for all of them; the buffer is emptied when full.
    Bucket b is ``sizes[b]`` codes from block ``first_blocks[b]`` of the arrays.
    Returns the number of admitted candidates."""
    cdef int n_words = <int>codes.shape[1]
    table = np.zeros(TABLE_WORDS * n_words, dtype=np.uint64)
    cdef ScanConsts c = _packed(levels, level_sum, delta, alpha, beta, gamma, n_words, table)
    cdef uint64_t[::1] tv = table
    cands = np.empty(cap + ADMIT_SLACK, dtype=np.uint64)
    cdef uint64_t[::1] cv = cands
    cdef AdmitTarget t
    t.out = <Candidate*> &cv[0]
    t.m = 0
    t.cap = cap
    t.threshold = threshold
    cdef Kernels K = kernels_for_path(_active_path)
    cdef int64_t p, b, nxt, blk, n_blocks, admitted = 0, n = order.shape[0]
    with nogil:
        if n > 0:
            b = order[0]
            prefetch_bucket_start(&codes[first_blocks[b], 0, 0], &factors[first_blocks[b], 0, 0],
                                  &slots[first_blocks[b] * BLOCK], sizes[b], n_words)
        for p in range(n):
            b = order[p]
            t.next.blocks = 0
            if p + 1 < n:
                nxt = order[p + 1]
                t.next.codes = &codes[first_blocks[nxt], 0, 0]
                t.next.factors = &factors[first_blocks[nxt], 0, 0]
                t.next.slots = &slots[first_blocks[nxt] * BLOCK]
                t.next.blocks = (sizes[nxt] + BLOCK - 1) // BLOCK
            n_blocks = (sizes[b] + BLOCK - 1) // BLOCK
            blk = 0
            while blk < n_blocks:
                blk = K.scan_admit(&codes[first_blocks[b], 0, 0], &factors[first_blocks[b], 0, 0],
                                   &slots[first_blocks[b] * BLOCK], sizes[b], blk, n_words,
                                   &tv[0], &c, &t)
                if t.m >= t.cap:
                    admitted += t.m
                    t.m = 0
    return admitted + t.m
