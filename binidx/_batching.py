"""How the compiled search walks a batch of queries (private): one at a time, or in chunks
that share one pass over each bucket they probe.

A shared pass (``shared_chunk`` of ``binidx._kernels._search.search``) scans each bucket
once for all the queries of a chunk that probe it, while its codes are in L1/L2, instead
of once per query from L3 or memory.  It pays when the index's codes do not stay in the
core's L2 and the chunk probes each bucket several times; its cost is the state of the
chunk's queries (candidate buffers, rotated queries), which no longer stays in L1.
Results are identical either way (tests/test_batching.py); only speed differs.

The thresholds come from paired runs on the development machine (AMD EPYC, 2 cores,
1 MB L2 per core, 32 MB L3, shared with other jobs: load 5.7-6.2), one query at a time
against shared chunks in the same process (CPU time, medians of the paired ratios of 5-9
runs, one-byte factors; benchmarks/micro/search_ab.py):

============  ==========  ===========  ============================  ==================
index         scanned MB  probe rate   1 thread                      2 threads (auto)
============  ==========  ===========  ============================  ==================
sift-1m       22          48 / 2,182   64: 1.04x, 128: 1.06x,        1.01x
                                       227: 1.10x, 512: 1.10x
dev-sift      4.4         32 / 1,061   32-166: 0.95-0.98x            0.94x
dev-text      2.7         128 / 588    32 (auto): 1.06x              1.10x
============  ==========  ===========  ============================  ==================

With two float32 factors per vector (28, 5.6 and 3.0 MB) and a heavier load the gains were
larger (sift-1m 1.12x, dev-sift 1.03-1.14x): what a shared pass saves is reading codes
from L3 or memory instead of L1/L2, so it gains with indexes larger than the caches, or
caches that other processes keep evicting.  dev-sift's chunks need ~166 queries to visit
a bucket 5 times, ~0.9 MB of candidate buffers that no longer stay in L2.  See the search
section of docs/design.md.
"""
from __future__ import annotations

# Below this many bytes of scanned data (codes, factors, slots) the index stays in the
# core's L2 (1 MB here) between queries and a shared pass only adds its bookkeeping.
SHARED_MIN_BYTES = 2 << 20
# From this many bytes on (a quarter of the 32 MB L3 here) the codes of a query's buckets
# are rarely still cached from the previous query: a shared pass pays even when the
# chunk's state spills L2 (sift-1m, 22 MB: 1.06-1.10x).  Between the two it pays only
# when the chunk's state stays small (dev-text, 2.7 MB, 32 queries, 150 kB of state:
# 1.06-1.10x; dev-sift, 4.4 MB, 166 queries, 0.9 MB of state: 0.95-0.98x).
SHARED_LARGE_BYTES = 8 << 20
SHARED_SMALL_STATE = 256 << 10
# A chunk must probe each of its buckets this many times on average to pay.
SHARED_MIN_VISITS = 2.0
# Chunk size aimed at, in expected visits per probed bucket, and bounds on it: the
# state of a chunk's queries grows with it (~6 kB each at n_rerank 160).
SHARED_TARGET_VISITS = 5.0
SHARED_MIN_CHUNK = 32
SHARED_MAX_CHUNK = 256


def query_state_bytes(n_probe: int, n_rerank: int, n_bits: int) -> int:
    """Bytes a query of a shared pass keeps between its scans: its candidate buffer
    (8 bytes an entry, ``4 n_rerank`` entries and at least 256), its rotation, its probes
    and their coarse keys (``search_impl.h``, ``QueryState``)."""
    return 8 * max(4 * n_rerank, 256) + 4 * n_bits + 8 * n_probe


def shared_chunk(n_queries: int, n_threads: int, n_probe: int, n_lists: int, n_rerank: int,
                 n_bits: int, scanned_bytes: int) -> int:
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
    n_rerank : int
        Candidates reranked per query (sizes the candidate buffer).
    n_bits : int
        Code bits.
    scanned_bytes : int
        Bytes of codes, factors and slots in the index.

    Returns
    -------
    int
        The chunk size (> 0) when a shared pass is expected to be faster, else 0.

    Examples
    --------
    >>> shared_chunk(2000, 1, 48, 2182, 160, 128, 22 << 20)   # sift-1m
    223
    >>> shared_chunk(2000, 1, 32, 1061, 160, 128, 4 << 20)    # dev-sift: one at a time
    0
    """
    if scanned_bytes < SHARED_MIN_BYTES or n_lists <= 0:
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
    if (scanned_bytes < SHARED_LARGE_BYTES
            and chunk * query_state_bytes(n_probe, n_rerank, n_bits) > SHARED_SMALL_STATE):
        return 0
    return int(chunk)
