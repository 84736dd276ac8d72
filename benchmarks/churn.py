"""The churn runbook: how an index holds up under deletes and inserts (issue 4).

Start from half of the base, then run rounds that each delete ``fraction`` of the live
set and insert as many new vectors.  ``order="random"`` inserts the rest of the base in
random order; ``order="cluster"`` first sorts the base by k-means cluster (clusters in a
random order), so the initial half misses whole clusters and later rounds bring in new
"categories" - a catalog that drifts away from what the index was trained on.

After the initial build and after every round it records, per engine: recall@1/@10
against exact ground truth of the *current* live set, insert and delete throughput,
batched QPS, bucket balance (``n_lists`` and largest / mean bucket size, for engines with
buckets), the latency of single-id deletes (``SINGLE_DELETES`` of each round's deletions are
removed one id per call: the case where FAISS IVF scans every list per call) and
``stale_results`` (returned ids that were deleted or never inserted: must be 0).  A last line rebuilds the index from scratch on the final live set, so the recall lost
to churn can be read off directly.  :func:`summarize` condenses the rounds into the
numbers issue 4's criteria are stated in (:data:`CRITERIA`).

Search parameters are fixed for the whole run.  They come from ``configs/churn.json``,
which holds, per dataset, the setting that :func:`tune_engine` found to give recall@10
closest above 0.95 on the initial half (``python -m benchmarks.churn tune``).
"""
from __future__ import annotations

import argparse
import glob
import itertools
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
from .sysinfo import environment, load_average

#: Issue 4's acceptance thresholds, as the summary checks them.  Recall gaps are in
#: recall@10 units (0.01 = 1 point); rates are per second.
CRITERIA = {
    "mean_recall_gap": 0.01,    # mean over rounds 0..R at most this far below the rebuild
    "worst_recall_gap": 0.02,   # no round further than this below the rebuild
    "bucket_max_over_mean": 3.0,
    "insert_per_core": 20_000,  # batched inserts, 128-d vectors
    "delete_per_s": 1_000_000,
}
TARGET_RECALL = 0.95
#: Ids of each round's deletions that are removed one id per call, each call timed (the
#: rest go in one batched call).  A few hundred give a stable median and p99.
SINGLE_DELETES = 200


def cluster_order(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Row order grouping the vectors by k-means cluster, clusters in random order."""
    import faiss

    km = faiss.Kmeans(x.shape[1], n_clusters, niter=10, seed=int(rng.integers(2**31)),
                      max_points_per_centroid=256)
    km.train(x)
    labels = km.index.search(x, 1)[1][:, 0]
    rank = rng.permutation(n_clusters)[labels]
    return np.lexsort((rng.random(len(x)), rank))


def initial_split(ds: Dataset, order: str, seed: int
                  ) -> tuple[np.random.Generator, np.ndarray, list[int]]:
    """The generator, the initial live ids (sorted) and the insert queue of a run.

    The tuner calls this too, so it tunes on exactly the half the runbook starts from.
    """
    rng = np.random.default_rng(seed)
    n = len(ds.base)
    if order == "cluster":
        perm = cluster_order(ds.base, max(8, min(64, n // 1000)), rng)
    elif order == "random":
        perm = rng.permutation(n)
    else:
        raise ValueError(f"order must be 'random' or 'cluster', got {order!r}")
    return rng, np.sort(perm[: n // 2]), list(perm[n // 2:])


def bucket_balance(adapter) -> dict[str, Any]:
    """``n_lists``, the largest bucket and largest / mean bucket size (None without buckets).

    The mean counts empty buckets too (total vectors / n_lists): an IVF index whose
    vectors crowd into a few lists is exactly what the ratio should expose.
    """
    sizes = adapter.bucket_sizes()
    if sizes is None or len(sizes) == 0:
        return {"n_lists": None, "bucket_max": None, "bucket_max_over_mean": None}
    mean = float(sizes.sum()) / len(sizes)
    return {"n_lists": len(sizes), "bucket_max": int(sizes.max()),
            "bucket_max_over_mean": float(sizes.max()) / mean if mean > 0 else None}


def _truth(ds: Dataset, live: np.ndarray, k: int) -> RecallEvaluator:
    gt = live[exact_knn(ds.base[live], ds.queries, k, ds.metric)]
    return RecallEvaluator(ds.base, ds.queries, gt, ds.metric)


def _evaluate(adapter, ds: Dataset, live: np.ndarray, k: int,
              evaluator: RecallEvaluator | None = None) -> dict[str, Any]:
    evaluator = evaluator or _truth(ds, live, k)
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


def _update_capable(engine: str):
    cls = get_adapter_class(engine)
    if not cls.supports_updates:
        raise ValueError(f"{engine} cannot add or remove after building; churn engines: "
                         "binidx, faiss-ivf, hnswlib")
    return cls


def _single_deletes(adapter, ids: np.ndarray) -> dict[str, Any]:
    """Remove ``ids`` one per call; the latency of each call in microseconds."""
    latencies = []
    for id_ in ids.tolist():
        one = np.array([id_], dtype=np.int64)
        t0 = time.perf_counter()
        adapter.remove(one)
        latencies.append(1e6 * (time.perf_counter() - t0))
    if not latencies:
        return {}
    return {"single_deletes": len(latencies), "single_delete_us": latencies,
            "single_delete_us_p50": float(np.percentile(latencies, 50)),
            "single_delete_us_p99": float(np.percentile(latencies, 99))}


def churn_engine(ds: Dataset, engine: str, params: dict, sink: TextIO, *, order: str,
                 rounds: int, fraction: float, threads: int, seed: int, k: int = 10,
                 command: str | None = None,
                 single_deletes: int = SINGLE_DELETES) -> list[dict]:
    """Run the runbook for one engine; write and return one JSON line per round.

    Each round removes its ids in one batched call, except the last ``single_deletes``
    of them, which are removed one id per call, each call timed: the live set evolves
    exactly as with one call, and ``single_delete_us_p50`` / ``_p99`` give the latency
    of a lone delete.

    With ``params["rebuild_each_round"]`` true, every round also builds a fresh index on
    that round's live set and records its recall as ``fresh_recall@10``: in cluster
    order the live set itself drifts, so only a rebuild on the same live set says how
    much recall the churn (rather than the data) cost.
    """
    rng, live, pool = initial_split(ds, order, seed)
    build, query = params.get("build", {}), params.get("query", {})
    each_round = bool(params.get("rebuild_each_round", False))
    cls = _update_capable(engine)
    common = {"kind": "churn", **ds.describe(), "engine": engine, "order": order,
              "fraction": fraction, "rounds": rounds, "build_params": build,
              "query_params": query, "threads": threads, "seed": seed, "command": command,
              "rebuild_each_round": each_round, **environment()}
    lines: list[dict] = []

    def emit(line: dict) -> None:
        line["loadavg_now"] = load_average()  # the run-start value is in "loadavg"
        lines.append(line)
        sink.write(json.dumps(line, sort_keys=True) + "\n")
        sink.flush()
        ratio = line["bucket_max_over_mean"]
        log(f"{engine} churn round {line['round']}: live={line['n_live']} "
            f"recall@10={line['recall@10']:.4f} stale={line['stale_results']} "
            f"buckets={line['n_lists']} max/mean={'-' if ratio is None else f'{ratio:.2f}'}")

    adapter, build_s = _build(cls, ds, params, live, threads)
    common["factory"] = adapter.factory()
    emit({**common, "round": 0, "n_live": len(live), "build_s": build_s,
          **bucket_balance(adapter), **_evaluate(adapter, ds, live, k)})

    fresh = None
    for rnd in range(1, rounds + 1):
        n_change = round(fraction * len(live))
        if n_change > len(pool):
            log(f"{engine}: only {len(pool)} unused vectors left; stopping after round {rnd - 1}")
            break
        gone = rng.choice(live, size=n_change, replace=False)
        new = np.asarray(pool[:n_change], dtype=np.int64)
        del pool[:n_change]
        n_single = min(single_deletes, n_change - 1)
        batch = gone[:n_change - n_single]
        t0 = time.perf_counter()
        adapter.remove(batch)
        delete_s = time.perf_counter() - t0
        singles = _single_deletes(adapter, gone[n_change - n_single:])
        t0 = time.perf_counter()
        adapter.add(ds.base[new], new)
        insert_s = time.perf_counter() - t0
        live = np.sort(np.concatenate([np.setdiff1d(live, gone, assume_unique=True), new]))
        evaluator = _truth(ds, live, k)
        line = {**common, "round": rnd, "n_live": len(live), "n_deleted": n_change,
                "n_inserted": n_change, "n_batch_deleted": len(batch), "delete_s": delete_s,
                "insert_s": insert_s, "delete_per_s": len(batch) / max(delete_s, 1e-9),
                "insert_per_s": n_change / max(insert_s, 1e-9), **singles,
                "memory_bytes_total": adapter.memory_bytes()["total"],
                **bucket_balance(adapter), **_evaluate(adapter, ds, live, k, evaluator)}
        fresh = None  # the last round's fresh index serves as the final rebuild
        if each_round:
            fresh, fresh_s = _build(cls, ds, params, live, threads)
            got = _evaluate(fresh, ds, live, k, evaluator)
            line.update({"fresh_build_s": fresh_s, "fresh_recall@1": got["recall@1"],
                         "fresh_recall@10": got["recall@10"]})
        emit(line)
    del adapter  # free the churned index before the rebuild (matters at 1M vectors)

    if fresh is None:
        fresh, build_s = _build(cls, ds, params, live, threads)
    else:
        build_s = fresh_s
    emit({**common, "round": "rebuild", "n_live": len(live), "build_s": build_s,
          "memory_bytes_total": fresh.memory_bytes()["total"],
          **bucket_balance(fresh), **_evaluate(fresh, ds, live, k)})
    return lines


# -- summaries -----------------------------------------------------------------------


def _groups(lines: list[dict]) -> dict[tuple, list[dict]]:
    """Lines by (dataset, order, engine, run): a rerun is its own group, never mixed in.

    Every line of one engine's run carries the ``timestamp`` taken when that run began.
    """
    groups: dict[tuple, list[dict]] = {}
    for ln in lines:
        if ln.get("kind") == "churn":
            key = (ln["dataset"], ln["order"], ln["engine"], ln.get("timestamp", ""))
            groups.setdefault(key, []).append(ln)
    return groups


def summarize(lines: list[dict]) -> list[dict]:
    """Issue 4's numbers per (dataset, order, engine), with a pass flag per criterion.

    ``mean_recall@10`` averages rounds 0..R (round 0 is the initial build).  ``mean_gap``
    and ``worst_gap`` compare it and the worst round with the fresh rebuild on the final
    live set.  When every round was also rebuilt (``rebuild_each_round``),
    ``same_set_mean_gap`` / ``same_set_worst_gap`` compare each round with the fresh build
    on *its own* live set (round 0 is one), which is issue 4's criterion, and the
    ``meets_*_recall`` flags judge those; otherwise they judge the final-rebuild gaps
    (``recall_reference`` says which).  Rates are medians over rounds 1..R;
    ``insert_per_core`` divides the insert rate by the thread count.  A ``meets_*`` flag is
    None when the engine has no such number (hnswlib has no buckets).
    """
    out = []
    for (dataset, order, engine, started), rows in sorted(_groups(lines).items()):
        rounds = [r for r in rows if r["round"] != "rebuild"]
        rebuild = next((r for r in rows if r["round"] == "rebuild"), None)
        updates = [r for r in rounds if r["round"] != 0]
        recalls = np.array([r["recall@10"] for r in rounds])
        ratios = [r.get("bucket_max_over_mean") for r in rows]
        ratios = [x for x in ratios if x is not None]
        threads = rows[0]["threads"]
        loads = [ln["loadavg_now"][0] for ln in rows if ln.get("loadavg_now")]
        s: dict[str, Any] = {
            "dataset": dataset, "order": order, "engine": engine, "started": started,
            "git": rows[0].get("git"), "dim": rows[0]["dim"],
            "n_base": rows[0]["n_base"], "n_queries": rows[0]["n_queries"],
            "threads": threads, "factory": rows[0]["factory"],
            "query_params": rows[0]["query_params"], "rounds": len(updates),
            "recall@10_round0": float(recalls[0]), "mean_recall@10": float(recalls.mean()),
            "worst_recall@10": float(recalls.min()),
            "rebuild_recall@10": rebuild["recall@10"] if rebuild else None,
            "max_bucket_max_over_mean": max(ratios) if ratios else None,
            "n_lists_first": rows[0].get("n_lists"),
            "n_lists_last": rounds[-1].get("n_lists"),
            "insert_per_core": (float(np.median([r["insert_per_s"] for r in updates])) / threads
                                if updates else None),
            "delete_per_s": (float(np.median([r["delete_per_s"] for r in updates]))
                             if updates else None),
            "stale_results": int(sum(r["stale_results"] for r in rows)),
            **_pooled_singles(updates),
            "loadavg_max": max(loads) if loads else None,
        }
        base = s["rebuild_recall@10"]
        s["mean_gap"] = None if base is None else s["mean_recall@10"] - base
        s["worst_gap"] = None if base is None else s["worst_recall@10"] - base
        fresh = [r["recall@10"] if r["round"] == 0 else r.get("fresh_recall@10") for r in rounds]
        same_set = updates and all(f is not None for f in fresh)
        s["same_set_mean_gap"] = (float(recalls.mean() - np.mean(fresh)) if same_set
                                  else None)
        s["same_set_worst_gap"] = float((recalls - fresh).min()) if same_set else None
        s["recall_reference"] = "same live set" if same_set else "final live set"
        mean_gap = s["same_set_mean_gap"] if same_set else s["mean_gap"]
        worst_gap = s["same_set_worst_gap"] if same_set else s["worst_gap"]
        # The slack keeps a gap of exactly 1 point (a float sum) on the passing side.
        s["meets_mean_recall"] = (None if mean_gap is None else
                                  mean_gap >= -CRITERIA["mean_recall_gap"] - 1e-9)
        s["meets_worst_recall"] = (None if worst_gap is None else
                                   worst_gap >= -CRITERIA["worst_recall_gap"] - 1e-9)
        s["meets_balance"] = (None if s["max_bucket_max_over_mean"] is None else
                              s["max_bucket_max_over_mean"] <= CRITERIA["bucket_max_over_mean"])
        s["meets_insert"] = (None if s["insert_per_core"] is None else
                             s["insert_per_core"] >= CRITERIA["insert_per_core"])
        s["meets_delete"] = (None if s["delete_per_s"] is None else
                             s["delete_per_s"] >= CRITERIA["delete_per_s"])
        out.append(s)
    return out


def _pooled_singles(updates: list[dict]) -> dict[str, Any]:
    """Median and p99 of the single-id delete latencies of every round, pooled."""
    pooled = [us for r in updates for us in r.get("single_delete_us", [])]
    if not pooled:
        return {"single_deletes": 0, "single_delete_us_p50": None, "single_delete_us_p99": None}
    return {"single_deletes": len(pooled),
            "single_delete_us_p50": float(np.percentile(pooled, 50)),
            "single_delete_us_p99": float(np.percentile(pooled, 99))}


def _singles(line: dict) -> str:
    p50, p99 = line.get("single_delete_us_p50"), line.get("single_delete_us_p99")
    return "-" if p50 is None else f"{p50:,.0f} / {p99:,.0f}"


def _mark(flag: bool | None) -> str:
    return "" if flag is None else (" ✓" if flag else " ✗")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _params(query: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in query.items())


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}"


def summary_markdown(summaries: list[dict]) -> str:
    """One table per dataset, every (order, engine) side by side, criteria marked ✓ / ✗."""
    out: list[str] = []
    for dataset in sorted({s["dataset"] for s in summaries}):
        rows = [s for s in summaries if s["dataset"] == dataset]
        first = rows[0]
        queries = sorted({s["n_queries"] for s in rows})
        out += [(f"### churn summary: {dataset} ({first['n_base']:,} vectors, "
                 f"{first['dim']}-d, {' / '.join(f'{q:,}' for q in queries)} queries, "
                 f"{first['threads']} threads)"),
                "",
                ("recall@10 gaps are in points (0.01): against the fresh rebuild on the final "
                 "live set (\"final\"), and against a fresh build on each round's own live "
                 "set (\"same set\", when every round was rebuilt); rates are medians over "
                 "rounds; ✓ / ✗ = meets / misses issue 4's bound (mean >= rebuild - 1, "
                 "worst >= rebuild - 2, judged on the same-set gaps when there are any; bucket "
                 "<= 3x mean; insert >= 20,000 /s per core; delete >= 1,000,000 /s in batched "
                 "calls). Single deletes: median / p99 latency of one-id remove calls, in "
                 "microseconds, over every round."),
                "",
                ("| order | engine | search | recall@10 round 0 | mean 0..R | final rebuild "
                 "| mean - final | worst - final | mean - same set | worst - same set "
                 "| max bucket / mean | n_lists start -> end | insert /s per core | delete /s "
                 "| single delete us p50 / p99 | stale | max load |"),
                "|---|---|---|" + "---:|" * 14]
        runs = [(r["order"], r["engine"]) for r in rows]
        for s in sorted(rows, key=lambda r: (r["order"] != "random", r["order"], r["engine"],
                                             r["started"])):
            lists = ("-" if s["n_lists_first"] is None
                     else f"{s['n_lists_first']:,} -> {s['n_lists_last']:,}")
            same = s["recall_reference"] == "same live set"
            engine = s["engine"]
            if runs.count((s["order"], engine)) > 1:  # reruns: say which run each row is
                engine += f" (run {s['started'][11:16]} UTC)"
            out.append(
                f"| {s['order']} | {engine} | {_params(s['query_params'])} "
                f"| {s['recall@10_round0']:.4f} | {s['mean_recall@10']:.4f} "
                f"| {_num(s['rebuild_recall@10'], '.4f')} "
                f"| {_gap(s['mean_gap'])}{'' if same else _mark(s['meets_mean_recall'])} "
                f"| {_gap(s['worst_gap'])}{'' if same else _mark(s['meets_worst_recall'])} "
                f"| {_gap(s['same_set_mean_gap'])}{_mark(s['meets_mean_recall']) if same else ''} "
                f"| {_gap(s['same_set_worst_gap'])}"
                f"{_mark(s['meets_worst_recall']) if same else ''} "
                f"| {_num(s['max_bucket_max_over_mean'], '.2f')}{_mark(s['meets_balance'])} "
                f"| {lists} | {_num(s['insert_per_core'], ',.0f')}{_mark(s['meets_insert'])} "
                f"| {_num(s['delete_per_s'], ',.0f')}{_mark(s['meets_delete'])} "
                f"| {_singles(s)} | {s['stale_results']} | {_num(s['loadavg_max'], '.1f')} |")
        out.append("")
    return "\n".join(out)


def _rate(line: dict, key: str, per: int = 1) -> str:
    return f"{line[key] / per:,.0f}" if key in line else "-"


def churn_markdown(lines: list[dict]) -> str:
    """The summary tables, then one table per (dataset, order, engine) with every round."""
    out = [summary_markdown(summarize(lines))]
    for (dataset, order, engine, started), rows in sorted(_groups(lines).items()):
        first = rows[0]
        out += [(f"## churn: {dataset}, {engine}, {order} inserts, "
                 f"{first['fraction']:.0%} deleted + inserted per round"), "",
                f"Run started {started or '?'}, git `{first.get('git')}`.", "",
                (f"`{first['factory']}`, search {first['query_params']}, "
                 f"{first['threads']} threads"), "",
                ("| round | live | n_lists | max bucket / mean | delete /s "
                 "| single delete us p50 / p99 | insert /s "
                 "| insert /s per core | recall@1 | recall@10 | fresh build's recall@10 | QPS "
                 "| stale ids | load |"),
                "|---|" + "---:|" * 13]
        for ln in rows:
            load = ln.get("loadavg_now") or ln.get("loadavg")
            out.append(
                f"| {ln['round']} | {ln['n_live']:,} | {_num(ln.get('n_lists'), ',')} "
                f"| {_num(ln.get('bucket_max_over_mean'), '.2f')} "
                f"| {_rate(ln, 'delete_per_s')} | {_singles(ln)} | {_rate(ln, 'insert_per_s')} "
                f"| {_rate(ln, 'insert_per_s', ln['threads'])} | {ln['recall@1']:.4f} "
                f"| {ln['recall@10']:.4f} | {_num(ln.get('fresh_recall@10'), '.4f')} "
                f"| {ln['qps']:,.0f} | {ln['stale_results']} "
                f"| {'-' if not load else f'{load[0]:.1f}'} |")
        out.append("")
    return "\n".join(out)


def read_churn_lines(out_dir: str) -> list[dict]:
    """Every runbook line of ``churn-*.jsonl`` in ``out_dir`` (both orders)."""
    lines = []
    for path in sorted(glob.glob(os.path.join(out_dir, "churn-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            lines += [ln for ln in map(json.loads, filter(str.strip, f))
                      if ln.get("kind") == "churn"]
    return lines


def write_summary(out_dir: str) -> str:
    """Write ``churn-summary.md`` (both orders, every engine) from the JSON lines there."""
    lines = read_churn_lines(out_dir)
    commands = sorted({ln["command"] for ln in lines if ln.get("command")})
    text = "\n".join(["Commands:", "", *(f"    {c}" for c in commands), "",
                      summary_markdown(summarize(lines))])
    with open(os.path.join(out_dir, "churn-summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


# -- choosing the search parameters --------------------------------------------------


def _settings(grid: dict[str, list]) -> list[tuple[dict, list[dict]]]:
    """Group a grid by everything but its first key; each group ascends in that key."""
    keys = list(grid)
    primary, rest = keys[0], keys[1:]
    groups = []
    for combo in itertools.product(*(grid[k] for k in rest)):
        fixed = dict(zip(rest, combo, strict=True))
        groups.append((fixed, [{primary: v, **fixed} for v in sorted(grid[primary])]))
    return groups


def tune_engine(ds: Dataset, engine: str, params: dict, grid: dict[str, list], *,
                threads: int, seed: int, order: str = "random", k: int = 10,
                target: float = TARGET_RECALL) -> list[dict]:
    """Search settings around ``target`` recall@10 on the runbook's initial half.

    Builds ``engine`` once with ``params["build"]`` on the initial live set of ``order``
    and ``seed``, then walks the grid: for each value of the secondary keys (binidx's
    ``n_rerank``) it raises the first key (``n_probe`` / ``nprobe`` / ``ef``) until recall@10
    reaches ``target``.  The line of the setting :func:`pick_setting` would choose has
    ``chosen: true``.

    Returns
    -------
    list of dict
        One line per setting tried: ``query_params``, ``recall@10``, ``qps``, ...
    """
    _, live, _ = initial_split(ds, order, seed)
    cls = _update_capable(engine)
    adapter, build_s = _build(cls, ds, {"build": params.get("build", {})}, live, threads)
    evaluator = _truth(ds, live, k)
    common = {"kind": "churn-tune", **ds.describe(), "engine": engine, "order": order,
              "seed": seed, "threads": threads, "target": target, "build_s": build_s,
              "build_params": params.get("build", {}), "factory": adapter.factory(),
              **environment()}
    rows = []
    for _, settings in _settings(grid):
        for query in settings:
            adapter.set_query_params(**query)
            row = {**common, "query_params": query, **_evaluate(adapter, ds, live, k, evaluator)}
            rows.append(row)
            log(f"tune {engine} {query}: recall@10={row['recall@10']:.4f} qps={row['qps']:,.0f}")
            if row["recall@10"] >= target:
                break  # costlier values of the first key only add recall
    chosen = pick_setting(rows, grid, target)
    for row in rows:
        row["chosen"] = row is chosen
    return rows


def pick_setting(rows: list[dict], grid: dict[str, list], target: float) -> dict | None:
    """The tuned setting: the one closest above ``target``.

    Per group of secondary keys the candidate is the smallest first-key value that
    reached ``target``; among the candidates the lowest recall wins, so every engine
    starts as near ``target`` as its grid allows (recall is deterministic for a given
    build, QPS on a shared machine is not, so timing only breaks exact ties).  None when
    nothing reached it.
    """
    primary = next(iter(grid))
    best: dict[tuple, dict] = {}
    for row in rows:
        if row["recall@10"] < target:
            continue
        group = tuple(sorted((k, v) for k, v in row["query_params"].items() if k != primary))
        if group not in best or row["query_params"][primary] < best[group]["query_params"][primary]:
            best[group] = row
    return min(best.values(), key=lambda r: (r["recall@10"], -r["qps"]), default=None)


def tune_markdown(rows: list[dict]) -> str:
    """Every setting tried per engine; the chosen one in bold."""
    out = []
    for engine in dict.fromkeys(r["engine"] for r in rows):
        mine = [r for r in rows if r["engine"] == engine]
        out += [(f"### {mine[0]['dataset']}, {engine}: `{mine[0]['factory']}` on the "
                 f"{mine[0]['order']}-order initial half "
                 f"(target recall@10 {mine[0]['target']})"),
                "",
                "| search | recall@10 | QPS |", "|---|---:|---:|"]
        for r in mine:
            cell = _params(r["query_params"])
            out.append(f"| {'**' + cell + '**' if r['chosen'] else cell} "
                       f"| {r['recall@10']:.4f} | {r['qps']:,.0f} |")
        out.append("")
    return "\n".join(out)


# -- commands ------------------------------------------------------------------------


def _load_config(path: str | None) -> dict:
    path = path or os.path.join(CONFIG_DIR, "churn.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_churn_params(path: str | None, dataset_family: str) -> dict:
    """Per-engine ``{"build": ..., "query": ...}`` for this dataset from the churn config."""
    cfg = _load_config(path)["datasets"]
    return cfg.get(dataset_family, cfg["default"])


def _load(args):
    from .datasets import load_dataset

    return load_dataset(args.dataset, queries=args.queries, metric=args.metric,
                        max_base=args.max_base, max_queries=args.max_queries,
                        cache_dir=args.cache_dir)


def _engine_params(args, ds: Dataset) -> dict:
    params = load_churn_params(args.config, ds.family)
    missing = [e for e in args.engines if e not in params]
    if missing:
        raise SystemExit(f"no churn parameters for {missing} in the churn config; "
                         f"configured: {', '.join(params)}")
    return params


def run_churn_command(args, argv: list[str]) -> int:
    """``python -m benchmarks churn``: run the runbook for each engine, write the report."""
    from .cli import RESULTS_DIR, _command_line

    ds = _load(args)
    params = _engine_params(args, ds)
    out_dir = args.out or os.path.join(RESULTS_DIR, ds.name)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"churn-{args.order}.jsonl")
    threads = args.threads or os.cpu_count() or 1
    command = _command_line(argv)
    single = getattr(args, "single_deletes", SINGLE_DELETES)
    lines: list[dict] = []
    with open(path, "w", encoding="utf-8") as sink:
        for engine in args.engines:
            lines += churn_engine(ds, engine, params[engine], sink, order=args.order,
                                  rounds=args.rounds, fraction=args.fraction,
                                  threads=threads, seed=args.seed, command=command,
                                  single_deletes=single)
    text = f"Command: `{command}`\n\n" + churn_markdown(lines)
    with open(os.path.join(out_dir, f"churn-{args.order}.md"), "w", encoding="utf-8") as f:
        f.write(text)
    write_summary(out_dir)
    print(text)
    return 0


def _tune_command(args, argv: list[str]) -> int:
    from .cli import RESULTS_DIR

    ds = _load(args)
    params = _engine_params(args, ds)
    grids = _load_config(args.config)["tune_grid"]
    out_dir = args.out or os.path.join(RESULTS_DIR, ds.name)
    os.makedirs(out_dir, exist_ok=True)
    threads = args.threads or os.cpu_count() or 1
    path = os.path.join(out_dir, "churn-tune.jsonl")
    # Tuning one engine again keeps the other engines' rows of an earlier run.
    rows: list[dict] = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            rows = [r for r in map(json.loads, filter(str.strip, f))
                    if r.get("dataset") == ds.name and r["engine"] not in args.engines]
    with open(path, "w", encoding="utf-8") as sink:
        sink.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        for engine in args.engines:
            got = tune_engine(ds, engine, params[engine], grids[engine], threads=threads,
                              seed=args.seed, target=args.target)
            for row in got:
                row["command"] = "python -m benchmarks.churn " + " ".join(argv)
                sink.write(json.dumps(row, sort_keys=True) + "\n")
            rows += got
    text = tune_markdown(rows)
    chosen = {r["engine"]: r["query_params"] for r in rows if r["chosen"]}
    text += "\nChosen (for configs/churn.json): " + json.dumps(chosen) + "\n"
    with open(os.path.join(out_dir, "churn-tune.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.churn {tune,summary}``: pick search settings, redo summaries.

    The runbook itself is ``python -m benchmarks churn``.
    """
    import sys

    from .cli import _add_dataset_args, _csv

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.churn", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tune = sub.add_parser("tune", help="recall@10 of a grid of search settings on the "
                                       "initial half; writes churn-tune.{jsonl,md}")
    _add_dataset_args(tune)
    tune.add_argument("--engines", type=_csv, default=["binidx", "faiss-ivf", "hnswlib"])
    tune.add_argument("--config", help="churn config (default configs/churn.json)")
    tune.add_argument("--threads", type=int, help="threads (default: all)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--target", type=float, default=TARGET_RECALL)
    summary = sub.add_parser("summary", help="rewrite churn-summary.md from churn-*.jsonl")
    summary.add_argument("folder", help="e.g. benchmarks/results/dev-sift")
    args = parser.parse_args(argv)
    if args.command == "tune":
        return _tune_command(args, argv)
    print(write_summary(args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
