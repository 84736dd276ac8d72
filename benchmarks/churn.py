"""The churn runbook: how an index holds up under deletes and inserts.

Start from half of the base, then run rounds that each delete ``fraction`` of the live
set and insert as many new vectors.  ``order="random"`` inserts the rest of the base in
random order; ``order="cluster"`` first sorts the base by k-means cluster (clusters in a
random order), so the initial half misses whole clusters and later rounds bring in new
"categories" - a catalog that drifts away from what the index was trained on.

After the initial build and after every round it records, per engine: recall@1/@10
against exact ground truth of the *current* live set, insert and delete throughput,
batched QPS, and ``stale_results`` (returned ids that were deleted or never inserted:
must be 0).  A last line rebuilds the index from scratch on the final live set, so the
recall lost to churn can be read off directly.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, TextIO

import numpy as np

from .adapters import get_adapter_class
from .config import CONFIG_DIR
from .datasets import Dataset
from .metrics import RecallEvaluator, exact_knn
from .runner import log
from .sysinfo import environment


def cluster_order(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Row order grouping the vectors by k-means cluster, clusters in random order."""
    import faiss

    km = faiss.Kmeans(x.shape[1], n_clusters, niter=10, seed=int(rng.integers(2**31)),
                      max_points_per_centroid=256)
    km.train(x)
    labels = km.index.search(x, 1)[1][:, 0]
    rank = rng.permutation(n_clusters)[labels]
    return np.lexsort((rng.random(len(x)), rank))


def _evaluate(adapter, ds: Dataset, live: np.ndarray, k: int) -> dict[str, Any]:
    gt = live[exact_knn(ds.base[live], ds.queries, k, ds.metric)]
    evaluator = RecallEvaluator(ds.base, ds.queries, gt, ds.metric)
    adapter.query(ds.queries[:16], k)  # warm-up, as in the run job
    runs = []
    for _ in range(3):  # median of 3 timed passes, as in the run job
        t0 = time.perf_counter()
        found = adapter.query(ds.queries, k)
        runs.append(time.perf_counter() - t0)
    seconds = float(np.median(runs))
    returned = found[found >= 0]
    stale = int(np.count_nonzero(~np.isin(returned, live)))
    res = evaluator.evaluate(found)
    return {"recall@1": res["recall@1"], "recall@10": res["recall@10"],
            "qps": len(ds.queries) / seconds, "stale_results": stale}


def _build(cls, ds: Dataset, params: dict, live: np.ndarray, threads: int):
    adapter = cls(ds.metric, ds.base.shape[1], **params.get("build", {}))
    adapter.set_threads(threads)
    t0 = time.perf_counter()
    adapter.fit(ds.base[live], ids=live)
    build_s = time.perf_counter() - t0
    adapter.set_query_params(**params.get("query", {}))
    return adapter, build_s


def churn_engine(ds: Dataset, engine: str, params: dict, sink: TextIO, *, order: str,
                 rounds: int, fraction: float, threads: int, seed: int, k: int = 10
                 ) -> list[dict]:
    """Run the runbook for one engine; write and return one JSON line per round."""
    rng = np.random.default_rng(seed)
    n = len(ds.base)
    if order == "cluster":
        perm = cluster_order(ds.base, max(8, min(64, n // 1000)), rng)
    else:
        perm = rng.permutation(n)
    live, pool = np.sort(perm[: n // 2]), list(perm[n // 2:])
    build, query = params.get("build", {}), params.get("query", {})
    cls = get_adapter_class(engine)
    if not cls.supports_updates:
        raise ValueError(f"{engine} cannot add or remove after building; churn engines: "
                         "binidx, faiss-ivf, hnswlib")
    common = {"kind": "churn", **ds.describe(), "engine": engine, "order": order,
              "fraction": fraction, "build_params": build, "query_params": query,
              "threads": threads, "seed": seed, **environment()}
    lines: list[dict] = []

    def emit(line: dict) -> None:
        lines.append(line)
        sink.write(json.dumps(line, sort_keys=True) + "\n")
        sink.flush()
        log(f"{engine} churn round {line['round']}: live={line['n_live']} "
            f"recall@10={line['recall@10']:.4f} stale={line['stale_results']}")

    adapter, build_s = _build(cls, ds, params, live, threads)
    common["factory"] = adapter.factory()
    emit({**common, "round": 0, "n_live": len(live), "build_s": build_s,
          **_evaluate(adapter, ds, live, k)})

    for rnd in range(1, rounds + 1):
        n_change = round(fraction * len(live))
        if n_change > len(pool):
            log(f"{engine}: only {len(pool)} unused vectors left; stopping after round {rnd - 1}")
            break
        gone = rng.choice(live, size=n_change, replace=False)
        new = np.asarray(pool[:n_change], dtype=np.int64)
        del pool[:n_change]
        t0 = time.perf_counter()
        adapter.remove(gone)
        delete_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        adapter.add(ds.base[new], new)
        insert_s = time.perf_counter() - t0
        live = np.sort(np.concatenate([np.setdiff1d(live, gone, assume_unique=True), new]))
        emit({**common, "round": rnd, "n_live": len(live), "n_deleted": n_change,
              "n_inserted": n_change, "delete_per_s": n_change / max(delete_s, 1e-9),
              "insert_per_s": n_change / max(insert_s, 1e-9),
              "memory_bytes_total": adapter.memory_bytes()["total"],
              **_evaluate(adapter, ds, live, k)})

    fresh, build_s = _build(cls, ds, params, live, threads)
    emit({**common, "round": "rebuild", "n_live": len(live), "build_s": build_s,
          "memory_bytes_total": fresh.memory_bytes()["total"],
          **_evaluate(fresh, ds, live, k)})
    return lines


def _rate(line: dict, key: str) -> str:
    return f"{line[key]:,.0f}" if key in line else "-"


def churn_markdown(lines: list[dict]) -> str:
    """One table per (dataset, order, engine): the rounds, then the fresh rebuild."""
    out: list[str] = []
    keys = sorted({(ln["dataset"], ln["order"], ln["engine"]) for ln in lines})
    for dataset, order, engine in keys:
        rows = [ln for ln in lines if (ln["dataset"], ln["order"], ln["engine"]) ==
                (dataset, order, engine)]
        first = rows[0]
        out += [(f"## churn: {dataset}, {engine}, {order} inserts, "
                 f"{first['fraction']:.0%} deleted + inserted per round"), "",
                (f"`{first['factory']}`, search {first['query_params']}, "
                 f"{first['threads']} threads"), "",
                "| round | live | delete /s | insert /s | recall@1 | recall@10 | QPS | stale ids |",
                "|---|---|---|---|---|---|---|---|"]
        for ln in rows:
            out.append(f"| {ln['round']} | {ln['n_live']:,} | {_rate(ln, 'delete_per_s')} | "
                       f"{_rate(ln, 'insert_per_s')} | {ln['recall@1']:.4f} | "
                       f"{ln['recall@10']:.4f} | {ln['qps']:,.0f} | {ln['stale_results']} |")
        out.append("")
    return "\n".join(out)


def load_churn_params(path: str | None, dataset_family: str) -> dict:
    """Per-engine ``{"build": ..., "query": ...}`` for this dataset from the churn config."""
    path = path or os.path.join(CONFIG_DIR, "churn.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    return cfg.get(dataset_family, cfg["default"])


def run_churn_command(args, argv: list[str]) -> int:
    """``python -m benchmarks churn``: run the runbook for each engine, write the report."""
    from .cli import RESULTS_DIR, _command_line
    from .datasets import load_dataset

    ds = load_dataset(args.dataset, queries=args.queries, metric=args.metric,
                      max_base=args.max_base, max_queries=args.max_queries,
                      cache_dir=args.cache_dir)
    params = load_churn_params(args.config, ds.family)
    missing = [e for e in args.engines if e not in params]
    if missing:
        raise SystemExit(f"no churn parameters for {missing} in the churn config; "
                         f"configured: {', '.join(params)}")
    out_dir = args.out or os.path.join(RESULTS_DIR, ds.name)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"churn-{args.order}.jsonl")
    threads = args.threads or os.cpu_count() or 1
    lines: list[dict] = []
    with open(path, "w", encoding="utf-8") as sink:
        for engine in args.engines:
            lines += churn_engine(ds, engine, params[engine], sink, order=args.order,
                                  rounds=args.rounds, fraction=args.fraction,
                                  threads=threads, seed=args.seed)
    text = f"Command: `{_command_line(argv)}`\n\n" + churn_markdown(lines)
    with open(os.path.join(out_dir, f"churn-{args.order}.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0
