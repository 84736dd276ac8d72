"""The ``run`` job: build every configured index, sweep its search parameters in each
mode, and write one JSON line per (build, search parameters, mode).

Modes (reported separately, never mixed):

* ``batch-1t``  - the whole query set in one call, 1 thread; QPS from the median of
  ``repeats`` timed calls.
* ``batch-all`` - the same with every logical CPU (``--threads``).
* ``single``    - one query per call, 1 thread, over the first ``single_queries`` queries;
  QPS plus p50 / p99 / mean latency.

Indexes are built with all threads; the build time is wall-clock for train + add.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, TextIO

import numpy as np

from .adapters import EngineUnavailable, UnsupportedMetric, get_adapter_class
from .config import dominated, expand
from .datasets import Dataset
from .metrics import RecallEvaluator
from .sysinfo import environment


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays clean for the summary."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# One-thread modes also record the calling thread's CPU time (time.thread_time): every
# engine searches in the calling thread when limited to one thread, and on a shared
# machine CPU time is not inflated by waiting for a core, as wall time is.


def _time_batch(adapter, queries: np.ndarray, k: int, repeats: int
                ) -> tuple[np.ndarray, list, list]:
    adapter.query(queries[: min(len(queries), 16)], k)  # warm caches and thread pools
    runs, cpu_runs, ids = [], [], None
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        ids = adapter.query(queries, k)
        runs.append(time.perf_counter() - t0)
        cpu_runs.append(time.thread_time() - c0)
    return ids, runs, cpu_runs


def _time_single(adapter, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    lat = np.empty(len(queries))
    adapter.query_one(queries[0], k)
    c0 = time.thread_time()
    for i, v in enumerate(queries):
        t0 = time.perf_counter_ns()
        row = adapter.query_one(v, k)
        lat[i] = (time.perf_counter_ns() - t0) / 1e6
        ids[i, : len(row)] = row[:k]
    return ids, lat, time.thread_time() - c0


def measure(adapter, ds: Dataset, evaluator: RecallEvaluator, mode: str, *, k: int,
            repeats: int, single_queries: int, all_threads: int) -> dict[str, Any]:
    """Run one mode with the adapter's current search parameters; return the metrics."""
    if mode == "single":
        n = min(single_queries, len(ds.queries))
        adapter.set_threads(1)
        ids, lat, cpu_s = _time_single(adapter, ds.queries[:n], k)
        out = {"threads": 1, "n_queries_timed": n, "qps": n / (lat.sum() / 1e3),
               "cpu_qps": n / max(cpu_s, 1e-9),
               "latency_ms_p50": float(np.percentile(lat, 50)),
               "latency_ms_p99": float(np.percentile(lat, 99)),
               "latency_ms_mean": float(lat.mean())}
        out.update(evaluator.evaluate(ids, rows=np.arange(n)))
        return out
    threads = 1 if mode == "batch-1t" else all_threads
    adapter.set_threads(threads)
    ids, runs, cpu_runs = _time_batch(adapter, ds.queries, k, repeats)
    median = float(np.median(runs))
    out = {"threads": threads, "n_queries_timed": len(ds.queries),
           "qps": len(ds.queries) / median, "search_s_median": median,
           "search_s_runs": [round(r, 6) for r in runs]}
    if threads == 1:
        cpu_median = float(np.median(cpu_runs))
        out.update(cpu_qps=len(ds.queries) / max(cpu_median, 1e-9), search_cpu_s_median=cpu_median)
    out.update(evaluator.evaluate(ids))
    return out


def run_sweeps(ds: Dataset, cfg: dict, engines: list[str], sink: TextIO, *,
               all_threads: int | None = None, modes: list[str] | None = None) -> list[dict]:
    """Build and sweep every engine in ``engines`` as ``cfg`` says; write JSON lines to
    ``sink`` as they are measured and return them.

    An engine that cannot run (library missing, metric unsupported) gets one line with a
    ``skipped`` reason instead of results, so the summary can say why it is absent.
    """
    all_threads = all_threads or os.cpu_count() or 1
    modes = modes or cfg["modes"]
    k = int(cfg["k"])
    evaluator = RecallEvaluator(ds.base, ds.queries, ds.gt, ds.metric)
    env = environment()
    common = {"run_id": uuid.uuid4().hex[:12], **ds.describe(), "k": k,
              "config": os.path.basename(cfg.get("path", "")), **env}
    lines: list[dict] = []

    def emit(line: dict) -> None:
        lines.append(line)
        sink.write(json.dumps(line, sort_keys=True) + "\n")
        sink.flush()

    for name in engines:
        if name not in cfg["engines"]:
            raise ValueError(f"engine {name!r} has no sweep in {cfg.get('path')}; "
                             f"configured: {', '.join(cfg['engines'])}")
        spec = cfg["engines"][name]
        for build in expand(spec.get("build")):
            try:
                adapter = get_adapter_class(name)(ds.metric, ds.base.shape[1], **build)
                adapter.set_threads(all_threads)
                log(f"{name}: building {adapter.factory()}")
                t0 = time.perf_counter()
                adapter.fit(ds.base)
                build_s = time.perf_counter() - t0
            except (EngineUnavailable, UnsupportedMetric, ImportError) as exc:
                log(f"{name}: skipped ({exc})")
                emit({**common, "engine": name, "build_params": build, "skipped": str(exc)})
                break
            mem = adapter.memory_bytes()
            base_line = {**common, "engine": name, "factory": adapter.factory(),
                         "build_params": build, "build_s": round(build_s, 4),
                         "build_threads": all_threads,
                         "index_bytes_resident": mem["resident"], "index_bytes_total": mem["total"],
                         "bytes_per_vector_resident": mem["resident"] / len(ds.base),
                         "bytes_per_vector_total": mem["total"] / len(ds.base),
                         "engine_versions": adapter.versions()}
            log(f"{name}: built in {build_s:.1f}s, {mem['total'] / len(ds.base):.1f} B/vector")
            # Settings at least as costly as one of these are skipped (see config.py).
            reached: list[dict] = []
            for qp in expand(spec.get("query")):
                if cfg.get("stop_at_recall") and any(dominated(r, qp) for r in reached):
                    continue
                adapter.set_query_params(**qp)
                recall10, slowest = None, 0.0
                # A config may restrict an engine's modes (brute force one query at a
                # time tells nothing new and costs minutes).
                for mode in [m for m in modes if m in spec.get("modes", modes)]:
                    res = measure(adapter, ds, evaluator, mode, k=k,
                                  repeats=int(spec.get("repeats", cfg["repeats"])),
                                  single_queries=int(spec.get("single_queries",
                                                              cfg["single_queries"])),
                                  all_threads=all_threads)
                    emit({**base_line, "query_params": qp, "mode": mode, **res})
                    recall10 = res["recall@10"] if recall10 is None else recall10
                    slowest = max(slowest, res.get("search_s_median", 0.0))
                    log(f"{name} {qp} {mode}: recall@10={res['recall@10']} "
                        f"qps={res['qps']:.0f}")
                if cfg.get("stop_at_recall") and recall10 is not None \
                        and recall10 >= cfg["stop_at_recall"]:
                    reached.append(qp)
                elif slowest > float(cfg.get("max_batch_s") or np.inf):
                    log(f"{name}: {qp} took {slowest:.1f}s per batch; skipping costlier settings")
                    reached.append(qp)
            del adapter
    return lines
