"""Build, delete and insert rates of binidx on a real dataset (issue 4), in CPU and wall time.

    python -m benchmarks.micro.update_rates --dataset ../shared/data/dev-sift --n-lists 512

Builds an index over the whole base (train + add, self-balancing on), then removes 10% of
it in one call, 10% in calls of 1,000 ids, 1,000 ids one call each, and adds the first 10%
back. CPU time (this process) is printed next to wall time: on a shared machine the
wall-clock rates fall with the load, the CPU-time ones much less.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import binidx

from ..datasets import load_dataset


def _timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--n-lists", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset)
    x, n = ds.base, len(ds.base)
    index = binidx.Index(x.shape[1], metric=ds.metric, n_lists=args.n_lists)
    cpu, wall = _timed(lambda: index.train(x).add(x))
    print(f"{ds.name}: {n:,} x {x.shape[1]}, load {os.getloadavg()[0]:.1f}")
    print(f"build (train + add): {wall:.1f} s wall, {cpu:.1f} s CPU; n_lists {index.n_lists}")
    ids = np.random.default_rng(args.seed).permutation(n)
    tenth = n // 10

    def rate(label: str, count: int, fn) -> None:
        cpu, wall = _timed(fn)
        print(f"{label}: {count / cpu:,.0f}/s CPU, {count / wall:,.0f}/s wall")

    rate("delete, one call of 10%", tenth, lambda: index.remove(ids[:tenth]))

    def batches() -> None:
        for s in range(tenth, 2 * tenth, 1000):
            index.remove(ids[s:min(s + 1000, 2 * tenth)])

    rate("delete, calls of 1,000 ids", tenth, batches)
    singles = ids[2 * tenth:2 * tenth + 1000]
    cpu, wall = _timed(lambda: [index.remove([i]) for i in singles.tolist()])
    print(f"delete, one id per call: {cpu / 1000 * 1e6:.0f} us CPU, {wall / 1000 * 1e6:.0f} us wall")
    rate("insert 10% back, one call", tenth, lambda: index.add(x[ids[:tenth]], ids[:tenth]))
    print(f"n_lists now {index.n_lists}, largest bucket / mean "
          f"{index.list_sizes().max() / index.list_sizes().mean():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
