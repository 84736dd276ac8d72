"""Self-balancing buckets: split oversized buckets, dissolve tiny ones, in bounded work.

When inserts drift away from the trained centroids (a catalog gaining new kinds of items)
a few buckets grow far beyond the others: their scans get slower and a fixed ``n_probe``
covers less of the space around them.  After each write batch the index calls
:func:`rebalance`, which

* **splits** a bucket holding more than ``SPLIT_FACTOR`` x the mean bucket size in two,
  with a 2-means of its own vectors: the bucket keeps one centroid, a new bucket gets
  the other;
* **reassigns** the vectors near the changed boundary, following SPFresh's LIRE
  protocol: the split bucket's vectors and those of the ``NEIGHBOURS`` buckets whose
  centroids are nearest to the old centroid go to their nearest centroid among the two
  new ones and those neighbours.  Everything else stays, so the work is bounded by
  about ``NEIGHBOURS + 1`` buckets per split, never a rebuild;
* **dissolves** a bucket that removals left with fewer than ``DISSOLVE_FACTOR`` x the
  mean size: its vectors go to their nearest other centroid and the bucket is deleted.

Each batch performs at most ``1 + inserted / mean`` splits (amortised O(1) splits per
mean-bucket of inserts; none in a batch that only removes), largest bucket first; the
rest waits for the next batch.  The
changes are made on fresh arrays and published with the batch (binidx/_snapshot.py), so
searches running meanwhile see the index before or after, never halfway.
"""
from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import numpy as np

from . import _codes, _kmeans

if TYPE_CHECKING:  # pragma: no cover
    from .index import Index

SPLIT_FACTOR = 2.0
DISSOLVE_FACTOR = 1.0 / 8.0
NEIGHBOURS = 16
# Balancing starts once buckets hold this many vectors on average: below it the sizes
# are too noisy for a ratio to mean anything.
MIN_MEAN_SIZE = 32
# 2-means runs on at most this many of a bucket's vectors, then assigns them all.
SPLIT_SAMPLE = 4096
SPLIT_ITERATIONS = 8
# Lloyd steps over a split bucket and its neighbours after the split.
LOCAL_LLOYD = 3


def rebalance(index: Index, inserted: int, removed_from: np.ndarray) -> int:
    """Split and dissolve buckets of ``index`` after a write batch.

    Parameters
    ----------
    index : Index
        Held by its writer (inside a write batch).
    inserted : int
        Vectors the batch inserted (bounds the number of splits).
    removed_from : ndarray of int
        Buckets the batch removed vectors from (the only dissolve candidates).

    Returns
    -------
    int
        Number of buckets split or dissolved.
    """
    buckets = index._buckets
    n_live = len(index._store)
    if buckets.n_lists == 0 or n_live < MIN_MEAN_SIZE * buckets.n_lists:
        return 0
    mean = n_live / buckets.n_lists
    if (not inserted or buckets.live_sizes().max() <= SPLIT_FACTOR * mean) and not (
            removed_from.size and buckets.live_sizes()[removed_from].min() < DISSOLVE_FACTOR * mean):
        return 0  # the common case: nothing to do, checked without any setup
    with _one_blas_thread():
        return _rebalance(index, inserted, removed_from)


_BLAS = None  # threadpoolctl controller, made once: inspecting the loaded libraries costs ~1 ms


def _one_blas_thread():
    """The products here are small (a few thousand rows): a multi-threaded BLAS spends
    more time waking threads than computing, 6x more on a loaded 2-core machine."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            return contextlib.nullcontext()
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _rebalance(index: Index, inserted: int, removed_from: np.ndarray) -> int:
    buckets = index._buckets
    n_live = len(index._store)
    work = _Rebalancer(index)
    changes = 0
    removed_from = np.unique(removed_from)
    if removed_from.size:
        mean = n_live / buckets.n_lists
        tiny = removed_from[buckets.live_sizes()[removed_from] < DISSOLVE_FACTOR * mean]
        # Dissolving renumbers the last bucket: go from the highest number down so the
        # numbers still to visit stay valid.
        for b in sorted(tiny.tolist(), reverse=True):
            if buckets.n_lists > 1 and b < buckets.n_lists:
                work.dissolve(b)
                changes += 1
    # Splits follow inserts only: a removal-only batch never grows a bucket.
    budget = 1 + math.ceil(inserted / max(n_live / buckets.n_lists, 1.0)) if inserted else 0
    while budget > 0:
        mean = n_live / buckets.n_lists
        sizes = buckets.live_sizes()
        b = int(np.argmax(sizes))
        if sizes[b] <= SPLIT_FACTOR * mean:
            break
        work.split(b)
        budget -= 1
        changes += 1
    if changes:
        work.finish()
    return changes


class _Rebalancer:
    """Split / dissolve on a private copy of the centroids, installed by :meth:`finish`."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.buckets = index._buckets
        self.store = index._store
        self.centroids = index._centroids.copy()

    # --------------------------------------------------------------- operations
    def split(self, b: int) -> None:
        slots = self._members(b)
        x = self.store.vectors[slots]
        c1, c2 = _two_means(x, self.centroids[b], seed=self.index.seed + b)
        near = self._nearest_buckets(self.centroids[b], NEIGHBOURS + 1)
        near = near[near != b][:NEIGHBOURS]
        nb = self.buckets.add_bucket()
        self.centroids = np.vstack([self.centroids, c2[None, :]])
        self.centroids[b] = c1
        # LIRE: the split bucket's vectors and the neighbours' go to their nearest
        # centroid among {c1, c2, neighbours}; a few local Lloyd steps then move those
        # centroids to the means of what they hold.
        group = np.concatenate([[b, nb], near]).astype(np.int64)
        self._reassign(group, [b] + near.tolist())

    def dissolve(self, b: int) -> None:
        slots = self._members(b)
        if slots.size:
            others = np.delete(np.arange(self.buckets.n_lists), b)
            x = self.store.vectors[slots]
            targets = others[_kmeans.assign(x, self.centroids[others],
                                            _kmeans.squared_norms(self.centroids[others]))]
            self._apply_moves(np.full(slots.size, b), targets, slots, rebuild=())
        self._drop(b)

    def finish(self) -> None:
        """Install the new centroids (fresh arrays: snapshots keep the old ones)."""
        self.index._install_centroids(self.centroids)

    # ------------------------------------------------------------------ helpers
    def _members(self, b: int) -> np.ndarray:
        """Slots of the live vectors of bucket b (its tombstones are purged first)."""
        if self.buckets.dead[b]:
            self.index._purge_tombstones([b])
        return self.buckets.slots[b][:int(self.buckets.sizes[b])].astype(np.int64)

    def _nearest_buckets(self, point: np.ndarray, n: int) -> np.ndarray:
        d = _kmeans.squared_norms(self.centroids) - 2.0 * self.centroids @ point
        n = min(n, d.shape[0])
        nearest = np.argpartition(d, n - 1)[:n]
        return nearest[np.argsort(d[nearest], kind="stable")]

    def _reassign(self, group: np.ndarray, sources: list[int]) -> None:
        """Vectors of ``sources`` go to their nearest centroid within ``group`` after
        ``LOCAL_LLOYD`` local k-means steps; every bucket of the group is re-encoded."""
        slots = np.concatenate([self._members(s) for s in sources])
        current = self.store.slot_buckets[slots].astype(np.int64)
        x = self.store.vectors[slots]
        cg = self.centroids[group].copy()
        for _ in range(LOCAL_LLOYD):
            local = _kmeans.assign(x, cg, _kmeans.squared_norms(cg))
            # Cluster sums as a (group x n) one-hot product: one BLAS call, where
            # np.add.at would loop in Python-speed scalar steps.
            onehot = (local[None, :] == np.arange(group.size)[:, None]).astype(np.float32)
            counts = onehot.sum(axis=1)
            sums = onehot @ x
            filled = counts > 0
            cg[filled] = sums[filled] / counts[filled, None]
        self.centroids[group] = cg
        target = group[_kmeans.assign(x, cg, _kmeans.squared_norms(cg))]
        self._apply_moves(current, target, slots, rebuild=group.tolist())

    def _apply_moves(self, current: np.ndarray, target: np.ndarray, slots: np.ndarray,
                     rebuild) -> None:
        """Rewrite the buckets that lose or gain vectors, and those in ``rebuild``:
        rows that stay keep their codes unless their bucket is rebuilt; rows that arrive
        are encoded against their new centroid."""
        moved = current != target
        touched = set(rebuild) | set(current[moved].tolist()) | set(target[moved].tolist())
        # Membership by slot-indexed masks (np.isin would sort both sides per bucket).
        given = np.zeros(self.store.slot_buckets.shape[0], bool)
        given[slots] = True
        leaving = np.zeros_like(given)
        leaving[slots[moved]] = True
        for t in sorted(touched):
            members = self._members(t)
            if t in rebuild:
                keep = np.zeros(0, np.int64)
                new_slots = np.concatenate([slots[target == t], members[~given[members]]])
            else:
                keep = members[~leaving[members]]
                new_slots = slots[moved & (target == t)]
            self._write_bucket(t, keep, new_slots)
        self.store.slot_buckets[slots] = target

    def _write_bucket(self, b: int, keep: np.ndarray, new_slots: np.ndarray) -> None:
        """Bucket b := its rows for the ``keep`` slots (codes unchanged) + ``new_slots``
        encoded against centroid b."""
        positions = self.buckets.slot_pos[keep]
        old_codes, old_factors, _ = self.buckets._read_positions(b, positions)
        x = self.store.vectors[new_slots] - self.centroids[b]
        codes, factors = _codes.encode(x, self.index._projection, self.index._scale)
        self.buckets.replace(b, np.concatenate([old_codes, codes]),
                             np.concatenate([old_factors, factors]),
                             np.concatenate([keep, new_slots]).astype(np.int32))

    def _drop(self, b: int) -> None:
        """Delete empty bucket b: the last bucket takes its number."""
        last = self.buckets.n_lists - 1
        self.buckets.sizes[b] = 0
        self.buckets.drop_bucket(b)
        if b != last:
            self.centroids[b] = self.centroids[last]
            self.store.slot_buckets[self._members(b)] = b
        self.centroids = self.centroids[:last].copy()


def _two_means(x: np.ndarray, center: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two centroids splitting ``x``: start on either side of ``center`` along the
    principal direction, then a few Lloyd iterations on a sample."""
    rng = np.random.default_rng(seed)
    sample = x if x.shape[0] <= SPLIT_SAMPLE else x[rng.choice(x.shape[0], SPLIT_SAMPLE,
                                                              replace=False)]
    centred = sample - center
    direction = centred[int(np.argmax(_kmeans.squared_norms(centred)))].astype(np.float64)
    for _ in range(4):  # power iteration towards the principal direction
        direction = centred.T @ (centred @ direction)
        norm = np.linalg.norm(direction)
        if norm == 0:
            break
        direction /= norm
    spread = np.sqrt(max(float(np.mean((centred @ direction) ** 2)), 1e-12))
    c = np.stack([center + spread * direction, center - spread * direction]).astype(np.float32)
    for _ in range(SPLIT_ITERATIONS):
        labels = _kmeans.assign(sample, c, _kmeans.squared_norms(c))
        for j in (0, 1):
            members = sample[labels == j]
            if members.shape[0]:
                c[j] = members.mean(axis=0)
    return c[0], c[1]
