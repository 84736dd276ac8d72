"""Storage of an index: inverted lists of codes, and slot-indexed float vectors.

* :class:`BucketStore` keeps one growable set of arrays per bucket (codes, factors, slots)
  and a table of their data pointers that the compiled search reads.  Arrays that a
  published snapshot may read are copied before they are changed in place (see
  ``binidx/_snapshot.py``); appends past a bucket's size need no copy.
* :class:`DeadBits` marks, one bit per slot, the removed vectors whose bucket rows are
  still there (tombstones, purged in bulk later); the search skips them.
* :class:`VectorStore` keeps the float32 vectors used for rerank and the external id of
  every slot.  A slot is an internal row number: ids are arbitrary int64 chosen by the
  user, so memory never grows with the largest id.
"""
from __future__ import annotations

import numpy as np

from ._kernels._idmap import IdMap

_MIN_CAPACITY = 16
_GROWTH = 1.5


BLOCK = 8  # codes per block; must match BLOCK in _kernels/simd_kernels.h


def grown_capacity(capacity: int, needed: int, minimum: int) -> int:
    """Capacity for ``needed`` rows when ``capacity`` is too small: geometric growth
    (amortised O(1) appends), except that a request larger than one growth step gets
    exactly what it asks for, so a bulk add leaves no spare capacity behind."""
    step = max(int(capacity * _GROWTH), minimum)
    return max(step, needed)


def n_blocks(size) -> np.ndarray:
    """Blocks needed for ``size`` codes (elementwise)."""
    return (np.asarray(size) + BLOCK - 1) // BLOCK


# Per-vector factors are stored as one byte each, in steps of a per-bucket scale
# (``factor_scale``): value = byte * scale, with the scale chosen so the bucket's largest
# factor is 255 steps.  Two bytes per vector instead of two float32.
FACTOR_DTYPE = np.uint8
FACTOR_MAX = 255
# A bucket whose rows outgrow its scale is re-quantised to this many times the scale
# needed (see BucketStore._fit_scales).
RESCALE_HEADROOM = 2.0


def scale_for_max(top: np.ndarray) -> np.ndarray:
    """The scale that maps a largest factor ``top`` to ``FACTOR_MAX`` (elementwise)."""
    return (np.asarray(top, np.float32) / np.float32(FACTOR_MAX)).astype(np.float32)


def factor_scale(factors: np.ndarray) -> np.ndarray:
    """The scales (2,) float32 that map the largest of each column of ``factors`` (n, 2)
    to ``FACTOR_MAX`` (0 for an empty or all-zero column)."""
    return scale_for_max(factors.max(axis=0) if factors.shape[0] else np.zeros(2, np.float32))


def quantize_factors(factors: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Factors (n, 2) as bytes in steps of ``scales`` (2,), or any shapes that broadcast:
    round to nearest, and never above ``FACTOR_MAX`` (the caller picks scales that fit,
    see :func:`factor_scale`); a zero scale gives zero bytes."""
    safe = np.where(scales > 0, scales, np.float32(1.0)).astype(np.float32)
    steps = np.rint(np.asarray(factors, np.float32) / safe)
    return np.clip(np.where(scales > 0, steps, 0.0), 0, FACTOR_MAX).astype(FACTOR_DTYPE)


def dequantize_factors(quantized: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The float32 factors (n, 2) that quantized bytes stand for."""
    return quantized.astype(np.float32) * scales.astype(np.float32)


def to_blocks(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lay out row-wise codes (n, n_words) and factors (n, 2) in blocks of 8 vectors:
    codes (blocks, n_words, 8), factors (blocks, 2, 8) of the factors' own dtype; the
    last block is zero-padded."""
    n, n_words = codes.shape
    nb = int(n_blocks(n))
    cb = np.zeros((nb * BLOCK, n_words), np.uint64)
    cb[:n] = codes
    fb = np.zeros((nb * BLOCK, 2), factors.dtype)
    fb[:n] = factors
    return (np.ascontiguousarray(cb.reshape(nb, BLOCK, n_words).transpose(0, 2, 1)),
            np.ascontiguousarray(fb.reshape(nb, BLOCK, 2).transpose(0, 2, 1)))


class BucketStore:
    """Inverted lists.  Bucket b holds ``sizes[b]`` vectors: codes (blocks, n_words, 8)
    uint64 and factors (blocks, 2, 8) uint8 in the blocked layout the scan kernel reads
    (vector i is block i // 8, lane i % 8), and slots (blocks * 8,) int32.  Factor j of
    a vector of bucket b is its byte times ``scales[b, j]``."""

    def __init__(self, n_lists: int, n_words: int):
        self.n_lists = n_lists
        self.n_words = n_words
        self.sizes = np.zeros(n_lists, dtype=np.int64)
        self.codes = [np.zeros((0, n_words, BLOCK), np.uint64) for _ in range(n_lists)]
        self.factors = [np.zeros((0, 2, BLOCK), FACTOR_DTYPE) for _ in range(n_lists)]
        self.slots = [np.zeros(0, np.int32) for _ in range(n_lists)]
        self.code_ptrs = np.zeros(n_lists, dtype=np.uintp)
        self.factor_ptrs = np.zeros(n_lists, dtype=np.uintp)
        self.slot_ptrs = np.zeros(n_lists, dtype=np.uintp)
        # Step of each bucket's factor bytes, (n_lists, 2); snapshots take a copy (view()).
        self.scales = np.zeros((n_lists, 2), np.float32)
        # Position of each slot inside its bucket: lets a removal find its rows directly.
        self.slot_pos = np.zeros(0, np.int32)
        # False while a bucket's arrays are views into loaded (maybe mapped) sections.
        self.owned = np.ones(n_lists, bool)
        # True for arrays allocated during the current write batch: no snapshot has seen
        # them, so they may be changed in place.
        self.fresh = np.zeros(n_lists, bool)
        # Rows of removed vectors still in each bucket (tombstones, see DeadBits).
        self.dead = np.zeros(n_lists, dtype=np.int64)
        # The last view(): reused while no table changes (a batch of removals only
        # adds tombstones, so its snapshot copies nothing).
        self._view: dict | None = None
        for b in range(n_lists):
            self._refresh_pointers(b)

    def live_sizes(self) -> np.ndarray:
        return self.sizes - self.dead

    def mark_dead(self, buckets: np.ndarray) -> None:
        """Count one tombstone in ``buckets[i]`` for each i."""
        self.dead += np.bincount(buckets, minlength=self.n_lists)

    def begin_batch(self) -> None:
        """Start a write batch: every array may now be read by the last snapshot."""
        self.fresh[:] = False

    def _own(self, b: int) -> None:
        """Make bucket b's arrays safe to change in place (copy-on-write)."""
        if not self.fresh[b]:
            self._resize(b, max(self.slots[b].shape[0], int(self.sizes[b])))

    def view(self) -> dict:
        """Private copies of the tables a search reads, and the arrays they point into."""
        if self._view is None:
            self._view = {
                "code_ptrs": self.code_ptrs.copy(), "factor_ptrs": self.factor_ptrs.copy(),
                "slot_ptrs": self.slot_ptrs.copy(), "sizes": self.sizes.copy(),
                "factor_scales": self.scales.copy(),
                "keepalive": (list(self.codes), list(self.factors), list(self.slots))}
        return self._view

    def _track(self, slots: np.ndarray, positions: np.ndarray) -> None:
        if slots.size and int(slots.max()) >= self.slot_pos.shape[0]:
            grown = np.zeros(max(int(slots.max()) + 1, int(self.slot_pos.shape[0] * _GROWTH)), np.int32)
            grown[:self.slot_pos.shape[0]] = self.slot_pos
            self.slot_pos = grown
        self.slot_pos[slots] = positions

    def _refresh_pointers(self, b: int) -> None:
        self._view = None
        self.code_ptrs[b] = self.codes[b].ctypes.data
        self.factor_ptrs[b] = self.factors[b].ctypes.data
        self.slot_ptrs[b] = self.slots[b].ctypes.data

    def _reserve(self, b: int, needed: int) -> None:
        capacity = self.slots[b].shape[0]
        if needed <= capacity and self.owned[b]:
            return
        self._resize(b, grown_capacity(capacity, needed, _MIN_CAPACITY))

    def reserve(self, labels: np.ndarray) -> None:
        """Make room for one more row in bucket ``labels[i]`` for each i, in one
        allocation per bucket that must grow (a bulk add then leaves no spare capacity)."""
        buckets, counts = np.unique(labels, return_counts=True)
        for b, needed in zip(buckets.tolist(), (self.sizes[buckets] + counts).tolist()):
            self._reserve(b, needed)

    def _fit_scales(self, b: int, factors: np.ndarray) -> None:
        """Make bucket b's scales cover ``factors`` (n, 2) float32 about to be written.

        An empty bucket takes the exact scales of the rows (a bulk add quantises every
        bucket optimally).  When a bucket that holds rows needs a larger scale, its
        bytes are re-quantised, in place after a copy-on-write, to twice the scale
        needed: rescaling is then rare (once per doubling of the largest factor) and the
        error of repeated re-quantisation stays within one step (half a step per
        rescale, each step at most half the next)."""
        need = factor_scale(factors)
        old = self.scales[b]
        if (need <= old).all():
            return
        size = int(self.sizes[b])
        headroom = np.float32(RESCALE_HEADROOM if size else 1.0)
        new = np.where(need > old, need * headroom, old).astype(np.float32)
        if size:
            self._own(b)
            blocks = self.factors[b][:int(n_blocks(size))]
            blocks[:] = quantize_factors(dequantize_factors(blocks, old[None, :, None]),
                                         new[None, :, None])
        self.scales[b] = new
        self._view = None

    def _write_rows(self, b: int, positions: np.ndarray, codes: np.ndarray,
                    factors: np.ndarray, slots: np.ndarray) -> None:
        """Write rows at ``positions`` of bucket b; ``factors`` (n, 2) are float32 and
        must fit the bucket's scales (:meth:`_fit_scales`)."""
        blk, lane = positions // BLOCK, positions % BLOCK
        self.codes[b][blk, :, lane] = codes
        q = quantize_factors(factors, self.scales[b])
        self.factors[b][blk, 0, lane] = q[:, 0]
        self.factors[b][blk, 1, lane] = q[:, 1]
        self.slots[b][positions] = slots
        self._track(slots, positions)

    def _read_rows(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of bucket b, row-wise: codes (n, n_words), factors (n, 2) float32 (the
        values their bytes stand for), slots (n,)."""
        return self._read_positions(b, np.arange(int(self.sizes[b])))

    def read_quantized(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows of bucket b as stored: codes (n, n_words), factor bytes (n, 2), slots (n,),
        and the bucket's scales (2,)."""
        positions = np.arange(int(self.sizes[b]))
        blk, lane = positions // BLOCK, positions % BLOCK
        factors = np.stack([self.factors[b][blk, 0, lane], self.factors[b][blk, 1, lane]], axis=1)
        return self.codes[b][blk, :, lane], factors, self.slots[b][positions], self.scales[b].copy()

    def append(self, labels: np.ndarray, codes: np.ndarray, factors: np.ndarray,
               slots: np.ndarray) -> None:
        """Append rows to the buckets named by ``labels``, keeping their order within a bucket."""
        self._view = None
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        buckets, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
        for b, start, count in zip(buckets.tolist(), starts.tolist(), counts.tolist()):
            rows = order[start:start + count]
            size = int(self.sizes[b])
            self._reserve(b, size + count)
            self._fit_scales(b, factors[rows])
            self._write_rows(b, np.arange(size, size + count), codes[rows], factors[rows], slots[rows])
            self.sizes[b] = size + count

    def remove(self, buckets: np.ndarray, slots: np.ndarray) -> None:
        """Remove the given slots, ``buckets[i]`` being the bucket holding ``slots[i]``.

        Swap-with-last in compiled code, O(1) per slot: the bucket's last row moves into
        the removed row's place.
        """
        from ._kernels import _update

        self._view = None
        for b in np.unique(buckets).tolist():
            self._own(b)
        _update.remove_slots(slots.astype(np.int32), buckets.astype(np.int32), self.slot_pos,
                             self.code_ptrs, self.factor_ptrs, self.slot_ptrs, self.sizes,
                             self.n_words)
        # Give memory back: a bucket below a quarter of its capacity is reallocated at
        # twice its size (the hysteresis keeps add/remove cycles from reallocating).
        touched = np.unique(buckets)
        capacity = np.array([self.slots[b].shape[0] for b in touched.tolist()])
        for b in touched[(self.sizes[touched] * 4 < capacity) & (capacity > 2 * _MIN_CAPACITY)].tolist():
            self._resize(b, max(2 * int(self.sizes[b]), _MIN_CAPACITY))

    def _resize(self, b: int, capacity: int) -> None:
        """Move bucket b into fresh arrays of the given capacity (>= its size)."""
        # Plain int arithmetic: this runs once per bucket a batch changes, and NumPy
        # scalar operations cost microseconds each.
        size = int(self.sizes[b])
        blocks, used = -(-capacity // BLOCK), -(-size // BLOCK)
        codes = np.zeros((blocks, self.n_words, BLOCK), np.uint64)
        factors = np.zeros((blocks, 2, BLOCK), FACTOR_DTYPE)
        slots = np.zeros(blocks * BLOCK, np.int32)
        codes[:used] = self.codes[b][:used]
        factors[:used] = self.factors[b][:used]
        slots[:size] = self.slots[b][:size]
        self.codes[b], self.factors[b], self.slots[b] = codes, factors, slots
        self.owned[b] = True
        self.fresh[b] = True
        self._refresh_pointers(b)

    def replace(self, b: int, codes: np.ndarray, factors: np.ndarray, slots: np.ndarray) -> None:
        """Make bucket b hold exactly these row-wise codes (n, n_words), factors (n, 2)
        float32 and slots (n,), in fresh arrays of that size, with scales fitted to them."""
        n = slots.shape[0]
        self.scales[b] = factor_scale(factors)
        # Exact size: a later append grows the bucket geometrically (see grown_capacity).
        self.codes[b], self.factors[b] = to_blocks(codes, quantize_factors(factors, self.scales[b]))
        self.slots[b] = np.zeros(int(n_blocks(n)) * BLOCK, np.int32)
        self.slots[b][:n] = slots
        self.sizes[b] = n
        self.dead[b] = 0
        self.owned[b] = True
        self.fresh[b] = True
        self._refresh_pointers(b)
        self._track(slots.astype(np.int32), np.arange(n, dtype=np.int32))

    def trim(self) -> None:
        """Reallocate every bucket holding spare capacity at its exact size."""
        used = n_blocks(self.sizes).tolist()
        for b, (codes, blocks) in enumerate(zip(self.codes, used)):
            if codes.shape[0] > blocks or self.slots[b].shape[0] > blocks * BLOCK:
                self._resize(b, int(self.sizes[b]))

    def add_bucket(self) -> int:
        """Append an empty bucket; return its number."""
        self.n_lists += 1
        self.sizes = np.append(self.sizes, 0)
        self.scales = np.concatenate([self.scales, np.zeros((1, 2), np.float32)])
        self.dead = np.append(self.dead, 0)
        self.owned = np.append(self.owned, True)
        self.fresh = np.append(self.fresh, True)
        for table in ("code_ptrs", "factor_ptrs", "slot_ptrs"):
            setattr(self, table, np.append(getattr(self, table), np.uintp(0)))
        self.codes.append(np.zeros((0, self.n_words, BLOCK), np.uint64))
        self.factors.append(np.zeros((0, 2, BLOCK), FACTOR_DTYPE))
        self.slots.append(np.zeros(0, np.int32))
        self._refresh_pointers(self.n_lists - 1)
        return self.n_lists - 1

    def drop_bucket(self, b: int) -> None:
        """Delete bucket b, which must be empty; the last bucket takes its number."""
        if self.sizes[b]:
            raise ValueError(f"bucket {b} still holds {int(self.sizes[b])} rows")
        self._view = None
        last = self.n_lists - 1
        for arrays in (self.codes, self.factors, self.slots):
            arrays[b] = arrays[last]
            arrays.pop()
        for table in ("sizes", "scales", "dead", "owned", "fresh", "code_ptrs", "factor_ptrs",
                      "slot_ptrs"):
            values = getattr(self, table)
            values[b] = values[last]
            setattr(self, table, values[:last].copy())
        self.n_lists = last

    def move_slots(self, old: np.ndarray, new: np.ndarray, buckets: np.ndarray) -> None:
        """The vectors in slots ``old`` now live in slots ``new`` (same buckets)."""
        from ._kernels import _update

        for b in np.unique(buckets).tolist():
            self._own(b)
        self._track(new, np.zeros(new.size, np.int32))  # make room in slot_pos
        _update.move_slots(old.astype(np.int32), new.astype(np.int32), buckets.astype(np.int32),
                           self.slot_pos, self.slot_ptrs)

    def _read_positions(self, b: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        blk, lane = positions // BLOCK, positions % BLOCK
        factors = np.stack([self.factors[b][blk, 0, lane], self.factors[b][blk, 1, lane]], axis=1)
        return (self.codes[b][blk, :, lane], dequantize_factors(factors, self.scales[b]),
                self.slots[b][positions])

    @classmethod
    def from_arrays(cls, sizes: np.ndarray, codes: np.ndarray, factors: np.ndarray,
                    list_slots: np.ndarray, scales: np.ndarray) -> BucketStore:
        """Buckets whose blocks are consecutive slices of blocked ``codes`` / ``factors``
        (bytes) and whose slots are consecutive slices of ``list_slots`` (bucket after
        bucket), with factor scales ``scales`` (n_lists, 2).

        The slices are views (zero-copy when the arrays are memory-mapped); a bucket is
        copied into arrays of its own the first time it changes."""
        store = cls(sizes.shape[0], codes.shape[1])
        block_offsets = np.concatenate([[0], np.cumsum(n_blocks(sizes))]).astype(np.int64)
        slot_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        for b in range(store.n_lists):
            store.codes[b] = codes[block_offsets[b]:block_offsets[b + 1]]
            store.factors[b] = factors[block_offsets[b]:block_offsets[b + 1]]
            store.slots[b] = list_slots[slot_offsets[b]:slot_offsets[b + 1]]
            store._refresh_pointers(b)
        store.sizes[:] = sizes
        store.scales = np.array(scales, dtype=np.float32).reshape(store.n_lists, 2)
        store.owned[:] = False
        if list_slots.size:
            positions = np.arange(list_slots.size) - np.repeat(slot_offsets[:-1], sizes)
            store._track(np.asarray(list_slots), positions.astype(np.int32))
        return store

    def export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Concatenate the buckets' used blocks: sizes, codes (blocks, n_words, 8),
        factor bytes (blocks, 2, 8), the slots of the live vectors in bucket order, and
        the factor scales (n_lists, 2).
        The buckets must hold no tombstones (the index purges them first)."""
        if self.dead.any():
            raise RuntimeError("export() needs buckets without tombstones; purge them first")
        sizes = self.sizes.copy()
        used = n_blocks(sizes)
        codes = np.concatenate([self.codes[b][:used[b]] for b in range(self.n_lists)])
        factors = np.concatenate([self.factors[b][:used[b]] for b in range(self.n_lists)])
        slots = np.concatenate([self.slots[b][:sizes[b]] for b in range(self.n_lists)])
        return sizes, codes, factors, slots, self.scales.copy()

    def memory_parts(self) -> dict[str, int]:
        """Bytes allocated, by part: ``codes``, ``factors`` and ``list_slots`` (the
        buckets' arrays, spare capacity included; views into a loaded file count their
        used part), ``tables`` (sizes and pointer tables: what a search reads besides
        the arrays), ``writer`` (what only updates read: the position of each slot in
        its bucket, per-bucket flags) and ``spare`` (the unused capacity inside the
        first three)."""
        sizes = self.sizes.tolist()
        codes = factors = slots = spare = 0
        for c, f, s, size in zip(self.codes, self.factors, self.slots, sizes):
            codes += c.nbytes
            factors += f.nbytes
            slots += s.nbytes
            used = (size + BLOCK - 1) // BLOCK
            if c.shape[0] > used:
                spare += (c.shape[0] - used) * (c.nbytes + f.nbytes) // c.shape[0]
            spare += max(0, s.nbytes - used * BLOCK * s.itemsize)
        tables = (self.sizes.nbytes + self.code_ptrs.nbytes + self.factor_ptrs.nbytes
                  + self.slot_ptrs.nbytes + self.scales.nbytes)
        writer = self.slot_pos.nbytes + self.owned.nbytes + self.fresh.nbytes + self.dead.nbytes
        return {"codes": int(codes), "factors": int(factors), "list_slots": int(slots),
                "tables": int(tables), "writer": int(writer), "spare": int(spare)}


class DeadBits:
    """One bit per slot: set while the slot holds a removed vector whose bucket row is
    still there (a tombstone).  Searches skip such rows; :meth:`Index._purge_tombstones`
    removes them in bulk.

    The bits live in pages of ``PAGE_SLOTS`` slots (8 kB) reached through a pointer
    table, like the buckets.  A page is copied before its first change in a write batch,
    so a published snapshot (which holds the pointer table and pages it was given) never
    sees a later batch's removals: a removal costs one bit, one page copy per touched
    page per batch, and no per-vector memory besides the bit.  Bits are cleared in place
    when their slot is recycled, which happens only once no running search reads a
    snapshot in which the slot's row still exists.
    """

    PAGE_SHIFT = 16
    PAGE_SLOTS = 1 << PAGE_SHIFT

    def __init__(self) -> None:
        self.pages: list[np.ndarray] = []
        self.ptrs = np.zeros(0, np.uintp)
        self.fresh = np.zeros(0, bool)
        self.count = 0  # bits set

    def cover(self, n_slots: int) -> None:
        """Have pages for slots 0 .. n_slots - 1."""
        n_pages = -(-n_slots // self.PAGE_SLOTS)
        if n_pages <= len(self.pages):
            return
        new = [np.zeros(self.PAGE_SLOTS // 8, np.uint8) for _ in range(n_pages - len(self.pages))]
        self.pages.extend(new)
        self.ptrs = np.concatenate([self.ptrs, [p.ctypes.data for p in new]]).astype(np.uintp)
        self.fresh = np.concatenate([self.fresh, np.ones(len(new), bool)])

    def begin_batch(self) -> None:
        self.fresh[:] = False

    def set(self, slots: np.ndarray) -> None:
        """Mark ``slots`` (none of them marked yet) removed."""
        from ._kernels import _update

        slots = _int64(slots)
        touched = np.zeros(len(self.pages), bool)
        touched[slots >> self.PAGE_SHIFT] = True
        for p in np.flatnonzero(touched & ~self.fresh).tolist():  # a few pages per batch
            self.pages[p] = self.pages[p].copy()
            self.ptrs[p] = self.pages[p].ctypes.data
            self.fresh[p] = True
        _update.set_bits(slots, self.ptrs, self.PAGE_SHIFT, 1)
        self.count += slots.size

    def clear(self, slots: np.ndarray) -> None:
        """Unmark ``slots``, in place: no snapshot a search can still take has their rows."""
        from ._kernels import _update

        slots = _int64(slots)
        _update.set_bits(slots, self.ptrs, self.PAGE_SHIFT, 0)
        self.count -= slots.size

    def test(self, slots: np.ndarray) -> np.ndarray:
        """Whether each of ``slots`` is marked, as a bool array."""
        from ._kernels import _update

        slots = _int64(slots)
        out = np.empty(slots.size, np.uint8)
        _update.test_bits(slots, self.ptrs, self.PAGE_SHIFT, out)
        return out.view(bool)

    def view(self) -> tuple:
        """``(pointer table or None, pages)`` for a snapshot (a few entries: one per 64k
        slots): None when no bit is set, so the search need not look."""
        return (self.ptrs.copy(), list(self.pages)) if self.count else (None, [])

    def nbytes(self) -> int:
        """Bytes of the pages and their pointer table (what a search reads)."""
        return int(sum(p.nbytes for p in self.pages) + self.ptrs.nbytes)


class VectorStore:
    """Float32 vectors for rerank and the external id of each slot.

    A slot is freed in two steps, because a search reading an older snapshot may still
    rerank it: :meth:`release` forgets the id at once (``lookup`` no longer finds it) but
    keeps the vector and id in place (its bucket row becomes a tombstone: :attr:`dead`);
    :meth:`recycle` later makes the slot reusable, once no reader of a snapshot from before
    the purge of its tombstone remains.  ``slot_buckets`` is -1 for every slot that holds
    no live vector, and is the writer's record of liveness.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.vectors = np.zeros((0, dim), np.float32)
        self.slot_ids = np.zeros(0, np.int64)
        self.slot_buckets = np.zeros(0, np.int32)
        self.dead = DeadBits()  # tombstones: removed vectors whose bucket rows remain
        self.high_water = 0
        self.n_live = 0
        self.free: list[int] = []
        # (write batch, slots) released but maybe still read by older snapshots.
        self.pending: list[tuple[int, np.ndarray]] = []
        # id -> slot, a compiled hash map (16 bytes per cell, ~20M removals/s).  Built
        # lazily: a loaded (possibly memory-mapped) index answers searches without it.
        self._id_map: IdMap | None = IdMap()

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, slot_ids: np.ndarray, slot_buckets: np.ndarray) -> VectorStore:
        """A store over ``vectors`` / ``slot_ids`` as given (e.g. memory-mapped): slot i
        holds ``vectors[i]`` with id ``slot_ids[i]``, or is free when that id is -1."""
        store = cls(vectors.shape[1])
        store.vectors, store.slot_ids, store.slot_buckets = vectors, slot_ids, slot_buckets
        store.dead.cover(vectors.shape[0])
        store.high_water = vectors.shape[0]
        free = np.flatnonzero(slot_ids < 0)
        store.free = free.tolist()
        store.n_live = store.high_water - free.size
        store._id_map = None
        return store

    @property
    def id_map(self) -> IdMap:
        if self._id_map is None:
            live = self.live_slots().astype(np.int64)
            self._id_map = IdMap.from_arrays(np.ascontiguousarray(self.slot_ids[live]), live)
        return self._id_map

    def __len__(self) -> int:
        return self.n_live

    def _live_mask(self) -> np.ndarray:
        hw = self.high_water
        return self.slot_buckets[:hw] >= 0

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self._live_mask())

    def live_slot_ids(self) -> np.ndarray:
        """``slot_ids[:high_water]`` with -1 for every slot not holding a live vector."""
        return np.where(self._live_mask(), self.slot_ids[:self.high_water], -1)

    def max_id(self) -> int:
        """Largest live id, -1 when empty."""
        live = self.slot_ids[:self.high_water][self._live_mask()]
        return int(live.max()) if live.size else -1

    def ids(self) -> np.ndarray:
        return self.id_map.keys()

    def contains(self, id_: int) -> bool:
        return id_ in self.id_map

    def reserve(self, n_more: int) -> None:
        """Make room for ``n_more`` new vectors now, in one allocation of the exact size
        (growing step by step would keep an old and a 1.5x larger copy alive together)."""
        self._grow(self.high_water + max(0, n_more - len(self.free)), exact=True)

    def make_room(self, n_more: int) -> None:
        """Grow now, once, for ``n_more`` new vectors (see ``grown_capacity``: a bulk add
        gets arrays of exactly the size it needs, in one reallocation)."""
        self._grow(self.high_water + max(0, n_more - len(self.free)))

    def _grow(self, needed: int, exact: bool = False) -> None:
        capacity = self.vectors.shape[0]
        if needed <= capacity:
            return
        self._reallocate(needed if exact else grown_capacity(capacity, needed, 1024))

    def _reallocate(self, capacity: int) -> None:
        """Move the first ``high_water`` slots into new arrays (older snapshots keep the
        old ones)."""
        hw = self.high_water
        vectors = np.empty((capacity, self.dim), np.float32)
        vectors[:hw] = self.vectors[:hw]
        slot_ids = np.full(capacity, -1, np.int64)
        slot_ids[:hw] = self.slot_ids[:hw]
        slot_buckets = np.full(capacity, -1, np.int32)
        slot_buckets[:hw] = self.slot_buckets[:hw]
        self.vectors, self.slot_ids, self.slot_buckets = vectors, slot_ids, slot_buckets
        self.dead.cover(capacity)

    def allocate(self, n: int) -> np.ndarray:
        """Return ``n`` free slots (reused ones first), growing the arrays if needed."""
        reused = self.free[-n:] if n <= len(self.free) else self.free[:]
        del self.free[len(self.free) - len(reused):]
        fresh = n - len(reused)
        self._grow(self.high_water + fresh)
        slots = np.concatenate([np.asarray(reused, np.int64),
                                np.arange(self.high_water, self.high_water + fresh, dtype=np.int64)])
        self.high_water += fresh
        return slots

    def store(self, slots: np.ndarray, vectors: np.ndarray, ids: np.ndarray, buckets: np.ndarray) -> None:
        id_map = self.id_map  # built (if lazy) before these slots count as live
        self.vectors[slots] = vectors
        self.slot_ids[slots] = ids
        self.slot_buckets[slots] = buckets
        id_map.insert(_int64(ids), _int64(slots))
        self.n_live += slots.shape[0]

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Slot of each id, -1 where the id is not in the index (negative ids never are)."""
        ids = _int64(ids)
        if ids.size and int(ids.min()) < 0:
            slots = np.full(ids.shape[0], -1, np.int64)
            valid = ids >= 0
            slots[valid] = self.id_map.lookup(np.ascontiguousarray(ids[valid]))
            return slots
        return self.id_map.lookup(ids)

    def release(self, slots: np.ndarray) -> None:
        """Remove the vectors in ``slots``: their ids are forgotten and the slots no
        longer count as live; vector and id stay for searches of older snapshots (whose
        bucket rows still name the slots) until :meth:`forget` and :meth:`recycle`."""
        self.id_map.remove(_int64(self.slot_ids[slots]))
        self.n_live -= slots.shape[0]
        self.slot_buckets[slots] = -1
        self.dead.set(slots)

    def forget(self, slots: np.ndarray, batch: int) -> None:
        """The tombstones of ``slots`` left their buckets in write batch ``batch``: the
        slots become reusable once no search reads a snapshot older than it."""
        self.pending.append((batch, np.array(slots, np.int64)))

    def recycle(self, oldest_read_batch: int) -> None:
        """Make reusable the slots released by batches no running search predates.

        Slots released by batch r are referenced only by snapshots older than r, so they
        are safe once every reader holds snapshot r or newer."""
        keep = []
        for batch, slots in self.pending:
            if batch <= oldest_read_batch:
                self.slot_ids[slots] = -1
                self.dead.clear(slots)
                self.free.extend(slots.tolist())
            else:
                keep.append((batch, slots))
        self.pending = keep

    def is_sparse(self) -> bool:
        """Fewer than half the slots hold a vector (and the arrays are worth shrinking)."""
        capacity = self.vectors.shape[0]
        return capacity > 4096 and 2 * self.n_live < capacity

    def compaction_plan(self) -> tuple[np.ndarray, np.ndarray] | None:
        """When :meth:`is_sparse`, the (old, new) slot pairs that move the highest live
        slots into the lowest free ones, else None."""
        if not self.is_sparse():
            return None
        live = self._live_mask()
        old = np.flatnonzero(live[self.n_live:]) + self.n_live
        new = np.flatnonzero(~live[:self.n_live])
        return old, new

    def compact(self, old: np.ndarray, new: np.ndarray) -> None:
        """Apply a compaction plan into new arrays sized to the live vectors (+25%).

        The old arrays are not written to: searches on older snapshots keep reading them,
        and every slot's pending release is settled by the move."""
        n = self.n_live
        vectors, slot_ids, slot_buckets = self.vectors, self.slot_ids, self.slot_buckets
        self.high_water = n
        self.dead = DeadBits()  # the buckets hold no tombstones (purged first)
        self._reallocate(max(int(n * 1.25), 1024))
        self.vectors[new] = vectors[old]
        self.slot_ids[new] = slot_ids[old]
        self.slot_buckets[new] = slot_buckets[old]
        if self._id_map is not None:
            self._id_map.update(_int64(slot_ids[old]), _int64(new))
        self.free = []
        self.pending = []

    def memory_parts(self) -> dict[str, int]:
        """Bytes allocated, by part: ``vectors`` (the float32 rerank vectors),
        ``slot_ids`` (the id of each slot, read for every reranked candidate),
        ``tombstones`` (:attr:`dead`, one bit per slot, read for admitted candidates),
        ``writer`` (the id map, the bucket of each slot and the free-slot lists: read by
        updates and lookups only) and ``spare`` (the unused capacity of slot_ids)."""
        id_map = self._id_map.nbytes if self._id_map is not None else 0
        # Free slots are Python ints in a list: 8 bytes per entry plus the int object.
        free = 36 * len(self.free) + sum(s.nbytes for _, s in self.pending)
        unused = self.slot_ids.shape[0] - self.high_water
        return {"vectors": int(self.vectors.nbytes), "slot_ids": int(self.slot_ids.nbytes),
                "tombstones": self.dead.nbytes(),
                "writer": int(self.slot_buckets.nbytes + id_map + free + self.dead.fresh.nbytes),
                "spare": int(unused * self.slot_ids.itemsize)}


def _int64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)
