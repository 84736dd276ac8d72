"""Coarse quantiser training: k-means++ seeding + Lloyd iterations on a sample.

Distances between blocks of points and all centroids are BLAS matrix products (the same
trick FAISS uses); the loops that BLAS cannot express -- the sequential k-means++ seeding
and the per-cluster sums -- are Numba kernels, compiled on first use and cached on disk.
Numba is imported lazily so ``import binidx`` stays cheap.
"""
from __future__ import annotations

import numpy as np

from . import _blas
from .errors import InvalidInputError

# Training sample: this many points per centroid at most.  FAISS samples up to 256.  The
# sample sets how good the partition is, and so how many lists a search must probe for a
# given recall: on sift-1m (2,048 lists) the share of true neighbours in the 40 nearest
# lists is 0.959 with 40 points per centroid, 0.964 with 64, 0.966 with 128, 0.967 with
# 256.  More than 64 costs the churn criteria of issue 4, though: fresh builds get better
# than an index kept up to date by splits and merges can follow.  On dev-text in cluster
# order (docs/benchmarks.md, churn runbook) the mean / worst gap to a same-set rebuild was
# -0.82 / -1.49 points at 40, -0.80 / -1.73 at 64, -1.12 / -2.00 at 96 and -1.27 / -2.06
# at 128 (bounds -1 / -2); dev-sift -0.29 / -0.73 at 64.  Lloyd iterations cost
# n_sample x n_lists distances each, so the sample is also capped in total, at
# TRAIN_SAMPLE_MAX (128 x 2,048), except that every list keeps at least
# TRAIN_POINTS_MIN: a 1M-vector build at the default ~4,000 lists trained on 128 per list
# took 48 s against hnswlib's 200 s, on 64 per list 35 s (the cap then binds beyond 4,096
# lists).  k-means++ seeds from a sub-sample of
# SEED_POINTS_PER_CENTROID points per centroid.
TRAIN_POINTS_PER_CENTROID = 64
TRAIN_SAMPLE_MAX = 128 * 2048
TRAIN_POINTS_MIN = 40
SEED_POINTS_PER_CENTROID = 4
DEFAULT_N_ITER = 10
# Rows per block of the point-to-centroid distance matrix: about 32 MB of float32 at any
# n_lists (8192 rows x 4000 lists would be 131 MB of temporary at a 1M-vector build).
_BLOCK_FLOATS = 8 * 1024 * 1024
# Blocks run on all cores at once (binidx/_blas.py): each gets a share of that budget.
_BLOCK_SPLIT = 4

_numba_kernels = None


def _kernels():
    """Compile (or load from the on-disk cache) the Numba kernels on first use."""
    global _numba_kernels
    if _numba_kernels is None:
        from . import _kmeans_numba

        _numba_kernels = _kmeans_numba
    return _numba_kernels


def default_n_lists(n: int) -> int:
    """About 4 * sqrt(n) lists, and never fewer than 4 training points per list."""
    return int(max(1, min(round(4.0 * np.sqrt(n)), n // 4)))


def training_sample_size(n: int, n_clusters: int) -> int:
    """How many of ``n`` points k-means trains ``n_clusters`` centroids on.

    Up to ``TRAIN_POINTS_PER_CENTROID`` per centroid and ``TRAIN_SAMPLE_MAX`` in all, but
    never fewer than ``TRAIN_POINTS_MIN`` per centroid (nor more than ``n``).

    >>> training_sample_size(1_000_000, 2048), training_sample_size(1_000_000, 8192)
    (131072, 327680)
    >>> training_sample_size(1_000_000, 16384), training_sample_size(5_000, 100)
    (655360, 5000)
    """
    per_list = min(n_clusters * TRAIN_POINTS_PER_CENTROID, TRAIN_SAMPLE_MAX)
    return int(min(n, max(per_list, n_clusters * TRAIN_POINTS_MIN)))


def squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def assign(x: np.ndarray, centroids: np.ndarray, centroid_norms: np.ndarray | None = None) -> np.ndarray:
    """Index of the nearest centroid (squared L2) of every row of ``x``, as int32."""
    if centroid_norms is None:
        centroid_norms = squared_norms(centroids)
    centroids_m2 = np.float32(-2.0) * centroids
    labels = np.empty(x.shape[0], dtype=np.int32)
    rows = max(256, _BLOCK_FLOATS // max(1, centroids.shape[0]) // _BLOCK_SPLIT)

    def assign_block(start: int) -> None:
        block = x[start:start + rows]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
        # One temporary, updated in place: the block product is memory-bound otherwise.
        d = block @ centroids_m2.T
        d += centroid_norms
        labels[start:start + block.shape[0]] = np.argmin(d, axis=1)

    starts = range(0, x.shape[0], rows)
    if len(starts) == 1:
        assign_block(0)  # small products (splits, reassignment) stay on the caller's thread
    else:
        _blas.run_blocks(assign_block, starts)
    return labels


def train_kmeans(x: np.ndarray, n_clusters: int, rng: np.random.Generator,
                 n_iter: int = DEFAULT_N_ITER) -> np.ndarray:
    """Train ``n_clusters`` centroids on the float32 matrix ``x``; returns (n_clusters, dim) float32.

    Empty clusters are re-seeded by splitting a large cluster in two (its centroid is
    duplicated with a small symmetric perturbation), so every list has a centroid that
    attracts points.
    """
    n = x.shape[0]
    if n < n_clusters:
        raise InvalidInputError(
            f"n_lists={n_clusters} needs at least {n_clusters} training vectors, got {n}; "
            "train on more vectors or choose a smaller n_lists"
        )
    kernels = _kernels()
    n_train = training_sample_size(n, n_clusters)
    if n_train < n:
        sample = np.sort(rng.choice(n, size=n_train, replace=False))
        xt = np.ascontiguousarray(x[sample])
    else:
        xt = np.ascontiguousarray(x)
    n_seed = min(n_train, max(n_clusters * SEED_POINTS_PER_CENTROID, 1000))
    seed_pool = xt[np.sort(rng.choice(n_train, size=n_seed, replace=False))] if n_seed < n_train else xt
    uniforms = rng.random(n_clusters)
    first = int(rng.integers(seed_pool.shape[0]))
    centers = seed_pool[kernels.kmeanspp_seed(seed_pool, n_clusters, uniforms, first)].copy()
    if n_clusters == 1:
        return np.ascontiguousarray(xt.mean(axis=0, keepdims=True), dtype=np.float32)

    previous = None
    for _ in range(n_iter):
        labels = assign(xt, centers)
        sums, counts = kernels.cluster_sums(xt, labels, n_clusters)
        nonempty = counts > 0
        centers[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
        if not nonempty.all():
            _split_large_clusters(centers, counts, rng)
        if previous is not None and np.count_nonzero(previous != labels) < 1e-3 * n_train:
            break
        previous = labels
    return np.ascontiguousarray(centers, dtype=np.float32)


def _split_large_clusters(centers: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> None:
    """Give each empty cluster half of a large cluster (chosen with probability ~ size)."""
    counts = counts.astype(np.float64)
    eps = 1.0 / 1024.0
    for j in np.flatnonzero(counts == 0):
        p = np.maximum(counts - 1, 0)
        big = int(rng.choice(len(counts), p=p / p.sum()))
        direction = np.where(rng.random(centers.shape[1]) < 0.5, -eps, eps).astype(np.float32)
        base = centers[big].copy()
        centers[j] = base * (1 + direction)
        centers[big] = base * (1 - direction)
        counts[j] = counts[big] / 2
        counts[big] -= counts[j]
