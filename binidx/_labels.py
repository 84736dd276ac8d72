"""Per-vector integer labels (category, shop, tenant) and their posting lists.

``slot_labels[slot]`` is the label of the vector in that slot (-1: none, or a free slot).
A posting list per label holds the slots carrying it, so a selective filter finds its
vectors without looking at the rest of the index.  Lists are updated in place: append on
insert, compaction of the touched lists on removal.
"""
from __future__ import annotations

import numpy as np

from .errors import InvalidDtypeError, InvalidInputError

NO_LABEL = -1


def as_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    """Validate per-vector labels: n integers >= 0, as int64."""
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind not in "iu":
        raise InvalidDtypeError(
            f"{name} must be integers (one int64 label per vector), got dtype {arr.dtype}; "
            f"map categories to integers first"
        )
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidInputError(f"{name} must have one label per vector: shape ({n},), got {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or (arr.dtype == np.uint64 and int(arr.max()) > 2**63 - 1)):
        raise InvalidInputError(f"{name} must be integers >= 0, got {int(arr.min())}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_label_set(labels) -> np.ndarray:
    """Validate the ``labels=`` argument of a search: a non-empty set of integers."""
    arr = np.asarray(list(labels) if isinstance(labels, (set, frozenset)) else labels)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInputError("labels must be a non-empty list of integer labels to search within")
    if arr.dtype.kind not in "iu":
        raise InvalidDtypeError(f"labels must be integers, got dtype {arr.dtype} ({labels!r:.60})")
    return np.unique(arr.astype(np.int64))


class LabelStore:
    """The label of each slot and, per label, the list of its slots.

    The slot-indexed arrays are allocated when the first label is given: an index that
    never uses labels pays nothing for them (they cost 12 bytes per slot).
    """

    def __init__(self) -> None:
        self.slot_labels = np.full(0, NO_LABEL, np.int64)
        self.slot_pos = np.zeros(0, np.int32)
        self.lists: dict[int, np.ndarray] = {}
        self.sizes: dict[int, int] = {}
        self.used = False  # no label was ever given: filtering by label finds nothing
        self.capacity = 0  # slots the arrays must cover once they exist

    @classmethod
    def from_array(cls, slot_labels: np.ndarray) -> LabelStore:
        store = cls()
        store.capacity = slot_labels.shape[0]
        labelled = np.flatnonzero(np.asarray(slot_labels) >= 0)
        if labelled.size:
            store.used = True
            store.slot_labels = np.array(slot_labels, dtype=np.int64)
            store.slot_pos = np.zeros(store.capacity, np.int32)
            store._append(labelled, store.slot_labels[labelled])
        return store

    def grow(self, capacity: int) -> None:
        self.capacity = max(self.capacity, capacity)
        if self.used and capacity > self.slot_labels.shape[0]:
            old = self.slot_labels.shape[0]
            labels = np.full(capacity, NO_LABEL, np.int64)
            labels[:old] = self.slot_labels
            pos = np.zeros(capacity, np.int32)
            pos[:old] = self.slot_pos
            self.slot_labels, self.slot_pos = labels, pos

    def assign(self, slots: np.ndarray, labels: np.ndarray | None) -> None:
        """Give newly filled slots their labels (None: unlabelled)."""
        if labels is None:
            if self.used:
                self.slot_labels[slots] = NO_LABEL
            return
        if not self.used:
            self.used = True
            self.grow(self.capacity)
        self.slot_labels[slots] = labels
        self._append(slots, labels)

    def _append(self, slots: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(labels, kind="stable")
        uniq, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        for label, start, count in zip(uniq.tolist(), starts.tolist(), counts.tolist()):
            new = slots[order[start:start + count]].astype(np.int32)
            size = self.sizes.get(label, 0)
            lst = self.lists.get(label)
            if lst is None or lst.shape[0] < size + count:
                grown = np.empty(max(size + count, 2 * size, 16), np.int32)
                if lst is not None:
                    grown[:size] = lst[:size]
                self.lists[label] = lst = grown
            lst[size:size + count] = new
            self.slot_pos[new] = np.arange(size, size + count, dtype=np.int32)
            self.sizes[label] = size + count

    def release(self, slots: np.ndarray) -> None:
        """Forget the labels of slots being freed."""
        if not self.used:
            return
        labels = self.slot_labels[slots]
        labelled = labels >= 0
        for label in np.unique(labels[labelled]).tolist():
            size = self.sizes[label]
            lst = self.lists[label]
            gone = np.zeros(size, bool)
            gone[self.slot_pos[slots[labels == label]]] = True
            kept = lst[:size][~gone]
            lst[:kept.size] = kept
            self.slot_pos[kept] = np.arange(kept.size, dtype=np.int32)
            if kept.size:
                self.sizes[label] = kept.size
            else:
                del self.sizes[label], self.lists[label]
        self.slot_labels[slots] = NO_LABEL

    def nbytes(self) -> int:
        return int(self.slot_labels.nbytes + self.slot_pos.nbytes
                   + sum(lst.nbytes for lst in self.lists.values()))

    def slots_with(self, labels: np.ndarray) -> np.ndarray:
        """Slots carrying any of ``labels`` (int32, sorted)."""
        parts = [self.lists[lb][:self.sizes[lb]] for lb in labels.tolist() if lb in self.sizes]
        if not parts:
            return np.zeros(0, np.int32)
        return np.sort(np.concatenate(parts))
