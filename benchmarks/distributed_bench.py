"""Cost of sharding: binidx.distributed.ShardedIndex against one local binidx.Index.

Both hold the same vectors with the same trained parameters (the sharded index is created
from the local one's training), so any difference in time is the price of Ray's
scatter-gather, and any difference in recall comes from each shard reranking its own
``n_rerank`` candidates.  Measured, for each shard count:

* ``rpc_ms``: one bare actor call (the floor of any sharded operation);
* batch of 1 query: median latency of a call, local vs sharded, and the difference;
* batch of 1,000 queries: median time of the call and queries per second;
* ingestion: vectors per second through ``add`` (logged with ``sync="always"``);
* recall@10 of both (tie-aware, against the dataset's exact ground truth);
* recovery: seconds from killing shard 0 until a search is answered again, with every
  add still in the write-ahead log, then after a checkpoint.

Every shard runs on this machine as its own Ray worker process, so this measures the
overhead, not the scaling of a real cluster (where each shard has its own cores).

Usage (from the repository root)::

    python benchmarks/distributed_bench.py --dataset ../shared/data/dev-sift
    python benchmarks/distributed_bench.py --dataset ../shared/data/dev-sift --shards 1,2,4 \
        --out benchmarks/results/distributed-dev-sift.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import binidx
from binidx._reference import recall_at_k
from binidx.datasets import load_folder


def _interleaved_ms(calls: dict, repeats: int) -> dict:
    """Median milliseconds of each call, timed in turns (a, b, a, b, ...) after one warm-up
    round, so that a load change on this shared machine hits every call alike."""
    for fn in calls.values():
        fn()
    times: dict = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def _time_pair(ray, local, index, queries: np.ndarray, singles: np.ndarray,
               repeats: int, shard_threads: int | None) -> dict:
    """Bare actor call, one-query and batch latencies (ms), local and sharded in turns."""
    actor = index.actor(0)
    out = _interleaved_ms({"rpc": lambda: ray.get(actor.count.remote())}, 200)
    rows = iter(range(10**9))

    def one(engine):
        return lambda: engine.search(singles[next(rows) % singles.shape[0]][None], 10)

    out.update(_interleaved_ms({"local_single": one(local), "single": one(index)},
                               singles.shape[0]))
    out.update(_interleaved_ms({"local_batch": lambda: local.search(queries, 10),
                                "batch": lambda: index.search(queries, 10,
                                                              n_threads=shard_threads)},
                               repeats))
    return out


def _recovery_s(ray, index, q: np.ndarray) -> float:
    """Seconds from killing shard 0's actor until a new actor process answers a search
    (Ray restarts the actor, which reopens its directory before serving)."""
    actor = index.actor(0)
    old_pid = ray.get(actor.info.remote())["pid"]
    ray.kill(actor, no_restart=False)
    t = time.perf_counter()
    # ray.kill is asynchronous: a call may still reach the old process; wait for the new.
    while ray.get(actor.info.remote(), timeout=600)["pid"] == old_pid:
        time.sleep(0.01)
    index.search(q, 10, timeout=600)
    return time.perf_counter() - t


def _recall(ds, ids: np.ndarray, distances: np.ndarray, nq: int) -> float:
    gt_d = ds.groundtruth_distances[:nq] if ds.groundtruth_distances is not None else None
    return recall_at_k(ids, ds.groundtruth[:nq], 10, gt_d, distances if gt_d is not None else None,
                       metric=ds.metric)


def run(args: argparse.Namespace) -> list[dict]:
    import ray

    from binidx.distributed import ShardedIndex

    ds = load_folder(args.dataset)
    base = ds.base
    queries = ds.queries[:args.batch]
    singles = ds.queries[:args.single]
    print(f"{ds.name}: {base.shape[0]} x {base.shape[1]} ({ds.metric}), "
          f"{queries.shape[0]} queries per batch, {singles.shape[0]} single queries", flush=True)

    t = time.perf_counter()
    local = binidx.Index(base.shape[1], metric=ds.metric, seed=0).train(base)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    local.add(base)
    local_add_s = time.perf_counter() - t
    print(f"local: n_lists={local.n_lists}, n_probe={local.n_probe}, n_rerank={local.n_rerank}, "
          f"train {train_s:.1f} s, add {local_add_s:.1f} s", flush=True)

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    rows = []
    local_res = local.search(queries, 10)
    local_recall = _recall(ds, local_res.ids, local_res.distances, queries.shape[0])
    workdir = tempfile.mkdtemp(prefix="binidx-dist-bench-")
    try:
        for n_shards in args.shards:
            where = os.path.join(workdir, f"s{n_shards}")
            t = time.perf_counter()
            index = ShardedIndex.create(where, n_shards, trained=local)
            start_s = time.perf_counter() - t
            ids = np.arange(base.shape[0], dtype=np.int64)
            t = time.perf_counter()
            for lo in range(0, base.shape[0], args.add_batch):
                index.add(base[lo:lo + args.add_batch], ids[lo:lo + args.add_batch])
            add_s = time.perf_counter() - t
            ms = _time_pair(ray, local, index, queries, singles, args.repeats,
                            args.shard_threads)
            res = index.search(queries, 10, n_threads=args.shard_threads)
            replay_s = _recovery_s(ray, index, queries[:1])  # the log holds every add
            index.checkpoint()
            snapshot_s = _recovery_s(ray, index, queries[:1])  # a snapshot and an empty log
            row = {
                "dataset": ds.name, "n": int(base.shape[0]), "n_shards": n_shards,
                "shard_threads": args.shard_threads,
                "n_lists": local.n_lists, "n_probe": local.n_probe, "n_rerank": local.n_rerank,
                "start_s": round(start_s, 2), "rpc_ms": round(ms["rpc"], 3),
                "add_vectors_per_s": round(base.shape[0] / add_s),
                "local_add_vectors_per_s": round(base.shape[0] / local_add_s),
                "single_ms": round(ms["single"], 3), "local_single_ms": round(ms["local_single"], 3),
                "single_overhead_ms": round(ms["single"] - ms["local_single"], 3),
                "batch": queries.shape[0], "batch_ms": round(ms["batch"], 1),
                "local_batch_ms": round(ms["local_batch"], 1),
                "batch_overhead_ms": round(ms["batch"] - ms["local_batch"], 1),
                "qps": round(1e3 * queries.shape[0] / ms["batch"]),
                "local_qps": round(1e3 * queries.shape[0] / ms["local_batch"]),
                "shard_vectors": int(base.shape[0] // n_shards),
                "recovery_from_log_s": round(replay_s, 2),
                "recovery_from_snapshot_s": round(snapshot_s, 2),
                "recall10": round(_recall(ds, res.ids, res.distances, queries.shape[0]), 4),
                "local_recall10": round(local_recall, 4),
                "loadavg": [round(v, 2) for v in os.getloadavg()],
                "ray": ray.__version__,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            index.close()
            shutil.rmtree(where, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        ray.shutdown()
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| shards | 1 query: local ms | sharded ms | overhead ms | 1,000 queries: local ms "
            "| sharded ms | local QPS | sharded QPS | recall@10 local / sharded | add vec/s "
            "local / sharded | bare actor call ms |")
    lines = [head, "|" + " ---: |" * 11]
    for r in rows:
        lines.append(
            f"| {r['n_shards']} | {r['local_single_ms']:.2f} | {r['single_ms']:.2f} | "
            f"{r['single_overhead_ms']:.2f} | {r['local_batch_ms']:.0f} | {r['batch_ms']:.0f} | "
            f"{r['local_qps']:,} | {r['qps']:,} | {r['local_recall10']:.3f} / {r['recall10']:.3f} | "
            f"{r['local_add_vectors_per_s']:,} / {r['add_vectors_per_s']:,} | {r['rpc_ms']:.2f} |")
    lines += ["", ("| shards | vectors per shard | restart to first answer: log replay s "
              "| after checkpoint s | shards started in s |"), "|" + " ---: |" * 5]
    for r in rows:
        lines.append(f"| {r['n_shards']} | {r['shard_vectors']:,} | {r['recovery_from_log_s']:.1f} "
                     f"| {r['recovery_from_snapshot_s']:.1f} | {r['start_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="../shared/data/dev-sift",
                   help="texmex folder with base/query/groundtruth (default: %(default)s)")
    p.add_argument("--shards", default="1,2,4",
                   help="comma-separated shard counts (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1000, help="queries per batch (default 1000)")
    p.add_argument("--single", type=int, default=200,
                   help="one-query calls timed (default 200)")
    p.add_argument("--repeats", type=int, default=7, help="repeats of the batch (median)")
    p.add_argument("--add-batch", type=int, default=20_000, help="vectors per add call")
    p.add_argument("--shard-threads", type=int, default=None,
                   help="n_threads of each shard's batch search (default: all cores)")
    p.add_argument("--out", help="also append the result lines (JSON) to this file")
    args = p.parse_args(argv)
    args.shards = [int(s) for s in args.shards.split(",")]
    rows = run(args)
    print()
    print(markdown(rows))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
