"""Readers during writes: searches running while one thread adds, upserts and removes
always see the index as it was before or after some write batch, never a mixture.

Searches here probe every bucket and rerank every candidate, so each result is the exact
top k of the state it read: a reader's result must equal the exact top k of one of the
states the writer went through.
"""
import threading

import numpy as np
import pytest

import binidx

DIM = 16
K = 5


def _exact_top(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    d = ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(ids, d.shape), d), axis=1)[:, :K]
    return ids[order]


def _churn(index, rng, n_batches, states):
    """The writer: batches of removes, adds and upserts; records every state's content."""
    live = dict(zip(index.ids().tolist(), index.get(index.ids())))
    next_id = max(live) + 1
    for _ in range(n_batches):
        op = rng.integers(3)
        current = np.array(sorted(live))
        if op == 0:  # remove, sometimes most of the index (compaction, buckets shrink)
            n = int(rng.integers(1, max(2, len(current) * (0.7 if rng.random() < 0.1 else 0.1))))
            gone = rng.choice(current, size=min(n, len(current) - 50), replace=False)
            index.remove(gone)
            for i in gone.tolist():
                del live[i]
        elif op == 1:  # add (into spare capacity, reused slots and grown arrays)
            n = int(rng.integers(1, 400))
            x = rng.standard_normal((n, DIM)).astype(np.float32)
            new = np.arange(next_id, next_id + n)
            next_id += n
            index.add(x, new)
            live.update(zip(new.tolist(), x))
        else:  # upsert: existing ids get new vectors, plus some new ids
            old = rng.choice(current, size=min(len(current), 60), replace=False)
            new = np.arange(next_id, next_id + 20)
            next_id += 20
            ids = np.concatenate([old, new])
            x = rng.standard_normal((ids.size, DIM)).astype(np.float32)
            index.upsert(x, ids)
            live.update(zip(ids.tolist(), x))
        ids = np.array(sorted(live))
        states.append((ids, np.stack([live[i] for i in ids.tolist()])))


@pytest.mark.parametrize("seed", [0, 1])
def test_searches_during_writes_see_whole_batches(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3000, DIM)).astype(np.float32)
    index = binidx.Index(DIM, n_lists=16, seed=seed).train(x)
    index.add(x)
    queries = rng.standard_normal((8, DIM)).astype(np.float32)
    states = [(np.arange(3000), x)]
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                d, i = index.search(queries, k=K, n_probe=index.n_lists, n_rerank=10**6,
                                    n_threads=1)
                seen.append((d, i))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        _churn(index, rng, 120, states)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(seen) > 20, "the readers barely ran; the test would prove nothing"
    expected = [_exact_top(ids, vecs, queries) for ids, vecs in states]
    matched_states = set()
    for d, i in seen:
        matches = [s for s, e in enumerate(expected) if np.array_equal(e, i)]
        assert matches, f"a search returned ids matching no state of the index:\n{i}"
        ids, vecs = states[matches[0]]
        want = ((queries[:, None, :] - vecs[np.searchsorted(ids, i)]) ** 2).sum(-1)
        np.testing.assert_allclose(d, want, rtol=1e-4, atol=1e-4)
        matched_states.update(matches)
    # The readers saw more than the first and last state: writes really were concurrent.
    assert len(matched_states) > 2


def test_filtered_search_and_get_during_writes():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, DIM)).astype(np.float32)
    index = binidx.Index(DIM, n_lists=8).train(x)
    index.add(x, labels=np.arange(2000) % 4)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                _, i = index.search(x[:4], k=K, labels=[1], n_threads=1)
                found = i[i >= 0]
                assert np.all(found % 4 == 1), "a filtered search returned a wrong label"
                np.testing.assert_array_equal(index.get([1990, 1999]), x[[1990, 1999]])
                assert index.ids().size in (1970, 2000)  # between a remove and an add, or not
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for step in range(60):
            gone = np.arange(step * 30, step * 30 + 30)
            index.remove(gone)
            new = np.arange(10_000 + step * 30, 10_000 + step * 30 + 30)
            index.add(rng.standard_normal((30, DIM)).astype(np.float32), new, labels=new % 4)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


def test_freed_slots_are_reused_only_after_readers_leave():
    """A slot freed while a search holds an older snapshot keeps its vector and id until
    that search ends; afterwards it is reused."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, DIM)).astype(np.float32)
    index = binidx.Index(DIM, n_lists=4).train(x)
    index.add(x)
    snap = index._readers.enter()  # a search in progress on the current state
    try:
        # Removing 60% leaves more tombstones than a quarter of every bucket: they are
        # purged and their slots wait for the old snapshot's readers.
        index.remove(np.arange(300))
        assert index._buckets.dead.sum() == 0 and len(index._store.pending) == 1
        index.add(rng.standard_normal((100, DIM)).astype(np.float32), np.arange(1000, 1100))
        assert index._store.high_water == 600  # no freed slot was reused
        # The old snapshot's slots still hold ids 0..299 and their vectors.
        slots = np.flatnonzero(np.isin(snap.slot_ids, np.arange(300)))
        assert slots.size == 300
        np.testing.assert_array_equal(snap.vectors[slots], x[snap.slot_ids[slots]])
    finally:
        index._readers.leave(snap)
    index.add(rng.standard_normal((300, DIM)).astype(np.float32), np.arange(2000, 2300))
    assert index._store.high_water == 600  # the 300 freed slots were taken by this add
    assert len(index) == 600


def test_a_search_on_an_older_snapshot_still_sees_removed_vectors():
    """Tombstones are per snapshot: a search that started before a removal finds the
    removed vectors, one that starts after it does not."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, DIM)).astype(np.float32)
    index = binidx.Index(DIM, n_lists=4).train(x)
    index.add(x)
    snap = index._readers.enter()
    try:
        index.remove(np.arange(10))  # few: they stay in their buckets as tombstones
        assert index._buckets.dead.sum() == 10
        d = np.empty((10, 1), np.float32)
        i = np.empty((10, 1), np.int64)
        index._search_ivf(snap, x[:10], 1, 4, 400, 1, d, i, None)
        assert np.array_equal(i[:, 0], np.arange(10))
    finally:
        index._readers.leave(snap)
    found = index.search(x[:10], k=1, n_probe=4, n_rerank=400).ids[:, 0]
    assert not np.isin(found, np.arange(10)).any()
