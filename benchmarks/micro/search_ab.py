"""A/B timing of two builds of the search kernels in one process, on real data.

The machine is shared and its speed drifts, so two kernel builds are only comparable when
timed in the same run, in turns.  Save the old build first, e.g.
``cp binidx/_kernels/_search.cpython-*.so /tmp/ab/_search_old.so``, rebuild, then::

    python -m benchmarks.micro.search_ab --old /tmp/ab/_search_old.so \\
        --dataset ../shared/data/dev-sift --n-lists 512 --n-probe 48 --n-rerank 80

Both builds search the same index (built once and cached under ``--cache``), one thread,
all queries in one batched call; the builds alternate ``--repeats`` times and the median
QPS of each is printed, by wall time and by the thread's CPU time (which leaves out the time
the thread waited for a core on a loaded machine; one thread searches in the caller's
thread), with recall@10 against the dataset's exact ground truth.  The
results of the two builds are also compared: identical ids are expected whenever the
change is meant to be exact.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import time

import numpy as np

import binidx
import binidx.index as index_module
from binidx._kernels import _search as new_kernels

from ..datasets import load_dataset


def load_build(path: str):
    """Import a saved ``_search`` extension module from ``path`` (not the installed one)."""
    loader = importlib.machinery.ExtensionFileLoader("_search", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("_search", loader))
    loader.exec_module(module)
    return module


class SharedPass:
    """A kernel module whose ``search`` runs with ``shared_chunk`` set."""

    def __init__(self, module, chunk: int):
        self._module, self._chunk = module, chunk

    def __getattr__(self, name):
        return getattr(self._module, name)

    def search(self, *args, **kwargs):
        return self._module.search(*args, **kwargs, shared_chunk=self._chunk)


def cached_index(ds, n_lists: int, n_bits: int | None, cache: str) -> binidx.Index:
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"{ds.name}-{len(ds.base)}-L{n_lists}-B{n_bits}.binidx")
    if os.path.exists(path):
        return binidx.load(path)
    params = {"n_lists": n_lists, "metric": ds.metric, "seed": 0}
    if n_bits:
        params["n_bits"] = n_bits
    index = binidx.build(ds.base, **params)
    index.save(path)
    return index


def recall_at_10(ids: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(ids, gt)]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="saved _search*.so of the A build")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n-lists", type=int, default=512)
    ap.add_argument("--n-bits", type=int, default=None)
    ap.add_argument("--n-probe", type=int, default=48)
    ap.add_argument("--n-rerank", type=int, default=80)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cache", default="/tmp/binidx_ab_cache")
    ap.add_argument("--shared-chunk", type=int, default=0,
                    help="run the B build's searches in chunks of this many queries that share "
                         "one pass over each probed bucket (0: one query at a time)")
    args = ap.parse_args(argv)

    ds = load_dataset(args.dataset, max_queries=args.queries)
    index = cached_index(ds, args.n_lists, args.n_bits, args.cache)
    q = np.ascontiguousarray(ds.queries[:args.queries])
    builds = {"old": load_build(args.old),
              "new": SharedPass(new_kernels, args.shared_chunk) if args.shared_chunk else new_kernels}
    times: dict[str, list[float]] = {name: [] for name in builds}
    cpu: dict[str, list[float]] = {name: [] for name in builds}
    ids = {}
    try:
        for _ in range(args.repeats):
            for name, module in builds.items():
                index_module._search = module
                t0, c0 = time.perf_counter(), time.thread_time()
                res = index.search(q, k=10, n_probe=args.n_probe, n_rerank=args.n_rerank,
                                   n_threads=1)
                cpu[name].append(time.thread_time() - c0)
                times[name].append(time.perf_counter() - t0)
                ids[name] = res.ids
    finally:
        index_module._search = new_kernels
    print(f"{ds.name}: n={len(ds.base)} dim={ds.base.shape[1]} metric={ds.metric} "
          f"n_lists={args.n_lists} n_bits={index.n_bits} n_probe={args.n_probe} "
          f"n_rerank={args.n_rerank} queries={len(q)} repeats={args.repeats} 1 thread, batched")
    for name in builds:
        t, c = np.array(times[name]), np.array(cpu[name])
        print(f"  {name}: QPS median wall {len(q) / np.median(t):7.0f} (range {len(q) / t.max():.0f}-"
              f"{len(q) / t.min():.0f}), CPU {len(q) / np.median(c):7.0f} (range "
              f"{len(q) / c.max():.0f}-{len(q) / c.min():.0f})  "
              f"recall@10 {recall_at_10(ids[name], ds.gt):.4f}")
    wall = np.median(np.array(times["old"]) / np.array(times["new"]))
    ratio = np.median(np.array(cpu["old"]) / np.array(cpu["new"]))
    print(f"  new/old speed, median of the paired ratios: wall {wall:.3f}, CPU {ratio:.3f}; "
          f"identical ids: {np.array_equal(ids['old'], ids['new'])}")


if __name__ == "__main__":
    main()
