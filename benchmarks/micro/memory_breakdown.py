"""Bytes per vector of a binidx index, by part, and QPS with the index in RAM or mapped.

    python -m benchmarks.micro.memory_breakdown --dataset sift-1m --n-lists 2048
    python -m benchmarks.micro.memory_breakdown --dataset sift-1m --n-lists 2048 \\
        --mapped 40 160 --rounds 9

Builds the index over the whole base (train + add, seed 0) and prints
``Index.memory_usage()`` divided by the number of vectors (issue 8's memory target is
``dim / 8 + 16`` bytes per vector for ``resident``).  With ``--mapped N_PROBE N_RERANK``
it also saves the index, warms the page cache with one read of the file, and times the
same search (1 thread, CPU time, all queries up to 5,000) on three loads of it in turns
in this process: in RAM, fully mapped (``mmap=True``), and in RAM with only the float
vectors mapped; it prints the recall@10 and the median QPS and paired time ratio of each.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import binidx
from binidx import _format

from ..datasets import load_dataset


def _recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k
                          for f, t in zip(found, truth)]))


def _loads(path: str) -> dict[str, binidx.Index]:
    with open(path, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    vectors_mapped = binidx.load(path)
    vectors_mapped._store.vectors = _format.read_index_file(path, mmap=True).arrays["vectors"]
    vectors_mapped._publish()
    return {"ram": binidx.load(path), "mapped": binidx.load(path, mmap=True),
            "vectors mapped": vectors_mapped}


def _time_loads(index: binidx.Index, q: np.ndarray, truth: np.ndarray, n_probe: int,
                n_rerank: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.binidx")
        index.save(path)
        variants = _loads(path)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for name, ix in variants.items():
            res = ix.search(q, 10, n_probe=n_probe, n_rerank=n_rerank, n_threads=1)
            print(f"{name}: recall@10 {_recall(res.ids, truth):.4f}")
        for _ in range(rounds):
            for name, ix in variants.items():
                cpu = time.process_time()
                ix.search(q, 10, n_probe=n_probe, n_rerank=n_rerank, n_threads=1)
                times[name].append(time.process_time() - cpu)
        ram = np.array(times["ram"])
        for name, t in times.items():
            t = np.array(t)
            print(f"{name:15s} {len(q) / np.median(t):8.0f} QPS (CPU time, median of {rounds}), "
                  f"paired time ratio to ram {np.median(t / ram):.3f}")
        del variants


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--n-lists", type=int, default=None)
    p.add_argument("--mapped", type=int, nargs=2, metavar=("N_PROBE", "N_RERANK"))
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset)
    index = binidx.Index(ds.base.shape[1], metric=ds.metric, n_lists=args.n_lists, seed=0)
    cpu = time.process_time()
    index.train(ds.base).add(ds.base)
    n = len(index)
    print(f"{ds.name}: {n:,} x {ds.base.shape[1]}, n_lists {index.n_lists}, n_bits "
          f"{index.n_bits}; build {time.process_time() - cpu:.1f} s CPU; "
          f"load {os.getloadavg()[0]:.1f}")
    usage = index.memory_usage()
    print("bytes per vector: " + ", ".join(f"{part} {nbytes / n:.2f}"
                                           for part, nbytes in usage.items()))
    print(f"resident target dim/8 + 16 = {index.dim / 8 + 16:.0f}")
    if args.mapped:
        q = ds.queries[:5000]
        _time_loads(index, np.ascontiguousarray(q), ds.gt[:len(q)], *args.mapped, args.rounds)
        print(f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
