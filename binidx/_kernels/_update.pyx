# cython: language_level=3
"""Compiled update kernels of binidx (private): tombstones, and O(1) removal by
swap-with-last.

The inverted lists are reached through the same pointer tables the search reads; the
Python layer holds the write lock and first gives every touched bucket arrays of its own
(copy-on-write), so searches running meanwhile never see these writes.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t, uintptr_t

cimport numpy as cnp

cnp.import_array()

DEF BLOCK = 8


def remove_slots(const int32_t[::1] slots, const int32_t[::1] buckets, int32_t[::1] slot_pos,
                 const uintptr_t[::1] code_ptrs, const uintptr_t[::1] factor_ptrs,
                 const uintptr_t[::1] slot_ptrs, int64_t[::1] sizes, int n_words):
    """Remove each ``slots[i]`` from bucket ``buckets[i]``: the bucket's last row moves
    into its place."""
    cdef int64_t i, n = slots.shape[0], p, last
    cdef int32_t s, b, moved
    cdef int w
    cdef uint64_t* codes
    cdef uint8_t* factors
    cdef int32_t* bslots
    with nogil:
        for i in range(n):
            s = slots[i]
            b = buckets[i]
            p = slot_pos[s]
            last = sizes[b] - 1
            codes = <uint64_t*> code_ptrs[b]
            factors = <uint8_t*> factor_ptrs[b]
            bslots = <int32_t*> slot_ptrs[b]
            if p != last:
                for w in range(n_words):
                    codes[(p // BLOCK) * n_words * BLOCK + w * BLOCK + p % BLOCK] = \
                        codes[(last // BLOCK) * n_words * BLOCK + w * BLOCK + last % BLOCK]
                factors[(p // BLOCK) * 2 * BLOCK + p % BLOCK] = \
                    factors[(last // BLOCK) * 2 * BLOCK + last % BLOCK]
                factors[(p // BLOCK) * 2 * BLOCK + BLOCK + p % BLOCK] = \
                    factors[(last // BLOCK) * 2 * BLOCK + BLOCK + last % BLOCK]
                moved = bslots[last]
                bslots[p] = moved
                # The moved row may be a tombstone (~slot): its slot moves just the same.
                slot_pos[moved if moved >= 0 else ~moved] = <int32_t> p
            sizes[b] = last


def copy_slot_arrays(list slots, const int64_t[::1] buckets, uintptr_t[::1] slot_ptrs):
    """Give each bucket in ``buckets`` a copy of its slots array of its own: ``slots[b]``
    (a list of int32 arrays, updated in place) and ``slot_ptrs[b]`` then name the copy.

    The copy-on-write of a batch of removals (published snapshots keep the old arrays);
    done here because it touches hundreds of buckets per call, at ~0.2 us each instead
    of the ~2 us of a Python loop."""
    cdef Py_ssize_t i
    cdef cnp.ndarray copy
    for i in range(buckets.shape[0]):
        copy = cnp.PyArray_NewCopy(<cnp.ndarray> slots[buckets[i]], cnp.NPY_CORDER)
        slots[buckets[i]] = copy
        slot_ptrs[buckets[i]] = <uintptr_t> cnp.PyArray_DATA(copy)


def tombstone_slots(const int32_t[::1] slots, const int32_t[::1] buckets,
                    const int32_t[::1] slot_pos, const uintptr_t[::1] slot_ptrs):
    """Mark the row of each ``slots[i]`` in bucket ``buckets[i]`` removed: it holds
    ``~slots[i]`` (negative) from now on, which searches skip."""
    cdef int64_t i, n = slots.shape[0]
    with nogil:
        for i in range(n):
            (<int32_t*> slot_ptrs[buckets[i]])[slot_pos[slots[i]]] = ~slots[i]


def move_slots(const int32_t[::1] old, const int32_t[::1] new, const int32_t[::1] buckets,
               int32_t[::1] slot_pos, const uintptr_t[::1] slot_ptrs):
    """Renumber slots in the inverted lists: the row of ``old[i]`` (in bucket
    ``buckets[i]``) now refers to slot ``new[i]``."""
    cdef int64_t i, n = old.shape[0]
    cdef int32_t p
    with nogil:
        for i in range(n):
            p = slot_pos[old[i]]
            (<int32_t*> slot_ptrs[buckets[i]])[p] = new[i]
            slot_pos[new[i]] = p
