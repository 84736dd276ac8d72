"""binidx.exact_search (brute force, the ground truth of the other tests) and the
embedded datasets' stored ground truth."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

import binidx
from binidx.errors import InvalidInputError


def naive_knn(x, q, k, metric):
    """One distance at a time in float64, sorted by (distance, id) with Python's sort."""
    x = np.asarray(x, np.float64)
    q = np.asarray(q, np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    worst = np.inf if metric == "l2" else -np.inf
    dist = np.full((len(q), k), worst)
    ids = np.full((len(q), k), -1, np.int64)
    for r, v in enumerate(q):
        scored = []
        for j, u in enumerate(x):
            if metric == "l2":
                scored.append((float(np.sum((u - v) ** 2)), j))
            else:
                scored.append((-float(np.dot(u, v)), j))
        scored.sort()
        for c, (key, j) in enumerate(scored[:k]):
            dist[r, c] = key if metric == "l2" else -key
            ids[r, c] = j
    return dist, ids


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_matches_naive_loop(metric):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 9))
    q = rng.standard_normal((7, 9))
    got = binidx.exact_search(x, q, k=12, metric=metric)
    want_d, want_i = naive_knn(x, q, 12, metric)
    assert got.ids.dtype == np.int64 and got.distances.dtype == np.float32
    assert got.ids.shape == got.distances.shape == (7, 12)
    assert np.array_equal(got.ids, want_i)
    np.testing.assert_allclose(got.distances, want_d, rtol=1e-6, atol=1e-6)


def _tied_data():
    """Integer grid points, every one twice: many exactly equal distances."""
    rng = np.random.default_rng(1)
    base = rng.integers(-2, 3, size=(40, 3)).astype(np.float32)
    base[base.sum(axis=1) == 0] += 1              # no zero rows (cosine)
    x = np.concatenate([base, base[::-1]])
    q = rng.integers(-2, 3, size=(6, 3)).astype(np.float32) + 0.5
    return x, q


def _assert_ids_increase_within_ties(res):
    same = res.distances[:, 1:] == res.distances[:, :-1]
    assert same.any()
    assert (res.ids[:, 1:][same] > res.ids[:, :-1][same]).all()


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_ties_broken_by_smaller_id(metric):
    x, q = _tied_data()
    got = binidx.exact_search(x, q, k=len(x), metric=metric)
    want_d, want_i = naive_knn(x, q, len(x), metric)
    if metric == "cosine":
        # Equal cosines of different vectors may differ in the last bit after
        # normalisation, so only exact duplicates are sure to tie: row j and its copy
        # 2n-1-j must come in id order.
        from binidx._reference import neighbour_mismatch

        assert (msg := neighbour_mismatch(got.distances, got.ids, want_d, want_i,
                                          rtol=1e-6, atol=1e-6)) is None, msg
        n = len(x) // 2
        for row in got.ids:
            pos = np.argsort(row)
            assert (pos[:n] < pos[::-1][:n]).all()
    else:
        _assert_ids_increase_within_ties(got)
        # Integer data: float64 distances are exact, so the order must be the naive one.
        assert np.array_equal(got.ids, want_i)
        np.testing.assert_allclose(got.distances, want_d, rtol=1e-6)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ties_cut_at_k_keep_the_smaller_ids(metric):
    x, q = _tied_data()
    got = binidx.exact_search(x, q, k=30, metric=metric)
    want_d, want_i = naive_knn(x, q, 30, metric)
    np.testing.assert_allclose(got.distances, want_d, rtol=1e-6)
    assert np.array_equal(got.ids, want_i)


@pytest.mark.parametrize("metric,worst", [("l2", np.inf), ("ip", -np.inf), ("cosine", -np.inf)])
def test_padding_when_k_exceeds_n(metric, worst):
    x = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    got = binidx.exact_search(x, x[:2], k=6, metric=metric)
    assert got.ids.shape == (2, 6)
    assert (got.ids[:, 4:] == -1).all()
    assert (got.distances[:, 4:] == worst).all()
    assert sorted(got.ids[0, :4].tolist()) == [0, 1, 2, 3]
    assert np.isfinite(got.distances[:, :4]).all()


def test_empty_base_gives_only_padding():
    got = binidx.exact_search(np.zeros((0, 3), np.float32), np.ones((2, 3)), k=2)
    assert (got.ids == -1).all() and (got.distances == np.inf).all()


def test_l2_distances_are_squared_and_never_negative():
    x = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    got = binidx.exact_search(x, x, k=2)
    assert got.distances.tolist() == [[0.0, 25.0], [0.0, 25.0]]
    # Identical large vectors: ||x||^2 - 2xy + ||y||^2 cancels to ~0, clamped at 0.
    big = np.full((2, 64), 1e4, np.float32)
    assert (binidx.exact_search(big, big[:1], k=2).distances == 0.0).all()


def test_block_size_does_not_change_results():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((25, 16)).astype(np.float32)
    a = binidx.exact_search(x, q, k=10)
    b = binidx.exact_search(x, q, k=10, block=3)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.distances, b.distances)


def test_cosine_ignores_vector_length():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    q = rng.standard_normal((4, 8)).astype(np.float32)
    scaled = x * rng.uniform(0.1, 10, size=(60, 1)).astype(np.float32)
    a = binidx.exact_search(x, q, k=10, metric="cosine")
    b = binidx.exact_search(scaled, q * 3, k=10, metric="cosine")
    assert np.array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5)
    assert (np.abs(a.distances) <= 1 + 1e-6).all()


def test_one_dimensional_query_and_named_fields():
    x = np.eye(4, dtype=np.float32)
    res = binidx.exact_search(x, x[2], k=1)
    d, i = res
    assert i.tolist() == [[2]] and res.ids is i and res.distances is d


@pytest.mark.parametrize("kwargs,match", [
    ({"metric": "manhattan"}, "metric must be one of 'l2', 'ip', 'cosine', got 'manhattan'"),
    ({"k": 0}, "k must be >= 1, got 0"),
    ({"k": 2.0}, r"k must be an integer, got 2.0 \(float\)"),
])
def test_bad_arguments(kwargs, match):
    x = np.eye(3, dtype=np.float32)
    args = {"k": 2, "metric": "l2", **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        binidx.exact_search(x, x, **args)


def test_query_dimension_must_match():
    with pytest.raises(InvalidInputError, match="q has dimension 2, but the index was built with dim=3"):
        binidx.exact_search(np.eye(3), np.ones((1, 2)), k=1)


# ------------------------------------------------------- embedded ground truth
@pytest.mark.parametrize("name", ["sift", "text"])
def test_embedded_groundtruth_is_exact(name, request):
    """The stored top-100 equals exact_search on the stored vectors (first queries)."""
    ds = request.getfixturevalue(name)
    q = ds.queries[:40]
    got = binidx.exact_search(ds.base, q, k=100, metric=ds.metric)
    gt, gt_d = ds.groundtruth[:40], ds.groundtruth_distances[:40]
    if ds.metric == "l2":
        # SIFT values are integers: squared distances are exact and so are the ties.
        assert np.array_equal(got.ids, gt)
        assert np.array_equal(got.distances, gt_d)
    else:
        from binidx._reference import neighbour_mismatch

        assert (msg := neighbour_mismatch(got.distances[:, :99], got.ids[:, :99], gt_d, gt,
                                          rtol=1e-6, atol=1e-6)) is None, msg


def test_embedded_datasets_shapes(sift, text):
    from binidx import datasets

    assert datasets.available() == ["sift-20k", "text-5k"]
    assert sift.base.shape == (20000, 128) and sift.queries.shape == (200, 128)
    assert text.base.shape == (5000, 384) and text.queries.shape == (100, 384)
    for ds in (sift, text):
        assert ds.base.dtype == ds.queries.dtype == np.float32
        assert ds.groundtruth.shape == ds.groundtruth_distances.shape == (len(ds.queries), 100)
        assert ds.groundtruth.dtype == np.int64
        assert ds.groundtruth.min() >= 0 and ds.groundtruth.max() < len(ds.base)
    assert (sift.base == np.round(sift.base)).all() and sift.base.max() <= 255
    np.testing.assert_allclose(np.linalg.norm(text.base, axis=1), 1.0, atol=2e-3)
    with pytest.raises(ValueError, match="no embedded dataset named 'mnist'; available: sift-20k, text-5k"):
        datasets.load_embedded("mnist")


@pytest.mark.skipif(not (SHARED_DATA / "dev-sift" / "groundtruth.ivecs").is_file(),
                    reason="../shared/data/dev-sift is absent")
def test_sift_subset_agrees_with_full_groundtruth(sift):
    """Full-set neighbours that fall in the subset are, in order, the subset's nearest."""
    from binidx.vecio import read_vectors

    full = np.array(read_vectors(SHARED_DATA / "dev-sift" / "groundtruth.ivecs", max_rows=200))
    base = np.array(read_vectors(SHARED_DATA / "dev-sift" / "base.bvecs", max_rows=20000))
    assert np.array_equal(base.astype(np.float32), sift.base)
    checked = 0
    for row in range(200):
        inside = full[row][full[row] < 20000]
        assert np.array_equal(sift.groundtruth[row, :inside.size], inside)
        checked += inside.size
    assert checked > 200


def test_load_folder(tmp_path):
    """A texmex folder: metric from meta.json, ground truth read, or computed when absent."""
    from binidx.datasets import load_folder
    from binidx.vecio import write_vectors

    rng = np.random.default_rng(6)
    base = rng.integers(0, 256, size=(300, 16)).astype(np.uint8)
    queries = rng.integers(0, 256, size=(5, 16)).astype(np.uint8)
    write_vectors(tmp_path / "base.bvecs", base)
    write_vectors(tmp_path / "query.bvecs", queries)
    (tmp_path / "meta.json").write_text('{"metric": "Euclidean (L2)"}')
    ds = load_folder(tmp_path)
    assert ds.metric == "l2" and ds.name == tmp_path.name
    assert ds.base.dtype == np.float32 and np.array_equal(ds.base, base)
    want = binidx.exact_search(base, queries, 100)
    assert np.array_equal(ds.groundtruth, want.ids)
    assert np.array_equal(ds.groundtruth_distances, want.distances)
    # Stored ground truth is read as is (here: the reverse order, to tell them apart).
    write_vectors(tmp_path / "groundtruth.ivecs", want.ids[:, ::-1].astype(np.int32))
    ds = load_folder(tmp_path, metric="ip")
    assert ds.metric == "ip" and np.array_equal(ds.groundtruth, want.ids[:, ::-1])
    assert ds.groundtruth_distances is None
    (tmp_path / "meta.json").unlink()
    with pytest.raises(ValueError, match="has no meta.json naming the metric; pass metric="):
        load_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no query.bvecs, query.fvecs or query.npy"):
        (tmp_path / "query.bvecs").unlink()
        load_folder(tmp_path, metric="l2")


def test_memory_stays_bounded_whatever_the_base_size(monkeypatch):
    """A block's distance matrix is capped in bytes, not in queries: 200 queries against
    20,000 vectors with a 1 MB cap peak far below one unblocked (200, 20000) float64
    matrix (32 MB), and give the same results."""
    import tracemalloc

    from binidx import _exact

    rng = np.random.default_rng(4)
    x = rng.standard_normal((20000, 8)).astype(np.float32)
    q = rng.standard_normal((200, 8)).astype(np.float32)
    expected = binidx.exact_search(x, q, k=5)
    monkeypatch.setattr(_exact, "BLOCK_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        got = binidx.exact_search(x, q, k=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(got.ids, expected.ids)
    assert np.array_equal(got.distances, expected.distances)
    assert peak < 8 << 20, peak
