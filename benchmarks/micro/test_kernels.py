"""Micro-benchmarks of binidx's kernels (pytest-benchmark), each against a machine bound.

Run on a quiet machine: ``python -m pytest benchmarks/micro --benchmark-only``.  Not
part of the test suite (``testpaths`` is ``tests``).  The closing table prints each
achieved rate next to its bound (see ``conftest.py`` for how bounds are measured).

* scan, by ``n_bits``: the active kernel path over one bucket's blocked codes, either
  cache-resident (4,096 codes: the compute rate, in popcounted words per second, against
  NumPy's popcount rate) or memory-resident (64 MiB of codes: bytes read per second
  against single-thread copy bandwidth, the bound for a large index).  ``scan_blocks``
  allocates its output on every call, so the memory-resident rate includes first-touch
  page faults on up to 32 MiB of output and understates the kernel itself.
* rerank: exact row-wise distances over 64 MiB of float32 vectors, against bandwidth.
* encode + assign: ``Index.add`` into a trained index (public API), vectors per second,
  against the sgemm rate divided by the FLOPs per vector of its two matrix products
  (rotation to ``n_bits`` and distances to ``n_lists`` centroids).

Selecting the ``n_rerank`` best estimates runs inside the compiled search and has no
entry point of its own, so it is not measured separately here.
"""
from __future__ import annotations

import numpy as np
import pytest

binidx = pytest.importorskip("binidx")
kernels = pytest.importorskip("binidx._kernels._search")
storage = pytest.importorskip("binidx._storage")

MEMORY_BYTES = 64 * 2**20
CACHE_CODES = 4096


def _scan_inputs(n_codes: int, n_bits: int, seed: int):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**63, size=(n_codes, n_bits // 64), dtype=np.uint64)
    factors = rng.integers(0, 256, size=(n_codes, 2), dtype=np.uint8)  # bytes, as stored
    blocks, fblocks = storage.to_blocks(codes, factors)
    levels, delta, level_sum = kernels.quantize(rng.standard_normal(n_bits).astype(np.float32))
    return blocks, fblocks, (n_codes, levels, delta, level_sum, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("n_bits", [64, 128, 256, 512, 1024])
@pytest.mark.parametrize("where", ["cache", "memory"])
def test_scan(benchmark, bounds, report, n_bits, where):
    n_words = n_bits // 64
    n_codes = CACHE_CODES if where == "cache" else MEMORY_BYTES // (n_words * 8)
    blocks, fblocks, args = _scan_inputs(n_codes, n_bits, n_bits)
    benchmark.extra_info.update(kernel=kernels.kernel_name(), n_bits=n_bits, codes=n_codes)
    benchmark(kernels.scan_blocks, blocks, fblocks, *args)
    seconds = benchmark.stats.stats.median
    if where == "cache":
        # The popcount form of the estimator ANDs each code word with 5 query bit planes
        # and popcounts each (the look-up form does the same work in fewer instructions).
        report(n_codes * n_words * 5 / seconds, "popcount words/s", bounds["popcount_words_s"])
    else:
        report((blocks.nbytes + fblocks.nbytes) / seconds / 1e9, "GB/s read", bounds["copy_gbs"])


@pytest.mark.parametrize("dim", [128, 384])
def test_rerank_distances(benchmark, bounds, report, dim):
    rng = np.random.default_rng(dim)
    rows = MEMORY_BYTES // (2 * dim * 4)
    a = rng.random((rows, dim), dtype=np.float32)
    b = rng.random((rows, dim), dtype=np.float32)
    benchmark(kernels.pairwise, a, b, 0)
    report((a.nbytes + b.nbytes) / benchmark.stats.stats.median / 1e9, "GB/s read",
           bounds["copy_gbs"])


@pytest.mark.parametrize("dim", [128, 384])
def test_encode_and_assign(benchmark, bounds, report, dim):
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(20_000, dim)).astype(np.float32)
    index = binidx.Index(dim, n_lists=256, seed=0)
    index.train(x)
    state = {"next": 0}

    def add_batch():
        index.add(x, ids=np.arange(state["next"], state["next"] + len(x)))
        state["next"] += len(x)

    benchmark.pedantic(add_batch, rounds=3, iterations=1)
    flops_per_vector = 2 * dim * (index.n_bits + index.n_lists)
    report(len(x) / benchmark.stats.stats.median, "vectors/s",
           bounds["sgemm_flops"] / flops_per_vector)
