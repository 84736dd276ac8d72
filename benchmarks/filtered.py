"""Filtered search: recall@10 and QPS of binidx, FAISS and hnswlib under a filter.

``python -m benchmarks.filtered --dataset ../shared/data/dev-sift`` gives every base
vector a label drawn uniformly from 0..999 (seeded) and, for each selectivity ``s`` in
50%, 10%, 1% and 0.1%, allows the labels ``range(1000 * s)``.  Each engine searches the
same queries under that filter, one thread, all queries in one call:

* ``binidx``: ``index.search(q, k, labels=range(1000 * s))`` with the default search
  parameters and with ``n_probe`` and ``n_rerank`` doubled;
* ``binidx-compiled``: ``allowed_ids=`` a :class:`binidx.Index` compiled filter of the same
  vectors (compiled once per selectivity, default parameters);
* ``faiss-ivf`` (IVF-Flat), ``faiss-ivfpq-fs`` (IVF-PQ fast scan + exact refine) and
  ``faiss-hnsw``: an ``IDSelectorBitmap`` of the allowed ids passed through the search
  parameters;
* ``hnswlib``: ``knn_query(..., filter=callable)``.

Ground truth is exact: the 10 nearest allowed vectors (``binidx.exact_search`` over the
allowed rows).  Per engine, setting and selectivity the result line holds the tie-aware
recall@10 of the suite (:class:`benchmarks.metrics.RecallEvaluator`), the QPS (queries /
median of the timed calls) and ``short_fraction``, the share of queries that came back
with fewer than k results although at least k vectors pass the filter.  A column
"none" repeats every setting without a filter, for reference.  Results go to
``benchmarks/results/<dataset>/filtered.{jsonl,md}``.

Indexes are built once per engine with every thread, through the suite's adapters (the
same factory strings as ``python -m benchmarks run``); building the filter objects is
not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .adapters import EngineUnavailable, UnsupportedMetric, get_adapter_class
from .cli import RESULTS_DIR, _add_dataset_args, _csv
from .config import default_config_path, expand, load_config
from .datasets import Dataset, load_dataset
from .metrics import RecallEvaluator
from .runner import log
from .sysinfo import environment

SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
N_LABELS = 1000
ENGINES = ("binidx", "binidx-compiled", "faiss-ivf", "faiss-ivfpq-fs", "faiss-hnsw", "hnswlib")

#: Search settings of the other engines, per dataset family: first the one that reached
#: recall@10 >= 0.95 without a filter in the suite's sweep (benchmarks/results/<dataset>/
#: summary.md, batched, 1 thread), then a costlier one.
SETTINGS: dict[str, dict[str, list[dict]]] = {
    "dev-sift": {"faiss-ivf": [{"nprobe": 32}, {"nprobe": 128}],
                 "faiss-ivfpq-fs": [{"nprobe": 32, "k_factor": 10},
                                    {"nprobe": 128, "k_factor": 20}],
                 "faiss-hnsw": [{"efSearch": 32}, {"efSearch": 128}],
                 "hnswlib": [{"ef": 40}, {"ef": 160}]},
    "dev-text": {"faiss-ivf": [{"nprobe": 64}, {"nprobe": 128}],
                 "faiss-ivfpq-fs": [{"nprobe": 64, "k_factor": 10},
                                    {"nprobe": 128, "k_factor": 20}],
                 "faiss-hnsw": [{"efSearch": 64}, {"efSearch": 256}],
                 "hnswlib": [{"ef": 40}, {"ef": 160}]},
    "default": {"faiss-ivf": [{"nprobe": 4}, {"nprobe": 16}],
                "faiss-ivfpq-fs": [{"nprobe": 4, "k_factor": 5}, {"nprobe": 16, "k_factor": 10}],
                "faiss-hnsw": [{"efSearch": 32}, {"efSearch": 128}],
                "hnswlib": [{"ef": 40}, {"ef": 160}]},
}

# FAISS's k-means wants at least 39 training points per list; a --max-base prefix gets
# fewer lists rather than a degenerate quantizer.
_MIN_POINTS_PER_LIST = 39
_MAX_CALLS = 25

SearchFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class FilterCase:
    """One filter: which base rows pass it, and the exact filtered ground truth.

    ``selectivity`` is None for the unfiltered reference, whose ground truth is the
    dataset's own.
    """

    selectivity: float | None
    allowed_labels: np.ndarray
    mask: np.ndarray
    evaluator: RecallEvaluator

    @property
    def name(self) -> str:
        """Column title: ``none`` or the selectivity in percent."""
        return "none" if self.selectivity is None else f"{self.selectivity * 100:g}%"

    @property
    def n_match(self) -> int:
        return int(self.mask.sum())


def make_labels(n: int, n_labels: int = N_LABELS, seed: int = 0) -> np.ndarray:
    """Uniform random labels 0..n_labels-1, one per base vector (int64, shape (n,))."""
    return np.random.default_rng(seed).integers(0, n_labels, size=n, dtype=np.int64)


def filtered_ground_truth(base: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int,
                          metric: str) -> np.ndarray:
    """Exact k nearest neighbours among ``base[rows]``, as row numbers of ``base``.

    Returns
    -------
    ndarray of int64, shape (n_queries, k); -1 where fewer than k rows exist.
    """
    import binidx

    # Smaller query blocks than the default keep the float64 distance block near 200 MB.
    block = max(1, min(1024, 25_000_000 // max(len(rows), 1)))
    found = binidx.exact_search(base[rows], queries, k, metric, block=block).ids
    return np.where(found >= 0, rows[np.maximum(found, 0)], -1)


def make_cases(ds: Dataset, labels: np.ndarray, selectivities: tuple[float, ...], k: int,
               n_labels: int = N_LABELS, baseline: bool = True) -> list[FilterCase]:
    """The unfiltered reference (when ``baseline``) and one :class:`FilterCase` per
    selectivity, each with its exact ground truth."""
    cases = []
    if baseline:
        cases.append(FilterCase(None, np.arange(n_labels), np.ones(len(ds.base), bool),
                                RecallEvaluator(ds.base, ds.queries, ds.gt[:, :k], ds.metric)))
    for s in selectivities:
        allowed = np.arange(max(1, round(n_labels * s)))
        mask = labels < allowed.size
        gt = filtered_ground_truth(ds.base, ds.queries, np.flatnonzero(mask), k, ds.metric)
        cases.append(FilterCase(s, allowed, mask,
                                RecallEvaluator(ds.base, ds.queries, gt, ds.metric)))
        log(f"filter {cases[-1].name}: {cases[-1].n_match:,} matching vectors")
    return cases


# ---------------------------------------------------------------------------- engines
class _Engine:
    """One built index and the ways of searching it under a filter.

    ``variants()`` lists ``(engine name, search parameters)``; ``searcher`` returns a
    function ``(queries, k) -> ids`` with -1 for missing results.
    """

    factory: str
    build_params: dict

    def variants(self) -> list[tuple[str, dict]]:
        raise NotImplementedError

    def searcher(self, engine: str, params: dict, case: FilterCase) -> SearchFn:
        raise NotImplementedError


class _Binidx(_Engine):
    def __init__(self, ds: Dataset, labels: np.ndarray, engines: list[str]) -> None:
        import binidx

        self.index = binidx.Index(ds.base.shape[1], metric=ds.metric, seed=0)
        self.index.train(ds.base)
        self.index.add(ds.base, np.arange(len(ds.base), dtype=np.int64), labels=labels)
        self.engines = engines
        self.factory = (f"binidx.Index({ds.base.shape[1]}, metric={ds.metric!r}, "
                        f"n_lists={self.index.n_lists}, n_bits={self.index.n_bits}, seed=0)")
        self.build_params = {"n_lists": self.index.n_lists, "n_bits": self.index.n_bits}

    def variants(self) -> list[tuple[str, dict]]:
        default = {"n_probe": self.index.n_probe, "n_rerank": self.index.n_rerank}
        doubled = {key: 2 * value for key, value in default.items()}
        out = []
        if "binidx" in self.engines:
            out += [("binidx", default), ("binidx", doubled)]
        if "binidx-compiled" in self.engines:
            out.append(("binidx-compiled", default))
        return out

    def searcher(self, engine: str, params: dict, case: FilterCase) -> SearchFn:
        index = self.index
        if case.selectivity is None:
            filt: dict[str, Any] = {}
        elif engine == "binidx-compiled":
            compiled = index.compile_filter(allowed_ids=np.flatnonzero(case.mask))
            len(compiled)  # resolve ids -> slots now, outside the timed calls
            filt = {"allowed_ids": compiled}
        else:
            filt = {"labels": case.allowed_labels}
        return lambda q, k: index.search(q, k, n_threads=1, **params, **filt).ids


def _faiss_selector(mask: np.ndarray):
    """An ``IDSelectorBitmap`` of the rows set in ``mask`` plus the bitmap it reads.

    The bitmap is returned too: FAISS keeps only a raw pointer to it, so the caller must
    keep the array alive while the selector is in use.
    """
    import faiss

    bitmap = np.packbits(mask, bitorder="little")  # FAISS reads bit (i & 7) of byte i >> 3
    return faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap)), bitmap


class _Faiss(_Engine):
    def __init__(self, name: str, ds: Dataset, build: dict, settings: list[dict]) -> None:
        import faiss

        self.faiss = faiss
        self.name = name
        adapter = get_adapter_class(name)(ds.metric, ds.base.shape[1], **build)
        adapter.set_threads(os.cpu_count() or 1)
        adapter.fit(ds.base)
        self.index = adapter.index
        self.factory, self.build_params, self.settings = adapter.factory(), build, settings

    def variants(self) -> list[tuple[str, dict]]:
        return [(self.name, p) for p in self.settings]

    def searcher(self, engine: str, params: dict, case: FilterCase) -> SearchFn:
        faiss = self.faiss
        sel, bitmap = (None, None) if case.selectivity is None else _faiss_selector(case.mask)
        extra = {} if sel is None else {"sel": sel}
        base_sp = None
        if engine == "faiss-hnsw":
            sp = faiss.SearchParametersHNSW(efSearch=int(params["efSearch"]), **extra)
        elif engine == "faiss-ivf":
            sp = faiss.SearchParametersIVF(nprobe=int(params["nprobe"]), **extra)
        else:
            # IndexRefineFlat reads the selector only from the base index's parameters: a
            # `sel` on IndexRefineSearchParameters itself is silently ignored (FAISS 1.15.1).
            base_sp = faiss.SearchParametersIVF(nprobe=int(params["nprobe"]), **extra)
            sp = faiss.IndexRefineSearchParameters(k_factor=float(params["k_factor"]),
                                                   base_index_params=base_sp)
        index = self.index

        def search(q: np.ndarray, k: int) -> np.ndarray:
            faiss.omp_set_num_threads(1)
            return index.search(q, k, params=sp)[1]

        # The parameter objects hold raw pointers to these: keep them alive with `search`.
        search.refs = (sel, bitmap, base_sp)  # type: ignore[attr-defined]
        return search


class _HnswlibSearch:
    """``knn_query`` with a filter callable, one thread.

    hnswlib raises for the whole batch when any query finds fewer than k allowed
    vectors.  ``prepare`` (untimed) tries the batch once; if it raises, the timed calls
    search one query per call, and ``complete`` (untimed) recovers the partial result of
    each query that raised by asking again with a smaller k.
    """

    def __init__(self, index, filter_fn) -> None:
        self.index, self.filter_fn = index, filter_fn
        self.per_query = False
        self.failed: list[int] = []

    def _one(self, v: np.ndarray, k: int) -> np.ndarray:
        return self.index.knn_query(v, k=k, num_threads=1, filter=self.filter_fn)[0][0]

    def prepare(self, q: np.ndarray, k: int) -> None:
        try:
            self.index.knn_query(q, k=k, num_threads=1, filter=self.filter_fn)
        except RuntimeError:
            self.per_query = True

    def __call__(self, q: np.ndarray, k: int) -> np.ndarray:
        if not self.per_query:
            return self.index.knn_query(q, k=k, num_threads=1,
                                        filter=self.filter_fn)[0].astype(np.int64)
        out = np.full((len(q), k), -1, dtype=np.int64)
        self.failed = []
        for i, v in enumerate(q):
            try:
                out[i] = self._one(v, k)
            except RuntimeError:
                self.failed.append(i)
        return out

    def complete(self, q: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
        for i in self.failed:
            for kk in range(k - 1, 0, -1):
                try:
                    ids[i, :kk] = self._one(q[i], kk)
                    break
                except RuntimeError:
                    continue
        return ids


class _Hnswlib(_Engine):
    def __init__(self, ds: Dataset, build: dict, settings: list[dict]) -> None:
        adapter = get_adapter_class("hnswlib")(ds.metric, ds.base.shape[1], **build)
        adapter.set_threads(os.cpu_count() or 1)
        adapter.fit(ds.base)
        self.index = adapter.index
        self.factory, self.build_params, self.settings = adapter.factory(), build, settings

    def variants(self) -> list[tuple[str, dict]]:
        return [("hnswlib", p) for p in self.settings]

    def searcher(self, engine: str, params: dict, case: FilterCase) -> SearchFn:
        self.index.set_ef(int(params["ef"]))
        # A list's bound __getitem__ is the cheapest Python callable hnswlib can call back.
        fn = None if case.selectivity is None else case.mask.tolist().__getitem__
        return _HnswlibSearch(self.index, fn)


def _build_params(family: str, name: str, n_base: int) -> dict:
    """The suite config's first build of ``name``, with n_lists capped for small bases."""
    cfg = load_config(default_config_path(family))
    build = expand(cfg["engines"].get(name, {}).get("build"))[0]
    if "n_lists" in build:
        n_lists = int(build["n_lists"])
        while n_lists > 1 and n_lists * _MIN_POINTS_PER_LIST > n_base:
            n_lists //= 2
        build = {**build, "n_lists": n_lists}
    return build


def build_engine(group: str, ds: Dataset, labels: np.ndarray, engines: list[str]) -> _Engine:
    """Build the index behind ``group`` (``binidx`` serves both binidx variants)."""
    if group == "binidx":
        return _Binidx(ds, labels, engines)
    settings = SETTINGS.get(ds.family, SETTINGS["default"])[group]
    build = _build_params(ds.family, group, len(ds.base))
    if group == "hnswlib":
        return _Hnswlib(ds, build, settings)
    return _Faiss(group, ds, build, settings)


# --------------------------------------------------------------------------- measuring
def time_search(search: SearchFn, queries: np.ndarray, k: int, repeats: int,
                budget_s: float, min_queries: int = 50,
                min_total_s: float = 1.0) -> tuple[np.ndarray, list[float], int]:
    """Time at least ``repeats`` calls over the queries; the median gives the QPS.

    An untimed call on the first 16 queries warms caches and estimates the cost per query;
    when ``repeats`` calls over every query would exceed ``budget_s``, only the first
    queries that fit (at least ``min_queries``) are timed.  Calls that are quicker than
    ``min_total_s / repeats`` are repeated until ``min_total_s`` is spent.

    Returns
    -------
    ids : ndarray of int64, shape (n_timed, k), from the last timed call
    runs : list of float, seconds per timed call
    n_timed : int
    """
    warm = queries[: min(len(queries), 16)]
    t0 = time.perf_counter()
    search(warm, k)
    per_query = (time.perf_counter() - t0) / len(warm)
    n = len(queries)
    if per_query * n * repeats > budget_s:
        n = min(n, max(min_queries, int(budget_s / (per_query * repeats))))
    q = queries[:n]
    if hasattr(search, "prepare"):
        search.prepare(q, k)
    runs, ids = [], None
    # Calls of a few milliseconds are noisy on a shared machine: repeat those until
    # min_total_s is spent (at most _MAX_CALLS calls), so the median means something.
    while len(runs) < repeats or (sum(runs) < min_total_s and len(runs) < _MAX_CALLS):
        t0 = time.perf_counter()
        ids = search(q, k)
        runs.append(time.perf_counter() - t0)
    ids = np.asarray(ids, dtype=np.int64)
    if hasattr(search, "complete"):
        ids = search.complete(q, ids, k)
    return ids, runs, n


def measure_case(search: SearchFn, ds: Dataset, case: FilterCase, k: int, repeats: int,
                 budget_s: float, min_total_s: float = 1.0) -> dict[str, Any]:
    """QPS, recall and the short / wrong result counts of one engine setting on one filter."""
    ids, runs, n = time_search(search, ds.queries, k, repeats, budget_s,
                               min_total_s=min_total_s)
    median = float(np.median(runs))
    found = (ids >= 0).sum(axis=1)
    valid = np.where(ids >= 0, ids, 0)
    # Ids that do not pass the filter would be a correctness bug, never a speed trade-off.
    wrong = int(((ids >= 0) & ~case.mask[valid]).sum())
    short = int((found < min(k, case.n_match)).sum())
    out = {"n_queries_timed": n, "qps": n / median, "search_s_median": median,
           "search_s_runs": [round(r, 6) for r in runs],
           "short_queries": short, "short_fraction": short / n, "wrong_results": wrong,
           "calls": "per-query" if getattr(search, "per_query", False) else "batch"}
    out.update(case.evaluator.evaluate(ids, rows=np.arange(n)))
    return out


def run(ds: Dataset, engines: list[str], sink, *, k: int = 10, repeats: int = 3,
        budget_s: float = 10.0, min_total_s: float = 1.0, selectivities: tuple[float, ...] = SELECTIVITIES,
        n_labels: int = N_LABELS, seed: int = 0, baseline: bool = True,
        command: str = "") -> list[dict]:
    """Measure every engine on every filter; write JSON lines to ``sink``, return them."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    labels = make_labels(len(ds.base), n_labels, seed)
    cases = make_cases(ds, labels, selectivities, k, n_labels, baseline)
    common = {"run_id": uuid.uuid4().hex[:12], **ds.describe(), "k": k, "threads": 1,
              "n_labels": n_labels, "label_seed": seed, "command": command, **environment()}
    groups = list(dict.fromkeys("binidx" if e.startswith("binidx") else e for e in engines))
    lines: list[dict] = []
    for group in groups:
        log(f"{group}: building")
        t0 = time.perf_counter()
        try:
            engine = build_engine(group, ds, labels, engines)
        except (EngineUnavailable, UnsupportedMetric, ImportError) as exc:
            log(f"{group}: skipped ({exc})")
            line = {**common, "engine": group, "skipped": str(exc)}
            lines.append(line)
            sink.write(json.dumps(line, sort_keys=True) + "\n")
            continue
        build_s = time.perf_counter() - t0
        log(f"{group}: built {engine.factory} in {build_s:.1f}s")
        for name, params in engine.variants():
            for case in cases:
                res = measure_case(engine.searcher(name, params, case), ds, case, k,
                                   repeats, budget_s, min_total_s)
                line = {**common, "engine": name, "factory": engine.factory,
                        "build_params": engine.build_params, "build_s": round(build_s, 3),
                        "query_params": params, "selectivity": case.selectivity,
                        "filter": case.name, "n_match": case.n_match, **res}
                lines.append(line)
                sink.write(json.dumps(line, sort_keys=True) + "\n")
                sink.flush()
                log(f"{name} {params} {case.name}: recall@10={res['recall@10']:.4f} "
                    f"qps={res['qps']:,.0f} short={res['short_fraction']:.3f}"
                    + (f" (timed on {res['n_queries_timed']} queries)"
                       if res["n_queries_timed"] < len(ds.queries) else ""))
        del engine
    return lines


# ---------------------------------------------------------------------------- reporting
def _fmt_params(params: dict) -> str:
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in params.items())


def markdown(lines: list[dict]) -> str:
    """Three tables (recall@10, QPS, short queries) with one column per filter."""
    done = [ln for ln in lines if "skipped" not in ln]
    if not done:
        return "no results\n"
    first = done[0]
    filters = list(dict.fromkeys(ln["filter"] for ln in done))
    rows = list(dict.fromkeys((ln["engine"], json.dumps(ln["query_params"], sort_keys=True))
                              for ln in done))
    cell = {(ln["engine"], json.dumps(ln["query_params"], sort_keys=True), ln["filter"]): ln
            for ln in done}
    v, cpu, n_labels = first["versions"], first["cpu"], first["n_labels"]
    matches = ", ".join(f"{f} {next(ln['n_match'] for ln in done if ln['filter'] == f):,}"
                        for f in filters)
    out = [
        (f"# Filtered search on {first['dataset']}: {first['n_base']:,} x {first['dim']} "
         f"({first['metric']}), {first['n_queries']:,} queries, k={first['k']}"),
        "",
        (f"- machine: {cpu['model']}, {cpu['logical_cpus']} logical CPUs; every search "
         "single-threaded, all queries in one call"),
        (f"- versions: binidx {v.get('binidx')}, faiss {v.get('faiss')}, hnswlib "
         f"{v.get('hnswlib')}, numpy {v.get('numpy')}, python {v.get('python')}"),
        (f"- binidx commit {first['git']}, run at {first['timestamp']}, load average at "
         f"start {first['loadavg']}"),
        f"- command: `{first.get('command') or '?'}`",
        (f"- filter: labels uniform in 0..{n_labels - 1} (seed {first['label_seed']}); "
         f"selectivity s allows the labels below {n_labels} s. Matching vectors: {matches}"),
        ("- recall@10 is tie-aware against the exact filtered top-10; QPS = queries / "
         "median of the timed calls (* = timed on a prefix of the queries, to stay within "
         "the time budget); short = queries with fewer than k results although >= k "
         "vectors match"),
        "",
    ]
    per_query = [ln for ln in done if ln["calls"] == "per-query"]
    if per_query:
        out += [("hnswlib raised \"Cannot return the results in a contiguous 2D array\" for "
                 "the batch (a query found fewer than k), so these were timed one query per "
                 "call: " + ", ".join(f"{ln['engine']} {_fmt_params(ln['query_params'])} "
                                      f"{ln['filter']}" for ln in per_query)), ""]
    wrong = [ln for ln in done if ln["wrong_results"]]
    if wrong:
        out += ["**Results that fail the filter:** " + ", ".join(
            f"{ln['engine']} {ln['filter']}: {ln['wrong_results']}" for ln in wrong), ""]
    head = "| engine | setting | " + " | ".join(filters) + " |"
    rule = "|---|---|" + "---:|" * len(filters)

    def table(title: str, fmt: Callable[[dict], str]) -> None:
        out.extend([f"## {title}", "", head, rule])
        for engine, params in rows:
            cells = [fmt(cell[(engine, params, f)]) if (engine, params, f) in cell else "-"
                     for f in filters]
            out.append(f"| {engine} | {_fmt_params(json.loads(params))} | "
                       + " | ".join(cells) + " |")
        out.append("")

    table("Recall@10", lambda ln: f"{ln['recall@10']:.3f}")
    table("QPS (1 thread)", lambda ln: f"{ln['qps']:,.0f}"
          + ("*" if ln["n_queries_timed"] < ln["n_queries"] else ""))
    table("Queries short of k results", lambda ln: f"{100 * ln['short_fraction']:.1f}%")
    out += ["### Indexes", ""]
    out += [f"- {e}: `{f}`" for e, f in dict.fromkeys((ln["engine"], ln["factory"])
                                                        for ln in done)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.filtered``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.filtered",
                                     description=__doc__.split("\n\n")[0])
    _add_dataset_args(parser)
    parser.add_argument("--engines", type=_csv, default=list(ENGINES),
                        help=f"comma-separated subset of {','.join(ENGINES)}")
    parser.add_argument("--selectivities", type=lambda s: tuple(float(x) for x in _csv(s)),
                        default=SELECTIVITIES, help="fractions of the labels allowed "
                        "(default 0.5,0.1,0.01,0.001)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--budget-s", type=float, default=10.0,
                        help="seconds per measurement before only a prefix of the queries "
                             "is timed (default 10)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds a quick measurement is repeated for (at most "
                             f"{_MAX_CALLS} calls; default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labels")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unfiltered reference column")
    args = parser.parse_args(argv)
    ds = load_dataset(args.dataset, queries=args.queries, metric=args.metric,
                      max_base=args.max_base, max_queries=args.max_queries,
                      cache_dir=args.cache_dir, gt_k=args.k)
    for note in ds.notes:
        log(note)
    if min(args.selectivities) * N_LABELS < 1 or max(args.selectivities) > 1:
        parser.error(f"selectivities must lie in [{1 / N_LABELS:g}, 1] "
                     f"(there are {N_LABELS} labels), got {args.selectivities}")
    out_dir = args.out or os.path.join(RESULTS_DIR, ds.name)
    os.makedirs(out_dir, exist_ok=True)
    jsonl = os.path.join(out_dir, "filtered.jsonl")
    command = "python -m benchmarks.filtered " + shlex.join(argv)
    log(f"{ds.name}: {len(ds.base):,} x {ds.base.shape[1]} ({ds.metric}), "
        f"{len(ds.queries):,} queries -> {jsonl}")
    with open(jsonl, "w", encoding="utf-8") as sink:
        lines = run(ds, args.engines, sink, k=args.k, repeats=args.repeats,
                    budget_s=args.budget_s, min_total_s=args.min_time,
                    selectivities=args.selectivities,
                    seed=args.seed, baseline=not args.no_baseline, command=command)
    text = markdown(lines)
    with open(os.path.join(out_dir, "filtered.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
