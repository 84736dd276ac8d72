"""``Index.tune``: choose n_probe / n_rerank for a target recall, measured on real queries.

Ground truth is exact search over the vectors the index holds.  For each n_probe of a
geometric ladder the smallest n_rerank of a ladder that reaches the target is found
(recall grows with both), every candidate setting is timed on one thread, and the fastest
one that meets the target wins.  Timing uses the calling thread's CPU time, which a busy
machine disturbs far less than wall time.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from ._exact import exact_search


class TuneResult(NamedTuple):
    """What :meth:`binidx.Index.tune` chose and measured.

    Attributes
    ----------
    n_probe, n_rerank : int
        The chosen setting, now the index defaults.
    recall : float
        Recall@k it reached on the tuning queries (exact ground truth, ties allowed).
    queries_per_second : float
        Single-thread throughput measured for it (CPU time of the calling thread).
    met_target : bool
        False when no setting reached the target; the most accurate one was chosen.
    trials : list of dict
        Every setting tried: n_probe, n_rerank, recall, queries_per_second.
    """

    n_probe: int
    n_rerank: int
    recall: float
    queries_per_second: float
    met_target: bool
    trials: list


def tie_aware_recall(found_ids: np.ndarray, found_d: np.ndarray, true_d: np.ndarray,
                     k: int, larger_is_better: bool) -> float:
    """Share of the k returned neighbours at least as close as the true k-th neighbour.

    ``found_d`` are exact distances (binidx reranks exactly), so comparing them with the
    true k-th distance counts a tied neighbour as correct.
    """
    kth = true_d[:, k - 1:k]
    eps = 1e-5 * np.maximum(1.0, np.abs(kth))
    ok = (found_d[:, :k] >= kth - eps) if larger_is_better else (found_d[:, :k] <= kth + eps)
    ok &= found_ids[:, :k] >= 0
    return float(ok.mean())


def tune(index, queries: np.ndarray, target_recall: float, k: int, max_queries: int = 1000,
         seed: int = 0) -> TuneResult:
    rng = np.random.default_rng(seed)
    if queries.shape[0] > max_queries:
        queries = queries[np.sort(rng.choice(queries.shape[0], max_queries, replace=False))]
    live = np.sort(index.ids())
    vectors = index.get(live)
    metric = "ip" if index.metric == "cosine" else index.metric  # both sides already unit length
    truth = exact_search(vectors, queries, k, metric=metric)
    larger = index.metric != "l2"

    n_lists = index.n_lists
    probes = sorted({min(n_lists, p) for p in (2 ** np.arange(0, 20)).tolist() if p <= 2 * n_lists})
    reranks = [r for r in (k, 2 * k, 4 * k, 8 * k, 16 * k, 32 * k, 64 * k, 128 * k)]

    def measure(n_probe: int, n_rerank: int) -> dict:
        best = np.inf
        res = None
        for _ in range(2):
            t0 = time.thread_time()
            res = index.search(queries, k, n_probe=n_probe, n_rerank=n_rerank, n_threads=1)
            best = min(best, time.thread_time() - t0)
        recall = tie_aware_recall(res.ids, res.distances, truth.distances, k, larger)
        return {"n_probe": n_probe, "n_rerank": n_rerank, "recall": recall,
                "queries_per_second": queries.shape[0] / max(best, 1e-9)}

    trials, meeting = [], []
    for n_probe in probes:
        previous = -1.0
        for n_rerank in reranks:
            trial = measure(n_probe, n_rerank)
            trials.append(trial)
            # Stop at the target, or when doubling n_rerank no longer adds recall (the
            # true neighbours are not in the probed buckets: only more probes help).
            if trial["recall"] >= target_recall or trial["recall"] - previous < 0.002:
                break
            previous = trial["recall"]
        if trial["recall"] >= target_recall:
            meeting.append(trial)
            # More probes only get slower once the target is met with fewer.
            if len(meeting) >= 2 and meeting[-1]["queries_per_second"] < meeting[-2]["queries_per_second"]:
                break
    if meeting:
        best = max(meeting, key=lambda t: t["queries_per_second"])
    else:
        best = max(trials, key=lambda t: (t["recall"], t["queries_per_second"]))
    index.n_probe, index.n_rerank = best["n_probe"], best["n_rerank"]
    return TuneResult(best["n_probe"], best["n_rerank"], best["recall"],
                      best["queries_per_second"], bool(meeting), trials)
