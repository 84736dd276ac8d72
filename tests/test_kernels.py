"""The compiled kernels against the pure-NumPy oracles of binidx._reference.

The kernels are compiled without FMA contraction and accumulate in a fixed order, and the
oracles repeat the same float32 operations in the same order, so every comparison here is
exact (``np.array_equal``), on every kernel path this CPU can run.
"""
from __future__ import annotations

import numpy as np
import pytest

import binidx
from binidx import _codes, _storage
from binidx import _reference as ref

_search = pytest.importorskip("binidx._kernels._search")

# Every code length class the AVX-512 scan distinguishes: under 4 words, whole 512-bit
# chunks, and partial last chunks; up to the 1024-bit maximum.
N_BITS = [64, 128, 192, 256, 320, 448, 512, 576, 960, 1024]


def random_codes(rng: np.random.Generator, n: int, n_words: int) -> np.ndarray:
    return rng.integers(0, np.iinfo(np.uint64).max, size=(n, n_words), dtype=np.uint64,
                        endpoint=True)


def random_factors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Factor bytes as the buckets store them (the search folds their scales into the
    estimator's constants)."""
    f = rng.integers(0, 256, size=(n, 2), dtype=np.uint8)
    f[0] = (0, 255)
    return f


# ------------------------------------------------------------------------ quantize
@pytest.mark.parametrize("n_bits", N_BITS)
def test_quantize_matches_reference(kernel_path, n_bits):
    rng = np.random.default_rng(n_bits)
    cases = [
        rng.standard_normal(n_bits).astype(np.float32),
        (rng.standard_normal(n_bits) * 1e4 + 3e4).astype(np.float32),      # far from 0
        rng.exponential(size=n_bits).astype(np.float32) ** 3,              # skewed
        np.round(rng.standard_normal(n_bits) * 4).astype(np.float32),      # many repeats
        (rng.standard_normal(n_bits) * 1e-36).astype(np.float32),          # denormal step
    ]
    for w in cases:
        levels, delta, level_sum = _search.quantize(w)
        want_levels, want_delta, want_sum = ref.quantize_reference(w)
        assert levels.dtype == np.int8 and levels.shape == (n_bits,)
        assert np.array_equal(levels, want_levels)
        assert (delta, level_sum) == (want_delta, want_sum)


def test_quantize_zero_query(kernel_path):
    # A zero residual (the query on the centroid): step 0, every level 0.
    levels, delta, level_sum = _search.quantize(np.zeros(128, np.float32))
    assert not levels.any() and delta == 0.0 and level_sum == 0


def test_quantize_refuses_a_partial_word():
    with pytest.raises(ValueError, match="multiple of 64"):
        _search.quantize(np.ones(100, np.float32))


def test_quantize_reference_is_a_5bit_rounding():
    """The oracle itself: de-quantised values are within half a step of the input."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(256).astype(np.float32)
    levels, delta, level_sum = ref.quantize_reference(w)
    assert np.abs(levels).max() == 15
    assert delta == pytest.approx(np.abs(w).max() / 15, rel=1e-6)
    assert np.abs(delta * levels - w).max() <= delta / 2 * (1 + 1e-5)
    assert level_sum == levels.sum()


# ---------------------------------------------------------------------------- scan
@pytest.mark.parametrize("n_bits", N_BITS)
def test_scan_matches_reference(kernel_path, n_bits):
    rng = np.random.default_rng(1000 + n_bits)
    n_words = n_bits // 64
    for n in (1, 7, 8, 9, 37):
        codes = random_codes(rng, n, n_words)
        codes[0] = 0                          # all -1 signs
        if n > 1:
            codes[1] = np.iinfo(np.uint64).max  # all +1 signs
        factors = random_factors(rng, n)
        w = rng.standard_normal(n_bits).astype(np.float32)
        levels, delta, level_sum = _search.quantize(w)
        for alpha, beta, gamma in ((-2.0, 17.25, 1.0), (-1.0, -0.375, 0.0)):  # l2, ip
            got = _search.scan(codes, factors, levels, delta, level_sum, alpha, beta, gamma)
            want = ref.scan_reference(codes, factors, levels, delta, level_sum, alpha, beta, gamma)
            assert got.dtype == np.float32 and got.shape == (n,)
            assert np.array_equal(got, want), (n, alpha)
            assert np.array_equal(got, ref.estimate_reference(codes, factors, w, alpha, beta, gamma))


def test_scan_blocks_refuses_more_estimates_than_blocks():
    codes = np.zeros((2, 2, 8), np.uint64)
    factors = np.zeros((2, 2, 8), np.uint8)
    levels = np.zeros(128, np.int8)
    with pytest.raises(ValueError, match="17 estimates asked of 2 blocks"):
        _search.scan_blocks(codes, factors, 17, levels, 1.0, 0, 1.0, 1.0, 1.0)


def test_scan_refuses_levels_of_another_width():
    codes = np.zeros((8, 2), np.uint64)
    with pytest.raises(ValueError, match="64 query levels for codes of 2 64-bit words"):
        _search.scan(codes, np.zeros((8, 2), np.uint8), np.zeros(64, np.int8), 1.0, 0,
                     1.0, 0.0, 0.0)


def test_scan_empty_bucket(kernel_path):
    out = _search.scan(np.zeros((0, 2), np.uint64), np.zeros((0, 2), np.uint8),
                       np.zeros(128, np.int8), 1.0, 0, -2.0, 0.0, 1.0)
    assert out.shape == (0,)


@pytest.mark.parametrize("level", [1, -1, 15, -15, 7])
def test_scan_counts_bits(kernel_path, level):
    """With every query level equal to l, T = l (2 popcount(b) - n_bits) exactly, at the
    extremes of the levels' range too (the look-up tables' byte sums are at their largest)."""
    rng = np.random.default_rng(5)
    codes = random_codes(rng, 16, 4)
    codes[0] = np.iinfo(np.uint64).max
    codes[1] = 0
    factors = np.ones((16, 2), np.uint8)
    levels = np.full(256, level, np.int8)
    # delta = alpha = 1, beta = gamma = 0: the estimate is T itself.
    got = _search.scan(codes, factors, levels, 1.0, 256 * level, 1.0, 0.0, 0.0)
    pc = np.bitwise_count(codes).sum(axis=1, dtype=np.int64)
    assert np.array_equal(got, (level * (2 * pc - 256)).astype(np.float32))


def test_scan_reads_each_dimension_of_the_code(kernel_path):
    """One level at a time: every code bit (each nibble position of the tables) counts
    with its own dimension's level."""
    codes = np.zeros((128, 2), np.uint64)
    for d in range(128):
        codes[d, d // 64] = np.uint64(1) << np.uint64(d % 64)
    factors = np.ones((128, 2), np.uint8)
    levels = ((np.arange(128) * 7) % 31 - 15).astype(np.int8)
    got = _search.scan(codes, factors, levels, 1.0, int(levels.sum()), 1.0, 0.0, 0.0)
    # Only bit d set: T = 2 levels[d] - sum(levels).
    assert np.array_equal(got, (2 * levels.astype(np.int64) - levels.sum()).astype(np.float32))


def test_estimator_is_unbiased_and_sharpens_with_bits():
    """The codes + estimator give unbiased inner products whose noise falls with n_bits.

    For random residuals x and a query y, E[estimate | <x, y>] = <x, y> (RaBitQ's
    correction factor): the regression slope is 1 and the mean error 0; with twice the
    bits the correlation rises (measured: 0.79 at 1 bit per dimension, 0.88 at 2).
    """
    rng = np.random.default_rng(11)
    dim, n = 128, 2000
    residuals = rng.standard_normal((n, dim)).astype(np.float32)
    y = rng.standard_normal(dim).astype(np.float32)
    true = residuals.astype(np.float64) @ y
    corr = {}
    for n_bits in (128, 256):
        projection, scale = _codes.make_projection(dim, n_bits, rng)
        codes, factors = _codes.encode(residuals, projection, scale)
        # ip constants (alpha=-1, beta=0, gamma=0): estimate of -<x, y>.
        est = -ref.estimate_reference(codes, factors, projection @ y, -1.0, 0.0, 0.0)
        slope = np.cov(est, true)[0, 1] / np.var(true)
        assert abs(slope - 1) < 0.1, n_bits
        assert abs(np.mean(est - true)) < 0.05 * np.std(true), n_bits
        corr[n_bits] = np.corrcoef(est, true)[0, 1]
    assert corr[128] > 0.7
    assert corr[256] > corr[128] + 0.04


# ------------------------------------------------------- scan fused with admission
def _admit_inputs(rng, n, n_bits):
    codes = random_codes(rng, n, n_bits // 64)
    factors = random_factors(rng, n)
    slots = rng.permutation(10 * n).astype(np.int32)[:n]
    levels, delta, level_sum = _search.quantize(rng.standard_normal(n_bits).astype(np.float32))
    consts = (levels, delta, level_sum, -2.0, 17.25, 1.0)
    est = ref.scan_reference(codes, factors, *consts)
    blocks, fblocks = _storage.to_blocks(codes, factors)
    return blocks, fblocks, slots, consts, est


@pytest.mark.parametrize("n_bits", [64, 128, 384, 1024])
def test_scan_admit_matches_reference(kernel_path, n_bits):
    """Admitted = estimate <= threshold (ties included), in scan order."""
    rng = np.random.default_rng(2000 + n_bits)
    for n in (1, 7, 8, 9, 37, 200):
        blocks, fblocks, slots, consts, est = _admit_inputs(rng, n, n_bits)
        for threshold in (np.inf, np.median(est), est.min(), est.min() - 1.0):
            threshold = np.float32(threshold)
            keys, got_slots, next_block = _search.scan_admit(
                blocks, fblocks, slots, n, *consts, threshold, cap=10 * n)
            keep = est <= threshold
            assert next_block == blocks.shape[0]
            assert np.array_equal(got_slots, slots[keep]), (n, threshold)
            assert np.array_equal(keys, est[keep]), (n, threshold)


def test_scan_admit_stops_once_the_buffer_is_full(kernel_path):
    """The kernel returns after the block that fills the buffer, and resumes from there."""
    rng = np.random.default_rng(21)
    n = 45
    blocks, fblocks, slots, consts, est = _admit_inputs(rng, n, 128)
    keys, got, next_block = _search.scan_admit(blocks, fblocks, slots, n, *consts, np.inf, cap=11)
    assert next_block == 2 and np.array_equal(got, slots[:16])   # 16 >= 11 after block 1
    keys, got, next_block = _search.scan_admit(blocks, fblocks, slots, n, *consts, np.inf, cap=11,
                                               first_block=5)
    # The last block holds 5 codes: its 3 padding lanes are never admitted.
    assert next_block == 6 and np.array_equal(got, slots[40:])
    assert np.array_equal(keys, est[40:])


def test_scan_buckets_admits_what_the_threshold_passes(kernel_path):
    """The benchmark helper walks buckets in the given order and counts admitted codes."""
    rng = np.random.default_rng(31)
    n = 300
    blocks, fblocks, slots, consts, est = _admit_inputs(rng, n, 192)
    first = np.array([0, 10, 20], np.int64)           # blocks 0-9, 10-19, 20-37
    sizes = np.array([80, 80, n - 160], np.int64)
    threshold = np.float32(np.quantile(est, 0.3))
    for cap in (8, 1000):                             # buffer emptied many times, or never
        got = _search.scan_buckets(blocks, fblocks, slots, first, sizes,
                                   np.array([2, 0, 1], np.int32), *consts, threshold, cap)
        assert got == int(np.count_nonzero(est <= threshold))


def test_rerank_rows_and_gather_match_numpy(kernel_path):
    rng = np.random.default_rng(32)
    vectors = rng.standard_normal((500, 48)).astype(np.float32)
    slot_ids = rng.permutation(10_000)[:500].astype(np.int64)
    q = rng.standard_normal((3, 48)).astype(np.float32)
    rows = rng.integers(0, 500, size=(3, 40)).astype(np.int32)
    for metric in (0, 1):
        keys, ids = _search.rerank_rows(q, vectors, slot_ids, rows, metric)
        assert np.array_equal(ids, slot_ids[rows])
        for i in range(3):
            want = (ref.l2_reference(vectors[rows[i]], q[i]) if metric == 0
                    else -ref.dot_reference(vectors[rows[i]], q[i]))
            assert np.array_equal(keys[i], want)
    total = _search.gather_sum(vectors, rows.ravel(), 8)
    assert total == pytest.approx(vectors[rows.ravel()].sum(dtype=np.float64), rel=1e-4, abs=1e-2)
    words = rng.integers(0, 2**63, size=4096, dtype=np.uint64)
    assert _search.read_stream(words) == np.bitwise_xor.reduce(words)


# ----------------------------------------------------------------- float distances
@pytest.mark.parametrize("d", [1, 7, 15, 16, 17, 33, 100, 128, 384])
def test_pairwise_matches_reference(kernel_path, d):
    rng = np.random.default_rng(d)
    a = rng.standard_normal((25, d)).astype(np.float32)
    b = rng.standard_normal((25, d)).astype(np.float32)
    l2 = _search.pairwise(a, b, 0)
    dot = _search.pairwise(a, b, 1)
    assert np.array_equal(l2, ref.l2_reference(a, b))
    assert np.array_equal(dot, ref.dot_reference(a, b))
    # And both are the true values up to float32 summation error.
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(l2, ((a64 - b64) ** 2).sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(dot, (a64 * b64).sum(axis=1), rtol=1e-4, atol=1e-5)


def test_matvec_reference_is_a_matrix_product():
    rng = np.random.default_rng(2)
    at = rng.standard_normal((40, 70)).astype(np.float32)
    q = rng.standard_normal(40).astype(np.float32)
    np.testing.assert_allclose(ref.matvec_t_reference(at, q), at.T.astype(np.float64) @ q,
                               rtol=1e-5, atol=1e-5)


def test_hamming_reference_against_python_popcount():
    rng = np.random.default_rng(9)
    a, b = random_codes(rng, 5, 3), random_codes(rng, 4, 3)
    want = [[sum((int(x) ^ int(y)).bit_count() for x, y in zip(ra, rb)) for rb in b] for ra in a]
    assert ref.hamming_reference(a, b).tolist() == want
    assert not ref.hamming_reference(a, a).diagonal().any()


# ------------------------------------------------------------------------- packing
@pytest.mark.parametrize("n_bits", [64, 192, 1024])
def test_pack_signs_bit_order(n_bits):
    rng = np.random.default_rng(n_bits)
    z = rng.standard_normal((9, n_bits)).astype(np.float32)
    z[0] = 0.0                                   # zero is not positive: bit 0
    codes = _codes.pack_signs(z)
    assert codes.dtype == np.uint64 and codes.shape == (9, n_bits // 64)
    bits = np.unpackbits(codes.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    assert np.array_equal(bits.astype(bool), z > 0)
    # Bit i of the code is coordinate i: word i // 64, bit i % 64.
    for i in (0, 1, 63, n_bits - 1):
        one = np.full((1, n_bits), -1.0, np.float32)
        one[0, i] = 1.0
        word = _codes.pack_signs(one)[0]
        assert word[i // 64] == np.uint64(1) << np.uint64(i % 64)
        assert np.count_nonzero(word) == 1


# ---------------------------------------------------------------- whole searches
def _mixture(n, dim, seed):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((12, dim)) * 3
    return (centers[rng.integers(12, size=n)] + rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("dim,n_bits", [(24, 64), (40, 128), (100, 64)])
def test_search_matches_reference(kernel_path, metric, dim, n_bits):
    """Probe choice, quantisation, scan, candidate selection, rerank and top-k, end to end.

    ``n_rerank = k`` makes the returned ids exactly the k best estimates, so any
    difference in the estimator shows; ``(100, 64)`` uses a projection to fewer bits
    than dimensions.
    """
    x = _mixture(1500, dim, seed=dim)
    q = _mixture(12, dim, seed=dim + 1)
    index = binidx.build(x, metric=metric, n_bits=n_bits, n_lists=24, seed=3)
    for n_probe, n_rerank, k in ((1, 10, 10), (3, 10, 10), (6, 40, 10), (24, 5, 7), (2, 1, 200)):
        got = index.search(q, k=k, n_probe=n_probe, n_rerank=n_rerank)
        want = ref.search_reference(index, q, k, n_probe, n_rerank)
        assert np.array_equal(got.ids, want[1]), (n_probe, n_rerank, k)
        assert np.array_equal(got.distances, want[0]), (n_probe, n_rerank, k)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_search_with_ties_matches_reference(kernel_path, metric):
    """Ties everywhere: 10 lattice points repeated 30 times (equal estimates and equal
    distances within a bucket), and for ip the zero query, whose coarse keys and estimates
    all tie.  Probes are then chosen by bucket number and candidates by slot, for every
    n_probe from one bucket to all of them (the probe selection's threshold path and its
    full-sort fallback)."""
    rng = np.random.default_rng(0)
    points = rng.integers(-4, 5, size=(10, 32)).astype(np.float32)
    x = np.repeat(points, 30, axis=0)
    q = np.vstack([points[:3], np.zeros((1, 32), np.float32) if metric == "ip" else points[3:4]])
    index = binidx.build(x, metric=metric, n_bits=64, n_lists=24, seed=1)
    for n_probe in (1, 2, 5, 6, 12, 24):
        got = index.search(q, k=10, n_probe=n_probe, n_rerank=10)
        want = ref.search_reference(index, q, 10, n_probe, 10)
        assert np.array_equal(got.ids, want[1]), n_probe
        assert np.array_equal(got.distances, want[0]), n_probe


def test_search_matches_reference_on_sift(kernel_path, sift, sift_index):
    q = sift.queries[:8]
    for n_probe, n_rerank in ((4, 10), (20, 50)):
        got = sift_index.search(q, k=10, n_probe=n_probe, n_rerank=n_rerank)
        want = ref.search_reference(sift_index, q, 10, n_probe, n_rerank)
        assert np.array_equal(got.ids, want[1])
        assert np.array_equal(got.distances, want[0])


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_all_paths_give_identical_searches(metric):
    paths = _supported_paths()
    if len(paths) < 2:
        pytest.skip("this CPU runs only the generic kernels")
    x = _mixture(4000, 72, seed=4)
    q = _mixture(50, 72, seed=5)
    results = {}
    before = _search.active_path()
    try:
        for n_bits in (64, 256, 576):
            index = binidx.build(x, metric=metric, n_bits=n_bits, seed=1)
            for path in paths:
                _search.set_path(path)
                results[n_bits, path] = index.search(q, k=20, n_probe=5, n_rerank=20)
                # A filter that keeps every third vector: admission in the scan kernels.
                results[n_bits, path, "filtered"] = index.search(
                    q, k=20, n_probe=5, n_rerank=20, allowed_ids=np.arange(0, len(x), 3))
    finally:
        _search.set_path(before)
    for key, (d, i) in results.items():
        d0, i0 = results[(key[0], "generic") + key[2:]]
        assert np.array_equal(i, i0), key
        assert np.array_equal(d, d0), key
    assert (results[256, "generic", "filtered"].ids % 3 == 0).all()


@pytest.mark.parametrize("dim,n", [(40, 100), (128, 2048), (128, 64), (24, 13)])
def test_batched_coarse_products_are_bit_identical(kernel_path, dim, n):
    """matmat_t (groups of queries, 64-column tiles, blocks of 4 rows) gives every output
    the same float operations in the same order as matvec_t (one query)."""
    rng = np.random.default_rng(dim + n)
    at = rng.standard_normal((dim, n)).astype(np.float32)
    for m in (1, 3, 4, 6, 16, 17):
        q = rng.standard_normal((m, dim)).astype(np.float32)
        batched = _search.coarse_products(at, q, True)
        single = _search.coarse_products(at, q, False)
        assert np.array_equal(batched, single), m
        np.testing.assert_allclose(batched, q.astype(np.float64) @ at, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("n_lists", [100, 40])
def test_batched_coarse_products_match_one_query_at_a_time(kernel_path, metric, n_lists):
    """A batch computes the coarse products (every centroid, and the rotation) of up to 16
    queries at once, in 64-centroid tiles and blocks of 4 queries; the keys, hence the
    probes and the results, must be bit-identical to searching one query per call.

    70 queries on one thread: groups of 16 and a last group of 6 (one block of 4, two rows
    alone); 100 lists: one tile and a 36-centroid tail; 40 lists: only a tail."""
    x = _mixture(3000, 40, seed=8)
    q = _mixture(70, 40, seed=9)
    index = binidx.build(x, metric=metric, n_bits=128, n_lists=n_lists, seed=2)
    batch = index.search(q, k=10, n_probe=7, n_rerank=20, n_threads=1)
    want = ref.search_reference(index, q, 10, 7, 20)
    assert np.array_equal(batch.ids, want[1])
    assert np.array_equal(batch.distances, want[0])
    for i in range(len(q)):
        one = index.search(q[i], k=10, n_probe=7, n_rerank=20)
        assert np.array_equal(one.ids[0], batch.ids[i]), i
        assert np.array_equal(one.distances[0], batch.distances[i]), i


def _supported_paths():
    return list(_search.PATH_NAMES[:_search.PATH_NAMES.index(_search.best_path()) + 1])


def test_set_path_refuses_unknown_and_unsupported():
    with pytest.raises(ValueError, match="unknown kernel path 'sse9'"):
        _search.set_path("sse9")
    if _search.best_path() != "avx512":
        with pytest.raises(ValueError, match="cannot run the 'avx512' kernels"):
            _search.set_path("avx512")
    assert _search.active_path() == _search.best_path()


@pytest.mark.parametrize("dim,n", [(128, 2182), (384, 40), (64, 16), (40, 37), (128, 5)])
def test_row_products_sum_like_dot(kernel_path, dim, n):
    """matrows (the coarse step from rotated centroids kept by rows) gives every output
    dot_body's operations in dot_body's order: bit-identical to the oracle's dot, for any
    number of queries at once, on every path (AVX-512 folds 16 rows' lanes together)."""
    rng = np.random.default_rng(dim * n)
    a = rng.standard_normal((n, dim)).astype(np.float32)
    for m in (1, 3, 16):
        q = rng.standard_normal((m, dim)).astype(np.float32)
        batched = _search.coarse_products(a, q, True, by_rows=True)
        assert np.array_equal(batched, _search.coarse_products(a, q, False, by_rows=True)), m
        assert np.array_equal(batched, ref.dot_reference(a[None, :, :], q[:, None, :])), m
        np.testing.assert_allclose(batched, q.astype(np.float64) @ a.T, rtol=1e-4, atol=1e-3)
