"""Adaptive probing (``probe_ratio``): which buckets a query scans, on every kernel path."""
from __future__ import annotations

import numpy as np
import pytest

import binidx
from binidx import _batching
from binidx import _reference as ref
from binidx.errors import InvalidInputError


def clustered(n, dim, seed, n_centers=24, spread=4.0):
    """Clusters of uneven size and tightness: queries near one centre and far from the
    others, and queries between several, so the adaptive count varies per query."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, dim)) * spread
    which = rng.integers(n_centers, size=n)
    scale = rng.uniform(0.3, 1.5, size=n_centers)[which, None]
    return (centers[which] + scale * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture(scope="module", params=["l2", "ip", "cosine"])
def index_and_queries(request):
    x = clustered(6000, 32, seed=11)
    q = clustered(80, 32, seed=12)
    index = binidx.Index(32, metric=request.param, n_lists=48, seed=3)
    index.train(x)
    index.add(x)
    return index, q


@pytest.mark.parametrize("ratio", [1.0, 1.3, 1.8, 4.0])
def test_search_equals_the_reference_on_every_kernel_path(kernel_path, index_and_queries, ratio):
    index, q = index_and_queries
    # n_probe 18: a floor of ceil(18 / 4) = 5 probes, not 18 // 4.
    d, i = index.search(q, 10, n_probe=18, n_rerank=40, probe_ratio=ratio, n_threads=1)
    rd, ri = ref.search_reference(index, q, 10, 18, 40, probe_ratio=ratio)
    assert np.array_equal(i, ri)
    assert np.array_equal(d, rd)


@pytest.mark.parametrize("chunk", [0, 8, 64])
def test_shared_passes_give_each_query_its_own_count(monkeypatch, index_and_queries, chunk):
    """A chunk of queries sharing bucket passes scans each query's own adaptive probes:
    the batch equals the queries searched one by one."""
    index, q = index_and_queries
    alone = [index.search(q[j:j + 1], 10, n_probe=20, n_rerank=40, probe_ratio=1.5) for j in range(len(q))]
    monkeypatch.setattr(_batching, "SHARED_MIN_CHUNK", 1)
    monkeypatch.setattr(_batching, "shared_chunk", lambda *args: chunk)
    d, i = index.search(q, 10, n_probe=20, n_rerank=40, probe_ratio=1.5, n_threads=2)
    assert np.array_equal(i, np.vstack([a.ids for a in alone]))
    assert np.array_equal(d, np.vstack([a.distances for a in alone]))


def test_ratio_one_scans_a_quarter_and_a_huge_ratio_scans_all(index_and_queries):
    """r = 1 keeps only the nearest probe (l2: probes are ordered by that distance), so
    the floor of ceil(n_probe / 4) applies; a ratio no distance reaches keeps all
    n_probe: both equal fixed searches, and ratios in between give something else."""
    index, q = index_and_queries
    fixed4 = index.search(q, 10, n_probe=4, n_rerank=40)
    fixed16 = index.search(q, 10, n_probe=16, n_rerank=40)
    if index.metric == "l2":
        for n_probe in (16, 13):  # ceil(13 / 4) = 4
            assert np.array_equal(index.search(q, 10, n_probe=n_probe, n_rerank=40,
                                               probe_ratio=1.0).ids, fixed4.ids)
    assert np.array_equal(index.search(q, 10, n_probe=16, n_rerank=40, probe_ratio=1e30).ids,
                          fixed16.ids)
    between = [index.search(q, 10, n_probe=16, n_rerank=40, probe_ratio=r).ids
               for r in (1.05, 1.1, 1.2, 1.4)]
    assert any(not np.array_equal(ids, fixed4.ids) and not np.array_equal(ids, fixed16.ids)
               for ids in between)


def test_fewer_buckets_per_query_when_the_nearest_centroid_stands_out():
    """A query sitting on an isolated cluster scans the floor; a query equidistant from
    many centroids scans all of n_probe.  Seen through recall of a planted neighbour set."""
    rng = np.random.default_rng(5)
    dim = 16
    # 16 tight, well-separated clusters on the axes of a simplex-like layout.
    centers = np.eye(dim, dtype=np.float32) * 50.0
    x = (centers[rng.integers(dim, size=4000)] + rng.standard_normal((4000, dim))).astype(np.float32)
    index = binidx.Index(dim, metric="l2", n_lists=16, seed=1)
    index.train(x)
    index.add(x)
    on_cluster = centers[:1] + 0.1
    probes_fixed = index.search(on_cluster, 10, n_probe=16, n_rerank=10)
    probes_adaptive = index.search(on_cluster, 10, n_probe=16, n_rerank=10, probe_ratio=2.0)
    # Its neighbours all sit in its own bucket: the adaptive search finds the same ones.
    assert np.array_equal(probes_fixed.ids, probes_adaptive.ids)
    # The centre of all clusters is equidistant from every centroid: with any ratio it
    # scans all 16 buckets, so it equals the fixed search exactly.
    middle = centers.mean(0, keepdims=True)
    assert np.array_equal(index.search(middle, 10, n_probe=16, n_rerank=64, probe_ratio=1.2).ids,
                          index.search(middle, 10, n_probe=16, n_rerank=64).ids)


def test_default_is_used_saved_and_loaded(tmp_path, index_and_queries):
    index, q = index_and_queries
    assert index.probe_ratio is None
    explicit = index.search(q, 10, n_probe=16, n_rerank=40, probe_ratio=1.4)
    index.probe_ratio = 1.4
    try:
        assert np.array_equal(index.search(q, 10, n_probe=16, n_rerank=40).ids, explicit.ids)
        path = tmp_path / "adaptive.bidx"
        index.save(path)
        loaded = binidx.load(path)
        assert loaded.probe_ratio == 1.4
        assert np.array_equal(loaded.search(q, 10, n_probe=16, n_rerank=40).ids, explicit.ids)
    finally:
        index.probe_ratio = None


def test_filtered_searches_ignore_the_ratio(index_and_queries):
    index, q = index_and_queries
    allowed = np.arange(0, len(index), 3)
    with_ratio = index.search(q, 10, n_probe=16, n_rerank=40, allowed_ids=allowed, probe_ratio=1.0)
    without = index.search(q, 10, n_probe=16, n_rerank=40, allowed_ids=allowed)
    assert np.array_equal(with_ratio.ids, without.ids)


def test_an_infinite_ratio_forces_fixed_probing_over_a_default(index_and_queries):
    index, q = index_and_queries
    fixed = index.search(q, 10, n_probe=16, n_rerank=40)
    index.probe_ratio = 1.0
    try:
        assert not np.array_equal(index.search(q, 10, n_probe=16, n_rerank=40).ids, fixed.ids)
        forced = index.search(q, 10, n_probe=16, n_rerank=40, probe_ratio=float("inf"))
        assert np.array_equal(forced.ids, fixed.ids)
        index.probe_ratio = float("inf")  # the same as None
        assert index.probe_ratio is None
    finally:
        index.probe_ratio = None


@pytest.mark.parametrize("bad, match", [
    (0.5, r"probe_ratio must be a number >= 1 \(a ratio"),
    (float("nan"), r"probe_ratio must be a number >= 1 \(a ratio"),
    ("1.5", r"probe_ratio must be a number >= 1 or None"),
    (True, r"probe_ratio must be a number >= 1 or None"),
])
def test_bad_ratios_are_refused(index_and_queries, bad, match):
    index, q = index_and_queries
    with pytest.raises(InvalidInputError, match=match):
        index.search(q, 10, probe_ratio=bad)
    with pytest.raises(InvalidInputError, match=match):
        index.probe_ratio = bad
    assert index.probe_ratio is None
