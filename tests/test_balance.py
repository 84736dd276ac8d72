"""Self-balancing buckets (binidx/_balance.py) and updates against a model.

* the internal invariants hold after splits and dissolves: every live vector is in
  exactly the bucket its slot says, with the code of its residual to that bucket;
* any sequence of add / upsert / remove matches a dict model in content and in exact
  search results, with batches large enough to split and dissolve buckets;
* a drifting insert stream keeps the largest bucket within 3x the mean and recall close
  to a fresh rebuild.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import binidx
from binidx import _balance, _codes
from binidx._reference import neighbour_mismatch
from binidx.index import _rotate_rows

DIM = 8


def clusters(n, centers, rng):
    return (centers[rng.integers(len(centers), size=n)]
            + rng.standard_normal((n, centers.shape[1]))).astype(np.float32)


def check_invariants(index):
    """Every live slot sits in one bucket, the one ``slot_buckets`` names, at the
    position ``slot_pos`` names, with the code and factors of its residual there; each
    bucket's tombstones (rows of removed vectors) are counted in ``dead``."""
    b, s = index._buckets, index._store
    assert b.n_lists == index._centroids.shape[0] == index.n_lists
    seen = []
    for bucket in range(b.n_lists):
        size = int(b.sizes[bucket])
        slots = b.slots[bucket][:size].astype(np.int64)
        removed = s.dead.test(slots)
        assert np.count_nonzero(removed) == b.dead[bucket]
        seen.append(slots[~removed])
        assert np.all(s.slot_buckets[slots[~removed]] == bucket)
        assert np.all(s.slot_buckets[slots[removed]] == -1)
        assert np.array_equal(b.slot_pos[slots], np.arange(size))
        codes, factors, _ = b._read_rows(bucket)
        want_codes, want_factors = _codes.encode(s.vectors[slots] - index._centroids[bucket],
                                                 index._projection, index._scale)
        assert np.array_equal(codes, want_codes)
        # Factors are stored as bytes in steps of the bucket's scales: within one step
        # (half a step of rounding, half of a possible re-quantisation to a larger step).
        assert (np.abs(factors - want_factors) <= b.scales[bucket] * (1 + 1e-5) + 1e-6).all()
    seen = np.concatenate(seen)
    assert np.array_equal(np.sort(seen), s.live_slots()), "a live vector is lost or doubled"
    fitted = getattr(index, "_fitted_shares", None)
    assert fitted is None or fitted.shape[0] == b.n_lists
    # Rebalancing rotates only the centroids it moved: every row as if all were rotated.
    assert np.array_equal(index._centroids_rot,
                          _rotate_rows(index._centroids, index._projection_t))
    assert len(index) == seen.size


def assert_exact(index, model, queries, k=4):
    ids = np.array(sorted(model))
    x = np.stack([model[i] for i in ids.tolist()])
    got = index.search(queries, k=k, n_probe=index.n_lists, n_rerank=len(index))
    want = binidx.exact_search(x, queries, k + 3)
    want_ids = np.where(want.ids >= 0, ids[np.maximum(want.ids, 0)], -1)
    msg = neighbour_mismatch(got.distances, got.ids, want.distances, want_ids,
                             rtol=1e-4, atol=1e-4)
    assert msg is None, msg


# ------------------------------------------------------------------ split / dissolve
def test_split_divides_an_oversized_bucket_and_keeps_invariants():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, DIM)) * 4
    x = clusters(3000, centers[:3], rng)
    index = binidx.Index(DIM, n_lists=6, seed=1).train(x)
    index.add(x)
    check_invariants(index)
    before = index.n_lists
    # A new "category" far from every centroid lands in one bucket: it must be split.
    drift = (centers[5] * 3 + rng.standard_normal((4000, DIM))).astype(np.float32)
    index.add(drift, np.arange(10_000, 14_000))
    sizes = index.list_sizes()
    # The 4,000 new vectors alone are 3.4x the mean bucket: the bound proves they were
    # split.  A split may merge a small bucket away at the same time, so n_lists need not
    # grow, but it never shrinks.
    assert sizes.max() <= _balance.SPLIT_FACTOR * sizes.mean() + 1
    assert 4000 > 2 * sizes.mean()
    assert index.n_lists >= before
    check_invariants(index)


def eight_clusters(seed):
    """4,000 vectors of 8 clusters, their cluster labels, and an index of 8 buckets."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, DIM)) * 5
    labels = rng.integers(8, size=4000)
    x = (centers[labels] + rng.standard_normal((4000, DIM))).astype(np.float32)
    index = binidx.Index(DIM, n_lists=8, seed=2).train(x)
    index.add(x)
    return x, labels, index


def test_dissolve_merges_a_bucket_emptied_by_removals():
    x, labels, index = eight_clusters(1)
    n_lists = index.n_lists
    # Remove almost all of one cluster: its bucket falls under 1/8 of the mean size.
    victims = np.flatnonzero(labels == labels[0])[:-5]
    index.remove(victims)
    assert index.n_lists == n_lists - 1
    check_invariants(index)
    rest = np.setdiff1d(np.arange(4000), victims)
    assert_exact(index, dict(zip(rest.tolist(), x[rest])), x[:6])


def test_balance_can_be_switched_off_and_is_saved(tmp_path):
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((4, DIM)) * 4
    x = clusters(2000, centers[:2], rng)
    index = binidx.Index(DIM, n_lists=4, balance=False).train(x)
    index.add(x)
    index.add((centers[3] * 3 + rng.standard_normal((3000, DIM))).astype(np.float32))
    assert index.n_lists == 4
    index.save(tmp_path / "a.binidx")
    loaded = binidx.load(tmp_path / "a.binidx")
    assert loaded.balance is False and loaded.n_lists == 4
    loaded.balance = True
    largest = loaded.list_sizes().max()
    loaded.add(x[:10])  # the next write rebalances: the drifted bucket is split
    assert loaded.list_sizes().max() < largest / 2
    check_invariants(loaded)
    with pytest.raises(binidx.InvalidInputError, match="balance must be True or False"):
        binidx.Index(DIM, balance="yes")


def test_split_index_round_trips_through_a_file(tmp_path):
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((6, DIM)) * 4
    x = clusters(1500, centers[:2], rng)
    index = binidx.Index(DIM, n_lists=4).train(x)
    index.add(x)
    trained = index._centroids.copy()
    # A far cluster along a random direction u: at distance s = 600, 2 s <c, u> outweighs
    # the centroids' squared norms, so every point is nearest to the centroid with the
    # largest <c, u> and lands in one bucket, which must split.
    u = rng.standard_normal(DIM)
    u /= np.linalg.norm(u)
    index.add(clusters(3000, (600 * u)[None, :], rng), np.arange(5000, 8000))
    sizes = index.list_sizes()
    assert sizes.max() <= _balance.SPLIT_FACTOR * sizes.mean() + 1  # the far cluster was split
    assert not np.array_equal(index._centroids, trained)
    index.save(tmp_path / "b.binidx")
    loaded = binidx.load(tmp_path / "b.binidx")
    q = clusters(20, centers, rng)
    a, b = index.search(q, k=5), loaded.search(q, k=5)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.distances, b.distances)
    check_invariants(loaded)


def test_a_split_merges_the_smallest_bucket_so_n_lists_stays():
    """Deletions thin one cluster; a drifted cluster then overfills a bucket.  The split
    of the overfull bucket dissolves the thinned one: the centroid moves to where the
    data grew, n_lists stays, and the thinned cluster's last vectors join other buckets."""
    rng = np.random.default_rng(4)
    centers = rng.standard_normal((9, DIM)) * 6
    labels = np.arange(4000) % 8
    x = (centers[labels] + rng.standard_normal((4000, DIM))).astype(np.float32)
    index = binidx.Index(DIM, n_lists=8, seed=5).train(x)
    index.add(x)
    n_lists = index.n_lists
    thinned = np.flatnonzero(labels == 3)
    index.remove(thinned[:-150])  # 150 left: under half, over an eighth of the mean
    assert index.n_lists == n_lists
    drift = (centers[8] + 0.5 * rng.standard_normal((1000, DIM))).astype(np.float32)
    index.add(drift, np.arange(10_000, 11_000))
    sizes = index.list_sizes()
    assert index.n_lists == n_lists
    assert sizes.max() <= _balance.SPLIT_FACTOR * sizes.mean() + 1
    left = index._store.lookup(thinned[-150:])
    home = index._store.slot_buckets[left]
    assert all(sizes[b] > 150 for b in np.unique(home)), "the thinned bucket survived"
    check_invariants(index)


def test_dissolve_appends_to_the_receiving_buckets_without_rewriting_them(monkeypatch):
    # One Gaussian blob: a bucket's vectors are about as far from the neighbouring
    # centroids as those buckets' own vectors, so most receivers' factor scales fit.
    x = np.random.default_rng(6).standard_normal((4000, DIM)).astype(np.float32)
    index = binidx.Index(DIM, n_lists=8, seed=2).train(x)
    index.add(x)
    victims = np.flatnonzero(index._store.slot_buckets[index._store.lookup(np.arange(4000))] == 0)
    index.remove(victims[:-60])  # 60 left: over an eighth of the mean (55)
    assert index.n_lists == 8
    store = index._store
    doomed = store.slot_buckets[store.lookup(victims[-1:])[0]]
    before = [index._buckets._read_rows(b) for b in range(index.n_lists) if b != doomed]
    before = [rows for rows in before if (rows[2] >= 0).all()]  # no tombstones to purge
    rewritten, replace = [], type(index._buckets).replace

    def spy(self, b, codes, factors, slots):
        rewritten.append(int(slots[0]))  # buckets renumber: name them by a member
        return replace(self, b, codes, factors, slots)

    monkeypatch.setattr(type(index._buckets), "replace", spy)
    index.remove(victims[-60:-50])  # 50 left and 10 tombstones: dissolved
    assert index.n_lists == 7
    # A receiver is rewritten only when its factor scales must grow; every other one
    # still holds its old rows first, unchanged, then the arrivals.
    appended = [rows for rows in before if not set(rows[2].tolist()) & set(rewritten)]
    assert len(appended) >= 4 and len(rewritten) <= 2
    grew = 0
    for codes, _, slots in appended:
        got = index._buckets._read_rows(int(store.slot_buckets[slots[0]]))
        assert np.array_equal(got[2][:slots.size], slots)
        assert np.array_equal(got[0][:slots.size], codes)
        grew += got[2].size > slots.size
    assert grew >= 1
    assert store.pending, "the dissolved bucket's tombstones were not released"
    check_invariants(index)


@pytest.mark.parametrize("sizes, fitted, want", [
    ([10, 100, 300, 100], [10, 100, 300, 100], 2),   # over twice the mean: split
    ([30, 100, 150, 100], [30, 100, 90, 100], 2),    # grew by 1.67x, bucket 0 can merge
    ([60, 100, 150, 100], [60, 100, 90, 100], -1),   # grew, but nothing small to merge
    ([30, 100, 120, 100], [30, 100, 90, 100], -1),   # grew by 1.33x only
    ([30, 40, 100, 100], [30, 5, 100, 100], -1),     # 8x a tiny fit, but under half the mean
])
def test_next_split_takes_oversized_then_grown_buckets(sizes, fitted, want):
    sizes, fitted = np.array(sizes), np.array(fitted)
    mean = sizes.mean()
    assert _balance._next_split(sizes, fitted / mean, mean) == want
    # Shares, not sizes: the same growth with every bucket twice as large is no drift.
    assert _balance._next_split(2 * sizes, fitted / mean, 2 * mean) == want


# ------------------------------------------------------------------ model test
_POOL = clusters(2000, np.random.default_rng(9).standard_normal((10, DIM)) * 4,
                 np.random.default_rng(10))
_FAR = (np.random.default_rng(11).standard_normal((1, DIM)) * 12
        + np.random.default_rng(12).standard_normal((2000, DIM))).astype(np.float32)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["add", "upsert", "remove", "add_far"]),
                          st.integers(1, 400), st.integers(0, 2**31)),
                min_size=1, max_size=10))
def test_any_update_sequence_matches_a_dict_model(ops):
    """add / upsert / remove, with batches big enough to split and dissolve buckets
    (``add_far`` inserts a drifted cluster): content, ``ids()``, ``get``, ``len`` and
    exact search all match a dict of id -> vector."""
    index = binidx.Index(DIM, n_lists=4, n_bits=64, seed=1).train(_POOL)
    model: dict[int, np.ndarray] = {}
    for op, count, seed in ops:
        r = np.random.default_rng(seed)
        if op in ("add", "add_far"):
            ids = np.unique(r.integers(0, 3000, size=count))
            ids = ids[[i not in model for i in ids.tolist()]]
            rows = (_FAR if op == "add_far" else _POOL)[r.integers(2000, size=ids.size)]
            if ids.size:
                index.add(rows, ids=ids)
                model.update(zip(ids.tolist(), rows))
        elif op == "upsert":
            ids = np.unique(r.integers(0, 3000, size=count))
            rows = _POOL[r.integers(2000, size=ids.size)]
            index.upsert(rows, ids=ids)
            model.update(zip(ids.tolist(), rows))
        elif model:
            victims = r.choice(np.array(sorted(model)), size=min(count, len(model)), replace=False)
            assert index.remove(victims) == victims.size
            for v in victims.tolist():
                del model[v]
        assert len(index) == len(model)
    ids = np.array(sorted(model), dtype=np.int64)
    assert np.array_equal(index.ids(), ids)
    check_invariants(index)
    if model:
        np.testing.assert_array_equal(index.get(ids), np.stack([model[i] for i in ids.tolist()]))
        assert_exact(index, model, _POOL[:5])


# ------------------------------------------------------------------ drift
def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)])


def test_drifting_stream_keeps_buckets_bounded_and_recall_stable(sift):
    """Real SIFT descriptors in k-means-cluster order: the index is trained on the first
    clusters only, then the others stream in.  At every batch the largest bucket stays
    within 3x the mean, and recall at a fixed n_probe stays near a fresh rebuild's."""
    base = sift.base
    rng = np.random.default_rng(0)
    coarse = binidx.Index(base.shape[1], n_lists=16, seed=3, balance=False).train(base)
    order = np.argsort(_nearest(base, coarse._centroids), kind="stable")
    first, rest = order[:2000], order[2000:]
    index = binidx.Index(base.shape[1], n_lists=40, seed=4).train(base[first])
    index.add(base[first], first)
    ratios = []
    for batch in np.array_split(rest, 8):
        index.add(base[batch], batch)
        sizes = index.list_sizes()
        ratios.append(sizes.max() / sizes.mean())
    assert max(ratios) <= 3.0, ratios
    check_invariants(index)
    queries = base[rng.choice(base.shape[0], 300, replace=False)] + 1.0
    truth = binidx.exact_search(base, queries, 10).ids
    n_probe = 8
    got = index.search(queries, k=10, n_probe=n_probe, n_rerank=100).ids
    fresh = binidx.Index(base.shape[1], n_lists=index.n_lists, seed=4).train(base)
    fresh.add(base)
    want = fresh.search(queries, k=10, n_probe=n_probe, n_rerank=100).ids
    r_churn, r_fresh = _recall(got, truth), _recall(want, truth)
    unbalanced = binidx.Index(base.shape[1], n_lists=40, seed=4, balance=False).train(base[first])
    unbalanced.add(base[first], first)
    worst = 0.0
    for batch in np.array_split(rest, 8):
        unbalanced.add(base[batch], batch)
        sizes = unbalanced.list_sizes()
        worst = max(worst, sizes.max() / sizes.mean())
    # Without balancing the drift really does pile vectors into a few buckets.
    assert worst > 3.0
    print(f"recall@10 churned {r_churn:.3f}, rebuilt {r_fresh:.3f}, ratios {np.round(ratios, 2)}")
    assert r_churn >= r_fresh - 0.025, (r_churn, r_fresh)


def _nearest(x, centroids):
    d = (x ** 2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids ** 2).sum(1)[None, :]
    return np.argmin(d, axis=1)
