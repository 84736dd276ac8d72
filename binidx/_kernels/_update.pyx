# cython: language_level=3
"""Compiled update kernels of binidx (private): O(1) removal by swap-with-last, and the
tombstone bitmap.

The inverted lists are reached through the same pointer tables the search reads; the
Python layer holds the write lock and first gives every touched bucket arrays of its own
(copy-on-write), so searches running meanwhile never see these writes.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t, uintptr_t

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
                slot_pos[moved] = <int32_t> p
            sizes[b] = last


def set_bits(const int64_t[::1] slots, const uintptr_t[::1] page_ptrs, int shift, int value):
    """Set (``value`` 1) or clear (0) bit ``s`` of a paged bitmap for each ``s`` in
    ``slots``: page ``s >> shift``, bit ``s`` mod the page size (DeadBits)."""
    cdef int64_t i, s, n = slots.shape[0], mask = (<int64_t> 1 << shift) - 1
    cdef uint8_t* page
    with nogil:
        for i in range(n):
            s = slots[i]
            page = <uint8_t*> page_ptrs[s >> shift]
            if value:
                page[(s & mask) >> 3] |= <uint8_t> (1 << (s & 7))
            else:
                page[(s & mask) >> 3] &= <uint8_t> ~(1 << (s & 7))


def test_bits(const int64_t[::1] slots, const uintptr_t[::1] page_ptrs, int shift,
              uint8_t[::1] out):
    """``out[i]`` = bit ``slots[i]`` of a paged bitmap (see set_bits)."""
    cdef int64_t i, s, n = slots.shape[0], mask = (<int64_t> 1 << shift) - 1
    with nogil:
        for i in range(n):
            s = slots[i]
            out[i] = ((<const uint8_t*> page_ptrs[s >> shift])[(s & mask) >> 3] >> (s & 7)) & 1


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
