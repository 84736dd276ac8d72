# cython: language_level=3
"""Compiled id -> slot hash map of binidx (private).

:class:`IdMap` maps external ids (int64 >= 0) to internal slots (int64 >= 0).  It
replaces a Python ``dict`` that costs ~100-150 bytes per id and a Python-level loop
per id on every delete.

Layout: one flat array of 16-byte cells ``(id + 1, slot)``; a stored 0 marks an empty
cell, so a fresh table needs no initialisation pass: small tables are ``calloc``'d,
tables of 4 MiB and more are mapped from the kernel (Linux: zero pages, given back to
the system on shrink, huge pages where allowed).

Open addressing with linear probing over a power-of-two capacity kept at most 70% full.
The home cell of an id is the top bits of a splitmix64 finaliser of ``id + 1``:
sequential or strided ids (multiples of the capacity) spread evenly, and the top bits
keep cells ordered by hash, so a resize writes the new table almost sequentially.

Deletion is backward-shift (no tombstones): the cells after the hole move back when the
hole lies on their probe path, so probe lengths depend only on the live ids and never
degrade under insert/delete churn.  The table shrinks to fit when under 1/8 full; with
growth at 70% full, a size must change 5.6-fold to cross both thresholds, so add/remove
cycles do not resize back and forth.

Bulk operations take 1-D C-contiguous int64 NumPy arrays, release the GIL, and
prefetch the home cells a few ids ahead, so that a table much larger than the caches
costs about one overlapped memory access per id.

Threads: any number of bulk reads (``lookup``, ``keys``, ``items``) may run at once;
a mutation (``insert``, ``remove``, ``update``) needs the map to itself.  The caller
(the index's write lock) guarantees this; a violation raises ``ConcurrencyError``
instead of touching freed memory.
"""
from libc.stdint cimport int64_t, uint64_t

import operator

import numpy as np

from binidx.errors import ConcurrencyError, InvalidDtypeError, InvalidInputError

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define BINIDX_PREFETCH_R(p) __builtin_prefetch((p), 0, 3)
    #define BINIDX_PREFETCH_W(p) __builtin_prefetch((p), 1, 3)
    #else
    #define BINIDX_PREFETCH_R(p) ((void)(p))
    #define BINIDX_PREFETCH_W(p) ((void)(p))
    #endif
    /* splitmix64's finaliser: a bijection whose every output bit depends on every
       input bit. */
    static inline uint64_t binidx_mix64(uint64_t x) {
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebULL;
        x ^= x >> 31;
        return x;
    }

    /* Tables of 4 MiB and more are mapped straight from the kernel on Linux: the pages
       come zeroed, munmap gives them back at once (malloc may keep freed memory), and
       transparent huge pages, when the system allows them on request, cut the TLB
       misses that random probes into a large table otherwise pay on nearly every id. */
    #define BINIDX_MAP_MIN_BYTES ((size_t)1 << 22)
    static void* binidx_table_alloc(size_t n_cells, size_t cell_bytes) {
    #if defined(__linux__) && defined(MAP_ANONYMOUS)
        size_t bytes = n_cells * cell_bytes;
        if (bytes >= BINIDX_MAP_MIN_BYTES) {
            void* p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
            if (p == MAP_FAILED) return NULL;
    #ifdef MADV_HUGEPAGE
            madvise(p, bytes, MADV_HUGEPAGE);
    #endif
            return p;
        }
    #endif
        return calloc(n_cells, cell_bytes);
    }
    static void binidx_table_free(void* p, size_t n_cells, size_t cell_bytes) {
        if (p == NULL) return;
    #if defined(__linux__) && defined(MAP_ANONYMOUS)
        if (n_cells * cell_bytes >= BINIDX_MAP_MIN_BYTES) {
            munmap(p, n_cells * cell_bytes);
            return;
        }
    #endif
        free(p);
    }
    """
    void* table_alloc "binidx_table_alloc"(size_t n_cells, size_t cell_bytes) noexcept nogil
    void table_free "binidx_table_free"(void* p, size_t n_cells, size_t cell_bytes) noexcept nogil
    void prefetch_r "BINIDX_PREFETCH_R"(const void* p) noexcept nogil
    void prefetch_w "BINIDX_PREFETCH_W"(const void* p) noexcept nogil
    uint64_t mix64 "binidx_mix64"(uint64_t x) noexcept nogil


cdef struct Cell:
    uint64_t key   # id + 1; 0 marks an empty cell
    int64_t val


cdef enum:
    GET_SLOT = 0
    GET_CELL = 1
    ERASE = 2

cdef enum:
    # Ids whose home cell is requested ahead of use: enough to cover a memory access
    # (~100 ns) with the ~5 ns of work per id.  A power of two (ring buffer index).
    AHEAD = 16
    MIN_BITS = 4     # 16 cells
    MAX_BITS = 56    # 2**56 cells of 16 bytes: far beyond any memory, and no overflow

cdef int64_t INT64_MAX = 0x7FFFFFFFFFFFFFFF


cdef inline int64_t _max_load(int bits) noexcept nogil:
    """Most ids a table of ``2**bits`` cells holds: floor(0.7 * 2**bits)."""
    cdef int64_t cap = (<int64_t> 1) << bits
    return cap // 10 * 7 + cap % 10 * 7 // 10


cdef int _bits_for(int64_t n) except -1:
    """Bits of the smallest capacity that holds ``n`` ids at most 70% full."""
    cdef int bits = MIN_BITS
    if n < 0 or n > _max_load(MAX_BITS):
        raise MemoryError(f"an IdMap cannot hold {n:,} ids")
    while _max_load(bits) < n:
        bits += 1
    return bits


cdef inline void _prefetch(const Cell* c, bint write) noexcept nogil:
    if write:
        prefetch_w(c)
    else:
        prefetch_r(c)


cdef int64_t _first_negative(const int64_t* a, int64_t n) noexcept nogil:
    cdef int64_t i
    for i in range(n):
        if a[i] < 0:
            return i
    return -1


cdef object _check_array(object a, str name):
    """``a`` if it is a 1-D C-contiguous int64 ndarray, else a clear error."""
    if not isinstance(a, np.ndarray) or a.dtype != np.int64:
        got = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else f"a {type(a).__name__}"
        raise InvalidDtypeError(
            f"{name} must be a NumPy array of dtype int64, got {got}; convert it with "
            f"np.ascontiguousarray({name}, dtype=np.int64)")
    if a.ndim != 1 or not a.flags.c_contiguous:
        raise InvalidInputError(
            f"{name} must be a 1-D C-contiguous array, got shape {a.shape}"
            f"{'' if a.flags.c_contiguous else ' (not contiguous)'}; convert it with "
            f"np.ascontiguousarray({name}, dtype=np.int64).ravel()")
    return a


cdef int _check_non_negative(const int64_t[::1] a, str name, str what) except -1:
    cdef int64_t bad = -1, n = a.shape[0]
    if n:
        with nogil:
            bad = _first_negative(&a[0], n)
    if bad >= 0:
        raise InvalidInputError(f"{name}[{bad}] is {a[bad]}, but {what} must be >= 0")
    return 0


cdef int _check_pairs(const int64_t[::1] ids, const int64_t[::1] slots) except -1:
    if ids.shape[0] != slots.shape[0]:
        raise InvalidInputError(
            f"ids has {ids.shape[0]:,} entries but slots has {slots.shape[0]:,}; "
            f"give one slot per id")
    _check_non_negative(ids, "ids", "ids")
    _check_non_negative(slots, "slots", "slots (-1 means absent)")
    return 0


cdef class IdMap:
    """Hash map from int64 ids (>= 0) to int64 slots (>= 0), with NumPy bulk operations.

    Parameters
    ----------
    capacity_hint : int, default 0
        Number of ids to make room for now, so that inserting that many ids does not
        resize the table.  The map still grows past it and shrinks below it.

    Notes
    -----
    Memory is 16 bytes per cell, with between 1.43 and 8 cells per id (2.9 when the
    map has just grown): 32 MiB for 1,000,000 ids.  Bulk methods take 1-D C-contiguous
    int64 arrays (``np.ascontiguousarray(a, dtype=np.int64)``) and raise
    ``InvalidDtypeError`` / ``InvalidInputError`` on anything else, or on negative ids.
    Mutations must not run concurrently with any other operation (see the module).

    Examples
    --------
    >>> import numpy as np
    >>> m = IdMap.from_arrays(np.array([10, 42], np.int64), np.array([0, 1], np.int64))
    >>> m.lookup(np.array([42, 7], np.int64))
    array([ 1, -1])
    >>> m.remove(np.array([10], np.int64))
    array([0])
    >>> len(m), 42 in m, m.get(10)
    (1, True, -1)
    """

    cdef Cell* _table
    cdef int64_t _size
    cdef int _bits
    cdef int _shift      # 64 - _bits: the home cell is the top _bits bits of the hash
    cdef uint64_t _mask
    # > 0: that many bulk reads run without the GIL; -1: a mutation runs; 0: idle.
    cdef int _busy

    def __cinit__(self, capacity_hint=0):
        hint = operator.index(capacity_hint)
        if hint < 0:
            raise InvalidInputError(f"capacity_hint must be >= 0, got {hint}")
        self._table = NULL
        self._size = 0
        self._busy = 0
        self._resize(_bits_for(hint) if hint <= INT64_MAX else MAX_BITS + 1)

    def __dealloc__(self):
        if self._table != NULL:
            table_free(self._table, (<size_t> 1) << self._bits, sizeof(Cell))

    # ------------------------------------------------------------------ core (no GIL)
    cdef inline uint64_t _home(self, uint64_t key) noexcept nogil:
        return mix64(key) >> self._shift

    cdef int64_t _find(self, uint64_t key) noexcept nogil:
        """Cell of ``key`` (an id + 1), or -1."""
        cdef uint64_t pos = self._home(key)
        cdef Cell* t = self._table
        while t[pos].key != 0:
            if t[pos].key == key:
                return <int64_t> pos
            pos = (pos + 1) & self._mask
        return -1

    cdef int64_t _insert_batch(self, const int64_t* ids, const int64_t* slots,
                               int64_t n) noexcept nogil:
        """Insert ids[:n]; stop at the first id already present (its index is returned,
        ids before it are in the map) or return -1.  The caller ensured the room."""
        cdef uint64_t ring[AHEAD]
        cdef uint64_t pos, key, h
        cdef Cell* t = self._table
        cdef int64_t i
        for i in range(min(n, <int64_t> AHEAD)):
            ring[i] = self._home(<uint64_t> ids[i] + 1)
            prefetch_w(&t[ring[i]])
        for i in range(n):
            pos = ring[i & (AHEAD - 1)]
            if i + AHEAD < n:
                h = self._home(<uint64_t> ids[i + AHEAD] + 1)
                ring[i & (AHEAD - 1)] = h
                prefetch_w(&t[h])
            key = <uint64_t> ids[i] + 1
            while t[pos].key != 0:
                if t[pos].key == key:
                    return i
                pos = (pos + 1) & self._mask
            t[pos].key = key
            t[pos].val = slots[i]
            self._size += 1
        return -1

    cdef int64_t _erase(self, uint64_t pos) noexcept nogil:
        """Empty cell ``pos`` (occupied) by backward shift; return its slot."""
        cdef Cell* t = self._table
        cdef uint64_t mask = self._mask, hole = pos, j = pos, home
        cdef int64_t val = t[pos].val
        while True:
            j = (j + 1) & mask
            if t[j].key == 0:
                break
            home = self._home(t[j].key)
            # The id in cell j may fill the hole when the hole lies on its probe path,
            # i.e. cyclically in [home, j): it is at least as far from j as the hole.
            if ((j - home) & mask) >= ((j - hole) & mask):
                t[hole] = t[j]
                hole = j
        t[hole].key = 0
        t[hole].val = 0
        self._size -= 1
        return val

    cdef void _probe_batch(self, const int64_t* ids, int64_t* out, int64_t n,
                           int mode) noexcept nogil:
        """For each of ids[:n], ``out[i]`` (``out`` may be NULL) gets, or -1 when absent:
        its slot (GET_SLOT), its cell (GET_CELL), or its slot as it is erased (ERASE)."""
        cdef uint64_t ring[AHEAD]
        cdef uint64_t pos, key, h
        cdef Cell* t = self._table
        cdef int64_t i, found
        for i in range(min(n, <int64_t> AHEAD)):
            ring[i] = self._home(<uint64_t> ids[i] + 1)
            _prefetch(&t[ring[i]], mode == ERASE)
        for i in range(n):
            pos = ring[i & (AHEAD - 1)]
            if i + AHEAD < n:
                h = self._home(<uint64_t> ids[i + AHEAD] + 1)
                ring[i & (AHEAD - 1)] = h
                _prefetch(&t[h], mode == ERASE)
            key = <uint64_t> ids[i] + 1
            found = -1
            while t[pos].key != 0:
                if t[pos].key == key:
                    if mode == GET_SLOT:
                        found = t[pos].val
                    elif mode == GET_CELL:
                        found = <int64_t> pos
                    else:
                        found = self._erase(pos)
                    break
                pos = (pos + 1) & self._mask
            if out != NULL:
                out[i] = found

    cdef int _resize(self, int bits) except -1:
        """Move every id into a new table of ``2**bits`` cells (must hold them all)."""
        if bits > MAX_BITS:
            raise MemoryError("an IdMap of this capacity does not fit in memory")
        if self._size > _max_load(bits):
            # Never reached by the methods above; a full table would make probes loop.
            raise RuntimeError(f"IdMap: {self._size} ids do not fit in 2**{bits} cells")
        cdef uint64_t cap = (<uint64_t> 1) << bits, old_cap = 0, i, pos, mask = cap - 1
        cdef int shift = 64 - bits
        cdef Cell* new = <Cell*> table_alloc(cap, sizeof(Cell))
        cdef Cell* old = self._table
        if new == NULL:
            raise MemoryError(f"cannot allocate an IdMap table of {cap * sizeof(Cell):,} bytes")
        if old != NULL:
            old_cap = (<uint64_t> 1) << self._bits
        with nogil:
            for i in range(old_cap):
                if old[i].key != 0:
                    pos = mix64(old[i].key) >> shift
                    while new[pos].key != 0:
                        pos = (pos + 1) & mask
                    new[pos] = old[i]
        self._table = new
        self._bits = bits
        self._shift = shift
        self._mask = mask
        if old != NULL:
            table_free(old, old_cap, sizeof(Cell))
        return 0

    cdef int _maybe_shrink(self) except -1:
        if self._bits > MIN_BITS and self._size * 8 < ((<int64_t> 1) << self._bits):
            self._resize(_bits_for(self._size))
        return 0

    # --------------------------------------------------------------- thread guard
    cdef int _begin_read(self) except -1:
        if self._busy < 0:
            raise ConcurrencyError(
                "the IdMap is being modified by another thread; hold the index's lock "
                "around every insert/remove/update")
        self._busy += 1
        return 0

    cdef int _begin_write(self) except -1:
        if self._busy != 0:
            raise ConcurrencyError(
                "the IdMap is in use by another thread; hold the index's lock around "
                "every insert/remove/update")
        self._busy = -1
        return 0

    cdef object _probe_all(self, object ids, int mode):
        """``lookup`` (GET_SLOT) or ``remove`` (ERASE) of a validated array of ids."""
        cdef const int64_t[::1] v = _check_array(ids, "ids")
        cdef int64_t n = v.shape[0]
        out = np.empty(n, np.int64)
        cdef int64_t[::1] o = out
        _check_non_negative(v, "ids", "ids")
        if mode == ERASE:
            self._begin_write()
        else:
            self._begin_read()
        try:
            if n:
                with nogil:
                    self._probe_batch(&v[0], &o[0], n, mode)
            if mode == ERASE:
                self._maybe_shrink()
        finally:
            self._busy = 0 if mode == ERASE else self._busy - 1
        return out

    # ------------------------------------------------------------------ public API
    @classmethod
    def from_arrays(cls, ids, slots):
        """Build a map from parallel arrays in one pass.

        Parameters
        ----------
        ids : ndarray of int64, shape (n,)
            Distinct ids, >= 0, 1-D C-contiguous.
        slots : ndarray of int64, shape (n,)
            The slot of each id, >= 0.

        Returns
        -------
        IdMap
            A map of exactly these ``n`` ids, sized for them (at most 70% full).

        Raises
        ------
        KeyError
            If an id appears twice.
        InvalidInputError, InvalidDtypeError
            On negative values, mismatched lengths, or arrays that are not 1-D int64.

        Examples
        --------
        >>> import numpy as np
        >>> m = IdMap.from_arrays(np.arange(5, dtype=np.int64), np.arange(5, dtype=np.int64))
        >>> len(m)
        5
        """
        _check_array(ids, "ids")
        m = cls(ids.shape[0])
        m.insert(ids, slots)
        return m

    def lookup(self, ids):
        """Slot of each id.

        Parameters
        ----------
        ids : ndarray of int64, shape (n,)
            Ids (>= 0), 1-D C-contiguous.

        Returns
        -------
        ndarray of int64, shape (n,)
            The slot of each id, -1 where the id is not in the map.

        Examples
        --------
        >>> import numpy as np
        >>> m = IdMap.from_arrays(np.array([3], np.int64), np.array([9], np.int64))
        >>> m.lookup(np.array([3, 4], np.int64))
        array([ 9, -1])
        """
        return self._probe_all(ids, GET_SLOT)

    def insert(self, ids, slots):
        """Add ids that are not in the map yet, with their slots.

        All or nothing: on any error the map keeps exactly the ids it had.

        Parameters
        ----------
        ids : ndarray of int64, shape (n,)
            New ids, >= 0, distinct, 1-D C-contiguous.
        slots : ndarray of int64, shape (n,)
            The slot of each id, >= 0.

        Raises
        ------
        KeyError
            If an id is already in the map, or appears twice in ``ids``; the message
            names it.
        InvalidInputError, InvalidDtypeError
            On negative values, mismatched lengths, or arrays that are not 1-D int64.

        Examples
        --------
        >>> import numpy as np
        >>> m = IdMap()
        >>> m.insert(np.array([5, 6], np.int64), np.array([0, 1], np.int64))
        >>> m.get(6)
        1
        """
        cdef const int64_t[::1] iv = _check_array(ids, "ids")
        cdef const int64_t[::1] sv = _check_array(slots, "slots")
        cdef int64_t n = iv.shape[0], bad = -1
        cdef int old_bits = self._bits
        _check_pairs(iv, sv)
        if n == 0:
            return
        self._begin_write()
        try:
            if self._size + n > _max_load(self._bits):
                self._resize(_bits_for(self._size + n))
            with nogil:
                bad = self._insert_batch(&iv[0], &sv[0], n)
                if bad >= 0:
                    # Undo: ids[:bad] are distinct and were all inserted by this call.
                    self._probe_batch(&iv[0], NULL, bad, ERASE)
            if bad >= 0:
                if self._bits != old_bits:
                    self._resize(old_bits)
                key = iv[bad]
                if self._find(<uint64_t> key + 1) >= 0:
                    raise KeyError(f"id {key} is already in the map (ids[{bad}]); "
                                   f"nothing was inserted")
                first = int(np.flatnonzero(ids[:bad] == key)[0])
                raise KeyError(f"id {key} appears twice in ids (at {first} and {bad}); "
                               f"nothing was inserted")
        finally:
            self._busy = 0

    def remove(self, ids):
        """Remove ids; ids not in the map are ignored.

        The table shrinks to fit when under 1/8 full afterwards.

        Parameters
        ----------
        ids : ndarray of int64, shape (n,)
            Ids (>= 0), 1-D C-contiguous.  An id given twice is removed once (its
            second occurrence reports -1).

        Returns
        -------
        ndarray of int64, shape (n,)
            The slot each id had, -1 where it was not in the map.

        Examples
        --------
        >>> import numpy as np
        >>> m = IdMap.from_arrays(np.array([1, 2], np.int64), np.array([7, 8], np.int64))
        >>> m.remove(np.array([2, 3], np.int64))
        array([ 8, -1])
        """
        return self._probe_all(ids, ERASE)

    def update(self, ids, slots):
        """Set a new slot for ids that are in the map (e.g. after slots were renumbered).

        All or nothing: if an id is absent, no slot changes.  An id given twice gets
        its last slot.

        Parameters
        ----------
        ids : ndarray of int64, shape (n,)
            Ids in the map, 1-D C-contiguous.
        slots : ndarray of int64, shape (n,)
            The new slot of each id, >= 0.

        Raises
        ------
        KeyError
            If an id is not in the map; the message names it.
        InvalidInputError, InvalidDtypeError
            On negative values, mismatched lengths, or arrays that are not 1-D int64.

        Examples
        --------
        >>> import numpy as np
        >>> m = IdMap.from_arrays(np.array([4], np.int64), np.array([0], np.int64))
        >>> m.update(np.array([4], np.int64), np.array([3], np.int64))
        >>> m.get(4)
        3
        """
        cdef const int64_t[::1] iv = _check_array(ids, "ids")
        cdef const int64_t[::1] sv = _check_array(slots, "slots")
        cdef int64_t n = iv.shape[0], bad = -1, i
        _check_pairs(iv, sv)
        if n == 0:
            return
        cells_arr = np.empty(n, np.int64)
        cdef int64_t[::1] cells = cells_arr
        cdef Cell* t
        self._begin_write()
        try:
            t = self._table
            with nogil:
                self._probe_batch(&iv[0], &cells[0], n, GET_CELL)
                bad = _first_negative(&cells[0], n)
                if bad < 0:
                    for i in range(n):
                        t[cells[i]].val = sv[i]
            if bad >= 0:
                raise KeyError(f"id {iv[bad]} is not in the map (ids[{bad}]); "
                               f"no slot was updated")
        finally:
            self._busy = 0

    def keys(self):
        """Every id in the map.

        Returns
        -------
        ndarray of int64, shape (len(self),)
            The ids, in no particular order (the order of :meth:`items`).
        """
        return self.items()[0]

    def items(self):
        """Every id with its slot.

        Returns
        -------
        ids : ndarray of int64, shape (len(self),)
            The ids, in no particular order.
        slots : ndarray of int64, shape (len(self),)
            The slot of each id.

        Examples
        --------
        >>> import numpy as np
        >>> m = IdMap.from_arrays(np.array([8], np.int64), np.array([2], np.int64))
        >>> m.items()
        (array([8]), array([2]))
        """
        cdef int64_t[::1] ids
        cdef int64_t[::1] slots
        cdef uint64_t i, cap
        cdef int64_t j = 0
        cdef Cell* t
        self._begin_read()
        try:
            ids_arr = np.empty(self._size, np.int64)
            slots_arr = np.empty(self._size, np.int64)
            ids, slots = ids_arr, slots_arr
            cap = (<uint64_t> 1) << self._bits
            t = self._table
            if self._size:
                with nogil:
                    for i in range(cap):
                        if t[i].key != 0:
                            ids[j] = <int64_t> (t[i].key - 1)
                            slots[j] = t[i].val
                            j += 1
        finally:
            self._busy -= 1
        return ids_arr, slots_arr

    cdef int _scalar_key(self, object key, uint64_t* out) except -1:
        """1 and the stored form of ``key`` in ``out`` if it could be in the map, else 0."""
        if self._busy < 0:
            raise ConcurrencyError(
                "the IdMap is being modified by another thread; hold the index's lock "
                "around every insert/remove/update")
        try:
            k = operator.index(key)
        except TypeError:
            return 0
        if k < 0 or k > INT64_MAX:
            return 0
        out[0] = <uint64_t> (<int64_t> k) + 1
        return 1

    def get(self, key, default=-1):
        """Slot of one id, or ``default`` when it is not in the map.

        Parameters
        ----------
        key : int
            The id.  Negative ids and non-integers are never in the map.
        default : object, default -1

        Returns
        -------
        int or ``default``

        Examples
        --------
        >>> import numpy as np
        >>> m = IdMap.from_arrays(np.array([1], np.int64), np.array([5], np.int64))
        >>> m.get(1), m.get(2), m.get(2, None)
        (5, -1, None)
        """
        cdef uint64_t k
        cdef int64_t pos
        if not self._scalar_key(key, &k):
            return default
        pos = self._find(k)
        return self._table[pos].val if pos >= 0 else default

    def __contains__(self, key):
        cdef uint64_t k
        return bool(self._scalar_key(key, &k)) and self._find(k) >= 0

    def __len__(self):
        return self._size

    @property
    def capacity(self):
        """Number of cells of the table (a power of two, at least 16)."""
        return (<int64_t> 1) << self._bits

    @property
    def nbytes(self):
        """Bytes allocated for the table (16 per cell)."""
        return ((<int64_t> 1) << self._bits) * <int64_t> sizeof(Cell)

    def __repr__(self):
        return f"IdMap({self._size:,} ids, capacity {self.capacity:,})"

    # ------------------------------------------------------------- test helpers
    def _home_of(self, key):
        """Home cell of id ``key`` at the current capacity (for tests)."""
        return self._home(<uint64_t> (<int64_t> key) + 1)

    def _check_invariants(self):
        """Raise AssertionError unless the table is consistent (for tests).

        Checks the id count, the load bound, and that every id sits on its probe path:
        no empty cell between its home and its cell.  Returns the longest distance of an
        id from its home cell.
        """
        cdef uint64_t i, pos, cap = (<uint64_t> 1) << self._bits
        cdef int64_t count = 0, longest = 0
        cdef Cell* t = self._table
        for i in range(cap):
            if t[i].key == 0:
                continue
            count += 1
            pos = self._home(t[i].key)
            while pos != i:
                if t[pos].key == 0:
                    raise AssertionError(f"id {t[i].key - 1} in cell {i} is cut off from "
                                         f"its home cell {self._home(t[i].key)}")
                pos = (pos + 1) & self._mask
            longest = max(longest, <int64_t> ((i - self._home(t[i].key)) & self._mask))
        if count != self._size:
            raise AssertionError(f"{count} ids in the table, {self._size} counted")
        if self._size > _max_load(self._bits):
            raise AssertionError(f"{self._size} ids over the load limit of {cap} cells")
        return longest
