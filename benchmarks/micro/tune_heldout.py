"""``Index.tune`` on real data, judged on held-out queries.

    python -m benchmarks.micro.tune_heldout --dataset sift-1m --n-lists 1024

Tunes on queries [held_out, held_out + tune_queries) of the dataset (default 2,000-2,999)
for each ``--targets`` recall, then measures the chosen defaults on the first
``--held-out`` queries (recall@10 against the dataset's exact ground truth, QPS from one
thread's CPU time, median of 5): whether the tuner's choice holds on queries it never saw,
and how fast it is next to the benchmark suite's best setting.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ..datasets import load_dataset
from .search_ab import cached_index, recall_at_10


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n-lists", type=int, default=1024)
    ap.add_argument("--held-out", type=int, default=2000)
    ap.add_argument("--tune-queries", type=int, default=1000)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.99])
    ap.add_argument("--cache", default="/tmp/binidx_ab_cache")
    args = ap.parse_args(argv)

    ds = load_dataset(args.dataset)
    if len(ds.queries) < args.held_out + args.tune_queries:
        raise SystemExit(f"{ds.name} has {len(ds.queries)} queries, fewer than --held-out "
                         f"+ --tune-queries; lower them")
    index = cached_index(ds, args.n_lists, None, args.cache)
    held = np.ascontiguousarray(ds.queries[:args.held_out])
    tuning = np.ascontiguousarray(ds.queries[args.held_out:args.held_out + args.tune_queries])
    for target in args.targets:
        t0 = time.perf_counter()
        res = index.tune(tuning, target_recall=target)
        seconds = time.perf_counter() - t0
        times = []
        for _ in range(5):
            c0 = time.thread_time()
            ids = index.search(held, 10, n_threads=1).ids
            times.append(time.thread_time() - c0)
        print(f"{ds.name}, {index.n_lists} lists, target {target}: tune {seconds:.0f} s, "
              f"{len(res.trials)} trials -> n_probe {res.n_probe}, n_rerank {res.n_rerank}, "
              f"probe_ratio {res.probe_ratio}; recall on its queries {res.recall:.4f}, on "
              f"{len(held)} held-out {recall_at_10(ids, ds.gt[:len(held)]):.4f}, "
              f"{len(held) / np.median(times):,.0f} QPS (1 thread, CPU)")


if __name__ == "__main__":
    main()
