"""Filtered search: allow-lists and label sets resolved to slots, and the choice of strategy.

Strategy (documented in docs/design.md, "Filtered search"): with m matching vectors out of
n, a filtered IVF search must visit about n_probe / (m / n) buckets to see as many
matching candidates as an unfiltered one.  Its cost is roughly (codes scanned) x (bytes
per code); an exact scan of the m matching vectors costs m x dim x 4 bytes of floats.
The cheaper one runs.  Either way every result is reranked with exact distances, and a
query that the IVF path leaves with fewer than k results while k matches exist is redone
exactly, so k results always come back when k matching vectors exist.
"""
from __future__ import annotations

import math

import numpy as np

from ._labels import as_label_set
from ._validation import as_ids
from .errors import InvalidInputError


class CompiledFilter:
    """A reusable filter for :meth:`binidx.Index.search` (``allowed_ids=``).

    Made by :meth:`binidx.Index.compile_filter`.  It resolves the allowed ids and labels
    to the index's internal slots once and reuses that until the index changes (it then
    resolves again on the next search), so the same allow-list can serve many searches
    cheaply.
    """

    def __init__(self, index, allowed_ids=None, labels=None):
        if allowed_ids is None and labels is None:
            raise InvalidInputError("a filter needs allowed_ids, labels or both")
        self._index = index
        self._ids = None
        if allowed_ids is not None:
            arr = np.asarray(allowed_ids)
            if arr.ndim != 1:
                arr = arr.reshape(-1) if arr.ndim == 0 else arr
            self._ids = np.unique(as_ids(arr, arr.size, "allowed_ids"))
            if self._ids.size == 0:
                raise InvalidInputError(
                    "allowed_ids is empty: no vector could match; pass at least one id, "
                    "or search without allowed_ids"
                )
        self._labels = None if labels is None else as_label_set(labels)
        self._version = -1
        self._slots = np.zeros(0, np.int32)
        self._mask = None

    def _resolve(self) -> np.ndarray:
        """Matching slots (sorted int32), recomputed when the index has changed."""
        index = self._index
        if self._version != index._version:
            slots = None
            if self._ids is not None:
                found = index._store.lookup(self._ids)
                slots = np.sort(found[found >= 0]).astype(np.int32)
            if self._labels is not None:
                with_labels = index._labels.slots_with(self._labels)
                slots = with_labels if slots is None else np.intersect1d(slots, with_labels,
                                                                         assume_unique=True)
            self._slots, self._mask, self._version = slots, None, index._version
        return self._slots

    def _byte_mask(self, n_slots: int) -> np.ndarray:
        if self._mask is None or self._mask.shape[0] < n_slots:
            mask = np.zeros(n_slots, np.uint8)
            mask[self._slots] = 1
            self._mask = mask
        return self._mask

    def __len__(self) -> int:
        """Number of vectors of the index that pass the filter now."""
        with self._index._write_mutex:
            return int(self._resolve().size)


def plan(n_live: int, n_match: int, n_lists: int, n_probe: int, n_rerank: int,
         n_words: int, dim: int) -> tuple[str, int]:
    """Return ("exact", 0) or ("ivf", n_probe_to_use) for a filter matching n_match vectors."""
    selectivity = n_match / max(n_live, 1)
    probes = min(n_lists, math.ceil(n_probe / max(selectivity, 1e-12)))
    scanned = probes * n_live / n_lists
    ivf_cost = scanned * n_words * 8 + n_rerank * dim * 4
    exact_cost = n_match * dim * 4
    return ("exact", 0) if exact_cost <= ivf_cost else ("ivf", probes)
