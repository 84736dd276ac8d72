"""How much recall the estimator costs, and what two cheaper-rerank ideas would buy.

    python -m benchmarks.micro.estimator_limits --dataset sift-1m --n-lists 1024 \\
        --n-probe 40 --probe-ratio 1.6 --queries 500

No search runs: for each query, the buckets the search would scan (the same probe rule)
are scored in NumPy with the search's own estimator (``binidx._reference``), and the
candidates are then reranked exactly in several ways.  Three questions:

1. **Query precision.**  The search quantises the query residual to 5-bit levels.  Recall
   at fixed ``n_rerank`` with 6- and 7-bit levels and with the float residual itself
   shows what that quantisation costs (if nothing, a better estimator must come from the
   codes, not the query side).
2. **The ceiling.**  Recall when every code of the scanned buckets is reranked: what a
   perfect estimator would reach with this probing.
3. **A bound instead of a fixed n_rerank.**  RaBitQ's error bound says an estimated
   squared distance is off by about ``m * 2 ||r|| ||q - c|| sqrt((1 - x^2) / (x^2 (B - 1)))``
   (``x = <o, o_bar>``, the code's alignment with its residual).  Reranking candidates in
   the order of ``estimate - m * bound`` and stopping once that exceeds the k-th exact
   distance found reranks a number of candidates that varies per query; the table gives
   its mean against the recall, for several ``m``, next to fixed ``n_rerank``.  Also with
   the bound without ``x`` (``2 ||r|| ||q - c|| / sqrt(B - 1)``), which needs no new
   per-vector factor.

l2 indexes only (the bound is for squared l2 distances).
"""
from __future__ import annotations

import argparse

import numpy as np

from binidx import _reference as ref

from ..datasets import load_dataset
from .search_ab import add_search_args, cached_index

_F32 = np.float32
K = 10
RERANKS = (20, 40, 60, 80, 100, 120, 160, 240, 400)
MARGINS = (0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
LEVELS = {"5-bit (the search)": 15, "6-bit": 31, "7-bit": 63, "float": None}


def float_estimates(codes, factors, w, alpha, beta, gamma) -> np.ndarray:
    """The estimator of :func:`binidx._reference.scan_reference` with the float residual."""
    bits = np.unpackbits(np.ascontiguousarray(codes).view(np.uint8), axis=1, bitorder="little")
    sw = (2 * bits.astype(_F32) - 1) @ w
    f = factors.astype(_F32)
    return alpha * (f[:, 0] * sw) + beta + gamma * f[:, 1]


def query_candidates(index, qv, gt_row, n_probe, ratio, keep):
    """Per estimator variant: the ``keep`` best candidates' (estimate, exact distance,
    is a true neighbour, bound without x, bound with x, id), best estimate first; and the
    true neighbours among the 10 exactly nearest scanned codes (the ceiling)."""
    n_probe = min(n_probe, index._centroids.shape[0])
    qrot, coarse, probes = ref.probes_reference(index, qv, n_probe, ratio)
    store, n_bits = index._store, index._centroids_rot.shape[1]
    rows = [ref._bucket_rows(index._buckets, b) + (b,) for b in probes.tolist()]
    rows = [r for r in rows if r[2].shape[0]]
    slots = np.concatenate([r[2] for r in rows])
    bucket = np.concatenate([np.full(r[2].shape[0], r[4]) for r in rows])
    vecs = store.vectors[slots].astype(np.float64)
    exact = ((vecs - qv) ** 2).sum(1)
    ids = store.slot_ids[slots]
    truth = np.isin(ids, gt_row)
    # The bound's terms from the vectors themselves (offline; the search has the factors).
    z = vecs @ index._projection.T.astype(np.float64) - index._centroids_rot[bucket]
    r_norm = np.linalg.norm(z, axis=1)
    x = np.abs(z).sum(1) / (np.sqrt(n_bits) * np.maximum(r_norm, 1e-30))
    qc = np.sqrt(coarse[bucket].astype(np.float64))
    bound_plain = 2 * r_norm * qc / np.sqrt(n_bits - 1)
    bound_x = bound_plain * np.sqrt(np.maximum(1 - x * x, 0) / np.maximum(x * x, 1e-12))
    out = {}
    for name, level_max in LEVELS.items():
        est = []
        for codes, factors, _, scales, b in rows:
            args = (codes, factors, qrot - index._centroids_rot[b],
                    _F32(-2.0) * _F32(scales[0]), coarse[b], _F32(scales[1]))
            if level_max is None:
                est.append(float_estimates(*args))
            else:
                ref.LEVEL_MAX = level_max
                try:
                    est.append(ref.estimate_reference(*args))
                finally:
                    ref.LEVEL_MAX = 15
        est = np.concatenate(est)
        best = np.lexsort((slots, est))[:keep]
        out[name] = (est[best].astype(np.float64), exact[best], truth[best],
                     bound_plain[best], bound_x[best], ids[best])
    ceiling = truth[np.argsort(exact, kind="stable")[:K]].sum()
    return out, ceiling


def fixed_top(cands, n_rerank: int) -> np.ndarray:
    """Positions (in ``cands``) of the top k after an exact rerank of the first n_rerank."""
    return np.argsort(cands[1][:n_rerank], kind="stable")[:K]


def fixed_recall(cands, n_rerank: int) -> int:
    return int(cands[2][fixed_top(cands, n_rerank)].sum())


def bound_rerank(cands, margin: float, with_x: bool) -> tuple[int, int]:
    """(true neighbours found, candidates reranked) when reranking in order of
    ``estimate - margin * bound`` until that exceeds the k-th exact distance so far."""
    est, exact, truth, plain, bx, _ = cands
    lower = est - margin * (bx if with_x else plain)
    order = np.argsort(lower, kind="stable")
    kth = np.full(K, np.inf)
    done = 0
    for i in order:
        if lower[i] > kth[-1]:
            break
        done += 1
        if exact[i] < kth[-1]:
            kth[-1] = exact[i]
            kth.sort()
    chosen = order[:done]
    top = chosen[np.argsort(exact[chosen], kind="stable")[:K]]
    return int(truth[top].sum()), done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_args(ap, repeats=1)
    args = ap.parse_args(argv)
    ds = load_dataset(args.dataset, max_queries=args.queries)
    index = cached_index(ds, args.n_lists, args.n_bits, args.cache)
    if index.metric != "l2":
        raise SystemExit(f"{ds.name} is {index.metric}: the bound is for l2 indexes only")
    queries = ds.queries[:args.queries].astype(_F32)
    gt = ds.gt[:args.queries, :K]
    keep = max(RERANKS)
    fixed = {name: np.zeros(len(RERANKS)) for name in LEVELS}
    bound = {(m, wx): np.zeros(2) for m in MARGINS for wx in (False, True)}
    ceiling = 0
    for qv, gt_row in zip(queries, gt):
        per_variant, c = query_candidates(index, qv, gt_row, args.n_probe, args.probe_ratio, keep)
        ceiling += c
        for name, cands in per_variant.items():
            fixed[name] += [fixed_recall(cands, r) for r in RERANKS]
        for (m, wx) in bound:
            bound[(m, wx)] += bound_rerank(per_variant["5-bit (the search)"], m, wx)
    nq = queries.shape[0]
    print(f"{ds.name}: {args.n_lists} lists, n_probe {args.n_probe}, probe_ratio "
          f"{args.probe_ratio}, {nq} queries; ceiling (every scanned code reranked) "
          f"{ceiling / (nq * K):.4f}")
    print("\nrecall@10 at fixed n_rerank, by query precision")
    print("| query side | " + " | ".join(str(r) for r in RERANKS) + " |")
    print("|---|" + "---:|" * len(RERANKS))
    for name, hits in fixed.items():
        print(f"| {name} | " + " | ".join(f"{h / (nq * K):.4f}" for h in hits) + " |")
    print("\nbound-ordered rerank with early stop (5-bit query side)")
    print("| bound | m | recall@10 | mean reranked |")
    print("|---|---:|---:|---:|")
    for (m, wx), (hits, done) in bound.items():
        print(f"| {'with x' if wx else 'without x'} | {m} | {hits / (nq * K):.4f} | "
              f"{done / nq:.1f} |")


if __name__ == "__main__":
    main()
