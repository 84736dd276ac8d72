"""Filtered search (labels, allow-lists) against a brute-force filtered reference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import binidx
from binidx._reference import recall_at_k
from binidx.errors import InvalidDtypeError, InvalidInputError

N, DIM, N_LABELS = 20000, 32, 1000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((50, DIM)).astype(np.float32) * 3
    x = centers[rng.integers(0, 50, N)] + rng.standard_normal((N, DIM)).astype(np.float32)
    q = centers[rng.integers(0, 50, 100)] + rng.standard_normal((100, DIM)).astype(np.float32)
    labels = rng.integers(0, N_LABELS, N)
    return x, q, labels


@pytest.fixture(scope="module")
def index(data):
    x, _, labels = data
    idx = binidx.Index(DIM, seed=1).train(x)
    idx.add(x, labels=labels)
    return idx


def filtered_truth(x, q, k, allowed_rows, metric="l2"):
    rows = np.flatnonzero(allowed_rows)
    if rows.size == 0:
        worst = np.inf if metric == "l2" else -np.inf
        return np.full((len(q), k), worst, np.float32), np.full((len(q), k), -1, np.int64)
    res = binidx.exact_search(x[rows], q, k, metric=metric)
    return res.distances, np.where(res.ids >= 0, rows[np.maximum(res.ids, 0)], -1)


@pytest.mark.parametrize("selectivity", [0.5, 0.1, 0.01, 0.001])
def test_label_filter_recall_and_k_results(data, index, selectivity):
    x, q, labels = data
    allowed_labels = np.arange(int(N_LABELS * selectivity))
    allowed_rows = np.isin(labels, allowed_labels)
    res = index.search(q, 10, labels=allowed_labels)
    true_d, true_i = filtered_truth(x, q, 10, allowed_rows)
    found = res.ids[res.ids >= 0]
    assert np.isin(found, np.flatnonzero(allowed_rows)).all(), "a result broke the filter"
    assert (res.ids >= 0).sum(axis=1).min() == min(10, allowed_rows.sum())
    assert recall_at_k(res.ids, true_i, 10, true_distances=true_d,
                       found_distances=res.distances) >= 0.95


def test_filters_return_exact_distances(data, index):
    x, q, _ = data
    res = index.search(q[:5], 10, labels=[1, 2, 3])
    for row_ids, row_d, qv in zip(res.ids, res.distances, q[:5]):
        ok = row_ids >= 0
        np.testing.assert_allclose(row_d[ok], ((x[row_ids[ok]] - qv) ** 2).sum(1), rtol=1e-5)


def test_selective_filter_with_clustered_matches_still_returns_k(data):
    # The allowed vectors all sit in one far-away cluster: the IVF path alone would miss them.
    x, q, _ = data
    far = np.full((30, DIM), 50.0, np.float32) + np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32)
    idx = binidx.Index(DIM, seed=2).train(np.vstack([x, far]))
    idx.add(np.vstack([x, far]), labels=np.r_[np.zeros(N, int), np.ones(30, int)])
    res = idx.search(q, 10, labels=[1], n_probe=1)
    assert (res.ids >= N).all()
    f = idx.compile_filter(allowed_ids=np.r_[np.arange(N, N + 30), np.arange(0, N, 50)])
    res = idx.search(q, 10, allowed_ids=f)
    assert (res.ids >= 0).all()


def test_allowed_ids_array_and_compiled_filter_agree(data, index):
    _, q, _ = data
    allowed = np.arange(0, N, 7)
    a = index.search(q, 10, allowed_ids=allowed)
    f = index.compile_filter(allowed_ids=allowed)
    b = index.search(q, 10, allowed_ids=f)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert (a.ids % 7 == 0).all()
    assert len(f) == allowed.size


def test_compiled_filter_follows_index_changes(data):
    x, q, labels = data
    idx = binidx.Index(DIM, seed=1).train(x)
    idx.add(x, labels=labels)
    f = idx.compile_filter(allowed_ids=np.arange(0, N, 7), labels=np.arange(500))
    before = len(f)
    idx.remove(np.arange(0, N, 2))
    res = idx.search(q, 10, allowed_ids=f)
    got = res.ids[res.ids >= 0]
    assert (got % 7 == 0).all() and (got % 2 == 1).all() and (labels[got] < 500).all()
    assert len(f) < before


def test_labels_survive_upsert_remove_save_load_and_pickle(data, tmp_path):
    import pickle

    x, q, labels = data
    idx = binidx.Index(DIM, seed=1).train(x)
    idx.add(x[:1000], labels=labels[:1000])
    idx.upsert(x[:10], ids=np.arange(10), labels=np.full(10, 7777))
    idx.remove([3])
    res = idx.search(q, 20, labels=[7777])
    assert set(res.ids[res.ids >= 0].tolist()) == set(range(10)) - {3}
    idx.save(tmp_path / "f.binidx")
    for loaded in (binidx.load(tmp_path / "f.binidx"), binidx.load(tmp_path / "f.binidx", mmap=True),
                   pickle.loads(pickle.dumps(idx))):
        np.testing.assert_array_equal(loaded.search(q, 20, labels=[7777]).ids, res.ids)


def test_unlabelled_vectors_never_match_a_label(data):
    x, q, _ = data
    idx = binidx.build(x[:2000])
    res = idx.search(q, 5, labels=[0])
    assert (res.ids == -1).all() and np.isinf(res.distances).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=6, unique=True),
       st.sampled_from(["l2", "ip", "cosine"]))
def test_property_probe_all_equals_filtered_brute_force(allowed, metric):
    rng = np.random.default_rng(len(allowed))
    x = rng.standard_normal((600, 8)).astype(np.float32)
    labels = rng.integers(0, 40, 600)
    q = rng.standard_normal((7, 8)).astype(np.float32)
    idx = binidx.Index(8, metric=metric, n_lists=6, seed=0).train(x)
    idx.add(x, labels=labels)
    res = idx.search(q, 5, n_probe=6, n_rerank=600, labels=allowed)
    rows = np.isin(labels, allowed)
    true_d, true_i = filtered_truth(x, q, 5, rows, metric=metric)
    np.testing.assert_allclose(res.distances, true_d, rtol=1e-4, atol=1e-4)
    assert ((res.ids >= 0) == (true_i >= 0)).all()


def test_bad_filters_get_clear_errors(index, data):
    _, q, _ = data
    with pytest.raises(InvalidDtypeError, match="labels must be integers"):
        index.search(q, 5, labels=[1.5])
    with pytest.raises(InvalidInputError, match="labels must be a non-empty list"):
        index.search(q, 5, labels=[])
    with pytest.raises(InvalidInputError, match="allowed_ids is empty"):
        index.search(q, 5, allowed_ids=[])
    with pytest.raises(InvalidDtypeError, match="allowed_ids must be integers"):
        index.search(q, 5, allowed_ids=["a", "b"])
    with pytest.raises(InvalidInputError, match="compiled for another index"):
        binidx.build(data[0][:500]).search(q, 5, allowed_ids=index.compile_filter(allowed_ids=[1]))
    with pytest.raises(InvalidInputError, match="labels must be integers >= 0"):
        index.add(q[:2], ids=[10**9, 10**9 + 1], labels=[1, -3])
    with pytest.raises(InvalidInputError, match=r"one label per vector: shape \(2,\)"):
        index.add(q[:2], ids=[10**9, 10**9 + 1], labels=[1])
