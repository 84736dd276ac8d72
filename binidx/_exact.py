"""Exact (brute-force) k-nearest-neighbour search: the ground truth for tests and benchmarks."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._validation import as_float32_matrix, check_metric, check_positive_int


class SearchResult(NamedTuple):
    """Result of a k-NN search, best first in each row.

    Attributes
    ----------
    distances : ndarray of shape (n_queries, k), float32
        Squared L2 distances for ``metric="l2"`` (smaller is better); inner products for
        ``"ip"`` and cosine similarities for ``"cosine"`` (larger is better).  Missing
        results (fewer than k found) hold the worst value: +inf for l2, -inf for ip/cosine.
    ids : ndarray of shape (n_queries, k), int64
        Ids of the neighbours; -1 where fewer than k were found.
    """

    distances: np.ndarray
    ids: np.ndarray


def normalize_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Scale rows to unit L2 norm (cosine metric); zero rows have no direction and are refused."""
    from .errors import InvalidInputError

    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise InvalidInputError(
            f"{name} row {zero[0]} is a zero vector, which has no cosine similarity; "
            "remove zero vectors or use metric='l2' / 'ip'"
        )
    return np.ascontiguousarray(x / norms[:, None].astype(np.float32), dtype=np.float32)


def _smallest_k(key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column indices of the k smallest keys, ordered by (key, index).

    ``argpartition`` alone picks arbitrary members of a tie that straddles rank k; rows
    with such a tie are redone over every column whose key is <= the k-th key, so the
    smaller indices always win.
    """
    n_rows, n = key.shape
    if k < n:
        part = np.argpartition(key, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n), (n_rows, 1))
    part_keys = np.take_along_axis(key, part, axis=1)
    if k < n:
        kth = part_keys.max(axis=1)
        tied_rows = np.flatnonzero((key <= kth[:, None]).sum(axis=1) > k)
        for r in tied_rows.tolist():
            cols = np.flatnonzero(key[r] <= kth[r])
            cols = cols[np.lexsort((cols, key[r, cols]))[:k]]
            part[r], part_keys[r] = cols, key[r, cols]
    order = np.lexsort((part, part_keys), axis=1)  # last key is the primary one
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_keys, order, axis=1)


# Bytes of one block's float64 distance matrix (queries x base vectors).  A fixed number of
# queries per block would not do: 1,024 queries against a million vectors is 8 GB per
# temporary, and Index.tune on a 1M index was killed for memory.
BLOCK_BYTES = 1 << 28


def exact_search(x, q, k: int, metric: str = "l2", *, block: int = 1024) -> SearchResult:
    """Brute-force k nearest neighbours of each query, computed in float64.

    Parameters
    ----------
    x : array-like of shape (n, dim)
        Base vectors; row numbers are the returned ids.
    q : array-like of shape (n_queries, dim)
        Queries.
    k : int
        Neighbours per query; rows are padded with id -1 when ``k > n``.
    metric : {"l2", "ip", "cosine"}
        Same meaning and same distance convention as :meth:`binidx.Index.search`.
    block : int, default 1024
        Most queries per block; fewer when a block's (queries x n) float64 distances
        would exceed 256 MB, so memory stays bounded whatever n.

    Returns
    -------
    SearchResult
        ``(distances, ids)``, best first; ties are broken by the smaller id.

    Examples
    --------
    >>> import numpy as np, binidx
    >>> x = np.eye(3, dtype=np.float32)
    >>> binidx.exact_search(x, x[:1], k=2).ids
    array([[0, 1]])
    """
    metric = check_metric(metric)
    k = check_positive_int(k, "k")
    x = as_float32_matrix(x, None, "x", allow_empty=True)
    q = as_float32_matrix(q, x.shape[1] if x.shape[0] else None, "q")
    if metric == "cosine":
        x = normalize_rows(x, "x") if x.shape[0] else x
        q = normalize_rows(q, "q")
    n = x.shape[0]
    kk = min(k, n)
    worst = np.inf if metric == "l2" else -np.inf
    distances = np.full((q.shape[0], k), worst, dtype=np.float32)
    ids = np.full((q.shape[0], k), -1, dtype=np.int64)
    if kk == 0:
        return SearchResult(distances, ids)
    x64 = x.astype(np.float64)
    x_norms = np.einsum("ij,ij->i", x64, x64)
    block = max(1, min(block, BLOCK_BYTES // (8 * n)))
    for start in range(0, q.shape[0], block):
        qb = q[start:start + block].astype(np.float64)
        key = qb @ x64.T
        # In place: one (block, n) array, no temporaries of its size.  (-2 <q, x> + ||x||^2)
        # + ||q||^2 is the same IEEE sum as ||x||^2 - 2 <q, x> + ||q||^2.
        if metric == "l2":
            key *= -2.0
            key += x_norms[None, :]
            key += np.einsum("ij,ij->i", qb, qb)[:, None]
            np.maximum(key, 0.0, out=key)
        else:
            np.negative(key, out=key)
        best, best_keys = _smallest_k(key, kk)
        rows = slice(start, start + qb.shape[0])
        ids[rows, :kk] = best
        distances[rows, :kk] = best_keys if metric == "l2" else -best_keys
    return SearchResult(distances, ids)
