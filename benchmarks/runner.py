"""The ``run`` job: build every configured index, sweep its search parameters in each
mode, and write one JSON line per (build, search parameters, mode).

Modes (reported separately, never mixed):

* ``batch-1t``  - the whole query set in one call, 1 thread; QPS from the median of
  ``repeats`` timed calls.
* ``batch-all`` - the same with every logical CPU (``--threads``).
* ``single``    - one query per call, 1 thread, over the first ``single_queries`` queries;
  QPS plus p50 / p99 / mean latency.

Indexes are built with all threads; the build time is wall-clock for train + add.

After every engine is swept, a *confirm* phase (config key ``confirm``) measures each
engine's fastest points again: per mode and recall target, the ``candidates`` fastest
sweep points reaching the target are re-measured once per round, over ``rounds`` rounds,
with the engines in an order that rotates between rounds.  Picking the best of a noisy
grid flatters every engine (the winner's curse); measuring the picks again in turns
spreads the host's drift over all engines alike.  The indexes behind the candidates are
kept from the sweep, never rebuilt; an index is released as soon as none of its points
is a candidate.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, NamedTuple, TextIO

import numpy as np

from .adapters import EngineUnavailable, UnsupportedMetric, get_adapter_class
from .config import CONFIRM_DEFAULTS, dominated, expand
from .datasets import Dataset
from .metrics import RecallEvaluator
from .report import confirm_key
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


class _Point(NamedTuple):
    qps: float
    build: int
    query_params: dict


class ConfirmPoint(NamedTuple):
    """One point to measure in a confirm round, and the roles it holds."""

    build: int
    query_params: dict
    #: (target, candidate_rank) pairs: a point can be a candidate for several targets.
    roles: list[tuple[float, int]]


class CandidatePool:
    """One engine's confirm candidates and the built indexes they need.

    Per (mode, target), the ``n_candidates`` fastest sweep points whose recall@10 reaches
    the target are candidates, ranked by :func:`benchmarks.report.confirm_key` of the mode
    (CPU-time QPS in one-thread modes, wall QPS with all threads).  An adapter is kept
    while it is being swept or while one of its points is a candidate, and released (the
    pool drops its reference) as soon as neither holds; so at most ``n_candidates x
    len(targets) x modes`` indexes of the engine stay in memory after its sweep.

    Parameters
    ----------
    engine : str
        The engine's name, for the log.
    targets : sequence of float
        Recall@10 levels, e.g. ``(0.95, 0.99)``.
    n_candidates : int
        Points kept per mode and target.

    Examples
    --------
    >>> pool = CandidatePool("e", [0.9], 1)
    >>> b = pool.start_build(object(), {"factory": "A"})
    >>> pool.offer(b, "batch-1t", {"p": 1}, {"recall@10": 0.95, "cpu_qps": 10.0})
    >>> pool.end_build(b)
    >>> [p.query_params for p in pool.points("batch-1t")]
    [{'p': 1}]
    """

    def __init__(self, engine: str, targets, n_candidates: int) -> None:
        self.engine = engine
        self.targets = tuple(float(t) for t in targets)
        self.n_candidates = int(n_candidates)
        self.best: dict[tuple[str, float], list[_Point]] = {}
        self._builds: dict[int, tuple[Any, dict]] = {}  # build -> (adapter, base line)
        self._sweeping: set[int] = set()
        self._next = 0

    def start_build(self, adapter, base_line: dict) -> int:
        """Register a freshly built adapter and return its build number."""
        build = self._next
        self._next += 1
        self._builds[build] = (adapter, base_line)
        self._sweeping.add(build)
        return build

    def offer(self, build: int, mode: str, query_params: dict, line: dict) -> None:
        """Rank one sweep result; release adapters whose last candidate it overtakes."""
        qps = line.get(confirm_key(mode))
        if qps is None:
            return
        for target in self.targets:
            if (line.get("recall@10") or 0.0) < target:
                continue
            ranked = self.best.setdefault((mode, target), [])
            ranked.append(_Point(float(qps), build, dict(query_params)))
            # Stable sort: on equal QPS the point measured first keeps its rank.
            ranked.sort(key=lambda p: -p.qps)
            del ranked[self.n_candidates:]
        self._release_unheld()

    def end_build(self, build: int) -> None:
        """The sweep of ``build`` is over: keep its adapter only if it holds a candidate."""
        self._sweeping.discard(build)
        self._release_unheld()

    def _held(self) -> set[int]:
        return {p.build for ranked in self.best.values() for p in ranked}

    def _release_unheld(self) -> None:
        for build in sorted(set(self._builds) - self._held() - self._sweeping):
            adapter, _ = self._builds.pop(build)
            log(f"{self.engine}: released {adapter.factory()} (holds no confirm candidate)")

    def kept(self) -> dict[int, tuple[Any, dict]]:
        """Build number -> (adapter, base line) of every adapter the pool holds."""
        return dict(self._builds)

    def adapter(self, build: int):
        """The adapter of ``build`` (it must hold a candidate)."""
        return self._builds[build][0]

    def base_line(self, build: int) -> dict:
        """The sweep's result fields shared by every line of ``build``."""
        return self._builds[build][1]

    def points(self, mode: str) -> list[ConfirmPoint]:
        """The distinct candidate points of ``mode``, each once, with all its roles."""
        out: dict[tuple, ConfirmPoint] = {}
        for target in self.targets:
            for rank, p in enumerate(self.best.get((mode, target), [])):
                key = (p.build, json.dumps(p.query_params, sort_keys=True))
                if key not in out:
                    out[key] = ConfirmPoint(p.build, p.query_params, [])
                out[key].roles.append((target, rank))
        return list(out.values())

    def close(self) -> None:
        """Release every adapter."""
        self.best.clear()
        self._sweeping.clear()
        self._builds.clear()


def _measure_args(spec: dict, cfg: dict) -> dict[str, int]:
    return {"repeats": int(spec.get("repeats", cfg["repeats"])),
            "single_queries": int(spec.get("single_queries", cfg["single_queries"]))}


def run_sweeps(ds: Dataset, cfg: dict, engines: list[str], sink: TextIO, *,
               all_threads: int | None = None, modes: list[str] | None = None) -> list[dict]:
    """Build and sweep every engine in ``engines`` as ``cfg`` says, then run the confirm
    phase (``cfg["confirm"]``, off when it has 0 rounds); write JSON lines to ``sink``
    as they are measured and return them.

    Sweep lines carry ``"phase": "sweep"``; confirm lines ``"phase": "confirm"`` plus
    ``round``, ``target`` and ``candidate_rank``.  An engine that cannot run (library
    missing, metric unsupported) gets one line with a ``skipped`` reason instead of
    results, so the summary can say why it is absent.
    """
    all_threads = all_threads or os.cpu_count() or 1
    modes = modes or cfg["modes"]
    k = int(cfg["k"])
    confirm = {**CONFIRM_DEFAULTS, **(cfg.get("confirm") or {})}
    rounds = int(confirm["rounds"])
    evaluator = RecallEvaluator(ds.base, ds.queries, ds.gt, ds.metric)
    env = environment()
    common = {"run_id": uuid.uuid4().hex[:12], **ds.describe(), "k": k,
              "config": os.path.basename(cfg.get("path", "")), **env}
    lines: list[dict] = []

    def emit(line: dict) -> None:
        lines.append(line)
        sink.write(json.dumps(line, sort_keys=True) + "\n")
        sink.flush()

    pools: list[CandidatePool] = []
    for name in engines:
        if name not in cfg["engines"]:
            raise ValueError(f"engine {name!r} has no sweep in {cfg.get('path')}; "
                             f"configured: {', '.join(cfg['engines'])}")
        spec = cfg["engines"][name]
        pool = CandidatePool(name, confirm["targets"], confirm["candidates"]) if rounds else None
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
            build_no = pool.start_build(adapter, base_line) if pool else None
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
                    res = measure(adapter, ds, evaluator, mode, k=k, all_threads=all_threads,
                                  **_measure_args(spec, cfg))
                    line = {**base_line, "query_params": qp, "mode": mode, **res,
                            "phase": "sweep"}
                    emit(line)
                    if pool:
                        pool.offer(build_no, mode, qp, line)
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
            if pool:
                pool.end_build(build_no)
            del adapter  # the pool keeps it if one of its points is a candidate
        if pool:
            _log_kept(pool)
            pools.append(pool)
    try:
        if rounds:
            _confirm_phase(pools, ds, evaluator, cfg, modes, rounds, emit,
                           k=k, all_threads=all_threads)
    finally:
        for pool in pools:
            pool.close()
    return lines


def _log_kept(pool: CandidatePool) -> None:
    kept = pool.kept()
    total = sum(line["index_bytes_total"] for _, line in kept.values())
    names = "; ".join(line["factory"] for _, line in kept.values())
    log(f"{pool.engine}: keeping {len(kept)} index(es) for the confirm phase, "
        f"{total / 2**20:.0f} MiB: {names or '-'}")


def _confirm_phase(pools: list[CandidatePool], ds: Dataset, evaluator: RecallEvaluator,
                   cfg: dict, modes: list[str], rounds: int, emit, *, k: int,
                   all_threads: int) -> None:
    """Measure every candidate of every engine once per round and mode, engines in an
    order rotated by one each round, so that drift of the host hits all alike."""
    active = [p for p in pools if p.kept()]
    if not active:
        log("confirm: no engine has a candidate; nothing to confirm")
        return
    log(f"confirm: {rounds} rounds over {', '.join(p.engine for p in active)}, "
        f"{sum(len(p.kept()) for p in active)} indexes kept")
    started = time.perf_counter()
    for r in range(rounds):
        shift = r % len(active)
        order = active[shift:] + active[:shift]
        for mode in modes:
            for pool in order:
                spec = cfg["engines"][pool.engine]
                for point in pool.points(mode):
                    adapter = pool.adapter(point.build)
                    adapter.set_query_params(**point.query_params)
                    res = measure(adapter, ds, evaluator, mode, k=k, all_threads=all_threads,
                                  **_measure_args(spec, cfg))
                    # One line per role: a point that is a candidate for two targets is
                    # measured once and written twice, with the same numbers.
                    for target, rank in point.roles:
                        emit({**pool.base_line(point.build), "query_params": point.query_params,
                              "mode": mode, **res, "phase": "confirm", "round": r,
                              "target": target, "candidate_rank": rank})
                    log(f"confirm {r + 1}/{rounds} {pool.engine} {point.query_params} {mode}: "
                        f"recall@10={res['recall@10']} {confirm_key(mode)}="
                        f"{res.get(confirm_key(mode), float('nan')):.0f}")
    log(f"confirm: {rounds} rounds in {time.perf_counter() - started:.0f}s")
