"""Tune-then-time grid over binidx build parameters (n_lists x n_bits).

For each build: ``Index.tune`` on the first 1,000 queries for recall@10 >= target (it also
chooses adaptive probing, ``probe_ratio``, when that is measured faster), then
single-thread search of the remaining queries with the tuned defaults, timed in CPU time of
the calling thread (best of 3; a busy shared machine disturbs it less than wall time).

    python -m benchmarks.binidx_grid --dataset ../shared/data/dev-sift --n-lists 512,1024,1789 --n-bits 128,256
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import binidx

from .datasets import load_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.binidx_grid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--n-lists", default="512,1024", help="comma-separated")
    parser.add_argument("--n-bits", default="", help="comma-separated (default: binidx's)")
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args(argv)
    ds = load_dataset(args.dataset)
    tune_q, test_q = ds.queries[:1000], ds.queries[1000:]
    truth = ds.gt[1000:, :10]
    bits = [int(b) for b in args.n_bits.split(",") if b] or [None]
    for n_lists in [int(n) for n in args.n_lists.split(",")]:
        for n_bits in bits:
            t0 = time.perf_counter()
            index = binidx.build(ds.base, metric=ds.metric, n_lists=n_lists, n_bits=n_bits)
            build_s = time.perf_counter() - t0
            tuned = index.tune(tune_q, args.target)
            best = 0.0
            for _ in range(3):
                t0 = time.thread_time()
                res = index.search(test_q, 10, n_threads=1)
                best = max(best, len(test_q) / max(time.thread_time() - t0, 1e-9))
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids, truth)])
            ratio = "none" if tuned.probe_ratio is None else f"{tuned.probe_ratio:g}"
            print(f"n_lists {n_lists} n_bits {index.n_bits}: build {build_s:.1f}s, tuned n_probe "
                  f"{tuned.n_probe} probe_ratio {ratio} n_rerank {tuned.n_rerank}, held-out "
                  f"recall@10 {recall:.3f}, CPU QPS {best:,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
