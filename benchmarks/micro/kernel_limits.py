"""The search kernels against the machine's limits, measured in one run (issue 8).

    python -m benchmarks.micro.kernel_limits [--gib 1] [--repeats 5] [--json out.json]

All on one thread, with the active kernel path (``binidx.show_config()``):

a. **Read bandwidth**: a streaming XOR over a ``--gib`` GiB array in C
   (``_search.read_stream``, 32 independent accumulators), and NumPy's
   ``bitwise_xor.reduce`` over the same array; the faster of the two is the bound.
b. **Bucket scan out of cache**: the search's fused scan + admission kernel over
   ``--gib`` GiB of codes and factors (128- and 384-bit codes, random bits), as one
   contiguous run and as buckets of 400 codes visited in random order, the next bucket's
   start prefetched as the search does (``_search.scan_buckets``).  Two thresholds:
   none admitted, and 3% admitted (about the rate of a dev-sift search once its
   candidate buffer has filled).  Rate = bytes of codes + factors / time, and its
   fraction of (a).  The same kernel re-scanning 4,096 codes that stay in cache gives its
   compute rate, for reference.
c. **Rerank**: the search's rerank step (``_search.rerank_rows``: prefetch 8 candidates
   ahead, exact distance, id look-up) over 80 random rows per query of a ``--gib`` GiB
   float32 array, against a prefetched C gather that only sums the same rows
   (``_search.gather_sum``, best of prefetch distances 4, 8, 16): ns per candidate, and
   their ratio (issue 8 asks for at most 2).

Times are thread CPU time (the machine is shared; a descheduled thread does not count),
median and best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np

import binidx
from binidx._kernels import _search

BLOCK = 8
BUCKET = 400  # codes per bucket, about dev-sift with 512 lists


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, best) thread CPU seconds of ``fn()``."""
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return float(np.median(times)), float(np.min(times))


def bandwidth(gib: float, repeats: int) -> dict:
    words = np.ones(int(gib * 2**30) // 8 // 32 * 32, dtype=np.uint64)
    med, best = timed(lambda: _search.read_stream(words), repeats)
    np_med, np_best = timed(lambda: np.bitwise_xor.reduce(words), repeats)
    return {"bytes": words.nbytes, "bound_gbs": words.nbytes / min(med, np_med) / 1e9,
            "c_gbs": words.nbytes / med / 1e9,
            "c_gbs_best": words.nbytes / best / 1e9, "numpy_gbs": words.nbytes / np_med / 1e9,
            "numpy_gbs_best": words.nbytes / np_best / 1e9}


def scan(gib: float, n_bits: int, repeats: int, read_gbs: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    n_words = n_bits // 64
    per_code = n_words * 8 + 2  # the code and its two factor bytes
    n_blocks = int(gib * 2**30) // (per_code * BLOCK)
    n = n_blocks * BLOCK
    codes = rng.integers(0, 2**63, size=(n_blocks, n_words, BLOCK), dtype=np.uint64)
    codes ^= rng.integers(0, 2, size=codes.shape, dtype=np.uint64) << np.uint64(63)
    # Factor bytes as the buckets store them (steps of a per-bucket scale).
    factors = np.empty((n_blocks, 2, BLOCK), np.uint8)
    factors[:, 0] = rng.integers(128, 256, (n_blocks, BLOCK))
    factors[:, 1] = rng.integers(0, 256, (n_blocks, BLOCK))
    slots = np.arange(n, dtype=np.int32)
    levels, delta, level_sum = _search.quantize(rng.standard_normal(n_bits).astype(np.float32))
    consts = (levels, delta, level_sum, -2.0 / 170, 1.0, 1.0 / 128)
    head = min(4096, n_blocks)  # (a small --gib has fewer blocks)
    sample = _search.scan_blocks(codes[:head], factors[:head], head * BLOCK, *consts)
    thresholds = {"none admitted": -np.inf, "3% admitted": float(np.quantile(sample, 0.03))}
    n_buckets = n // BUCKET
    hot = 4096  # codes re-scanned from cache: the kernel's compute rate
    layouts = {
        f"in cache ({hot} codes)": (np.zeros(n // hot, np.int64), np.full(n // hot, hot, np.int64),
                                    np.arange(n // hot, dtype=np.int32)),
        "contiguous": (np.zeros(1, np.int64), np.array([n], np.int64), np.zeros(1, np.int32)),
        f"buckets of {BUCKET}, random order": (
            np.arange(n_buckets, dtype=np.int64) * (BUCKET // BLOCK),
            np.full(n_buckets, BUCKET, np.int64),
            rng.permutation(n_buckets).astype(np.int32)),
    }
    nbytes = codes.nbytes + factors.nbytes
    rows = []
    for layout, (first, sizes, order) in layouts.items():
        for label, thr in thresholds.items():
            args = (codes, factors, slots, first, sizes, order, *consts, thr, 1024)
            admitted = _search.scan_buckets(*args)
            med, best = timed(functools.partial(_search.scan_buckets, *args), repeats)
            scanned = int(sizes.sum())
            # Rates count the bytes of codes + factors scanned (cache-resident ones too).
            rows.append({"n_bits": n_bits, "codes": scanned, "layout": layout,
                         "threshold": label, "admitted": admitted / scanned,
                         "gbs": nbytes * scanned / n / med / 1e9,
                         "gbs_best": nbytes * scanned / n / best / 1e9,
                         "ns_per_code": med / scanned * 1e9,
                         "fraction_of_read": nbytes * scanned / n / med / 1e9 / read_gbs})
    return rows


def rerank(gib: float, dim: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = int(gib * 2**30) // (dim * 4)
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 1 << 18):  # fill in pieces: no second 1 GiB temporary
        stop = min(n, start + (1 << 18))
        vectors[start:stop] = rng.random((stop - start, dim), dtype=np.float32)
    slot_ids = np.arange(n, dtype=np.int64) * 3
    queries = rng.random((2000, dim), dtype=np.float32)
    rows = rng.integers(0, n, size=(2000, 80)).astype(np.int32)
    flat = rows.ravel()
    med, best = timed(lambda: _search.rerank_rows(queries, vectors, slot_ids, rows, 0), repeats)
    gather = {}
    for ahead in (4, 8, 16):
        gather[ahead] = timed(functools.partial(_search.gather_sum, vectors, flat, ahead), repeats)
    g_ahead = min(gather, key=lambda a: gather[a][0])
    g_med, g_best = gather[g_ahead]
    return {"dim": dim, "rows": int(n), "candidates": int(flat.size),
            "rerank_ns": med / flat.size * 1e9, "rerank_ns_best": best / flat.size * 1e9,
            "gather_ns": g_med / flat.size * 1e9, "gather_ns_best": g_best / flat.size * 1e9,
            "gather_ahead": g_ahead, "ratio": med / g_med,
            "rerank_gbs": flat.size * dim * 4 / med / 1e9}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of each out-of-cache array")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    print(f"kernel path: {_search.kernel_name()}, binidx {binidx.__version__}, 1 thread, "
          f"{args.gib:g} GiB arrays, median (best) of {args.repeats}")
    bw = bandwidth(args.gib, args.repeats)
    print(f"(a) read bandwidth: C stream {bw['c_gbs']:.1f} ({bw['c_gbs_best']:.1f}) GB/s; "
          f"NumPy xor-reduce {bw['numpy_gbs']:.1f} ({bw['numpy_gbs_best']:.1f}) GB/s; "
          f"bound {bw['bound_gbs']:.1f} GB/s")
    scans = []
    print("(b) fused scan + admission, codes + factors out of cache:")
    for n_bits in (128, 384):
        for row in scan(args.gib, n_bits, args.repeats, bw["bound_gbs"]):
            scans.append(row)
            print(f"    {n_bits:4d} bits, {row['layout']:<30} {row['threshold']:<14} "
                  f"{row['gbs']:5.1f} ({row['gbs_best']:.1f}) GB/s = {row['fraction_of_read']:.2f} "
                  f"of (a), {row['ns_per_code']:.2f} ns/code, admitted {row['admitted']:.3f}")
    print("(c) rerank vs prefetched gather of the same rows (80 random rows per query):")
    reranks = [rerank(args.gib, dim, args.repeats) for dim in (128, 384)]
    print("\n".join(f"    dim {r['dim']}: rerank {r['rerank_ns']:.1f} ({r['rerank_ns_best']:.1f}) "
                    f"ns/candidate, gather {r['gather_ns']:.1f} ({r['gather_ns_best']:.1f}) ns/row "
                    f"(prefetch {r['gather_ahead']} ahead): ratio {r['ratio']:.2f}" for r in reranks))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"kernel": _search.kernel_name(), "gib": args.gib, "repeats": args.repeats,
                       "bandwidth": bw, "scan": scans, "rerank": reranks}, fh, indent=1)


if __name__ == "__main__":
    main()
