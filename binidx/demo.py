"""The binidx demo: build an index on bundled real data, query it, compare with FAISS.

Run with ``python -m binidx.demo`` (``--help`` for options).  For each bundled dataset
(SIFT descriptors of real photos; sentence embeddings of package descriptions) it prints
build time, recall@10 against exact ground truth and queries per second for binidx, for
FAISS ``IndexIVFFlat`` with the same number of lists, and for exact search.  Pass
``--data DIR`` to run on a texmex folder instead (base/query/groundtruth files, such as
``../shared/data/dev-sift``).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import binidx
from binidx import datasets


def _recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (k * len(found))


def _qps(fn, n_queries: int, repeats: int = 3) -> tuple[float, object]:
    """Best-of-``repeats`` queries per second of ``fn()`` and its last result."""
    best, out = 0.0, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = max(best, n_queries / (time.perf_counter() - t0))
    return best, out


def _row(name: str, params: str, build_s: float | None, recall: float, qps: float) -> None:
    build = f"{build_s:7.2f}" if build_s is not None else "      -"
    print(f"  {name:<22} {params:<26} {build} {recall:8.3f} {qps:10,.0f}")


def run_dataset(ds, threads: int) -> None:
    print(f"\n{ds.name}: {ds.base.shape[0]:,} base x {ds.base.shape[1]} dims, "
          f"{ds.queries.shape[0]} queries, metric {ds.metric}, {threads} thread(s)")
    print(f"  {'engine':<22} {'parameters':<26} {'build s':>7} {'recall@10':>8} {'QPS':>10}")
    nq = ds.queries.shape[0]

    t0 = time.perf_counter()
    index = binidx.build(ds.base, metric=ds.metric)
    build_s = time.perf_counter() - t0
    for n_probe, n_rerank in [(None, None), (index.n_probe * 2, 200)]:
        qps, res = _qps(lambda n_probe=n_probe, n_rerank=n_rerank: index.search(
            ds.queries, 10, n_probe=n_probe, n_rerank=n_rerank, n_threads=threads), nq)
        label = "defaults" if n_probe is None else ""
        params = f"n_probe={n_probe or index.n_probe} n_rerank={n_rerank or index.n_rerank} {label}"
        _row("binidx", params, build_s, _recall(res.ids, ds.groundtruth), qps)
        build_s = None
    mem = index.memory_usage()
    print(f"  binidx memory: {mem['resident'] / len(index):.1f} B/vector resident search structure, "
          f"{mem['total'] / len(index):.1f} B/vector with float vectors")

    qps, res = _qps(lambda: binidx.exact_search(ds.base, ds.queries, 10, metric=ds.metric), nq, 1)
    _row("exact (binidx, numpy)", "brute force", None, _recall(res.ids, ds.groundtruth), qps)

    try:
        import faiss
    except ImportError:
        print("  FAISS not installed: pip install faiss-cpu to compare")
        return
    faiss.omp_set_num_threads(threads)
    base = np.ascontiguousarray(ds.base, dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries, dtype=np.float32)
    if ds.metric == "cosine":
        faiss.normalize_L2(base)
        faiss.normalize_L2(queries)
    faiss_metric = faiss.METRIC_L2 if ds.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlat(base.shape[1], faiss_metric)
    ivf = faiss.IndexIVFFlat(quantizer, base.shape[1], index.n_lists, faiss_metric)
    ivf.train(base)
    ivf.add(base)
    build_s = time.perf_counter() - t0
    for nprobe in (index.n_probe // 2, index.n_probe):
        ivf.nprobe = max(1, nprobe)
        qps, (_, ids) = _qps(lambda: ivf.search(queries, 10), nq)
        _row("faiss IndexIVFFlat", f"nlist={index.n_lists} nprobe={ivf.nprobe}", build_s,
             _recall(ids, ds.groundtruth), qps)
        build_s = None
    flat = faiss.IndexFlat(base.shape[1], faiss_metric)
    flat.add(base)
    qps, (_, ids) = _qps(lambda: flat.search(queries, 10), nq)
    _row("faiss IndexFlat", "exact", None, _recall(ids, ds.groundtruth), qps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m binidx.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None,
                        help="a texmex folder (base.[bfi]vecs, query.*, groundtruth.ivecs); repeatable")
    parser.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    args = parser.parse_args(argv)
    binidx.show_config()
    sets = ([datasets.load_folder(p) for p in args.data] if args.data
            else [datasets.load_embedded(name) for name in datasets.available()])
    for ds in sets:
        run_dataset(ds, args.threads)
    print("\nQPS is the best of 3 runs over the whole query batch; numbers from a shared machine are noisy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
