"""benchmarks/micro/estimator_limits.py models the search offline: check that it does.

Its fixed-n_rerank recall with the search's 5-bit query side must be the search's own
recall (binidx._reference, same probes, estimator and candidate selection), and its
bound-ordered rerank must rerank everything for a huge margin and stop early for none.
"""
from __future__ import annotations

import numpy as np

import binidx
from benchmarks.micro import estimator_limits as el
from binidx._reference import search_reference


def _index_and_truth(seed=5, n=3000, nq=12, dim=64):
    # Unclustered data: neighbours spread over many buckets, so the probe rule matters.
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    index = binidx.build(base, n_lists=16, seed=0)
    d = ((queries[:, None, :].astype(np.float64) - base[None, :, :]) ** 2).sum(-1)
    return index, queries, np.argsort(d, axis=1, kind="stable")[:, :10]


def test_fixed_rerank_finds_what_the_reference_search_finds():
    index, queries, gt = _index_and_truth()
    # (ratio 1.0 leaves the floor of a quarter of n_probe: the probe rule in full)
    for n_probe, ratio, n_rerank in ((4, None, 20), (8, 1.6, 40), (12, 1.0, 30)):
        _, ref_ids = search_reference(index, queries, 10, n_probe, n_rerank, probe_ratio=ratio)
        for row, (qv, gt_row) in enumerate(zip(queries, gt)):
            per_variant, _ = el.query_candidates(index, qv, gt_row, n_probe, ratio, n_rerank)
            cands = per_variant["5-bit (the search)"]
            found = cands[5][el.fixed_top(cands, n_rerank)]
            assert sorted(found) == sorted(ref_ids[row]), (n_probe, ratio, n_rerank, row)


def test_bound_rerank_margin_extremes():
    index, queries, gt = _index_and_truth(seed=6)
    per_variant, ceiling = el.query_candidates(index, queries[0], gt[0], 16, None, 400)
    cands = per_variant["5-bit (the search)"]
    keep = cands[0].shape[0]
    hits, done = el.bound_rerank(cands, 1e9, with_x=True)
    assert done == keep and hits == el.fixed_recall(cands, keep)
    # The ceiling reranks every scanned code, a superset of the kept candidates.
    assert hits <= ceiling
    _, done_tight = el.bound_rerank(cands, 0.0, with_x=False)
    assert 10 <= done_tight < keep
