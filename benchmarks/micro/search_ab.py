"""A/B timing of two search configurations in one process, on real data.

The machine is shared and its speed drifts, so two kernel builds (or two ways of walking
a batch) are only comparable when timed in the same run, in turns.  To compare builds,
save the old build first, e.g. ``cp binidx/_kernels/_search.cpython-*.so
/tmp/ab/_search_old.so``, rebuild, then::

    python -m benchmarks.micro.search_ab --old /tmp/ab/_search_old.so \\
        --dataset ../shared/data/dev-sift --n-lists 512 --n-probe 48 --n-rerank 80

Without ``--old`` both sides use the current build, e.g. one query at a time against
shared passes of 256 queries::

    python -m benchmarks.micro.search_ab --dataset sift-1m --n-lists 2048 --n-probe 48 \\
        --n-rerank 160 --old-chunk 0 --new-chunk 256 --threads 2

``--old-chunk`` / ``--new-chunk``: 0 searches one query at a time, N > 0 in chunks of N
queries sharing one pass over each probed bucket, ``auto`` lets ``Index.search`` choose
(binidx/_batching.py); both default to 0 (kernel builds compared on the same path).

Both sides search the same index (built once and cached under ``--cache``), all queries in
one batched call; the sides alternate ``--repeats`` times and the median QPS of each is
printed, by wall time and by the process's CPU time (all threads; it leaves out the time
threads waited for a core on a loaded machine), with recall@10 against the dataset's exact
ground truth, the median of the paired ratios, and the load average.  Identical ids are
expected whenever the change is meant to be exact.
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
    """A kernel module whose ``search`` runs with ``shared_chunk`` set (None: as asked)."""

    def __init__(self, module, chunk: int | None):
        self._module, self._chunk = module, chunk

    def __getattr__(self, name):
        return getattr(self._module, name)

    def search(self, *args, **kwargs):
        if self._chunk is not None:
            kwargs["shared_chunk"] = self._chunk
        return self._module.search(*args, **kwargs)


def chunk_arg(text: str) -> int | None:
    """``--*-chunk`` values: an integer, or ``auto`` (None)."""
    return None if text == "auto" else int(text)


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


def add_search_args(ap: argparse.ArgumentParser, repeats: int) -> None:
    """The dataset, index and search settings shared by the micro-benchmarks of a search."""
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n-lists", type=int, default=512)
    ap.add_argument("--n-bits", type=int, default=None)
    ap.add_argument("--n-probe", type=int, default=48)
    ap.add_argument("--n-rerank", type=int, default=80)
    ap.add_argument("--probe-ratio", type=float, default=None,
                    help="adaptive probing ratio (default: fixed n_probe)")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--cache", default="/tmp/binidx_ab_cache",
                    help="folder of the built indexes, reused across runs")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default=None,
                    help="saved _search*.so of the A build (default: the current build)")
    add_search_args(ap, repeats=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--old-chunk", type=chunk_arg, default=0,
                    help="shared_chunk of the A side: 0 one query at a time, N chunks of N, auto")
    ap.add_argument("--new-chunk", "--shared-chunk", type=chunk_arg, default=0,
                    help="shared_chunk of the B side (as --old-chunk)")
    args = ap.parse_args(argv)

    ds = load_dataset(args.dataset, max_queries=args.queries)
    index = cached_index(ds, args.n_lists, args.n_bits, args.cache)
    q = np.ascontiguousarray(ds.queries[:args.queries])
    sides = {"old": SharedPass(load_build(args.old) if args.old else new_kernels, args.old_chunk),
             "new": SharedPass(new_kernels, args.new_chunk)}
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    ids = {}
    load = os.getloadavg()
    try:
        for _ in range(args.repeats):
            for name, module in sides.items():
                index_module._search = module
                t0, c0 = time.perf_counter(), time.process_time()
                res = index.search(q, k=10, n_probe=args.n_probe, n_rerank=args.n_rerank,
                                   probe_ratio=args.probe_ratio,
                                   n_threads=args.threads)
                cpu[name].append(time.process_time() - c0)
                times[name].append(time.perf_counter() - t0)
                ids[name] = res.ids
    finally:
        index_module._search = new_kernels
    load = [round(x, 2) for x in (*load, *os.getloadavg())]
    print(f"{ds.name}: n={len(ds.base)} dim={ds.base.shape[1]} metric={ds.metric} "
          f"n_lists={index.n_lists} n_bits={index.n_bits} n_probe={args.n_probe} "
          f"n_rerank={args.n_rerank} queries={len(q)} repeats={args.repeats} "
          f"{args.threads} thread(s), batched; chunks old={args.old_chunk} new={args.new_chunk}; "
          f"load average before {load[:3]} after {load[3:]}")
    for name in sides:
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
