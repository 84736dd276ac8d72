"""Shared passes over buckets (binidx._batching): same results as one query at a time."""
from __future__ import annotations

import numpy as np
import pytest

import binidx
import binidx.index
from binidx import _batching
from binidx._kernels import _search


def mixture(n, dim, seed, n_centers=12):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, dim)) * 3.0
    return (centers[rng.integers(n_centers, size=n)] + rng.standard_normal((n, dim))).astype(np.float32)


class _Recorder:
    """The kernel module, remembering the ``shared_chunk`` of every search call."""

    def __init__(self):
        self.chunks: list[int] = []

    def __getattr__(self, name):
        return getattr(_search, name)

    def search(self, *args, shared_chunk=0, **kwargs):
        self.chunks.append(shared_chunk)
        return _search.search(*args, shared_chunk=shared_chunk, **kwargs)


@pytest.fixture
def recorder(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(binidx.index, "_search", rec)
    return rec


def _force_chunk(monkeypatch, chunk):
    monkeypatch.setattr(_batching, "shared_chunk", lambda *args: chunk)


# ------------------------------------------------------------------ the rule
L3 = 32 << 20


def test_rule_keeps_indexes_that_fit_the_cache_on_the_per_query_path():
    # sift-1m (21 MB), dev-sift (4.2 MB), dev-text (2.6 MB) on a 32 MB L3: no gain when quiet.
    for scanned, n_probe, n_lists in ((21 << 20, 48, 2048), (4 << 20, 32, 512),
                                      (3 << 20, 128, 1024), (L3, 48, 2048)):
        assert _batching.shared_chunk(2000, 1, n_probe, n_lists, 120, 128, scanned, L3) == 0
    # The same index shares once the cache is smaller than it.
    assert _batching.shared_chunk(2000, 1, 48, 2048, 120, 128, 21 << 20, 16 << 20) > 0


def test_rule_shares_indexes_larger_than_the_cache_in_bounded_chunks():
    big = 38 << 20  # sift-1m with 256-bit codes
    chunk = _batching.shared_chunk(2000, 1, 48, 2182, 160, 256, big, L3)
    assert _batching.SHARED_MIN_CHUNK <= chunk <= _batching.SHARED_MAX_CHUNK
    assert chunk * 48 / 2182 >= _batching.SHARED_MIN_VISITS
    # Each thread takes whole chunks: no chunk is larger than a thread's share.
    assert _batching.shared_chunk(100, 2, 48, 2182, 160, 256, big, L3) in (0, 50)
    for n_queries, n_threads in ((2000, 1), (2000, 2), (1999, 2), (777, 2)):
        chunk = _batching.shared_chunk(n_queries, n_threads, 48, 2182, 160, 256, big, L3)
        n_steps = -(-n_queries // chunk)
        assert chunk <= _batching.SHARED_MAX_CHUNK
        assert n_steps % n_threads == 0  # every thread gets as many chunks
        assert n_queries - (n_steps - 1) * chunk >= chunk // 2  # no tiny last chunk


def test_rule_declines_chunks_that_would_visit_buckets_once():
    # 40 queries probing 8 of 4096 buckets visit each probed bucket about once.
    assert _batching.shared_chunk(40, 1, 8, 4096, 40, 128, 1 << 30, L3) == 0


def test_rule_reads_the_cache_size_with_a_fallback(monkeypatch):
    assert _batching._parse_size("32768K") == 32 << 20
    assert _batching._parse_size("2M\n") == 2 << 20
    assert _batching._parse_size("512") == 512
    assert _batching._parse_size("big") == 0
    assert _batching.last_level_cache_bytes() >= 1 << 10
    _batching.last_level_cache_bytes.cache_clear()
    monkeypatch.setattr(_batching.glob, "glob", lambda pattern: [])
    try:
        assert _batching.last_level_cache_bytes() == _batching.FALLBACK_CACHE_BYTES
        # The default cache_bytes is that size.
        big = _batching.FALLBACK_CACHE_BYTES + 1
        assert (_batching.shared_chunk(2000, 1, 48, 2048, 120, 128, big)
                == _batching.shared_chunk(2000, 1, 48, 2048, 120, 128, big,
                                          _batching.FALLBACK_CACHE_BYTES) > 0)
    finally:
        _batching.last_level_cache_bytes.cache_clear()


def test_search_uses_the_rule(monkeypatch, recorder):
    x = mixture(2000, 32, seed=1)
    index = binidx.build(x, n_lists=16, n_bits=64, seed=0)
    q = mixture(80, 32, seed=2)
    index.search(q, k=5, n_probe=4, n_threads=1)
    assert recorder.chunks[-1] == 0  # 2,000 vectors: far below the cache
    monkeypatch.setattr(_batching, "last_level_cache_bytes", lambda: 0)
    index.search(q, k=5, n_probe=4, n_rerank=20, n_threads=1)
    assert recorder.chunks[-1] == _batching.shared_chunk(80, 1, 4, index.n_lists, 20, 64, 1, 0)
    assert recorder.chunks[-1] > 0
    index.search(q[:3], k=5, n_probe=4, n_threads=1)  # a small batch: never shared
    assert recorder.chunks[-1] == 0


# ------------------------------------------------ identical results, every case
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_shared_passes_return_what_one_query_at_a_time_does(metric, monkeypatch, recorder):
    x = mixture(3000, 40, seed=6)
    q = mixture(70, 40, seed=7)
    index = binidx.build(x, metric=metric, n_bits=128, n_lists=30, seed=2)
    ids = np.arange(len(x))
    # Tombstones: removed vectors stay in their buckets until a purge.
    index.remove(ids[::9])
    assert index._buckets.dead.any()
    cases = [
        {"k": 10, "n_probe": 6, "n_rerank": 20, "n_threads": 1},
        {"k": 5, "n_probe": 30, "n_rerank": 5, "n_threads": 2},      # frequent buffer refreshes
        {"k": 400, "n_probe": 3, "n_rerank": 500, "n_threads": 2},   # k above the bucket sizes
        {"k": 10, "n_probe": 8, "n_rerank": 40, "n_threads": 2,
         "allowed_ids": ids[::4]},                                    # a broad filter: IVF path
        {"k": 10, "n_probe": 8, "n_rerank": 40, "n_threads": 1, "allowed_ids": ids[1::2]},
    ]
    _force_chunk(monkeypatch, 0)
    want = [index.search(q, **case) for case in cases]
    assert set(recorder.chunks) == {0}
    for chunk in (1, 7, 64, 500):
        _force_chunk(monkeypatch, chunk)
        for case, (d0, i0) in zip(cases, want):
            d, i = index.search(q, **case)
            assert recorder.chunks[-1] == chunk
            assert np.array_equal(i, i0), (chunk, case)
            assert np.array_equal(d, d0), (chunk, case)
    removed = set(ids[::9].tolist())
    assert not removed & set(want[0].ids.ravel().tolist())
    assert (want[2].ids == -1).any()  # fewer than k=400 in 3 probed buckets: padded


def test_shared_passes_with_one_bucket_and_empty_buckets(monkeypatch):
    x = mixture(500, 16, seed=3)
    q = mixture(40, 16, seed=4)
    index = binidx.build(x, n_bits=64, n_lists=8, seed=1, balance=False)
    store = index._store
    live = store.slot_ids[:store.high_water]
    index.remove(live[store.slot_buckets[:store.high_water] == 0])  # empties bucket 0
    assert index.list_sizes()[0] == 0
    _force_chunk(monkeypatch, 0)
    want = [index.search(q, k=7, n_probe=p, n_rerank=30, n_threads=1) for p in (1, 8)]
    _force_chunk(monkeypatch, 16)
    for p, (d0, i0) in zip((1, 8), want):
        d, i = index.search(q, k=7, n_probe=p, n_rerank=30, n_threads=2)
        assert np.array_equal(i, i0) and np.array_equal(d, d0)
