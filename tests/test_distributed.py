"""binidx.distributed: a sharded index on Ray actors.

One local Ray (2 CPUs, no dashboard, loopback only) is started for the whole module.
What is checked: results identical to one local Index trained the same way; stable
routing; idempotent writes (what Ray's retries rely on); no acknowledged write lost when
shard actors are killed mid-run; partial results and clear errors when a shard is dead;
reconnecting.  ``BINIDX_RAY_MULTINODE=1`` adds a test on a three-node
``ray.cluster_utils.Cluster`` (head + 2 workers) that loses a node.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import binidx
from binidx.datasets import load_embedded
from binidx.distributed import (
    ShardedIndex,
    ShardServer,
    ShardUnavailableError,
    shard_of,
    splitmix64,
)
from binidx.distributed._layout import MANIFEST_NAME, shard_dir
from binidx.distributed._results import merge
from binidx.errors import IndexFormatError, InvalidInputError

N_BASE = 6000
N_QUERIES = 40


def _ray_init(**kwargs) -> None:
    # No usage report leaves the machine, and every Ray address is on the loopback.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             namespace="binidx-tests", **kwargs)


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():
        ray.shutdown()
    _ray_init(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sift_small():
    ds = load_embedded("sift-20k")
    return ds.base[:N_BASE], ds.queries[:N_QUERIES]


@pytest.fixture(scope="module")
def sift_sharded(ray_local, sift_small, tmp_path_factory):
    """3 shards holding N_BASE SIFT vectors under scattered ids; tests restore what they change."""
    x, _ = sift_small
    where = tmp_path_factory.mktemp("sharded") / "sift"
    index = ShardedIndex.create(where, 3, train_x=x[:3000], n_lists=48, seed=7, sync="never")
    index.add(x, ids=_ids(N_BASE))
    yield index
    index.close()


def _ids(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * 1_000_003 + 11


def _local_twin(x, ids, train_x, **params) -> binidx.Index:
    """A local Index trained independently with the same data, parameters and seed."""
    local = binidx.Index(x.shape[1], balance=False, **params).train(train_x)
    local.add(x, ids)
    return local


def _assert_same(a, b) -> None:
    assert np.array_equal(a.ids, b.ids)
    assert np.array_equal(a.distances, b.distances)


# ------------------------------------------------------------------ routing
def test_routing_is_pinned_and_even():
    # Pinned: changing the rule would send every existing id to the wrong shard.
    assert int(splitmix64(np.array([0], np.int64))[0]) == 0xE220A8397B1DCDAF
    assert shard_of(np.arange(12, dtype=np.int64), 5).tolist() == [
        int(v) for v in splitmix64(np.arange(12, dtype=np.int64)) % np.uint64(5)]
    assert shard_of(np.arange(10, dtype=np.int64), 4).tolist() == [3, 1, 2, 1, 2, 2, 0, 3, 2, 0]
    extremes = np.array([-1, np.iinfo(np.int64).max, np.iinfo(np.int64).min], np.int64)
    assert shard_of(extremes, 7).min() >= 0 and shard_of(extremes, 7).max() < 7
    counts = np.bincount(shard_of(np.arange(70_000, dtype=np.int64), 7), minlength=7)
    assert np.abs(counts - 10_000).max() < 500  # consecutive ids spread evenly


def test_merge_orders_like_one_index():
    d1 = np.array([[1.0, 2.0, np.inf]], np.float32)
    i1 = np.array([[9, 4, -1]])
    d2 = np.array([[2.0, 2.0, 3.0]], np.float32)
    i2 = np.array([[3, 5, 8]])
    d, i = merge([(d1, i1), (d2, i2)], 4, "l2")
    assert i.tolist() == [[9, 3, 4, 5]] and d.tolist() == [[1.0, 2.0, 2.0, 2.0]]
    d1 = np.array([[3.0, 2.0, -np.inf]], np.float32)
    d2 = np.array([[2.0, 2.0, 1.0]], np.float32)
    d, i = merge([(d1, i1), (d2, i2)], 6, "ip")  # larger is better; padding stays last
    assert i.tolist() == [[9, 3, 4, 5, 8, -1]] and d[0, :5].tolist() == [3, 2, 2, 2, 1]


# ------------------------------------------------- identical to a local index
def test_results_identical_to_a_local_index(sift_sharded, sift_small):
    x, q = sift_small
    local = _local_twin(x, _ids(N_BASE), x[:3000], n_lists=48, seed=7)
    assert local.n_probe == sift_sharded.n_probe and local.n_rerank == sift_sharded.n_rerank
    for k in (1, 10, 100):
        # Probe every bucket, rerank everything: both are exact, ties to the smaller id.
        full = {"n_probe": 48, "n_rerank": N_BASE}
        _assert_same(sift_sharded.search(q, k, **full), local.search(q, k, **full))
    # Default n_probe with a rerank budget that covers the probed buckets: identical too.
    _assert_same(sift_sharded.search(q, 10, n_rerank=N_BASE), local.search(q, 10, n_rerank=N_BASE))
    # Default parameters: each shard reranks its own n_rerank best, a superset of the
    # local index's candidates, so every rank is at least as close.
    sharded, single = sift_sharded.search(q, 10), local.search(q, 10)
    assert sharded.complete and sharded.answered == (0, 1, 2)
    assert (sharded.distances <= single.distances).all()
    assert np.mean(sharded.ids == single.ids) > 0.9
    # More neighbours than vectors: padded like a local index.
    _assert_same(sift_sharded.search(q[:2], N_BASE + 5, n_probe=48),
                 local.search(q[:2], N_BASE + 5, n_probe=48))


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_identical_for_ip_and_cosine(ray_local, tmp_path, metric):
    ds = load_embedded("text-5k")
    x, q = ds.base[:2500] * 3.0, ds.queries[:30]  # scaled: ip and cosine then differ
    ids = _ids(2500)
    with ShardedIndex.create(tmp_path / "t", 2, train_x=x[:1500], metric=metric, n_lists=24,
                             seed=3, sync="never") as index:
        index.add(x, ids)
        local = _local_twin(x, ids, x[:1500], metric=metric, n_lists=24, seed=3)
        for params in ({"n_probe": 24, "n_rerank": 2500}, {"n_rerank": 2500}):
            _assert_same(index.search(q, 10, **params), local.search(q, 10, **params))
        assert np.array_equal(index.get(ids[:50]), local.get(ids[:50]))  # stored bit-identically
        assert (index.search(q, 10).distances >= local.search(q, 10).distances).all()


def test_created_from_a_trained_index(ray_local, tmp_path, sift_small):
    x, q = sift_small
    trained = binidx.Index(128, n_lists=16, seed=1).train(x[:2000])
    trained.add(x[:10])  # its vectors are not copied, only its training
    with ShardedIndex.create(tmp_path / "t", 2, trained=trained, sync="never") as index:
        assert len(index) == 0 and index.n_lists == 16
        index.add(x[:1000], np.arange(1000))
        local = index.template()
        assert len(local) == 0
        local.add(x[:1000], np.arange(1000))
        _assert_same(index.search(q, 5, n_rerank=1000), local.search(q, 5, n_rerank=1000))


def test_probe_ratio_like_a_local_index(ray_local, tmp_path, sift_small):
    x, q = sift_small
    trained = binidx.Index(128, n_lists=16, seed=1).train(x[:2000])
    trained.probe_ratio = 1.2  # a search default: every shard starts from it
    with ShardedIndex.create(tmp_path / "t", 2, trained=trained, sync="never") as index:
        index.add(x[:1000], np.arange(1000))
        local = index.template()
        local.add(x[:1000], np.arange(1000))
        assert index.probe_ratio == local.probe_ratio == 1.2
        covering = {"n_probe": 12, "n_rerank": 1000}
        adaptive = local.search(q, 5, **covering)
        _assert_same(index.search(q, 5, **covering), adaptive)
        _assert_same(index.search(q, 5, probe_ratio=1.2, **covering), adaptive)
        _assert_same(index.search(q, 5, probe_ratio=1.5, **covering),
                     local.search(q, 5, probe_ratio=1.5, **covering))
        # None on the router is fixed probing on every shard, although each shard's
        # snapshot was made from a template whose default is 1.2.
        index.probe_ratio = local.probe_ratio = None
        fixed = local.search(q, 5, **covering)
        assert not np.array_equal(fixed.ids, adaptive.ids)
        _assert_same(index.search(q, 5, **covering), fixed)
        with pytest.raises(InvalidInputError, match="probe_ratio must be a number >= 1"):
            index.search(q, 5, probe_ratio=0.9)


# -------------------------------------------------------- API and routing
def test_api_like_index(sift_sharded, sift_small):
    x, _ = sift_small
    ids = _ids(N_BASE)
    assert len(sift_sharded) == N_BASE
    assert np.array_equal(sift_sharded.ids(), np.sort(ids))
    assert int(ids[17]) in sift_sharded and 12 not in sift_sharded and "x" not in sift_sharded
    assert np.array_equal(sift_sharded.get(ids[[5, 0, 3]]), x[[5, 0, 3]])
    with pytest.raises(KeyError, match="id 12 is not in the index"):
        sift_sharded.get([int(ids[0]), 12])
    # Every shard holds exactly the ids that route to it.
    owner = shard_of(ids, 3)
    for s in range(3):
        held = ray.get(sift_sharded.actor(s).ids.remote())
        assert np.array_equal(held, np.sort(ids[owner == s]))
    assert sift_sharded.shard_sizes().tolist() == np.bincount(owner, minlength=3).tolist()
    D, I = sift_sharded.search(x[0], k=3)  # one vector searches as one row
    assert D.shape == (1, 3) and I[0, 0] == ids[0]
    D[0, 0] = 1.0  # results are writable copies, not views of Ray's object store


def test_handle_travels_to_ray_tasks(sift_sharded, sift_small):
    # Many clients: the handle is pickled into tasks; closing a copy stops no shard.
    _, q = sift_small

    @ray.remote(num_cpus=0)
    def search_elsewhere(index, queries):
        found = index.search(queries, 5).ids
        index.close()
        return found

    found = ray.get([search_elsewhere.remote(sift_sharded, q[i::2]) for i in range(2)])
    assert np.array_equal(found[0], sift_sharded.search(q[0::2], 5).ids)
    assert np.array_equal(found[1], sift_sharded.search(q[1::2], 5).ids)
    assert len(sift_sharded) == N_BASE  # the shards still serve


def test_writes_are_idempotent(sift_sharded, sift_small):
    x, q = sift_small
    ids = _ids(N_BASE)
    before = sift_sharded.search(q, 10)
    # Adding what is already there (what a retried add sees) is accepted and changes nothing.
    assert np.array_equal(sift_sharded.add(x[:100], ids[:100]), ids[:100])
    assert len(sift_sharded) == N_BASE
    # A call that Ray runs twice on one shard: the second run applies and logs nothing.
    s = int(shard_of(ids[:1], 3)[0])
    mine = ids[shard_of(ids, 3) == s][:5]
    rows = np.searchsorted(ids, mine)
    actor = sift_sharded.actor(s)
    seq = ray.get(actor.info.remote())["last_seq"]
    assert ray.get(actor.remove.remote(mine)) == 5
    assert ray.get(actor.remove.remote(mine)) == 0
    assert ray.get(actor.add.remote(x[rows], mine)) == 5
    assert ray.get(actor.add.remote(x[rows], mine)) == 0
    assert ray.get(actor.upsert.remote(x[rows], mine)) == 0  # nothing changes
    assert ray.get(actor.upsert.remote(x[rows + 1], mine)) == 5
    assert ray.get(actor.upsert.remote(x[rows + 1], mine)) == 0
    assert ray.get(actor.upsert.remote(x[rows], mine)) == 5
    assert ray.get(actor.info.remote())["last_seq"] == seq + 4  # remove, add, 2 upserts
    _assert_same(sift_sharded.search(q, 10), before)
    # A different vector under a present id is a conflict, not a retry.
    with pytest.raises(KeyError, match=f"id {ids[1]} is already in the index with a different "
                                       "vector .*use upsert"):
        sift_sharded.add(x[2:3], ids[1:2])
    # remove reports what was present before the call; "raise" removes nothing.
    with pytest.raises(KeyError, match="id 5 is not in the index"):
        sift_sharded.remove([int(ids[0]), 5])
    assert int(ids[0]) in sift_sharded
    assert sift_sharded.remove([int(ids[0]), 5], missing="ignore") == 1
    assert sift_sharded.remove([int(ids[0])], missing="ignore") == 0
    assert sift_sharded.upsert(x[:1], ids[:1]).tolist() == [ids[0]]
    sift_sharded.upsert(x[:1], ids[:1])
    assert len(sift_sharded) == N_BASE
    _assert_same(sift_sharded.search(q, 10), before)


def test_shard_refuses_ids_of_other_shards(tmp_path, sift_small):
    # The shard server checks routing itself: a client with another shard count must not
    # be able to hide vectors where no lookup will find them.
    x, _ = sift_small
    where = tmp_path / "s"
    index = binidx.Index(128, n_lists=8).train(x[:500])
    with binidx.open(where, index):
        pass
    from binidx.distributed._layout import write_shard_marker

    write_shard_marker(str(where), "u", 1, 4)
    server = ShardServer(str(where), "u", 1, 4, sync="never")
    ids = np.arange(40, dtype=np.int64)
    mine = ids[shard_of(ids, 4) == 1]
    assert server.add(x[:mine.size], mine) == mine.size
    other = int(ids[shard_of(ids, 4) == 2][0])
    with pytest.raises(InvalidInputError, match=f"id {other} belongs to shard 2, not to shard 1"):
        server.add(x[:1], [other])
    server.close()
    with pytest.raises(IndexFormatError, match="belongs to another sharded index or shard"):
        ShardServer(str(where), "u", 2, 4)


def test_search_defaults_are_saved(sift_sharded):
    path = sift_sharded.path
    sift_sharded.n_probe, sift_sharded.n_rerank, sift_sharded.probe_ratio = 5, 40, 1.8
    try:
        manifest = json.loads(Path(path, MANIFEST_NAME).read_text())
        assert (manifest["n_probe"], manifest["n_rerank"], manifest["probe_ratio"]) == (5, 40, 1.8)
        other = ShardedIndex.open(path)  # finds the running actors by name
        assert (other.n_probe, other.n_rerank, other.probe_ratio) == (5, 40, 1.8)
        assert len(other) == N_BASE
        other.close()  # started no actor, so stops none
        assert len(sift_sharded) == N_BASE
    finally:
        sift_sharded.n_probe = sift_sharded.n_rerank = sift_sharded.probe_ratio = None


def test_manifest_probe_ratio_optional_and_checked(tmp_path):
    from binidx.distributed._layout import KIND, read_manifest, write_json
    from binidx.distributed._routing import HASH_NAME

    manifest = {"kind": KIND, "version": 1, "uid": "u", "n_shards": 2, "routing": HASH_NAME,
                "dim": 8, "metric": "l2", "n_bits": 64, "n_lists": 4, "n_probe": 2,
                "n_rerank": None}
    write_json(str(tmp_path / MANIFEST_NAME), manifest)  # as written before adaptive probing
    assert read_manifest(str(tmp_path))["probe_ratio"] is None
    write_json(str(tmp_path / MANIFEST_NAME), {**manifest, "probe_ratio": 2})
    assert read_manifest(str(tmp_path))["probe_ratio"] == 2.0
    write_json(str(tmp_path / MANIFEST_NAME), {**manifest, "probe_ratio": 0.5})
    with pytest.raises(IndexFormatError, match="probe_ratio is 0.5, not null or a number >= 1; "
                                               "the manifest is damaged"):
        read_manifest(str(tmp_path))


# ---------------------------------------------------------------- failures
def test_killed_shards_lose_no_acknowledged_write(ray_local, tmp_path, sift_small):
    x, q = sift_small
    rng = np.random.default_rng(0)
    index = ShardedIndex.create(tmp_path / "k", 3, train_x=x[:2000], n_lists=32, seed=2)
    expected: dict[int, np.ndarray] = {}
    pids = {info["shard"]: info["pid"] for info in index.info()}
    stop = threading.Event()
    progress = [0]  # write steps done so far

    def killer():
        # Kill each shard actor once while writes are in flight; Ray restarts it.  The
        # kills follow the writer's progress (after steps 1, 3, 5, 7), not the clock: on a
        # loaded machine a clock-paced killer finished after only 3 writes.
        for n, s in enumerate((0, 1, 2, 0)):
            while progress[0] < 2 * n + 1:
                if stop.wait(0.01):
                    return
            ray.kill(index.actor(s), no_restart=False)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        step, t0 = 0, time.monotonic()
        while (thread.is_alive() or step < 10) and time.monotonic() - t0 < 120:
            batch = np.arange(step * 50, step * 50 + 50, dtype=np.int64)
            index.add(x[batch % N_BASE], batch)  # returns only once logged
            expected.update(zip(batch.tolist(), x[batch % N_BASE]))
            if step % 3 == 2:
                gone = rng.choice(batch, 10, replace=False)
                assert index.remove(gone) == 10
                for i in gone.tolist():
                    del expected[i]
                moved = batch[:5]
                index.upsert(x[moved + 1000], moved)
                expected.update(zip(moved.tolist(), x[moved + 1000]))
            step += 1
            progress[0] = step
    finally:
        stop.set()
        thread.join()
    assert step >= 10, f"only {step} writes in 120 s: the kills did not all overlap writes"
    infos = index.info()
    assert all(info["restarted"] for info in infos)
    assert all(info["pid"] != pids[info["shard"]] for info in infos)
    ids = np.array(sorted(expected), dtype=np.int64)
    assert len(index) == ids.size
    assert np.array_equal(index.ids(), ids)
    assert np.array_equal(index.get(ids), np.stack([expected[i] for i in ids.tolist()]))
    local = index.template()
    local.add(index.get(ids), ids)
    _assert_same(index.search(q, 10), local.search(q, 10, n_rerank=len(local)))
    # A shard that dies after logging a write but before replying: Ray restarts it, it
    # recovers the write from its log, Ray re-sends the call, and the call is not
    # applied twice (the caller sees one successful call).
    fresh = np.array([10**9 + i for i in range(60)], dtype=np.int64)
    s = int(shard_of(fresh[:1], 3)[0])
    fresh = fresh[shard_of(fresh, 3) == s][:5]
    rows = np.arange(fresh.size)
    for op in ("add", "upsert", "remove"):
        before = ray.get(index.actor(s).info.remote())
        ray.get(index.actor(s)._crash_after_next_write.remote())
        if op == "remove":
            assert index.remove(fresh) == fresh.size
        else:
            shift = 7 if op == "add" else 100  # an upsert that changes the vectors
            assert np.array_equal(getattr(index, op)(x[rows + shift], fresh), fresh)
        after = ray.get(index.actor(s).info.remote())
        assert after["pid"] != before["pid"], f"{op}: the shard did not crash"
        assert after["last_seq"] == before["last_seq"] + 1, f"{op} was logged twice"
        assert all((i in index) == (op != "remove") for i in fresh.tolist())
    index.close()
    assert len(os.listdir(tmp_path / "k")) == 5  # manifest, template, 3 shards


def test_dead_shard_partial_results_and_reconnect(ray_local, tmp_path, sift_small):
    x, q = sift_small
    ids = np.arange(3000, dtype=np.int64)
    index = ShardedIndex.create(tmp_path / "p", 3, train_x=x[:2000], n_lists=32, seed=2,
                                sync="never")
    index.add(x[:3000], ids)
    ray.kill(index.actor(1), no_restart=True)  # dead for good
    with pytest.raises(ShardUnavailableError, match=r"search: 1 of 3 shards did not answer "
                                                    r"\(shards \[1\]\) - shard 1: ActorDiedError"):
        index.search(q, 10)
    result = index.search(q, 10, n_probe=32, n_rerank=3000, allow_partial=True)
    assert result.answered == (0, 2) and list(result.failed) == [1] and not result.complete
    alive = ids[shard_of(ids, 3) != 1]
    local = index.template()
    local.add(x[alive], alive)
    _assert_same(result, local.search(q, 10, n_probe=32, n_rerank=3000))
    # Writes to the dead shard fail and say what was applied; other shards keep working.
    new = np.arange(5000, 5030, dtype=np.int64)
    with pytest.raises(ShardUnavailableError, match=r"add: 1 of 3 shards .*Shards \[0, 2\] "
                                                    r"applied their part; the call is idempotent"):
        index.add(x[:30], new)
    with pytest.raises(ShardUnavailableError, match="len: 1 of 3"):
        len(index)
    # reconnect() starts the dead shard again from its directory; the retry completes.
    assert index.reconnect() == [1]
    assert index.reconnect() == []
    index.add(x[:30], new)
    assert len(index) == 3030
    assert index.search(q, 10).complete
    index.close()


def test_timeouts(sift_sharded, sift_small):
    _, q = sift_small
    with pytest.raises(ShardUnavailableError, match=r"no answer within 0(\.0)? s"):
        sift_sharded.search(q, 10, timeout=0)
    with pytest.raises(ShardUnavailableError, match="No shard answered"):
        sift_sharded.search(q, 10, timeout=0, allow_partial=True)
    assert sift_sharded.search(q, 10, timeout=60).complete


def test_open_restarts_stopped_shards_from_disk(ray_local, tmp_path, sift_small):
    x, q = sift_small
    where = tmp_path / "o"
    with ShardedIndex.create(where, 2, train_x=x[:2000], n_lists=16, sync="never") as index:
        index.add(x[:500], np.arange(500))
        before = index.search(q, 5)
        index.checkpoint()
        index.add(x[500:600], np.arange(500, 600))  # in the logs only
        name = ray.get(index.actor(0).info.remote())["directory"]
    # The with-block stopped the actors (this handle started them).
    assert name == os.path.join(str(where), "shard-0000")
    with pytest.raises(ValueError, match="closed"):
        index.search(q, 5)
    reopened = ShardedIndex.open(where)
    assert len(reopened) == 600
    assert (reopened.search(q, 5).distances <= before.distances).all()
    reopened.close(stop=True)


def test_clear_errors(ray_local, tmp_path, sift_small, sift_sharded):
    x, q = sift_small
    with pytest.raises(FileNotFoundError, match="holds no sharded index"):
        ShardedIndex.open(tmp_path / "nothing")
    with pytest.raises(InvalidInputError, match="already holds a sharded index"):
        ShardedIndex.create(sift_sharded.path, 2, train_x=x[:100])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is not empty"):
        ShardedIndex.create(tmp_path / "busy", 2, train_x=x[:100])
    with pytest.raises(InvalidInputError, match="exactly one of train_x"):
        ShardedIndex.create(tmp_path / "n", 2)
    with pytest.raises(InvalidInputError, match="n_shards must be >= 1"):
        ShardedIndex.create(tmp_path / "n", 0, train_x=x[:100])
    with pytest.raises(InvalidInputError, match="actor_options must be a dict or a callable"):
        ShardedIndex.create(tmp_path / "n", 2, train_x=x[:100], actor_options=[("num_cpus", 1)])
    assert not (tmp_path / "n").exists()  # refused before anything was written
    with pytest.raises(TypeError, match=r"ShardedIndex.create\(path"):
        ShardedIndex()
    with pytest.raises(InvalidInputError, match="dimension 64, but the index was built with dim=128"):
        sift_sharded.search(q[:, :64], 10)
    with pytest.raises(InvalidInputError, match="needs explicit ids"):
        sift_sharded.add(x[:2], None)
    with pytest.raises(InvalidInputError, match="ids must be >= 0"):
        sift_sharded.add(x[:2], [-3, 4])
    with pytest.raises(InvalidInputError, match="ids contains 4 more than once"):
        sift_sharded.upsert(x[:2], [4, 4])
    with pytest.raises(InvalidInputError, match="missing must be 'raise' or 'ignore'"):
        sift_sharded.remove([1], missing="skip")
    assert len(sift_sharded) == N_BASE


def test_damaged_directories(ray_local, tmp_path, sift_small):
    x, _ = sift_small
    where = tmp_path / "d"
    ShardedIndex.create(where, 2, train_x=x[:1000], n_lists=8, sync="never").close()
    # Shard directories swapped: each actor refuses to serve the other's ids.
    os.rename(shard_dir(str(where), 0), str(where / "tmp"))
    os.rename(shard_dir(str(where), 1), shard_dir(str(where), 0))
    os.rename(str(where / "tmp"), shard_dir(str(where), 1))
    with pytest.raises(ShardUnavailableError, match="start: 2 of 2 shards did not answer.*"
                                                    "belongs to another sharded index or shard"):
        ShardedIndex.open(where, timeout=60)
    shutil.rmtree(shard_dir(str(where), 1))
    with pytest.raises(ShardUnavailableError, match="shard-0001 is not a shard of a sharded index "
                                                    r"\(no shard.json\): is the storage mounted"):
        ShardedIndex.open(where, timeout=60)
    (where / MANIFEST_NAME).write_text('{"kind": "binidx.ShardedIndex", "version": 99}')
    with pytest.raises(IndexFormatError, match="field 'uid' is missing"):
        ShardedIndex.open(where)


# ------------------------------------------------------------------ multi-node
@pytest.mark.skipif(os.environ.get("BINIDX_RAY_MULTINODE") != "1",
                    reason="multi-node Ray test: set BINIDX_RAY_MULTINODE=1 (about 15 s)")
def test_multinode_shards_survive_losing_a_node(tmp_path, sift_small, monkeypatch):
    """Head (no CPU, so no shard) + 2 worker nodes: one shard per node; a node is removed
    and its shard comes back on the other node from the shared directory."""
    import ray._private.ray_constants
    from ray.cluster_utils import Cluster

    x, q = sift_small
    if ray.is_initialized():
        ray.shutdown()  # this test needs its own cluster, not the module's local Ray
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # ray.init(address=...) rewrites a loopback address to the machine's network address,
    # where these nodes do not listen; Ray skips that rewrite when clusters are "off".
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    local_only = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False, **local_only})
    try:
        workers = [cluster.add_node(num_cpus=1, **local_only) for _ in range(2)]
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False,
                 namespace="binidx-tests")
        # SPREAD (the default) is best effort: pin shard s to worker s, softly, so that Ray
        # may still move it when its node is gone.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        def on_worker(shard: int) -> dict:
            node = workers[shard].node_id
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}

        index = ShardedIndex.create(tmp_path / "m", 2, train_x=x[:2000], n_lists=32, seed=5,
                                    actor_options=on_worker)
        ids = np.arange(4000, dtype=np.int64)
        index.add(x[:4000], ids)
        nodes = {info["shard"]: info["node_id"] for info in index.info()}
        assert [nodes[s] for s in (0, 1)] == [w.node_id for w in workers], nodes
        before = index.search(q, 10)
        victim = next(w for w in workers if w.node_id == nodes[0])
        cluster.remove_node(victim)
        # Shard 0 is restarted on the surviving node and replays its log from the shared
        # directory; the search waits for it (Ray re-sends the call).
        after = index.search(q, 10, timeout=180)
        _assert_same(after, before)
        infos = index.info()
        assert infos[0]["restarted"] and infos[0]["node_id"] != nodes[0]
        assert len(index) == 4000
        index.add(x[4000:4100], np.arange(4000, 4100))
        assert len(index) == 4100
        index.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
