"""How the compiled search walks a batch of queries (private): one at a time, or in chunks
that share one pass over each bucket they probe.

A shared pass (``shared_chunk`` of ``binidx._kernels._search.search``) scans each bucket
once for all the queries of a chunk that probe it, while its codes are in L1/L2, instead
of once per query from L3 or memory.  It pays when the index's codes do not stay in the
core's L2 and the chunk probes each bucket several times; its cost is the state of the
chunk's queries (candidate buffers, rotated queries), which no longer stays in L1.
Results are identical either way (tests/test_batching.py); only speed differs.

The thresholds come from paired runs on the development machine (AMD EPYC, 1 MB L2 per
core, 32 MB L3), see the search section of docs/design.md.
"""
from __future__ import annotations

# Below this many bytes of scanned data (codes, factors, slots) the whole index stays in
# L2/L3 between queries and a shared pass only adds its bookkeeping.
SHARED_MIN_BYTES = 8 << 20
# A chunk must probe each of its buckets this many times on average to pay.
SHARED_MIN_VISITS = 2.0
# Chunk size aimed at, in expected visits per probed bucket, and bounds on it: the
# state of a chunk's queries grows with it (~5 kB each at n_rerank 160).
SHARED_TARGET_VISITS = 6.0
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
    if chunk * probe_rate < SHARED_MIN_VISITS:
        return 0
    return int(chunk)
