"""binidx.Index: the exact invariant, determinism, updates, ids, state round trips, threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import binidx
from binidx._reference import neighbour_mismatch
from binidx.errors import ReadOnlyIndexError
from binidx.index import Index

METRICS = ["l2", "ip", "cosine"]


def mixture(n, dim, seed, n_centers=20):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, dim)) * 3.0
    return (centers[rng.integers(n_centers, size=n)] + rng.standard_normal((n, dim))).astype(np.float32)


def search_everything(index, q, k):
    """Probe every list and rerank every vector: must equal brute force."""
    return index.search(q, k=k, n_probe=index.n_lists, n_rerank=max(len(index), 1))


def assert_exact(index, x, ids, q, k, rtol=1e-4, atol=1e-4):
    """``index`` (holding rows ``x`` under ``ids``) answers ``q`` like exact_search."""
    got = search_everything(index, q, k)
    want = binidx.exact_search(x, q, k + 5, metric=index.metric)
    want_ids = np.where(want.ids >= 0, np.asarray(ids)[np.maximum(want.ids, 0)], -1)
    msg = neighbour_mismatch(got.distances, got.ids, want.distances, want_ids, rtol=rtol, atol=atol)
    assert msg is None, msg


# ------------------------------------------------------------- exact invariant
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n_bits", [64, None])
def test_full_probe_and_rerank_equals_exact_search(metric, n_bits):
    x = mixture(3000, 32, seed=1)
    q = mixture(40, 32, seed=2)
    index = binidx.build(x, metric=metric, n_bits=n_bits, seed=0)
    assert_exact(index, x, np.arange(len(x)), q, k=20)


def test_exact_invariant_on_embedded_sift(sift, sift_index):
    """SIFT distances are integers, exact in float32: ids must equal the ground truth,
    ties included (both break them by the smaller id)."""
    got = search_everything(sift_index, sift.queries, k=50)
    assert np.array_equal(got.distances, sift.groundtruth_distances[:, :50])
    assert np.array_equal(got.ids, sift.groundtruth[:, :50])


def test_exact_invariant_on_embedded_text(text, text_index):
    got = search_everything(text_index, text.queries, k=50)
    msg = neighbour_mismatch(got.distances, got.ids, text.groundtruth_distances, text.groundtruth,
                             rtol=1e-5, atol=1e-5)
    assert msg is None, msg


@pytest.mark.parametrize("metric", METRICS)
def test_returned_distances_are_exact(metric, sift, text):
    """At default parameters every returned distance is the exact distance of its id."""
    ds = sift if metric == "l2" else text
    index = binidx.build(ds.base[:4000], metric=metric)
    got = index.search(ds.queries[:30], k=10)
    assert (got.ids >= 0).all()
    x = ds.base[:4000].astype(np.float64)
    q = ds.queries[:30].astype(np.float64)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    vecs = x[got.ids]
    true = ((vecs - q[:, None]) ** 2).sum(axis=2) if metric == "l2" else (vecs * q[:, None]).sum(axis=2)
    np.testing.assert_allclose(got.distances, true, rtol=1e-5, atol=1e-5)
    order = np.diff(got.distances, axis=1)
    assert (order >= 0).all() if metric == "l2" else (order <= 0).all()


# ------------------------------------------------------------------ threads
def test_results_do_not_depend_on_thread_count(sift, sift_index):
    q = sift.queries[:100]
    one = sift_index.search(q, k=10, n_threads=1)
    two = sift_index.search(q, k=10, n_threads=2)
    many = sift_index.search(q, k=10, n_threads=7)
    for other in (two, many):
        assert np.array_equal(one.ids, other.ids)
        assert np.array_equal(one.distances, other.distances)
    # One query per call gives the same rows as the batch.
    for row in (0, 57, 99):
        single = sift_index.search(q[row], k=10)
        assert np.array_equal(single.ids[0], one.ids[row])
        assert np.array_equal(single.distances[0], one.distances[row])


def test_concurrent_searches_while_adding():
    """Searches from several threads during adds: no crash, only valid ids, sorted rows."""
    x = mixture(6000, 16, seed=3)
    index = binidx.Index(16, n_lists=16, n_bits=64).train(x)
    index.add(x[:1000])
    q = x[::97][:20]
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                d, i = index.search(q, k=5, n_probe=4, n_threads=1)
                live = i[i >= 0]
                assert live.max() < len(x) and live.min() >= 0
                assert np.isfinite(d[i >= 0]).all()
                assert (np.diff(d, axis=1) >= 0).all()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    removed = []
    try:
        for start in range(1000, 6000, 250):
            index.add(x[start:start + 250])
            removed.append(np.arange(start - 1000, start - 900))
            index.remove(removed[-1])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    kept = np.setdiff1d(np.arange(6000), np.concatenate(removed))
    assert len(index) == kept.size == 6000 - 20 * 100
    assert_exact(index, x[kept], kept, q, k=5)


# -------------------------------------------------------------- determinism
def state_arrays(index):
    params, arrays = index._get_state()
    return params, {name: np.asarray(a) for name, a in arrays.items()}


def test_same_seed_same_index_and_results():
    x = mixture(3000, 24, seed=4)
    a = binidx.build(x, metric="l2", seed=7)
    b = binidx.build(x, metric="l2", seed=7)
    pa, sa = state_arrays(a)
    pb, sb = state_arrays(b)
    assert pa == pb and sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype
        assert sa[name].tobytes() == sb[name].tobytes(), name
    q = mixture(30, 24, seed=5)
    ra, rb = a.search(q, k=10), b.search(q, k=10)
    assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.distances, rb.distances)


def test_different_seed_different_index():
    x = mixture(3000, 24, seed=4)
    _, sa = state_arrays(binidx.build(x, seed=7))
    _, sb = state_arrays(binidx.build(x, seed=8))
    assert not np.array_equal(sa["projection"], sb["projection"])
    assert not np.array_equal(sa["centroids"], sb["centroids"])


# ------------------------------------------------------------------ updates
@pytest.mark.parametrize("metric", METRICS)
def test_add_remove_add(metric):
    x = mixture(2500, 20, seed=6)
    q = mixture(25, 20, seed=7)
    index = binidx.build(x, metric=metric, n_bits=64)
    before = search_everything(index, q, 10)
    gone = np.arange(0, 2500, 3)
    assert index.remove(gone) == gone.size
    assert len(index) == 2500 - gone.size
    kept = np.setdiff1d(np.arange(2500), gone)
    assert_exact(index, x[kept], kept, q, k=10)
    res = index.search(q, k=10)
    assert not np.isin(res.ids, gone).any()
    assert np.array_equal(index.add(x[gone], ids=gone), gone)
    after = search_everything(index, q, 10)
    assert np.array_equal(before.ids, after.ids)
    assert np.array_equal(before.distances, after.distances)
    assert len(index) == 2500


_SMALL = mixture(400, 8, seed=8)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 2**31)),
                min_size=1, max_size=8))
def test_updates_match_a_model(ops):
    """Random adds (random ids) and removes keep the index equal to a dict of id -> vector."""
    index = binidx.Index(8, n_lists=6, n_bits=64, seed=1).train(_SMALL)
    model: dict[int, int] = {}                      # id -> row of _SMALL
    rng = np.random.default_rng(0)
    for is_add, count, seed in ops:
        r = np.random.default_rng(seed)
        if is_add:
            ids = r.choice(10**9, size=count, replace=False)
            ids = ids[[i not in model for i in ids.tolist()]]
            rows = r.integers(len(_SMALL), size=ids.size)
            if ids.size:
                index.add(_SMALL[rows], ids=ids)
                model.update(zip(ids.tolist(), rows.tolist()))
        elif model:
            victims = r.choice(np.array(sorted(model)), size=min(count, len(model)), replace=False)
            assert index.remove(victims) == victims.size
            for v in victims.tolist():
                del model[v]
        assert len(index) == len(model)
    if model:
        ids = np.array(sorted(model))
        q = _SMALL[rng.integers(len(_SMALL), size=5)]
        assert_exact(index, _SMALL[[model[i] for i in ids.tolist()]], ids, q, k=4)
    else:
        assert (index.search(_SMALL[:2], k=3).ids == -1).all()


# ---------------------------------------------------------------------- ids
def test_default_ids_are_sequential():
    x = mixture(600, 8, seed=9)
    index = binidx.Index(8, n_lists=4).train(x)
    assert np.array_equal(index.add(x[:100]), np.arange(100))
    assert np.array_equal(index.add(x[100:150]), np.arange(100, 150))
    index.add(x[150:152], ids=[1000, 500])
    # After user ids, defaults continue after the largest id in the index.
    assert np.array_equal(index.add(x[152:155]), [1001, 1002, 1003])
    ids = index.add(x[155:157])
    assert ids.dtype == np.int64


def test_user_ids_round_trip():
    x = mixture(800, 12, seed=10)
    ids = (np.arange(800, dtype=np.int64) * 7919 + 10**15)[::-1].copy()
    index = binidx.build(x, ids=ids, n_bits=64)
    d, i = index.search(x[:50], k=1, n_probe=index.n_lists, n_rerank=len(index))
    assert np.array_equal(i[:, 0], ids[:50])
    assert (d[:, 0] == 0).all()
    assert i.dtype == np.int64


def test_remove_returns_count():
    x = mixture(500, 8, seed=11)
    index = binidx.build(x, n_lists=5)
    assert index.remove([3, 4, 5]) == 3
    assert index.remove(np.array([6], np.uint32)) == 1
    assert index.remove(np.int64(7)) == 1
    assert len(index) == 495
    assert index.remove([3, 8], missing="ignore") == 1
    assert index.remove([], missing="ignore") == 0
    with pytest.raises(KeyError, match="id 3 is not in the index"):
        index.remove([3, 9])
    assert len(index) == 494  # nothing removed when one id is missing


# -------------------------------------------------------------------- padding
@pytest.mark.parametrize("metric,worst", [("l2", np.inf), ("ip", -np.inf), ("cosine", -np.inf)])
def test_k_larger_than_index_is_padded(metric, worst):
    x = mixture(40, 6, seed=12)
    index = binidx.Index(6, metric=metric, n_lists=2).train(x)
    index.add(x[:5])
    d, i = index.search(x[:3], k=8, n_probe=2)
    assert d.shape == i.shape == (3, 8)
    assert (i[:, 5:] == -1).all() and (d[:, 5:] == worst).all()
    assert (np.sort(i[:, :5], axis=1) == np.arange(5)).all()
    assert np.isfinite(d[:, :5]).all()


def test_too_few_candidates_are_padded():
    x = mixture(2000, 8, seed=13)
    index = binidx.build(x, n_lists=100)
    d, i = index.search(x[:10], k=200, n_probe=1)
    n_found = (i >= 0).sum(axis=1)
    assert (n_found < 200).all() and (n_found > 0).all()
    for row, n in enumerate(n_found):
        assert (i[row, n:] == -1).all() and (d[row, n:] == np.inf).all()
        assert (i[row, :n] >= 0).all()


def test_empty_trained_index_gives_padding():
    x = mixture(100, 4, seed=14)
    index = binidx.Index(4, n_lists=3).train(x)
    d, i = index.search(x[:2], k=3)
    assert (i == -1).all() and (d == np.inf).all()
    index.add(x[:10])
    index.remove(np.arange(10))
    d, i = index.search(x[:2], k=3)
    assert (i == -1).all() and (d == np.inf).all()


# ------------------------------------------------------------- state export
@pytest.mark.parametrize("metric", METRICS)
def test_state_round_trip(metric):
    x = mixture(1500, 16, seed=15)
    index = binidx.build(x, metric=metric, n_bits=128, seed=2)
    index.remove(np.arange(0, 1500, 5))       # freed slots must not matter
    index.n_probe = 3
    params, arrays = index._get_state()
    copy = Index._from_state(params, {k: np.array(v) for k, v in arrays.items()})
    assert len(copy) == len(index) and copy.metric == metric and copy.n_probe == 3
    q = mixture(20, 16, seed=16)
    for kwargs in ({}, {"n_probe": copy.n_lists, "n_rerank": len(copy)}):
        a, b = index.search(q, k=10, **kwargs), copy.search(q, k=10, **kwargs)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.distances, b.distances)
    p2, a2 = state_arrays(copy)
    _, a1 = state_arrays(index)
    assert p2 == params
    for name in a1:
        assert np.array_equal(a1[name], a2[name]), name
    # The copy is a working index: updates go on from where the original stopped.
    copy.add(x[:300:5], ids=np.arange(0, 300, 5))
    assert len(copy) == 1500 - 300 + 60


def test_untrained_state_round_trip():
    index = binidx.Index(10, metric="ip", n_lists=7, n_bits=128, seed=3)
    params, arrays = index._get_state()
    copy = Index._from_state(params, arrays)
    assert not copy.is_trained and copy.n_lists == 7 and copy.n_bits == 128 and copy.seed == 3


def test_from_state_does_not_write_into_the_given_arrays():
    x = mixture(600, 8, seed=17)
    params, arrays = binidx.build(x, n_lists=4)._get_state()
    snapshot = {k: np.array(v) for k, v in arrays.items()}
    first = Index._from_state(params, arrays)
    second = Index._from_state(params, arrays)
    first.remove(np.arange(0, 600, 3))
    first.add(x[:10] + 1, ids=np.arange(1000, 1010))
    for name, before in snapshot.items():
        assert np.array_equal(before, arrays[name]), name
    _, i = second.search(x[:40], k=1, n_probe=4, n_rerank=600)
    assert np.array_equal(i[:, 0], np.arange(40))


def test_read_only_index_refuses_changes():
    x = mixture(300, 8, seed=18)
    params, arrays = binidx.build(x, n_lists=4)._get_state()
    ro = Index._from_state(params, arrays, read_only_reason="it is memory-mapped from a file")
    _, i = ro.search(x[:5], k=1, n_probe=4)
    assert np.array_equal(i[:, 0], np.arange(5))
    with pytest.raises(ReadOnlyIndexError, match="cannot add vectors: it is memory-mapped from a file"):
        ro.add(x[:2], ids=[900, 901])
    with pytest.raises(ReadOnlyIndexError, match="cannot remove vectors: it is memory-mapped"):
        ro.remove([1])
    with pytest.raises(ReadOnlyIndexError, match="cannot train: it is memory-mapped"):
        ro.train(x)
    assert len(ro) == 300
