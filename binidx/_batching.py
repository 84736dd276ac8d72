"""How the compiled search walks a batch of queries (private): one at a time, or in chunks
that share one pass over each bucket they probe.

A shared pass (``shared_chunk`` of ``binidx._kernels._search.search``) scans each bucket
once for all the queries of a chunk that probe it, while its codes are in L1/L2, instead
of once per query from L3 or memory.  What it saves is reading codes from memory rather
than from L3; its cost is the state of the chunk's queries (candidate buffers, rotated
queries), which no longer stays in L1.  So it pays only when the index's codes, factors
and slots do not stay in the last-level cache between queries: indexes larger than the
L3, or an L3 that other processes keep evicting.  Results are identical either way
(tests/test_batching.py); only speed differs.

Paired runs on the development machine (AMD EPYC, 2 cores, 1 MB L2 per core, 32 MB L3),
one query at a time against ``Index.search``'s chunks in the same process (CPU time,
medians of the paired ratios of 9-11 runs; benchmarks/micro/search_ab.py), with the
settings of the issue-8 benchmarks at recall@10 0.95:

=========================  ==========  ===========  ===============  ===================
index                      scanned MB  probe rate   quiet (load 0.6  session 3 (load
                                                    -1.9): 1 / 2     5.7-6.2): 1 / 2
                                                    threads          threads
=========================  ==========  ===========  ===============  ===================
sift-1m, 256-bit codes     38          48 / 2,048   1.05-1.06x /     -
                                                    1.00x
sift-1m                    21-22       48 / 2,048   0.99-1.02x /     1.04-1.10x / 1.01x
                                                    0.99x
dev-sift                   4.2-4.4     32 / 512     0.99x / 1.01x    0.95-0.98x / 0.94x
dev-text                   2.6-2.7     128 / 1,024  1.01x / 0.98x    1.06x / 1.10x
=========================  ==========  ===========  ===============  ===================

(Session 3's rows used 2,182, 1,061 and 588 lists.)  On a quiet machine an index that
fits the L3 gains nothing from a shared pass, whatever the chunk (sift-1m, chunks of
64-256: 0.98-1.03x); one larger than the L3 gains 5-6% with one thread.  The session-3
gains at 22 MB came from the load: other processes evicting the L3.  The rule therefore
shares passes only for indexes larger than the L3 (read from sysfs, 32 MB when it cannot
be read), the case where it measurably pays, and otherwise leaves the batch one query at
a time.  See the search section of docs/design.md.
"""
from __future__ import annotations

import functools
import glob

# The last-level cache assumed when sysfs does not tell (non-Linux systems): the L3 of the
# development machine, a common size on servers.
FALLBACK_CACHE_BYTES = 32 << 20
# A chunk must probe each of its buckets this many times on average to pay.
SHARED_MIN_VISITS = 2.0
# Chunk size aimed at, in expected visits per probed bucket, and bounds on it: the
# state of a chunk's queries grows with it (~6 kB each at n_rerank 160).
SHARED_TARGET_VISITS = 5.0
SHARED_MIN_CHUNK = 32
SHARED_MAX_CHUNK = 256


def _parse_size(text: str) -> int:
    """Bytes of a sysfs cache size such as ``32768K`` (0 when it is not one)."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    return int(digits) * scale if digits.isdigit() else 0


@functools.cache
def last_level_cache_bytes() -> int:
    """Size of the largest cache of CPU 0 (its L3 on current x86 servers), from sysfs.

    Returns
    -------
    int
        Bytes; ``FALLBACK_CACHE_BYTES`` when sysfs is missing or unreadable.
    """
    best = 0
    for folder in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(f"{folder}/type") as fh:
                if fh.read().strip() == "Instruction":
                    continue
            with open(f"{folder}/size") as fh:
                best = max(best, _parse_size(fh.read()))
        except OSError:
            continue
    return best or FALLBACK_CACHE_BYTES


def shared_chunk(n_queries: int, n_threads: int, n_probe: int, n_lists: int, n_rerank: int,
                 n_bits: int, scanned_bytes: int, cache_bytes: int | None = None) -> int:
    """Queries per shared pass for one batch, or 0 to search them one at a time.

    Parameters
    ----------
    n_queries : int
        Queries in the batch.
    n_threads : int
        Threads searching it; each takes whole chunks.
    n_probe : int
        Buckets probed per query.
    n_lists : int
        Buckets in the index.
    n_rerank, n_bits : int
        Candidates reranked per query and code bits, which size a chunk's state.  Not used
        since the quiet-machine runs: with the index beyond the L3, chunks of ~200 queries
        (~1 MB of state) still gained 5-6%.
    scanned_bytes : int
        Bytes of codes, factors and slots in the index.
    cache_bytes : int, optional
        The last-level cache; default: this machine's (``last_level_cache_bytes``).

    Returns
    -------
    int
        The chunk size (> 0) when a shared pass is expected to be faster, else 0.

    Examples
    --------
    >>> shared_chunk(2000, 1, 48, 2048, 120, 256, 38 << 20, 32 << 20)  # sift-1m, 256 bits
    200
    >>> shared_chunk(2000, 1, 48, 2048, 120, 128, 21 << 20, 32 << 20)  # fits the L3
    0
    """
    if cache_bytes is None:
        cache_bytes = last_level_cache_bytes()
    if scanned_bytes <= cache_bytes or n_lists <= 0:
        return 0
    per_thread = -(-n_queries // max(n_threads, 1))
    probe_rate = min(n_probe, n_lists) / n_lists  # of the buckets, per query
    chunk = min(SHARED_MAX_CHUNK, per_thread, max(SHARED_MIN_CHUNK,
                                                  round(SHARED_TARGET_VISITS / probe_rate)))
    # Equal chunks, the same number for each thread: 2,000 queries in chunks of 227 would
    # leave one of 2 threads a fifth chunk to run alone.
    chunks_per_thread = -(-per_thread // chunk)
    chunk = -(-per_thread // chunks_per_thread)
    if chunk * probe_rate < SHARED_MIN_VISITS:
        return 0
    return int(chunk)
