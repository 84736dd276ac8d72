"""Recall ceiling against codes scanned: fixed ``n_probe`` and adaptive probing.

    python -m benchmarks.micro.probe_ceiling --dataset sift-1m --n-lists 2048
    python -m benchmarks.micro.probe_ceiling --dataset ../shared/data/dev-text --n-lists 512

No search runs: from the index's real buckets, for each query, which bucket holds each of
its 10 true neighbours and at which probe rank.  The *ceiling* of a probing rule is the
share of true neighbours inside the buckets it scans (what recall@10 would be with a
perfect estimator and rerank); its cost is the mean number of codes it scans.  For each
ceiling, the table gives the fewest codes a fixed ``n_probe`` needs and the fewest the
ratio rule of ``Index.search(probe_ratio=r)`` needs (over a grid of r and ``n_probe``
caps), with the floor of ``ceil(n_probe / 4)`` probes that binidx uses, and with the best
of floors 1, 4, 8 and 16 chosen per point (an upper bound on what a tuned floor could
add).  This is how adaptive probing was chosen before it was built (docs/design.md).
"""
from __future__ import annotations

import argparse

import numpy as np

from ..datasets import load_dataset
from .search_ab import cached_index

CEILINGS = (0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99)
RATIOS = np.round(np.arange(1.2, 3.001, 0.05), 2)
CAPS = (16, 24, 32, 40, 48, 56, 64, 80, 96, 128, 160, 200, 256)


def probe_ranks(index, queries: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, ...]:
    """(order, rank of each neighbour's bucket, codes per bucket, l2 distances by rank)."""
    store = index._store
    live = store.slot_buckets >= 0
    bucket_of = np.full(int(store.slot_ids[live].max()) + 1, -1, np.int64)
    bucket_of[store.slot_ids[live]] = store.slot_buckets[live]
    centroids = index._centroids.astype(np.float64)
    q = queries.astype(np.float64)
    dots = q @ centroids.T
    dist = (q * q).sum(1)[:, None] + (centroids * centroids).sum(1)[None, :] - 2 * dots
    order = np.argsort(dist if index.metric == "l2" else -dots, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), 1)
    sizes = np.bincount(store.slot_buckets[live], minlength=centroids.shape[0])
    return (rank[np.arange(len(q))[:, None], bucket_of[gt]],
            np.cumsum(sizes[order], axis=1), np.take_along_axis(dist, order, 1))


def frontier(points: list[tuple[float, float, str]], ceiling: float) -> tuple[float, str]:
    """Fewest codes (and the setting) among points reaching the ceiling."""
    ok = [(codes, label) for codes, ceil, label in points if ceil >= ceiling]
    return min(ok) if ok else (float("nan"), "-")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n-lists", type=int, default=512)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--cache", default="/tmp/binidx_ab_cache")
    args = ap.parse_args(argv)

    ds = load_dataset(args.dataset, max_queries=args.queries)
    index = cached_index(ds, args.n_lists, None, args.cache)
    gt_rank, codes_by_rank, dist = probe_ranks(index, ds.queries[:args.queries],
                                               ds.gt[:args.queries, :10])
    nq, n_lists = dist.shape
    rows = np.arange(nq)

    def rule(cap: int, ratio: float | None, floor: int) -> tuple[float, float]:
        cap = min(cap, n_lists)
        count = np.full(nq, cap) if ratio is None else \
            np.clip((dist[:, :cap] <= ratio * dist[:, :1]).sum(1), floor, cap)
        return codes_by_rank[rows, count - 1].mean(), (gt_rank < count[:, None]).mean()

    fixed = [(*rule(p, None, p), f"n_probe {p}") for p in range(1, n_lists + 1)]
    built, tuned = [], []
    for cap in CAPS:
        for r in RATIOS:
            built.append((*rule(cap, r, (cap + 3) // 4), f"r {r:.2f} cap {cap}"))
            for floor in {1, 4, 8, 16, (cap + 3) // 4}:
                tuned.append((*rule(cap, r, min(floor, cap)), f"r {r:.2f} cap {cap} floor {floor}"))
    print(f"{ds.name}: n={len(ds.base)}, {n_lists} lists, {nq} queries, metric {index.metric}")
    print(f"{'ceiling':>8} {'fixed codes':>12} {'ratio codes':>12} {'gain':>6} {'any floor':>10}"
          f"  ratio setting (floor n_probe/4)")
    for c in CEILINGS:
        f_codes, f_label = frontier(fixed, c)
        b_codes, b_label = frontier(built, c)
        t_codes, _ = frontier(tuned, c)
        print(f"{c:8.2f} {f_codes:12,.0f} {b_codes:12,.0f} {f_codes / b_codes:5.2f}x "
              f"{f_codes / t_codes:9.2f}x  {b_label} (fixed: {f_label})")


if __name__ == "__main__":
    main()
