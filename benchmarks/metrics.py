"""Exact ground truth and tie-aware recall, independent of every engine under test.

Distances are recomputed here in float64 from the stored vectors for every id an engine
returns, so no engine is judged by its own (possibly approximate) distances.  Recall@r
counts a returned id as correct when its true distance is no larger than the true
distance of the r-th ground-truth neighbour (ann-benchmarks' rule), so an engine that
returns a different member of a group of equally distant vectors is not penalised.
"""
from __future__ import annotations

import numpy as np

#: Relative slack when comparing a returned distance with the r-th true distance; it
#: only absorbs float64 summation-order noise, not approximation error.
TIE_RTOL = 1e-9

#: Recall levels reported in every result line (when k and the ground truth allow).
RECALL_AT = (1, 10, 100)


def pair_distances(base: np.ndarray, queries: np.ndarray, ids: np.ndarray,
                   metric: str) -> np.ndarray:
    """Exact distances between each query and the base vectors it lists.

    Parameters
    ----------
    base : ndarray of shape (n, dim)
    queries : ndarray of shape (n_queries, dim)
    ids : int array of shape (n_queries, m)
        Row numbers into ``base``; negative entries mean "no result".
    metric : {"l2", "ip"}
        ``"l2"`` gives squared Euclidean distance, ``"ip"`` the negated inner product
        (smaller is closer for both).

    Returns
    -------
    ndarray of float64, shape (n_queries, m); ``+inf`` where ``ids`` is negative.
    """
    ids = np.asarray(ids, dtype=np.int64)
    out = np.full(ids.shape, np.inf)
    block = max(1, 2_000_000 // max(1, ids.shape[1] * base.shape[1]))
    for s in range(0, len(ids), block):
        sub = ids[s:s + block]
        valid = (sub >= 0) & (sub < len(base))
        vecs = base[np.where(valid, sub, 0)].astype(np.float64)
        q = queries[s:s + block].astype(np.float64)[:, None, :]
        if metric == "l2":
            d = ((vecs - q) ** 2).sum(axis=2)
        else:
            d = -(vecs * q).sum(axis=2)
        out[s:s + block] = np.where(valid, d, np.inf)
    return out


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact k nearest neighbours by brute force, ties broken by the smaller id.

    A float32 matrix product finds ``k + 32`` candidates per query; they are then ranked by
    float64 distances from :func:`pair_distances`, so float32 rounding cannot reorder the
    final list.

    Returns
    -------
    ndarray of int64, shape (n_queries, k)
    """
    n = len(base)
    k = min(k, n)
    n_cand = min(n, k + 32)
    base32 = np.ascontiguousarray(base, dtype=np.float32)
    sq = (base32.astype(np.float64) ** 2).sum(axis=1).astype(np.float32) if metric == "l2" else None
    out = np.empty((len(queries), k), dtype=np.int64)
    block = max(1, min(1024, 16_000_000 // max(n, 1)))
    for s in range(0, len(queries), block):
        q = np.ascontiguousarray(queries[s:s + block], dtype=np.float32)
        score = q @ base32.T
        approx = (sq[None, :] - 2 * score) if metric == "l2" else -score
        if n_cand < n:
            cand = np.argpartition(approx, n_cand - 1, axis=1)[:, :n_cand]
        else:
            cand = np.broadcast_to(np.arange(n), (len(q), n))
        dist = pair_distances(base, q, cand, metric)
        for row in range(len(q)):
            order = np.lexsort((cand[row], dist[row]))[:k]
            out[s + row] = cand[row, order]
    return out


class RecallEvaluator:
    """Tie-aware recall@1/@10/@100 of result ids against exact ground truth.

    Parameters
    ----------
    base, queries : ndarray
        The vectors the ground truth refers to.
    gt_ids : int array of shape (n_queries, K)
        Exact neighbours, nearest first.
    metric : {"l2", "ip"}
    """

    def __init__(self, base: np.ndarray, queries: np.ndarray, gt_ids: np.ndarray,
                 metric: str) -> None:
        self.base, self.queries, self.metric = base, queries, metric
        self.gt_k = gt_ids.shape[1]
        levels = [r for r in RECALL_AT if r <= self.gt_k]
        gt_dist = pair_distances(base, queries, gt_ids[:, : max(levels)], metric)
        # The r-th true distance, with the slack that makes exact ties count.
        self.threshold = {r: gt_dist[:, r - 1] + TIE_RTOL * np.abs(gt_dist[:, r - 1])
                          for r in levels}

    def evaluate(self, found: np.ndarray, rows: np.ndarray | None = None
                 ) -> dict[str, float | None]:
        """Recall of ``found`` (ids, shape (n, k)) for the queries ``rows`` (default all).

        Returns ``{"recall@1": ..., "recall@10": ..., "recall@100": ...}``; a level is
        ``None`` when ``k`` or the ground truth is shorter than it.  Duplicate ids in a
        row count once.
        """
        found = np.asarray(found, dtype=np.int64)
        rows = np.arange(len(found)) if rows is None else np.asarray(rows)
        dist = pair_distances(self.base, self.queries[rows], found, self.metric)
        dup = np.zeros(found.shape, dtype=bool)
        order = np.argsort(found, axis=1, kind="stable")
        srt = np.take_along_axis(found, order, axis=1)
        rep = np.zeros(found.shape, dtype=bool)
        rep[:, 1:] = srt[:, 1:] == srt[:, :-1]
        np.put_along_axis(dup, order, rep, axis=1)
        dist[dup] = np.inf
        out: dict[str, float | None] = {}
        for r in RECALL_AT:
            if r in self.threshold and found.shape[1] >= r:
                hits = (dist[:, :r] <= self.threshold[r][rows, None]).sum(axis=1)
                out[f"recall@{r}"] = float(np.mean(np.minimum(hits, r) / r))
            else:
                out[f"recall@{r}"] = None
        return out
