"""Consistent views for searches that run while the index is being written.

A write batch (one ``add`` / ``upsert`` / ``remove`` call, with the rebalancing it
triggers) never changes memory that a published :class:`Snapshot` can read:

* inverted lists are copied before an in-place change (copy-on-write per touched bucket,
  once per batch); appends write past the published size, which no reader looks at;
* centroid arrays are replaced, never edited;
* a freed float-vector slot keeps its vector and id until no reader of an older snapshot
  remains (:class:`ReaderRegistry` tells the writer which epochs are still read).

At the end of a batch the writer publishes a new snapshot: one attribute assignment, so a
search sees the state before or after each batch, never a mixture.
"""
from __future__ import annotations

import threading


class Snapshot:
    """Everything the compiled search reads, frozen at the end of one write batch.

    The pointer tables and sizes are private copies; ``keepalive`` holds the bucket
    arrays the pointers refer to, so they outlive any writer replacing them.
    """

    __slots__ = (
        "centroid_norms",
        "centroids_rot",
        "centroids_t",
        "code_ptrs",
        "dead_keepalive",
        "dead_pages",
        "epoch",
        "factor_ptrs",
        "factor_scales",
        "keepalive",
        "n_lists",
        "n_live",
        "projection_t",
        "sizes",
        "slot_ids",
        "slot_ptrs",
        "vectors",
    )

    def __init__(self, epoch: int, **fields) -> None:
        self.epoch = epoch
        for name, value in fields.items():
            setattr(self, name, value)


class ReaderRegistry:
    """The published snapshot, and how many searches read each epoch.

    Entering takes the current snapshot and counts it under one small lock, so a writer
    asking for :meth:`oldest_read_epoch` never misses a reader that has just started.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers: dict[int, int] = {}
        self.current: Snapshot | None = None

    def enter(self) -> Snapshot:
        with self._lock:
            snap = self.current
            self._readers[snap.epoch] = self._readers.get(snap.epoch, 0) + 1
        return snap

    def leave(self, snap: Snapshot) -> None:
        with self._lock:
            left = self._readers[snap.epoch] - 1
            if left:
                self._readers[snap.epoch] = left
            else:
                del self._readers[snap.epoch]

    def publish(self, snap: Snapshot) -> None:
        with self._lock:
            self.current = snap

    def oldest_read_epoch(self) -> int:
        """The oldest epoch a running or future search can read: memory that only
        snapshots older than this referenced may be reused."""
        with self._lock:
            current = self.current.epoch if self.current is not None else 0
            return min(self._readers, default=current)
