"""Deleting vectors gives memory back (issue 4): buckets shrink, float vectors compact."""
import numpy as np
import pytest

import binidx
from binidx import _codes
from binidx import _reference as ref


def test_deleting_most_of_the_index_gives_memory_back_and_keeps_results_exact():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30000, 32)).astype(np.float32)
    labels = rng.integers(0, 20, 30000)
    # ~470 vectors per bucket, as at 1M vectors with the default n_lists (~250).
    index = binidx.Index(32, n_lists=64, seed=0).train(x)
    index.add(x, labels=labels)
    before = index.memory_usage()
    removed = rng.choice(30000, 24000, replace=False)
    index.remove(removed)
    after = index.memory_usage()
    # 80% of the vectors went: the float vectors and the lists must shrink accordingly.
    assert after["vectors"] < 0.45 * before["vectors"]
    assert after["codes"] < 0.5 * before["codes"]
    alive = np.setdiff1d(np.arange(30000), removed)
    assert set(index.ids().tolist()) == set(alive.tolist())
    np.testing.assert_array_equal(index.get(alive[::97]), x[alive[::97]])
    res = index.search(x[:50], 10, n_probe=index.n_lists, n_rerank=len(index))
    truth = binidx.exact_search(x[alive], x[:50], 10)
    np.testing.assert_array_equal(res.ids, alive[truth.ids])
    got = index.search(x[:20], 10, labels=[4]).ids
    assert np.isin(got[got >= 0], alive[labels[alive] == 4]).all()
    # And the index keeps working: re-adding reuses the freed room.
    index.add(x[removed[:500]], ids=removed[:500], labels=labels[removed[:500]])
    assert len(index) == alive.size + 500


# ------------------------------------------------------------- the accounting (issue 8)

def _arrays_a_search_reads(index: binidx.Index) -> list[np.ndarray]:
    """Every array the compiled search is given, from the published snapshot, except
    the float vectors (the rerank reads those for a few candidates; they may be mapped)."""
    snap = index._readers.current
    found: dict[int, np.ndarray] = {}

    def visit(value) -> None:
        if isinstance(value, np.ndarray):
            found[id(value)] = value
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)

    for name in type(snap).__slots__:
        if name != "vectors":
            visit(getattr(snap, name, None))
    return list(found.values())


def _churned(dim: int = 24, n: int = 6000) -> binidx.Index:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    index = binidx.Index(dim, n_lists=16, seed=0).train(x)
    index.add(x, labels=rng.integers(0, 4, n))
    index.remove(np.arange(0, n, 7))
    index.add(x[:100] + 1, ids=np.arange(n, n + 100))
    return index


def test_resident_is_exactly_what_a_search_reads():
    index = _churned()
    mem = index.memory_usage()
    assert mem["resident"] == sum(mem[p] for p in binidx.Index.RESIDENT_PARTS)
    assert mem["total"] == mem["resident"] + mem["vectors"] + mem["writer"]
    # Counting the snapshot's arrays independently gives the same bytes: no array the
    # search touches is left out, none is counted twice.
    assert mem["resident"] == sum(a.nbytes for a in _arrays_a_search_reads(index))
    assert mem["vectors"] == index._store.vectors.nbytes
    assert 0 < mem["spare"] < mem["resident"]


@pytest.mark.parametrize("balance", [False, True])
def test_a_bulk_add_leaves_no_spare_capacity(balance):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((70_000, 16)).astype(np.float32)  # more than one add block
    x[:20_000] += 3.0  # trained on the rest: rebalancing splits and merges after the add
    index = binidx.Index(16, n_lists=32, seed=0, balance=balance).train(x[20_000:25_000])
    index.add(x)
    mem = index.memory_usage()
    assert mem["spare"] == 0
    assert index._store.vectors.shape[0] == 70_000
    # Whole blocks of 8 codes: the padding of each bucket's last block is all there is.
    used_blocks = int(((index._buckets.sizes + 7) // 8).sum())
    assert mem["codes"] == used_blocks * 8 * 8
    # A small add afterwards grows geometrically (amortised O(1)); that slack is spare.
    index.add(x[:10] + 0.5, ids=np.arange(10**6, 10**6 + 10))
    after = index.memory_usage()
    assert 0 < after["spare"] <= 0.5 * after["resident"]


def test_labels_cost_nothing_until_used():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 8)).astype(np.float32)
    index = binidx.build(x, n_lists=4)
    assert index._labels.nbytes() == 0
    index.upsert(x[:5], ids=np.arange(5), labels=[1, 2, 1, 2, 3])
    assert index._labels.slot_labels.shape[0] >= 3000
    got = index.search(x[:3], 2, labels=[1]).ids
    assert set(got.ravel().tolist()) <= {0, 2}


# ------------------------------------------------- factor bytes (issue 8, memory)

@pytest.mark.parametrize("which", ["sift", "text"])
def test_factor_bytes_move_estimates_by_at_most_half_a_step(which, request):
    """Each factor byte stands for its float32 value within half a step of its bucket's
    scale (a bulk-built index has exact scales), so an estimate moves by at most
    |alpha| * step_a / 2 * |<s, w>| + |gamma| * step_rn2 / 2, and the n_rerank best
    estimates of a query's buckets are nearly the same set as with float32 factors."""
    data, index = request.getfixturevalue(which), request.getfixturevalue(f"{which}_index")
    b, s = index._buckets, index._store
    l2 = index.metric == "l2"
    overlaps = []
    for q in data.queries[:20]:
        qv = index._prepare(q[None, :], "q")[0]
        qrot = index._projection @ qv
        coarse = ((qv - index._centroids) ** 2).sum(axis=1) if l2 else -(index._centroids @ qv)
        keys_q, keys_f, slots_all = [], [], []
        for bucket in np.argsort(coarse, kind="stable")[:8].tolist():
            codes, fbytes, slots, scales = b.read_quantized(bucket)
            exact = _codes.encode(s.vectors[slots] - index._centroids[bucket],
                                  index._projection, index._scale)[1]
            assert (np.abs(fbytes * scales - exact) <= scales / 2 * (1 + 1e-5) + 1e-7).all()
            w = qrot - index._centroids_rot[bucket] if l2 else qrot
            alpha, gamma = (-2.0, 1.0) if l2 else (-1.0, 0.0)
            est_f = ref.estimate_reference(codes, exact, w, alpha, coarse[bucket], gamma)
            est_q = ref.estimate_reference(codes, fbytes, w, np.float32(alpha) * scales[0],
                                           coarse[bucket], np.float32(gamma) * scales[1])
            sw = ref.estimate_reference(codes, np.ones_like(exact), w, 1.0, 0.0, 0.0)
            bound = abs(alpha) * scales[0] / 2 * np.abs(sw) + abs(gamma) * scales[1] / 2
            assert (np.abs(est_q - est_f) <= bound * 1.001 + 1e-5 * np.abs(est_f) + 1e-6).all()
            keys_q.append(est_q)
            keys_f.append(est_f)
            slots_all.append(slots)
        slots_all = np.concatenate(slots_all)
        best_q = set(slots_all[np.argsort(np.concatenate(keys_q))[:100]].tolist())
        best_f = set(slots_all[np.argsort(np.concatenate(keys_f))[:100]].tolist())
        overlaps.append(len(best_q & best_f) / 100)
    assert np.mean(overlaps) >= 0.97, overlaps
