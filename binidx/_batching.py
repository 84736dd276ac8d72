"""How the compiled search walks a batch of queries (private): one at a time, or in chunks
that share one pass over each bucket they probe.

A shared pass (``shared_chunk`` of ``binidx._kernels._search.search``) scans each bucket
once for all the queries of a chunk that probe it, while its codes are in L1/L2, instead
of once per query from L3 or memory.  It pays when the index's codes do not stay in the
core's L2 and the chunk probes each bucket several times; its cost is the state of the
chunk's queries (candidate buffers, rotated queries), which no longer stays in L1.
Results are identical either way (tests/test_batching.py); only speed differs.

The thresholds come from paired runs on the development machine (AMD EPYC, 2 cores,
1 MB L2 per core, 32 MB L3, shared with other jobs: load 5-7), one query at a time against
chunks of 32-512 in the same process (CPU time, medians of 5; the factors were still two
float32 per vector then, 12 bytes with the slot: one byte each now, 6 bytes):

============  ==========  =============  ===================  =====================
index         scanned MB  probe rate     best chunks, 1 thr.  2 threads
============  ==========  =============  ===================  =====================
sift-1m       28          48 / 2,182     128-512: 1.12x       128-512: 1.08-1.12x
dev-sift      5.6         32 / 1,061     64-128: 1.03-1.04x   64-128: 1.10-1.14x
dev-text      3.0         128 / 588      32-128: 1.07-1.09x   32: 1.10x, others ~1
============  ==========  =============  ===================  =====================

Chunks gain from about 2 visits per probed bucket on (dev-sift at 64: 1.9 visits,
1.03-1.14x), most at 4 or more; below that little (sift-1m at 64: 1.4 visits,
1.01-1.07x).  Even indexes that fit in L3 gain on a loaded
machine, whose other jobs evict them between queries.  See the search section of
docs/design.md.
"""
from __future__ import annotations

# Below this many bytes of scanned data (codes, factors, slots) the index stays in the
# core's L2 (1 MB here) between queries and a shared pass only adds its bookkeeping.
SHARED_MIN_BYTES = 2 << 20
# A chunk must probe each of its buckets this many times on average to pay.
SHARED_MIN_VISITS = 2.0
# Chunk size aimed at, in expected visits per probed bucket, and bounds on it: the
# state of a chunk's queries grows with it (~6 kB each at n_rerank 160).
SHARED_TARGET_VISITS = 5.0
SHARED_MIN_CHUNK = 32
SHARED_MAX_CHUNK = 256


def shared_chunk(n_queries: int, n_threads: int, n_probe: int, n_lists: int,
                 scanned_bytes: int) -> int:
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
    scanned_bytes : int
        Bytes of codes, factors and slots in the index.

    Returns
    -------
    int
        The chunk size (> 0) when a shared pass is expected to be faster, else 0.
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
    return int(chunk)
