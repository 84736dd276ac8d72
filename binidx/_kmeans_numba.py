"""Numba kernels of the k-means trainer (imported lazily by ``_kmeans``).

Top-level ``@njit(cache=True)`` functions taking only arrays and scalars, so the cache
works across processes; when the package folder is read-only Numba falls back to its
user-wide cache directory.
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def kmeanspp_seed(x, k, uniforms, first):  # pragma: no cover - compiled
    """k-means++ seeding: indices of k rows of x, each drawn with probability ~ D(x)^2."""
    n, d = x.shape
    chosen = np.empty(k, np.int64)
    chosen[0] = first
    mind = np.empty(n, np.float64)
    total = 0.0
    for i in range(n):
        s = 0.0
        for j in range(d):
            t = x[i, j] - x[first, j]
            s += t * t
        mind[i] = s
        total += s
    for c in range(1, k):
        target = uniforms[c] * total
        pick = n - 1
        acc = 0.0
        for i in range(n):
            acc += mind[i]
            if acc > target:
                pick = i
                break
        chosen[c] = pick
        total = 0.0
        for i in range(n):
            s = 0.0
            for j in range(d):
                t = x[i, j] - x[pick, j]
                s += t * t
            mind[i] = min(mind[i], s)
            total += mind[i]
    return chosen


@njit(cache=True, nogil=True)
def cluster_sums(x, labels, k):  # pragma: no cover - compiled
    """Per-cluster sums (float64) and counts of the rows of x."""
    n, d = x.shape
    sums = np.zeros((k, d), np.float64)
    counts = np.zeros(k, np.int64)
    for i in range(n):
        c = labels[i]
        counts[c] += 1
        for j in range(d):
            sums[c, j] += x[i, j]
    return sums, counts
