"""Self-balancing buckets: split oversized buckets, dissolve small ones, in bounded work.

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
  new ones and those neighbours, after ``LOCAL_LLOYD`` local k-means steps.  Everything
  else stays, so the work is bounded by about ``NEIGHBOURS + 1`` buckets per split,
  never a rebuild;
* **merges**: each split dissolves the smallest bucket when it holds less than
  ``MERGE_FACTOR`` x the mean.  Where deletions thinned the data, buckets shrink and
  their centroids are in surplus; where inserts arrive, buckets grow.  Moving a
  centroid from the one to the other is what a fresh k-means on the live set would do,
  and it keeps ``n_lists`` (so the share of buckets a fixed ``n_probe`` visits) from
  growing without bound;
* **migrates**: a bucket whose share of the vectors grew by ``GROWTH_FACTOR`` x since its centroid
  was last fitted (:func:`fitted_shares`) is split too, when a bucket small enough to
  merge pays for it.  New kinds of items first land in the buckets of the old ones
  nearest to them; those buckets need not reach twice the mean to hold a cluster of
  their own;
* **dissolves** a bucket that removals left with fewer than ``DISSOLVE_FACTOR`` x the
  mean size.

A dissolved bucket's vectors go to their nearest other centroid, appended to those
buckets (their centroids do not move, so nothing else in them is rewritten).  Each batch
performs at most ``1 + inserted / mean`` splits (amortised O(1) splits per mean-bucket
of inserts; none in a batch that only removes), oversized buckets first, then the most
grown; the rest waits for the next batch.  The changes are made on fresh arrays and
published with the batch (binidx/_snapshot.py), so searches running meanwhile see the
index before or after, never halfway.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from . import _blas, _codes, _kmeans, _storage

if TYPE_CHECKING:  # pragma: no cover
    from .index import Index

SPLIT_FACTOR = 2.0
MERGE_FACTOR = 0.5
GROWTH_FACTOR = 1.5
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
    """Split, merge and dissolve buckets of ``index`` after a write batch.

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
    sizes = buckets.live_sizes()
    fitted = fitted_shares(index)
    split = inserted and (sizes.max() > SPLIT_FACTOR * mean
                          or (sizes > GROWTH_FACTOR * mean * _growth_base(fitted)).any())
    if not split and not (removed_from.size
                          and sizes[removed_from].min() < DISSOLVE_FACTOR * mean):
        return 0  # the common case: nothing to do, checked without any setup
    # The products here are small (a few thousand rows): a multi-threaded BLAS spends more
    # time waking threads than computing, 6x more on a loaded 2-core machine.
    with _blas.one_blas_thread():
        return _rebalance(index, inserted, removed_from)


def fitted_shares(index: Index) -> np.ndarray:
    """Live size of each bucket, over the mean, when its centroid was last fitted to its
    members.

    Set for the buckets a split rewrites, and for every bucket the first time the index
    is balanced (after a build, or a load: it is not saved).  ``rebalance`` splits a
    bucket whose share grew by ``GROWTH_FACTOR`` since: shares, not sizes, so that an
    index growing evenly (every bucket gaining alike) does not count as drifting.
    """
    fitted = getattr(index, "_fitted_shares", None)
    if fitted is None or fitted.shape[0] != index._buckets.n_lists:
        sizes = index._buckets.live_sizes()
        fitted = index._fitted_shares = sizes / max(sizes.mean(), 1.0)
    return fitted


def _growth_base(fitted: np.ndarray) -> np.ndarray:
    # A bucket fitted small grows by half quickly without holding much: measure its
    # growth from at least the merge threshold.
    return np.maximum(fitted, MERGE_FACTOR)


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
        b = _next_split(buckets.live_sizes(), work.fitted, n_live / buckets.n_lists)
        if b < 0:
            break
        halves = [b, work.split(b)]
        budget -= 1
        changes += 1
        sizes = buckets.live_sizes()
        sizes[halves] = n_live  # never undo the split just made
        smallest = int(np.argmin(sizes))
        if sizes[smallest] < MERGE_FACTOR * n_live / buckets.n_lists:
            work.dissolve(smallest)
            changes += 1
    if changes:
        work.finish()
    return changes


def _next_split(sizes: np.ndarray, fitted: np.ndarray, mean: float) -> int:
    """The bucket to split next, -1 for none: the largest if it is over ``SPLIT_FACTOR``
    x the mean, else the most grown since it was fitted if that is over
    ``GROWTH_FACTOR`` and another bucket is small enough to merge."""
    largest = int(np.argmax(sizes))
    if sizes[largest] > SPLIT_FACTOR * mean:
        return largest
    growth = sizes / (mean * _growth_base(fitted))
    grown = int(np.argmax(growth))
    if growth[grown] <= GROWTH_FACTOR:
        return -1
    others = sizes.copy()
    others[grown] = sizes.max()
    return grown if others.min() < MERGE_FACTOR * mean else -1


class _Rebalancer:
    """Split / dissolve on a private copy of the centroids, installed by :meth:`finish`."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.buckets = index._buckets
        self.store = index._store
        self.centroids = index._centroids.copy()
        self.fitted = fitted_shares(index).copy()

    # --------------------------------------------------------------- operations
    def split(self, b: int) -> int:
        """Split bucket b in two; return the new bucket's number."""
        x = self.store.vectors[self._live(b)]
        c1, c2 = _two_means(x, self.centroids[b], seed=self.index.seed + b)
        near = self._nearest_buckets(self.centroids[b], NEIGHBOURS + 1)
        near = near[near != b][:NEIGHBOURS]
        nb = self.buckets.add_bucket()
        self.fitted = np.append(self.fitted, 0)
        self.centroids = np.vstack([self.centroids, c2[None, :]])
        self.centroids[b] = c1
        # LIRE: the split bucket's vectors and the neighbours' go to their nearest
        # centroid among {c1, c2, neighbours}; a few local Lloyd steps then move those
        # centroids to the means of what they hold.
        self._reassign(np.concatenate([[b, nb], near]).astype(np.int64))
        return nb

    def dissolve(self, b: int) -> None:
        """Move bucket b's vectors to their nearest other centroids and delete it.

        The receiving buckets' centroids do not change, so the moved vectors are
        appended to them (encoded against their new centroid) and nothing else in those
        buckets is rewritten."""
        slots = self._take_live([b])
        if slots.size:
            others = np.delete(np.arange(self.buckets.n_lists), b)
            cents = self.centroids[others]
            targets = others[_kmeans.assign(self.store.vectors[slots], cents,
                                            _kmeans.squared_norms(cents))]
            self._append(targets, slots)
        self._drop(b)

    def finish(self) -> None:
        """Install the new centroids (fresh arrays: snapshots keep the old ones)."""
        old = self.index._centroids
        n = min(old.shape[0], self.centroids.shape[0])
        unchanged = np.zeros(self.centroids.shape[0], bool)
        unchanged[:n] = (old[:n] == self.centroids[:n]).all(axis=1)
        self.index._install_centroids(self.centroids, unchanged)
        self.index._fitted_shares = self.fitted

    # ------------------------------------------------------------------ helpers
    def _live(self, b: int) -> np.ndarray:
        """Slots of the live vectors of bucket b (its rows minus its tombstones, whose
        slots are marked in ``store.dead``)."""
        rows = self.buckets.slots[b][:int(self.buckets.sizes[b])].astype(np.int64)
        return rows[~self.store.dead.test(rows)] if self.buckets.dead[b] else rows

    def _take_live(self, buckets: list[int]) -> np.ndarray:
        """Slots of the live vectors of these buckets; their tombstones are released at
        once (the caller rewrites or drops every one of these buckets, so they need no
        purge)."""
        rows = np.concatenate([self.buckets.slots[b][:int(self.buckets.sizes[b])]
                               for b in buckets]).astype(np.int64)
        if not self.buckets.dead[buckets].any():
            return rows
        alive = ~self.store.dead.test(rows)
        self.store.forget(rows[~alive], self.index._batch)
        return rows[alive]

    def _nearest_buckets(self, point: np.ndarray, n: int) -> np.ndarray:
        d = _kmeans.squared_norms(self.centroids) - 2.0 * self.centroids @ point
        n = min(n, d.shape[0])
        nearest = np.argpartition(d, n - 1)[:n]
        return nearest[np.argsort(d[nearest], kind="stable")]

    def _reassign(self, group: np.ndarray) -> None:
        """Vectors of the buckets in ``group`` go to their nearest centroid within
        ``group`` after ``LOCAL_LLOYD`` local k-means steps; every bucket of the group is
        rewritten (its centroid moved, so all its codes change)."""
        slots = self._take_live(group.tolist())
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
        local = _kmeans.assign(x, cg, _kmeans.squared_norms(cg))
        codes, factors = _codes.encode(x - cg[local], self.index._projection, self.index._scale)
        order = np.argsort(local, kind="stable")
        bounds = np.searchsorted(local[order], np.arange(group.size + 1))
        for j, t in enumerate(group.tolist()):
            rows = order[bounds[j]:bounds[j + 1]]
            self.buckets.replace(t, codes[rows], factors[rows], slots[rows].astype(np.int32))
        self.store.slot_buckets[slots] = group[local]
        mean = len(self.store) / self.buckets.n_lists
        self.fitted[group] = np.bincount(local, minlength=group.size) / mean

    def _append(self, targets: np.ndarray, slots: np.ndarray) -> None:
        """Append the vectors in ``slots`` to buckets ``targets``, encoded against them.

        A receiver whose factor scales (binidx/_storage.py) are too small for its
        arrivals is rewritten instead, from exact factors: appending would re-quantise
        its old factor bytes, which then stray by up to a whole step.  About one
        receiver in eight on dev-text."""
        x = self.store.vectors[slots] - self.centroids[targets]
        codes, factors = _codes.encode(x, self.index._projection, self.index._scale)
        self.store.slot_buckets[slots] = targets
        order = np.argsort(targets, kind="stable")
        receivers, starts = np.unique(targets[order], return_index=True)
        top = np.maximum.reduceat(factors[order], starts, axis=0)
        grows = ((_storage.scale_for_max(top) > self.buckets.scales[receivers]).any(axis=1)
                 & (self.buckets.sizes[receivers] > 0))
        appended = ~np.isin(targets, receivers[grows])
        self.buckets.append(targets[appended], codes[appended], factors[appended],
                            slots[appended].astype(np.int32))
        for t in receivers[grows].tolist():
            members = np.concatenate([self._take_live([t]), slots[targets == t]])
            self._rewrite(t, members)

    def _rewrite(self, b: int, slots: np.ndarray) -> None:
        """Bucket b := exactly the vectors in ``slots``, encoded against centroid b."""
        codes, factors = _codes.encode(self.store.vectors[slots] - self.centroids[b],
                                       self.index._projection, self.index._scale)
        self.buckets.replace(b, codes, factors, slots.astype(np.int32))

    def _drop(self, b: int) -> None:
        """Delete bucket b, whose rows all moved or were released: the last bucket takes
        its number."""
        last = self.buckets.n_lists - 1
        self.buckets.sizes[b] = 0
        self.buckets.drop_bucket(b)
        if b != last:
            self.centroids[b] = self.centroids[last]
            self.fitted[b] = self.fitted[last]
            rows = self.buckets.slots[b][:int(self.buckets.sizes[b])]
            live = rows[~self.store.dead.test(rows)]
            self.store.slot_buckets[live] = b  # tombstones have no bucket
        self.centroids = self.centroids[:last].copy()
        self.fitted = self.fitted[:last].copy()


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
