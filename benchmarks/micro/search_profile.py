"""Where a search's time goes, phase by phase, from a profiling build of the kernels.

Build the kernels with the counters compiled in, into a copy (the normal build has none)::

    CFLAGS=-DBINIDX_PROFILE python setup.py build_ext --inplace --build-temp /tmp/build_prof
    cp binidx/_kernels/_search.cpython-*.so /tmp/_search_prof.so
    python setup.py build_ext --inplace            # the normal build back

then::

    python -m benchmarks.micro.search_profile --build /tmp/_search_prof.so \\
        --dataset sift-1m --n-lists 2048 --n-probe 48 --n-rerank 160 --chunks 0,64,256

For each ``--chunks`` value (0: one query at a time; N: chunks of N queries sharing one
pass over each probed bucket) the batch is searched ``--repeats`` times on one thread and
the run with the median CPU time is broken down: ns per query in each phase (coarse probe
selection, query rotation, per-bucket quantisation, the fused scan, buffer refreshes, the
final selection, rerank, top k, grouping the chunk's probes by bucket), the rest
("other": loop overhead and the counters themselves, ~2%).  The counters tick in wall
time, so on a loaded machine the phases are scaled by CPU time / wall time: trust the
fractions more than the absolute numbers there, and prefer a quiet machine, and per-query counts (codes
scanned, candidates admitted, refreshes).  The time-stamp counter is calibrated against
``time.perf_counter``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import binidx.index as index_module

from ..datasets import load_dataset
from .search_ab import SharedPass, add_search_args, cached_index, chunk_arg, load_build


def tsc_hz(module) -> float:
    """Time-stamp-counter ticks per second, measured over 0.2 s."""
    t0, c0 = time.perf_counter(), module.tsc()
    time.sleep(0.2)
    return (module.tsc() - c0) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="a _search*.so built with -DBINIDX_PROFILE")
    add_search_args(ap, repeats=5)
    ap.add_argument("--chunks", default="0",
                    help="comma-separated shared_chunk values (0, N, or auto: Index.search's choice)")
    args = ap.parse_args(argv)

    module = load_build(args.build)
    if module.profile() is None:
        raise SystemExit(f"{args.build} was built without -DBINIDX_PROFILE")
    ds = load_dataset(args.dataset, max_queries=args.queries)
    index = cached_index(ds, args.n_lists, args.n_bits, args.cache)
    q = np.ascontiguousarray(ds.queries[:args.queries])
    hz = tsc_hz(module)
    print(f"{ds.name}: n={len(ds.base)} dim={ds.base.shape[1]} n_lists={index.n_lists} "
          f"n_bits={index.n_bits} n_probe={args.n_probe} probe_ratio={args.probe_ratio} "
          f"n_rerank={args.n_rerank} "
          f"queries={len(q)} 1 thread; TSC {hz / 1e9:.2f} GHz")
    phases = module.PROFILE_PHASES
    try:
        for chunk in [chunk_arg(c) for c in args.chunks.split(",")]:
            index_module._search = SharedPass(module, chunk)
            runs = []
            for _ in range(args.repeats):
                module.profile(reset=True)
                c0, t0 = time.thread_time(), time.perf_counter()
                index.search(q, k=10, n_probe=args.n_probe, n_rerank=args.n_rerank, n_threads=1,
                             probe_ratio=args.probe_ratio)
                cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
                runs.append((cpu, wall, module.profile(reset=True)))
            cpu, wall, prof = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
            nq = len(q)
            per_q = {p: prof[p] / hz / nq * 1e9 for p in phases}
            # The counters tick in wall time: a thread waiting for a core inflates the phase
            # it was in.  Scaled by CPU / wall time, as if the waits fell evenly on all
            # phases (exact on a quiet machine, where the two times agree).
            scale = cpu / wall
            per_q = {p: t * scale for p, t in per_q.items()}
            total = cpu / nq * 1e9
            line = "  ".join(f"{p} {per_q[p]:.0f}" for p in phases if prof[p])
            print(f"chunk {chunk if chunk is not None else 'auto':>5}: {nq / cpu:7.0f} QPS CPU, {nq / wall:7.0f} wall, "
                  f"{total / 1e3:6.1f} us/query CPU; ns/query: {line}  "
                  f"other {total - sum(per_q.values()):.0f}")
            print(f"             per query: {prof['pairs'] / nq:.1f} buckets, {prof['codes'] / nq:.0f} "
                  f"codes, {prof['admitted'] / nq:.0f} admitted, {prof['refreshes'] / nq:.2f} "
                  f"refreshes; scan {per_q['scan'] * nq / max(prof['codes'], 1):.2f} ns/code")
    finally:
        index_module._search = module


if __name__ == "__main__":
    main()
