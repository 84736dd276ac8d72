"""Slow pure-NumPy oracles of the compiled kernels, for tests and benchmarks.

Each function here re-implements one kernel of ``binidx/_kernels`` with NumPy, doing the
same IEEE float32 operations in the same order, so the kernels can be checked for exact
equality rather than against a loose tolerance:

* :func:`hamming_reference` -- Hamming distances of packed codes (``np.bitwise_count``);
* :func:`quantize_reference`, :func:`scan_reference`, :func:`estimate_reference` -- the
  5-bit symmetric query quantisation and the estimator over binary codes
  (``quantize_body`` and ``scan_scalar_body`` in ``simd_kernels.h``);
* :func:`l2_reference`, :func:`dot_reference` -- float distances with the kernels'
  16-lane accumulation order (``l2_body`` / ``dot_body``); :func:`matvec_t_reference` --
  the transposed matrix-vector product of the coarse step and the query rotation;
* :func:`search_reference` -- the whole search of one :class:`binidx.Index` (probe
  selection, quantisation, scan, candidate selection, rerank, top k), built from the
  functions above.

and the measuring stick shared by all recall tests: :func:`recall_at_k` with
:data:`RECALL_TARGET` / :data:`RECALL_TARGET_DEFAULTS`, and :func:`neighbour_mismatch`,
which compares two k-NN results allowing ties.

Nothing here is fast; nothing here needs the compiled kernels.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: recall@10 an index must reach at the parameters stated in the tests (issue 2).
RECALL_TARGET = 0.95
#: recall@10 an index must reach with its default ``n_probe`` / ``n_rerank``.
RECALL_TARGET_DEFAULTS = 0.90
#: Relative / absolute slack when comparing float32 distances with exact (float64) ones:
#: a few float32 ulps of summation-order rounding, not approximation error.
TIE_RTOL = 2e-6
TIE_ATOL = 1e-6

_LANES = 16
_F32 = np.float32


# ----------------------------------------------------------------------------- codes
def hamming_reference(a_codes: np.ndarray, b_codes: np.ndarray) -> np.ndarray:
    """Hamming distances between every code of ``a_codes`` and every code of ``b_codes``.

    Parameters
    ----------
    a_codes : ndarray of shape (n_a, n_words), uint64
    b_codes : ndarray of shape (n_b, n_words), uint64

    Returns
    -------
    ndarray of shape (n_a, n_b), int64

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0b1011]], dtype=np.uint64); b = np.array([[0b0001], [0]], dtype=np.uint64)
    >>> hamming_reference(a, b).tolist()
    [[2, 3]]
    """
    a = np.asarray(a_codes, dtype=np.uint64)
    b = np.asarray(b_codes, dtype=np.uint64)
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int64)


#: Largest query level: the query side is quantised to the integers [-15, 15].
LEVEL_MAX = 15


def quantize_reference(w: np.ndarray) -> tuple[np.ndarray, float, int]:
    """5-bit symmetric quantisation of a rotated query (residual), as the kernels do it.

    Every value becomes ``u = clip(trunc(w * inv + 15.5), 0, 30) - 15``, so ``w ~ delta *
    u``, with ``delta = max|w| / 15`` and ``inv = 1 / delta`` (all in float32; ``delta``
    below 1e-30 counts as 0, and then every level is 0).

    Parameters
    ----------
    w : ndarray of shape (n_bits,), float32
        ``n_bits`` a multiple of 64.

    Returns
    -------
    levels : ndarray of shape (n_bits,), int8
        In ``[-15, 15]``.
    delta : float
        The float32 step.
    level_sum : int
        ``levels.sum()``.

    Examples
    --------
    >>> import numpy as np
    >>> w = (np.arange(64) % 31 - 15).astype(np.float32)    # already on the grid
    >>> levels, delta, level_sum = quantize_reference(w)
    >>> levels[:3].tolist(), delta, level_sum
    ([-15, -14, -13], 1.0, -29)
    """
    w = np.ascontiguousarray(w, dtype=_F32)
    top = _F32(np.abs(w).max()) if w.size else _F32(0.0)
    delta = top / _F32(LEVEL_MAX)
    inv = _F32(1.0) / delta if delta > _F32(1e-30) else _F32(0.0)
    if inv == 0:
        delta = _F32(0.0)
    # astype truncates toward zero, as C does; the value is >= 0 here.
    v = (w * inv + _F32(LEVEL_MAX + 0.5)).astype(np.int32)
    levels = (np.clip(v, 0, 2 * LEVEL_MAX) - LEVEL_MAX).astype(np.int8)
    return levels, float(delta), int(levels.sum(dtype=np.int64))


def scan_reference(codes: np.ndarray, factors: np.ndarray, levels: np.ndarray, delta: float,
                   level_sum: int, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """The scan kernel: estimates of one bucket's codes against a quantised query side.

    For the code bits ``b`` and factors ``(a, rn2)`` of each row::

        T   = sum_d (2 b_d - 1) levels_d        (an exact integer)
        sw  = delta * T
        out = (alpha * (a * sw) + beta) + gamma * rn2

    every float operation rounded to float32, in this order (the kernels are compiled
    without FMA contraction).

    Parameters
    ----------
    codes : ndarray of shape (n, n_words), uint64
        Bit ``d % 64`` of word ``d // 64`` is ``b_d``.
    factors : ndarray of shape (n, 2)
        ``(a, rn2)``, as float32 values or as the stored bytes (the search then folds the
        bucket's scales into ``alpha`` and ``gamma``, see :func:`search_reference`).
    levels : ndarray of shape (64 * n_words,), int8
    delta : float
    level_sum : int
        ``levels.sum()``: ``T = 2 * sum(levels[b == 1]) - level_sum``.
    alpha, beta, gamma : float
        Estimator constants (see ``ScanConsts`` in ``simd_kernels.h``).

    Returns
    -------
    ndarray of shape (n,), float32
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    factors = np.asarray(factors, dtype=_F32)
    bits = np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")
    t = 2 * (bits.astype(np.int64) @ np.asarray(levels, dtype=np.int64)) - int(level_sum)
    sw = _F32(delta) * t.astype(_F32)
    return (_F32(alpha) * (factors[:, 0] * sw) + _F32(beta)) + _F32(gamma) * factors[:, 1]


def estimate_reference(codes: np.ndarray, factors: np.ndarray, w: np.ndarray,
                       alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Quantise ``w`` and scan ``codes`` with it: :func:`quantize_reference` + :func:`scan_reference`.

    The search uses ``alpha=-2, beta=||q - c||^2, gamma=1`` with ``w = P q - P c`` for l2
    (estimated squared distance) and ``alpha=-1, beta=-<q, c>, gamma=0`` with ``w = P q``
    for ip (estimated negative inner product).

    Parameters
    ----------
    codes : ndarray of shape (n, n_words), uint64
    factors : ndarray of shape (n, 2), float32
    w : ndarray of shape (64 * n_words,), float32
        The rotated query (residual).
    alpha, beta, gamma : float

    Returns
    -------
    ndarray of shape (n,), float32
    """
    levels, delta, level_sum = quantize_reference(w)
    return scan_reference(codes, factors, levels, delta, level_sum, alpha, beta, gamma)


# ------------------------------------------------------------------- float distances
def _lane_sum(a: Any, b: Any, term: Any) -> np.ndarray:
    """Sum ``term(a_cols, b_cols)`` over the last axis in the kernels' lane order.

    ``a`` and ``b`` broadcast over their leading axes.  Column ``i`` of a full block of 16
    goes to lane ``i % 16`` and the tail goes to lanes 0..; each lane accumulates left to
    right in float32, then the lanes are folded pairwise (8, 4, 2, 1) like ``reduce16``.
    """
    a = np.asarray(a, dtype=_F32)
    b = np.asarray(b, dtype=_F32)
    d = a.shape[-1]
    acc = np.zeros(np.broadcast_shapes(a.shape[:-1], b.shape[:-1]) + (_LANES,), dtype=_F32)
    full = d - d % _LANES
    for i in range(0, full, _LANES):
        acc += term(a[..., i:i + _LANES], b[..., i:i + _LANES])
    if full < d:
        acc[..., :d - full] += term(a[..., full:], b[..., full:])
    acc[..., :8] += acc[..., 8:16]
    acc[..., :4] += acc[..., 4:8]
    acc[..., 0] += acc[..., 2]
    acc[..., 1] += acc[..., 3]
    return acc[..., 0] + acc[..., 1]


def _squared_difference(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    t = u - v
    return t * t


def l2_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances of the rows of ``a`` and ``b`` (broadcast), as the kernels sum them.

    Parameters
    ----------
    a, b : ndarray of shape (..., d), float32
        Broadcast against each other over the leading axes.

    Returns
    -------
    ndarray of the broadcast leading shape, float32
    """
    return _lane_sum(a, b, _squared_difference)


def dot_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inner products of the rows of ``a`` and ``b``, as the kernels sum them.

    Same shapes and broadcasting as :func:`l2_reference`.
    """
    return _lane_sum(a, b, np.multiply)


def matvec_t_reference(at: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``at.T @ q`` for a matrix stored transposed, summed as the kernels sum it.

    Output ``i`` accumulates ``q[j] * at[j, i]`` for ``j = 0, 1, ...`` in order, in float32
    (``matvec_t_body``, and ``matmat_t_body`` for several queries at once), which is how
    the search computes the coarse inner products and the rotated query.

    Parameters
    ----------
    at : ndarray of shape (dim, n), float32
    q : ndarray of shape (dim,), float32

    Returns
    -------
    ndarray of shape (n,), float32
    """
    at = np.asarray(at, dtype=_F32)
    q = np.asarray(q, dtype=_F32)
    out = np.zeros(at.shape[1], dtype=_F32)
    for j in range(at.shape[0]):
        out += q[j] * at[j]
    return out


# ---------------------------------------------------------------------- whole search
def _select(keys: np.ndarray, slots: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' candidate selection: the ``keep`` best estimates by (key, slot).

    The kernels fill a buffer, cut it to its ``keep`` best by (key, slot) when it is full
    and then admit only estimates at or below the worst kept key.  Because ties at the
    threshold are admitted, a rejected estimate is strictly worse than ``keep`` others, so
    whatever the order of the scan and the moments of the cuts the result is the global
    ``keep`` best by (key, slot), which is what this returns.
    """
    best = np.lexsort((slots, keys))[:keep]
    return keys[best], slots[best]


def _bucket_rows(buckets: Any, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Codes (size, n_words), factor bytes (size, 2), slots (size,) of bucket ``b`` in scan
    order, and the bucket's factor scales (2,).

    The one place that knows how :class:`binidx._storage.BucketStore` lays buckets out.
    """
    codes, factors, slots, scales = buckets.read_quantized(b)
    return codes, factors, np.asarray(slots, dtype=np.int64), scales


def probes_reference(index: Any, qv: np.ndarray, n_probe: int,
                     probe_ratio: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The search's probe selection for one prepared query ``qv`` (float32, (dim,)).

    Returns the rotated query ``P q`` (n_bits,), the coarse key of every centroid
    (n_lists,) and the buckets scanned, nearest first (``n_probe`` of them, fewer with
    ``probe_ratio``).  ``n_probe`` must already be capped at n_lists.
    """
    l2 = index.metric == "l2"
    n_lists = index._centroids.shape[0]
    qrot = matvec_t_reference(index._projection.T, qv)
    # Coarse keys: ||q||^2 + ||c||^2 - 2 <q, c> (clamped at 0) for l2, -<q, c> for ip;
    # <q, c> is <P q, P c> (a dot_body per centroid) when P preserves inner products.
    if index.n_bits >= index.dim:
        dots = dot_reference(index._centroids_rot, qrot[None, :])
    else:
        dots = matvec_t_reference(index._centroids.T, qv)
    if l2:
        coarse = np.maximum(_F32(0.0), (dot_reference(qv, qv) + index._centroid_norms)
                            - _F32(2.0) * dots)
    else:
        coarse = -dots
    probes = np.lexsort((np.arange(n_lists), coarse))[:n_probe]
    if probe_ratio and n_probe > 1:
        # Adaptive probing (adaptive_probe_count): squared l2 distances to the probes'
        # centroids, for ip from the key -<q, c>; count those within the ratio of the
        # first one's, at least a quarter of n_probe.
        if l2:
            dist = coarse[probes]
        else:
            dist = (dot_reference(qv, qv) + index._centroid_norms[probes]) + _F32(2.0) * coarse[probes]
        count = int(np.count_nonzero(dist <= _F32(probe_ratio) * dist[0]))
        probes = probes[:max(count, (n_probe + 3) // 4)]
    return qrot, coarse, probes


def search_reference(index: Any, q: Any, k: int, n_probe: int, n_rerank: int,
                     probe_ratio: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index`` the way its compiled kernels do, in NumPy, for exact comparison.

    Reads the index's private state (centroids, projection, buckets, vectors), so it
    follows the engine's internals by design: when they change, this oracle changes with
    them.

    Parameters
    ----------
    index : binidx.Index
        A trained index.
    q : array-like of shape (n_queries, dim)
    k, n_probe, n_rerank : int
        As in :meth:`binidx.Index.search` (``n_rerank`` is raised to ``k`` as there).
    probe_ratio : float, optional
        Adaptive probing, as in :meth:`binidx.Index.search`.

    Returns
    -------
    distances : ndarray of shape (n_queries, k), float32
    ids : ndarray of shape (n_queries, k), int64
    """
    queries = index._prepare(q, "q")
    l2 = index.metric == "l2"
    buckets, store = index._buckets, index._store
    n_lists = index._centroids.shape[0]
    n_probe = min(n_probe, n_lists)
    keep = max(n_rerank, k)
    worst = np.inf if l2 else -np.inf
    out_d = np.full((queries.shape[0], k), worst, dtype=_F32)
    out_i = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for row, qv in enumerate(queries):
        qrot, coarse, probes = probes_reference(index, qv, n_probe, probe_ratio)
        keys, slots = [], []
        for b in probes.tolist():
            codes, factors, bucket_slots, scales = _bucket_rows(buckets, b)
            live = ~store.dead.test(bucket_slots)  # tombstones are never candidates
            codes, factors, bucket_slots = codes[live], factors[live], bucket_slots[live]
            if bucket_slots.shape[0] == 0:
                continue
            # The factor bytes count in steps of the bucket's scales, folded into the
            # constants as the search does: alpha * scale_a, gamma * scale_rn2.
            sa, sr = _F32(scales[0]), _F32(scales[1])
            if l2:
                est = estimate_reference(codes, factors, qrot - index._centroids_rot[b],
                                         _F32(-2.0) * sa, coarse[b], _F32(1.0) * sr)
            else:
                est = estimate_reference(codes, factors, qrot, _F32(-1.0) * sa, coarse[b],
                                         _F32(0.0) * sr)
            keys.append(est)
            slots.append(bucket_slots)
        if not keys:
            continue
        _, cand = _select(np.concatenate(keys), np.concatenate(slots), keep)
        vecs = store.vectors[cand]
        exact = l2_reference(vecs, qv) if l2 else -dot_reference(vecs, qv)
        ids = store.slot_ids[cand]
        top = np.lexsort((ids, exact))[:k]
        out_d[row, :top.shape[0]] = exact[top] if l2 else -exact[top]
        out_i[row, :top.shape[0]] = ids[top]
    return out_d, out_i


# ------------------------------------------------------------------------ comparing
def _better_or_equal(found: np.ndarray, limit: np.ndarray, metric: str) -> np.ndarray:
    slack = TIE_RTOL * np.abs(limit) + TIE_ATOL
    return found <= limit + slack if metric == "l2" else found >= limit - slack


def recall_at_k(found_ids: Any, true_ids: Any, k: int, true_distances: Any = None,
                found_distances: Any = None, *, metric: str = "l2") -> float:
    """Mean recall@k of search results against exact ground truth, allowing distance ties.

    A returned id counts when it is among the ``k`` true neighbours or, when distances
    are given, when its distance is at least as good as the k-th true distance (within
    :data:`TIE_RTOL` / :data:`TIE_ATOL`): an index that returns another member of a group
    of equally distant vectors is not penalised.  Ids -1 (padding) and repeated ids in a
    row count nothing.

    Parameters
    ----------
    found_ids : array-like of shape (n_queries, >= k)
        Ids returned by the index, best first.
    true_ids : array-like of shape (n_queries, >= k)
        Exact neighbours, best first.
    k : int
    true_distances : array-like of shape (n_queries, >= k), optional
        Exact distances of ``true_ids``.
    found_distances : array-like of shape (n_queries, >= k), optional
        Distances returned with ``found_ids`` (binidx returns exact ones after rerank).
        Give both distance arrays or neither.
    metric : {"l2", "ip", "cosine"}, default "l2"
        Direction of the distances: smaller is better for l2, larger for ip / cosine.

    Returns
    -------
    float
        Recall in [0, 1], averaged over queries.

    Examples
    --------
    >>> recall_at_k([[3, 1, 9]], [[1, 3, 4]], k=2)
    1.0
    >>> recall_at_k([[3, 9]], [[3, 4]], k=2, true_distances=[[1.0, 2.0]],
    ...             found_distances=[[1.0, 2.0]])
    1.0
    """
    found = np.asarray(found_ids, dtype=np.int64)
    true = np.asarray(true_ids, dtype=np.int64)
    if found.ndim != 2 or true.ndim != 2 or found.shape[0] != true.shape[0]:
        raise ValueError(f"found_ids {found.shape} and true_ids {true.shape} must be 2-D "
                         "with one row per query")
    if true.shape[1] < k:
        raise ValueError(f"the ground truth has {true.shape[1]} neighbours per query, fewer than k={k}")
    if (true_distances is None) != (found_distances is None):
        raise ValueError("give both true_distances and found_distances, or neither")
    found = found[:, :k]
    hit = (found[:, :, None] == true[:, None, :k]).any(axis=2)
    if true_distances is not None:
        kth = np.asarray(true_distances, dtype=np.float64)[:, k - 1]
        fd = np.asarray(found_distances, dtype=np.float64)[:, :k]
        hit |= _better_or_equal(fd, kth[:, None], metric)
    # Padding and the later copies of a repeated id count nothing.
    repeated = np.zeros(found.shape, dtype=bool)
    for j in range(1, found.shape[1]):
        repeated[:, j] = (found[:, :j] == found[:, j:j + 1]).any(axis=1)
    hit &= (found >= 0) & ~repeated
    return float(hit.sum(axis=1).mean() / k)


def neighbour_mismatch(distances: Any, ids: Any, true_distances: Any, true_ids: Any, *,
                       rtol: float = 1e-4, atol: float = 1e-4) -> str | None:
    """Describe how a k-NN result differs from the exact one beyond ties, or return None.

    The two agree when, row by row: the distances are close to the exact ones
    (``np.isclose`` with ``rtol``/``atol``, padding included); the ids are distinct apart
    from -1; and every group of positions whose exact distances are within tolerance of
    each other holds the same set of ids.  A group cut by the last column may hold any of
    its members; pass the exact result with one or more extra columns so that such a
    group is known in full (a group that runs to the end of the exact result is not
    checked, as it may continue beyond it).

    Parameters
    ----------
    distances, ids : array-like of shape (n_queries, k)
        The result to check.
    true_distances, true_ids : array-like of shape (n_queries, k_true), k_true >= k
        The exact result (for example from :func:`binidx.exact_search` with ``k + 1``).
    rtol, atol : float
        Tolerance of the distance comparison (float32 rerank vs float64 brute force).

    Returns
    -------
    str or None
        ``None`` when the results agree; otherwise a message naming the first row and
        columns that differ.

    Examples
    --------
    >>> neighbour_mismatch([[0.0, 1.0]], [[4, 8]], [[0.0, 1.0, 1.0]], [[4, 2, 8]]) is None
    True
    >>> neighbour_mismatch([[0.0, 1.0]], [[4, 8]], [[0.0, 1.0, 2.0]], [[4, 2, 8]])
    'row 0 columns 1:2: ids [8] but exact [2] (distances [1.0])'
    """
    d, i = np.asarray(distances, np.float64), np.asarray(ids, np.int64)
    td, ti = np.asarray(true_distances, np.float64), np.asarray(true_ids, np.int64)
    k, k_true = d.shape[-1], td.shape[-1]
    if d.ndim != 2 or d.shape != i.shape or td.shape != ti.shape or td.shape[0] != d.shape[0] \
            or k_true < k:
        return f"shapes differ: {d.shape}/{i.shape} vs exact {td.shape}/{ti.shape}"
    close = np.isclose(d, td[:, :k], rtol=rtol, atol=atol) | (d == td[:, :k])
    if not close.all():
        r, c = np.argwhere(~close)[0]
        return f"row {r} column {c}: distance {d[r, c]!r} but exact {td[r, c]!r}"
    for r in range(d.shape[0]):
        live = i[r][i[r] >= 0]
        if np.unique(live).shape[0] != live.shape[0]:
            return f"row {r}: repeated ids {i[r].tolist()}"
        if not np.array_equal(i[r] < 0, ti[r, :k] < 0):
            return f"row {r}: padding differs: {i[r].tolist()} vs exact {ti[r, :k].tolist()}"
        # Split the exact row into groups of tied distances.
        same = np.isclose(td[r, 1:], td[r, :-1], rtol=rtol, atol=atol) | (td[r, 1:] == td[r, :-1])
        starts = np.concatenate([[0], np.flatnonzero(~same) + 1, [k_true]])
        for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist()):
            if lo >= k:
                break
            got, want = set(i[r, lo:min(hi, k)].tolist()), set(ti[r, lo:hi].tolist())
            if hi <= k:
                ok = got == want
            else:
                ok = hi == k_true or got <= want  # cut tie: any of its members will do
            if not ok:
                return (f"row {r} columns {lo}:{min(hi, k)}: ids {sorted(got)} but exact "
                        f"{ti[r, lo:hi].tolist()} (distances {td[r, lo:hi].tolist()})")
    return None
