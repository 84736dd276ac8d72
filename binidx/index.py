"""The public face of binidx: :class:`Index` and :func:`build`.

Plain Python that validates, converts and orchestrates; the work is done by the compiled
kernels in ``binidx._kernels`` (search) and by BLAS / Numba (training, encoding).
"""
from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import _batching, _codes, _kmeans
from ._blas import default_threads as _default_threads
from ._exact import SearchResult, normalize_rows
from ._kernels import _search
from ._labels import LabelStore, as_labels
from ._snapshot import ReaderRegistry, Snapshot
from ._storage import BucketStore, VectorStore
from ._validation import (
    as_float32_matrix,
    as_ids,
    check_metric,
    check_positive_int,
    check_probe_ratio,
    first_duplicate,
)
from .errors import InvalidInputError, NotTrainedError, ReadOnlyIndexError

# Vectors are assigned and encoded in blocks of this many rows to bound temporary memory.
_ADD_BLOCK = 65536
# A bucket's tombstones are purged once they are over a quarter of its rows and at least
# this many: a purge copies the bucket (copy-on-write, ~20 us of Python whatever its size),
# so in small buckets it must clear enough of them to cost under ~1 us per removal.
_PURGE_MIN = 32
# Largest number of vectors one Index holds: slots are int32 in the inverted lists.
MAX_VECTORS = 2**31 - 1
# How codes are laid out in the inverted lists (and in files): blocks of 8 codes.
CODE_LAYOUT = "blocked8"


class Index:
    """An approximate nearest-neighbour index: IVF buckets of binary codes + exact rerank.

    Vectors are clustered into ``n_lists`` k-means buckets.  Each vector is stored as a
    binary code of ``n_bits`` bits (sign bits of its rotated residual to the bucket
    centroid, with a RaBitQ-style correction factor) plus its float32 vector.  A query
    visits its ``n_probe`` nearest buckets, estimates distances to their codes with
    AND + popcount, and reranks the ``n_rerank`` best estimates with exact distances.

    Parameters
    ----------
    dim : int
        Dimension of the vectors.
    metric : {"l2", "ip", "cosine"}, default "l2"
        ``"l2"`` returns squared Euclidean distances (smaller is better); ``"ip"`` returns
        inner products (larger is better); ``"cosine"`` normalises vectors and queries to
        unit length on the way in and returns cosine similarities.
    n_lists : int, optional
        Number of k-means buckets; by default about ``4 * sqrt(n)`` for ``n`` training
        vectors, chosen by :meth:`train`.
    n_bits : int, optional
        Bits per binary code, a multiple of 64 in [64, 1024]; by default one bit per
        dimension rounded up to a multiple of 64 (at most 1024).
    seed : int, default 0
        Seed of k-means and of the random rotation: the same data, parameters and seed
        give the same index.
    balance : bool, default True
        Keep bucket sizes balanced as vectors come and go: after each write call, a
        bucket grown past twice the mean size is split in two (2-means) and one that
        removals left tiny is dissolved into its neighbours, reassigning only vectors
        near the changed boundaries (see :attr:`balance`).

    Examples
    --------
    >>> import numpy as np, binidx
    >>> x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    >>> index = binidx.Index(32).train(x)
    >>> ids = index.add(x)
    >>> D, I = index.search(x[:3], k=5)
    >>> I[:, 0].tolist()
    [0, 1, 2]
    """

    def __init__(self, dim: int, metric: str = "l2", n_lists: int | None = None,
                 n_bits: int | None = None, seed: int = 0, balance: bool = True):
        self._dim = check_positive_int(dim, "dim", maximum=1 << 16)
        self._metric = check_metric(metric)
        self._n_lists_param = check_positive_int(n_lists, "n_lists", allow_none=True,
                                                 maximum=1 << 22)
        if n_bits is None:
            n_bits = _codes.default_n_bits(self._dim)
        n_bits = check_positive_int(n_bits, "n_bits", minimum=_codes.N_BITS_MIN,
                                    maximum=_codes.N_BITS_MAX)
        if n_bits % 64:
            raise InvalidInputError(
                f"n_bits must be a multiple of 64 (codes are stored as 64-bit words), got {n_bits}; "
                f"try n_bits={-(-n_bits // 64) * 64}"
            )
        self._n_bits = n_bits
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidInputError(f"seed must be an integer, got {seed!r}")
        self._seed = int(seed)
        if not isinstance(balance, (bool, np.bool_)):
            raise InvalidInputError(f"balance must be True or False, got {balance!r}")
        #: Split / dissolve buckets after each write call (binidx/_balance.py).  May be
        #: switched off and on at any time; it is saved with the index.
        self.balance = bool(balance)
        self._n_probe: int | None = None
        self._n_rerank: int | None = None
        self._probe_ratio: float | None = None
        # One writer at a time; searches never wait for it (they read published
        # snapshots, see binidx/_snapshot.py).  Lookups by id take the mutex too.
        self._write_mutex = threading.Lock()
        self._readers = ReaderRegistry()
        self._epoch = 0  # number of the last published write batch
        self._batch = 0  # number of the write batch in progress
        self._centroids: np.ndarray | None = None
        self._buckets: BucketStore | None = None
        self._store = VectorStore(self._dim)
        self._read_only_reason: str | None = None
        self._labels = LabelStore()
        self._version = 0  # bumped by every write batch; compiled filters check it

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Dimension of the indexed vectors."""
        return self._dim

    @property
    def metric(self) -> str:
        """``"l2"``, ``"ip"`` or ``"cosine"``."""
        return self._metric

    @property
    def n_bits(self) -> int:
        """Bits per binary code."""
        return self._n_bits

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def is_trained(self) -> bool:
        """True once :meth:`train` has fitted the buckets and the encoder."""
        return self._centroids is not None

    @property
    def n_lists(self) -> int | None:
        """Number of buckets (None before training when it was left to the default)."""
        return self._centroids.shape[0] if self._centroids is not None else self._n_lists_param

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        state = f"n={len(self)}, n_lists={self.n_lists}" if self.is_trained else "untrained"
        return f"binidx.Index(dim={self.dim}, metric={self.metric!r}, n_bits={self.n_bits}, {state})"

    # ------------------------------------------------------------ search defaults
    @property
    def n_probe(self) -> int:
        """Buckets visited per query when ``search`` is not given ``n_probe``.

        Set it to change the default (or let :meth:`tune` set it); ``None`` restores the
        automatic value, about ``2 * sqrt(n_lists)`` (at least 8).  Measured recall@10
        with it: 0.93-0.97 on SIFT descriptors and sentence embeddings from 5,000 to
        200,000 vectors.
        """
        self._require_trained("read n_probe")
        return self._default_n_probe()

    @n_probe.setter
    def n_probe(self, value: int | None) -> None:
        self._n_probe = check_positive_int(value, "n_probe", allow_none=True)

    def _default_n_probe(self) -> int:
        """:attr:`n_probe` of a trained index, without the checks of the property."""
        n_lists = self._centroids.shape[0]
        if self._n_probe is not None:
            return min(self._n_probe, n_lists)
        return min(n_lists, max(8, round(2.0 * math.sqrt(n_lists))))

    @property
    def probe_ratio(self) -> float | None:
        """Adaptive probing used when ``search`` is not given ``probe_ratio``.

        ``None`` (the default) visits exactly :attr:`n_probe` buckets per query.  A number
        r >= 1 makes :attr:`n_probe` a maximum: of the ``n_probe`` nearest buckets, a query
        visits those whose centroid's squared l2 distance to it is at most r times the
        nearest one's (and at least a quarter of ``n_probe``).  Queries near one centroid
        and far from the rest then stop early, queries among many equidistant centroids
        visit them all.  On SIFT descriptors and sentence embeddings it scans 1.1-1.37x
        fewer codes than a fixed ``n_probe`` for the same recall; :meth:`tune` chooses it.

        A query much closer to its nearest centroid than the indexed vectors are to theirs
        visits only the quarter of ``n_probe`` (in high dimensions real queries are not:
        on sift-1m and dev-text their median squared distance to the nearest centroid is
        within 12% of the mean squared residual of the indexed vectors).  Setting
        ``math.inf`` is the same as ``None``.
        """
        return self._probe_ratio

    @probe_ratio.setter
    def probe_ratio(self, value: float | None) -> None:
        value = check_probe_ratio(value)
        self._probe_ratio = None if value == math.inf else value

    @property
    def n_rerank(self) -> int:
        """Candidates reranked with exact distances per query when ``search`` is not told.

        ``None`` restores the automatic value (100, and never fewer than ``k``).
        """
        return self._n_rerank if self._n_rerank is not None else 100

    @n_rerank.setter
    def n_rerank(self, value: int | None) -> None:
        self._n_rerank = check_positive_int(value, "n_rerank", allow_none=True)

    # ------------------------------------------------------------------ training
    def train(self, x: Any, *, n_iter: int = _kmeans.DEFAULT_N_ITER) -> Index:
        """Fit the k-means buckets and the binary encoder on ``x``.

        Parameters
        ----------
        x : array-like of shape (n, dim)
            Training vectors (float32/float64 or integer such as uint8 SIFT).  A sample
            of up to 40 vectors per bucket is used for k-means.
        n_iter : int, default 10
            Lloyd iterations at most (they stop early when assignments settle).

        Returns
        -------
        Index
            ``self``, so that ``Index(d).train(x).add(x)`` chains.
        """
        x = self._prepare(x, "x")
        n_iter = check_positive_int(n_iter, "n_iter")
        self._require_writable("train")
        with self._write_batch():
            if len(self):
                raise InvalidInputError(
                    f"the index already holds {len(self)} vectors; training again would make "
                    "their codes meaningless. Create a new Index to retrain."
                )
            n_lists = self._n_lists_param or _kmeans.default_n_lists(x.shape[0])
            rng = np.random.default_rng(self._seed)
            centroids = _kmeans.train_kmeans(x, n_lists, rng, n_iter=n_iter)
            projection, scale = _codes.make_projection(self._dim, self._n_bits, rng)
            self._set_trained_state(centroids, projection, scale)
        return self

    def _set_trained_state(self, centroids: np.ndarray, projection: np.ndarray, scale: float) -> None:
        self._scale = scale
        # One copy of the rotation, transposed for the search's mat-vec; updates use its
        # transpose view (BLAS reads either layout at the same speed).
        self._projection_t = np.ascontiguousarray(projection.T, dtype=np.float32)
        self._install_centroids(centroids)
        self._buckets = BucketStore(self._centroids.shape[0], self._n_bits // 64)
        self._store = VectorStore(self._dim)
        self._labels = LabelStore()

    @property
    def _projection(self) -> np.ndarray:
        """The random rotation P, (n_bits, dim): a view of the transposed copy."""
        return self._projection_t.T

    def _install_centroids(self, centroids: np.ndarray, unchanged: np.ndarray | None = None) -> None:
        """Set the centroids and their derived arrays, all newly allocated: published
        snapshots keep reading the old ones.

        The search reads the rotated centroids ``P c`` (the residual of a query to a
        bucket is ``P q - P c``).  When P preserves inner products (``n_bits >= dim``)
        the coarse step uses ``<P q, P c>`` from them too, and no other copy is kept for
        the search; otherwise it needs the centroids themselves, transposed for its
        mat-vec.  ``_centroids`` is the writer's copy (assignment, encoding, balancing,
        files); searches never read it.

        ``unchanged`` (bool per new row) marks rows equal to the current row of the same
        number: their rotated rows are reused, so a rebalance that moves a few centroids
        rotates only those.  Every row is rotated on its own (a batch of one-row
        products), so a row's bits do not depend on which other rows were rotated with
        it: an index and its saved-and-loaded copy hold the same rotated centroids."""
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if unchanged is None or not unchanged.any():
            rotated = _rotate_rows(centroids, self._projection_t)
        else:
            rotated = np.empty((centroids.shape[0], self._projection_t.shape[1]), np.float32)
            kept = np.flatnonzero(unchanged)
            rotated[kept] = self._centroids_rot[kept]
            moved = np.flatnonzero(~unchanged)
            rotated[moved] = _rotate_rows(centroids[moved], self._projection_t)
        self._centroids = centroids
        self._centroid_norms = _kmeans.squared_norms(self._centroids)
        self._centroids_rot = rotated
        if self._n_bits >= self._dim:
            self._centroids_t = np.zeros((self._dim, 0), np.float32)
        else:
            self._centroids_t = np.ascontiguousarray(self._centroids.T)

    # ------------------------------------------------------------------- updates
    def add(self, x: Any, ids: Any = None, labels: Any = None) -> np.ndarray:
        """Add vectors, with their ids.

        Parameters
        ----------
        x : array-like of shape (n, dim)
            Vectors to add.
        ids : array-like of shape (n,), optional
            Distinct int64 ids >= 0 not yet in the index.  By default sequential ids starting
            after the largest id in the index (0, 1, 2, ... for a new index).
        labels : array-like of shape (n,), optional
            One integer label >= 0 per vector (a category, shop, tenant) for filtered
            search (``search(..., labels=...)``); kept through upsert, remove and save.

        Returns
        -------
        ndarray of shape (n,), int64
            The ids of the added vectors.

        Raises
        ------
        NotTrainedError
            If the index is not trained.
        KeyError
            If an id is already in the index (the message names it).
        """
        self._require_trained("add vectors")
        self._require_writable("add vectors")
        x = self._prepare(x, "x")
        n = x.shape[0]
        labels = None if labels is None else as_labels(labels, n)
        with self._write_batch():
            if len(self) + n > MAX_VECTORS:
                raise InvalidInputError(f"an Index holds at most {MAX_VECTORS} vectors; shard larger collections")
            if ids is None:
                start = self._store.max_id() + 1
                ids = np.arange(start, start + n, dtype=np.int64)
            else:
                ids = self._distinct_ids(ids, n, inserting=True)
                present = ids[self._store.lookup(ids) >= 0]
                if present.size:
                    raise KeyError(
                        f"id {int(present[0])} is already in the index ({present.size} of the "
                        "given ids are); remove them first or use distinct ids"
                    )
            self._add_blocks(x, ids, labels)
        return ids

    def _add_blocks(self, x: np.ndarray, ids: np.ndarray, labels: np.ndarray | None) -> None:
        # Assign and encode in blocks (bounded temporaries), then write everything at
        # once: every array grows once, to its final size (a bulk add leaves no spare
        # capacity; growing block by block reallocated the vectors 8 times in a 1M add),
        # and each bucket's factor scales are fitted to all the rows it receives.
        n = x.shape[0]
        if n == 0:
            return
        buckets = np.empty(n, np.int32)
        codes = np.empty((n, self._n_bits // 64), np.uint64)
        factors = np.empty((n, 2), np.float32)
        for start in range(0, n, _ADD_BLOCK):
            rows = slice(start, start + _ADD_BLOCK)
            buckets[rows] = _kmeans.assign(x[rows], self._centroids, self._centroid_norms)
            codes[rows], factors[rows] = _codes.encode(x[rows] - self._centroids[buckets[rows]],
                                                       self._projection, self._scale)
        self._store.make_room(n)
        slots = self._store.allocate(n)
        self._store.store(slots, x, ids, buckets)
        self._labels.grow(self._store.vectors.shape[0])
        self._labels.assign(slots, labels)
        self._buckets.reserve(buckets)
        self._buckets.append(buckets, codes, factors, slots.astype(np.int32))
        self._batch_inserted += n

    def remove(self, ids: Any, missing: str = "raise") -> int:
        """Remove the vectors with these ids.

        Parameters
        ----------
        ids : array-like of int
            Distinct ids to remove.
        missing : {"raise", "ignore"}, default "raise"
            What to do with ids that are not in the index: raise ``KeyError`` naming one
            (nothing is removed then), or skip them.

        Returns
        -------
        int
            How many vectors were removed.
        """
        self._require_trained("remove vectors")
        self._require_writable("remove vectors")
        if missing not in ("raise", "ignore"):
            raise InvalidInputError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        ids = self._distinct_ids(ids)
        with self._write_batch():
            slots = self._store.lookup(ids)
            if missing == "raise":
                self._raise_unknown(ids, slots)
            return self._remove_slots(slots[slots >= 0])

    def _remove_slots(self, slots: np.ndarray) -> int:
        """O(1) per vector: forget the id and leave a tombstone in its bucket (the slot's
        bit in ``VectorStore.dead``: searches skip it); :meth:`_purge_tombstones` clears
        tombstones in bulk."""
        if slots.size:
            buckets = self._store.slot_buckets[slots]
            self._buckets.mark_dead(buckets)
            self._batch_removed_from.append(buckets)
            self._labels.release(slots)
            self._store.release(slots)
        return int(slots.size)

    def _purge_tombstones(self, buckets=None) -> None:
        """Remove the tombstones of these buckets (default: every bucket holding more
        tombstones than a quarter of its rows and at least ``_PURGE_MIN``, so each purge
        is paid for by as many removals as it moves rows; amortised O(1) per removal)."""
        b = self._buckets
        if buckets is None:
            buckets = np.flatnonzero((b.dead * 4 > b.sizes) & (b.dead >= _PURGE_MIN))
        buckets = np.asarray(buckets, np.int64)
        buckets = buckets[b.dead[buckets] > 0]
        if not buckets.size:
            return
        # Every row of these buckets at once; the tombstones are the slots marked dead.
        sizes = b.sizes[buckets]
        rows = np.concatenate([b.slots[i][:n] for i, n in zip(buckets.tolist(), sizes.tolist())])
        dead = self._store.dead.test(rows)
        slots = rows[dead]
        b.remove(np.repeat(buckets.astype(np.int32), sizes)[dead], slots)
        b.dead[buckets] = 0
        self._store.forget(slots.astype(np.int64), self._batch)

    def _compact_if_sparse(self) -> None:
        """Give float-vector memory back once fewer than half the slots are in use."""
        if not self._store.is_sparse():
            return
        self._purge_tombstones(np.flatnonzero(self._buckets.dead))
        if self._buckets.dead.any():  # a tombstone would keep naming a slot that moves
            raise RuntimeError("compaction needs buckets without tombstones")
        old, new = self._store.compaction_plan()
        self._buckets.move_slots(old, new, self._store.slot_buckets[old])
        labels = self._labels.slot_labels
        self._store.compact(old, new)
        self._buckets.slot_pos = self._buckets.slot_pos[:self._store.vectors.shape[0]].copy()
        if self._labels.used:
            moved = labels.copy()
            moved[new] = labels[old]
            self._labels = LabelStore.from_array(moved[:self._store.high_water])
            self._labels.grow(self._store.vectors.shape[0])
        else:
            self._labels = LabelStore()
            self._labels.grow(self._store.vectors.shape[0])

    def upsert(self, x: Any, ids: Any, labels: Any = None) -> np.ndarray:
        """Insert vectors, replacing those whose id is already in the index.

        The replacement is atomic for concurrent searches: they see either the old or
        the new vectors, never neither.

        Parameters
        ----------
        x : array-like of shape (n, dim)
        ids : array-like of shape (n,)
            Distinct int64 ids.
        labels : array-like of shape (n,), optional
            Labels of the new vectors (a replaced vector's old label is not kept).

        Returns
        -------
        ndarray of shape (n,), int64
            The ids.
        """
        self._require_trained("upsert vectors")
        self._require_writable("upsert vectors")
        x = self._prepare(x, "x")
        ids = self._distinct_ids(ids, n=x.shape[0], inserting=True)
        labels = None if labels is None else as_labels(labels, x.shape[0])
        with self._write_batch():
            slots = self._store.lookup(ids)
            self._remove_slots(slots[slots >= 0])
            self._add_blocks(x, ids, labels)
        return ids

    def __contains__(self, id_: Any) -> bool:
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)):
            return False
        with self._write_mutex:
            return self._store.contains(int(id_))

    def get(self, ids: Any) -> np.ndarray:
        """The stored float32 vectors of these ids (normalised ones for ``"cosine"``).

        Returns
        -------
        ndarray of shape (n, dim), float32
            A copy, in the order of ``ids``.

        Raises
        ------
        KeyError
            If an id is not in the index.
        """
        arr = np.asarray(ids)
        ids = as_ids(arr, arr.size)
        with self._write_mutex:
            slots = self._store.lookup(ids)
            self._raise_unknown(ids, slots)
            return np.array(self._store.vectors[slots], dtype=np.float32)

    def ids(self) -> np.ndarray:
        """The ids of all vectors in the index, sorted, as int64."""
        with self._write_mutex:
            return np.sort(self._store.ids())

    @staticmethod
    def _distinct_ids(ids: Any, n: int | None = None, *, inserting: bool = False) -> np.ndarray:
        arr = np.asarray(ids)
        ids = as_ids(arr, arr.size if n is None else n)
        dup = first_duplicate(ids)
        if dup is not None:
            raise InvalidInputError(f"ids contains {dup} more than once; ids must be distinct")
        if inserting and ids.size and int(ids.min()) < 0:
            # -1 means "no result" in search output and "free slot" in files.
            raise InvalidInputError(
                f"ids must be >= 0, got {int(ids.min())}; negative ids are reserved "
                "(-1 marks a missing result)"
            )
        return ids

    @staticmethod
    def _raise_unknown(ids: np.ndarray, slots: np.ndarray) -> None:
        unknown = ids[slots < 0]
        if unknown.size:
            raise KeyError(
                f"id {int(unknown[0])} is not in the index ({unknown.size} of the {ids.size} "
                "given ids are not); check the ids, or pass missing='ignore' to remove()"
            )

    def list_sizes(self) -> np.ndarray:
        """Number of vectors in each bucket, as an int64 array of shape (n_lists,)."""
        self._require_trained("count bucket sizes")
        with self._write_mutex:
            return self._buckets.live_sizes()

    def reserve(self, n: int) -> None:
        """Allocate room for ``n`` more vectors at once.

        Optional: adding in many batches otherwise grows the float vector array step by
        step, and each step briefly holds the old and the new array.  Call it before
        streaming a large file in batches to keep peak memory near the data size.
        """
        n = check_positive_int(n, "n", minimum=0)
        self._require_writable("reserve memory")
        with self._write_batch():
            self._store.reserve(n)

    # -------------------------------------------------------------------- search
    def search(self, q: Any, k: int = 10, n_probe: int | None = None,
               n_rerank: int | None = None, n_threads: int | None = None, *,
               labels: Any = None, allowed_ids: Any = None,
               probe_ratio: float | None = None) -> SearchResult:
        """Find the k nearest neighbours of each query.

        Parameters
        ----------
        q : array-like of shape (n_queries, dim) or (dim,)
            Queries; a single vector is searched as one row.
        k : int, default 10
            Neighbours per query.  When fewer are found (k larger than the index, or too
            few candidates) rows are padded with id -1 and the worst distance (+inf for
            l2, -inf for ip / cosine).
        n_probe : int, optional
            Buckets visited per query (default :attr:`n_probe`).  ``n_probe = n_lists``
            visits every bucket.
        n_rerank : int, optional
            Candidates reranked with exact float distances (default :attr:`n_rerank`,
            never fewer than ``k``).
        n_threads : int, optional
            Threads for a batch of queries (default: all cores).  Results do not depend
            on it.
        labels : iterable of int, optional
            Return only vectors whose label is one of these.
        allowed_ids : array-like of int or CompiledFilter, optional
            Return only vectors with these ids (ids not in the index are ignored), or
            those passing a filter from :meth:`compile_filter`.  Combined with ``labels``
            both must hold.  A selective filter is answered by an exact scan of the
            matching vectors, a broad one inside the IVF scan with proportionally more
            probes; results are always reranked exactly, and k results come back
            whenever k matching vectors exist.
        probe_ratio : float, optional
            Adaptive probing (default :attr:`probe_ratio`): with r >= 1, of the
            ``n_probe`` nearest buckets visit those whose centroid is within r times the
            nearest one's squared distance, at least a quarter of them; ``math.inf``
            visits all ``n_probe`` whatever the default.  Filtered searches ignore it
            (they visit more buckets on purpose).

        Returns
        -------
        SearchResult
            NamedTuple ``(distances, ids)`` of two arrays of shape (n_queries, k), best
            first; ties are broken by the smaller id.
        """
        self._require_trained("search")
        k = check_positive_int(k, "k")
        q = self._prepare(q, "q")
        # The defaults are read from the private fields: for one query per call every
        # microsecond of Python counts (a dev-text query is ~60 us in all).
        n_probe = (check_positive_int(n_probe, "n_probe") if n_probe is not None
                   else self._default_n_probe())
        n_rerank = (check_positive_int(n_rerank, "n_rerank") if n_rerank is not None
                    else self.n_rerank)
        n_rerank = max(n_rerank, k)
        n_threads = (check_positive_int(n_threads, "n_threads") if n_threads is not None
                     else _default_threads())
        n_threads = min(n_threads, q.shape[0])
        probe_ratio = (check_probe_ratio(probe_ratio) if probe_ratio is not None
                       else self._probe_ratio)
        distances = np.empty((q.shape[0], k), dtype=np.float32)
        ids = np.empty((q.shape[0], k), dtype=np.int64)
        if labels is None and allowed_ids is None:
            snap = self._readers.enter()
            try:
                self._search_ivf(snap, q, k, n_probe, n_rerank, n_threads, distances, ids, None,
                                 probe_ratio)
            finally:
                self._readers.leave(snap)
        else:
            flt = self._as_filter(allowed_ids, labels)
            self._search_filtered(q, k, n_probe, n_rerank, n_threads, distances, ids, flt)
        return SearchResult(distances, ids)

    def _search_ivf(self, snap: Snapshot, q, k, n_probe, n_rerank, n_threads, distances, ids,
                    mask, probe_ratio: float | None = None) -> None:
        n_probe = min(n_probe, snap.n_lists)
        chunk = 0
        if q.shape[0] >= _batching.SHARED_MIN_CHUNK:  # (skips the rule for small batches)
            # Per vector: its code, two one-byte factors and its int32 slot.
            chunk = _batching.shared_chunk(q.shape[0], n_threads, n_probe, snap.n_lists,
                                           n_rerank, self._n_bits,
                                           snap.n_live * (self._n_bits // 8 + 6))
        _search.search(
            q, k, n_probe, n_rerank, n_threads,
            0 if self._metric == "l2" else 1,
            snap.centroids_t, snap.centroid_norms, snap.centroids_rot, snap.projection_t,
            snap.code_ptrs, snap.factor_ptrs, snap.factor_scales, snap.slot_ptrs, snap.sizes,
            snap.vectors, snap.slot_ids, distances, ids, mask, snap.dead_pages,
            self._store.dead.PAGE_SHIFT,
            # (0: fixed probing; an infinite ratio keeps every probe, the same thing)
            shared_chunk=chunk, probe_ratio=0.0 if not probe_ratio or probe_ratio == math.inf else probe_ratio,
        )

    def _search_exact(self, snap: Snapshot, q, k, n_threads, distances, ids, subset) -> None:
        _search.search_exact_subset(q, k, n_threads, 0 if self._metric == "l2" else 1, subset,
                                    snap.vectors, snap.slot_ids, distances, ids)

    def _search_filtered(self, q, k, n_probe, n_rerank, n_threads, distances, ids, flt) -> None:
        from . import _filter

        # The filter is resolved to slots from the writer's state, so it is resolved under
        # the write mutex, together with taking the snapshot it then applies to.
        with self._write_mutex:
            snap = self._readers.enter()
            subset = flt._resolve()
            mask = None
            strategy, probes = _filter.plan(snap.n_live, subset.size, snap.n_lists, n_probe,
                                            n_rerank, self._n_bits // 64, self._dim)
            if strategy == "ivf":
                mask = flt._byte_mask(snap.slot_ids.shape[0])
        try:
            if strategy == "exact":
                self._search_exact(snap, q, k, n_threads, distances, ids, subset)
                return
            self._search_ivf(snap, q, k, probes, n_rerank, n_threads, distances, ids, mask)
            # Matches clustered away from a query can leave it short of k results: redo
            # those queries exactly, so k results come back whenever k matches exist.
            short = np.flatnonzero(ids[:, min(k, subset.size) - 1] < 0)
            if short.size:
                qd = np.empty((short.size, k), np.float32)
                qi = np.empty((short.size, k), np.int64)
                self._search_exact(snap, np.ascontiguousarray(q[short]), k, n_threads, qd, qi,
                                   subset)
                distances[short], ids[short] = qd, qi
        finally:
            self._readers.leave(snap)

    def compile_filter(self, allowed_ids: Any = None, labels: Any = None):
        """A reusable filter for ``search(..., allowed_ids=filter)``.

        Parameters
        ----------
        allowed_ids : array-like of int, optional
            Ids allowed in results (ids not in the index are ignored).
        labels : iterable of int, optional
            Labels allowed in results.  With both, a vector must pass both.

        Returns
        -------
        CompiledFilter
            Resolves the filter to the index's slots once, and again only after the
            index changes.
        """
        from ._filter import CompiledFilter

        return CompiledFilter(self, allowed_ids, labels)

    def _as_filter(self, allowed_ids: Any, labels: Any):
        from ._filter import CompiledFilter

        if isinstance(allowed_ids, CompiledFilter):
            if allowed_ids._index is not self:
                raise InvalidInputError("this filter was compiled for another index")
            if labels is not None:
                raise InvalidInputError(
                    "pass labels to compile_filter() together with the ids, not to search()"
                )
            return allowed_ids
        return CompiledFilter(self, allowed_ids, labels)

    def tune(self, queries: Any, target_recall: float = 0.95, k: int = 10,
             max_queries: int = 1000):
        """Choose the fastest ``n_probe`` / ``n_rerank`` / ``probe_ratio`` that reach a
        target recall.

        Recall@k is measured against exact search over the vectors in the index, on
        ``queries`` (use real queries, not base vectors); every setting is timed on one
        thread.  Fixed probing and adaptive probing (ratios 1.6, 1.8 and 2.0, ``n_probe``
        then a cap) are both measured, and the few fastest that reach the target are
        timed again in interleaved rounds before one is chosen.  The winner becomes the
        default of :meth:`search` (:attr:`n_probe`, :attr:`n_rerank`,
        :attr:`probe_ratio`) and is saved with the index.

        The target is met on the tuning queries, and the chosen setting is usually the
        cheapest that does, so on other queries recall lands on either side of it by the
        sampling error of the sample: about +-0.003 with 1,000 queries at recall 0.95
        (sift-1m, held-out queries: 0.9486 for a target of 0.95).  Ask for a slightly
        higher target when it must hold on unseen queries.

        Parameters
        ----------
        queries : array-like of shape (n_queries, dim)
            Representative queries; at most ``max_queries`` of them are used.
        target_recall : float, default 0.95
            Recall@k to reach, in (0, 1].
        k : int, default 10
        max_queries : int, default 1000

        Returns
        -------
        TuneResult
            ``n_probe``, ``n_rerank``, the ``recall`` and ``queries_per_second``
            measured, ``met_target``, every trial and ``probe_ratio`` (None: fixed).

        Examples
        --------
        >>> import numpy as np, binidx
        >>> x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
        >>> index = binidx.build(x)
        >>> res = index.tune(x[:100] + 0.1, target_recall=0.9)
        >>> (index.n_probe, index.probe_ratio) == (res.n_probe, res.probe_ratio)
        True
        """
        from . import _tune

        self._require_trained("tune")
        if not len(self):
            raise InvalidInputError("cannot tune an empty index: add vectors first")
        q = self._prepare(queries, "queries")
        k = check_positive_int(k, "k")
        max_queries = check_positive_int(max_queries, "max_queries")
        if not isinstance(target_recall, (int, float)) or not 0 < target_recall <= 1:
            raise InvalidInputError(f"target_recall must be in (0, 1], got {target_recall!r}")
        return _tune.tune(self, q, float(target_recall), min(k, len(self)), max_queries)

    # ------------------------------------------------------------------- helpers
    def memory_usage(self) -> dict:
        """Bytes used, by part.

        ``resident`` is everything a search reads per vector or per bucket: what must
        stay in RAM for searches to run at full speed.  The float vectors are read only
        for the ``n_rerank`` candidates of a query, so they may live in a memory-mapped
        file (``binidx.load(path, mmap=True)``).

        Returns
        -------
        dict of str to int
            Parts a search reads, which add up to ``resident``:

            - ``codes``: the binary codes in the buckets;
            - ``factors``: the per-vector correction factors;
            - ``list_slots``: the slot of each bucket row (int32);
            - ``slot_ids``: the user id of each slot (int64, read for reranked candidates);
            - ``tombstones``: one bit per slot, set while a removed vector's bucket row
              awaits its purge (read for admitted candidates);
            - ``tables``: bucket sizes, factor scales and pointer tables;
            - ``quantizer``: the arrays of centroids and of the rotation a search reads;

            then ``resident`` (their sum), ``vectors`` (float32 rerank vectors),
            ``writer`` (what only updates and lookups by id read: the id -> slot map, the
            bucket and bucket position of each slot, labels, the writer's own copies of
            the centroids and rotation) and ``total`` = resident + vectors + writer.
            ``spare`` is the part of ``resident`` that is unused capacity (room to grow
            in buckets and slot arrays); it is not added again.  Arrays of an index
            loaded with ``mmap=True`` count in full although their pages belong to the
            page cache.

        Examples
        --------
        >>> import numpy as np, binidx
        >>> x = np.random.default_rng(0).standard_normal((5000, 64)).astype(np.float32)
        >>> mem = binidx.build(x).memory_usage()
        >>> mem["resident"] == sum(mem[p] for p in binidx.Index.RESIDENT_PARTS)
        True
        """
        parts = dict.fromkeys(self.RESIDENT_PARTS, 0)
        parts.update(vectors=0, writer=0, spare=0)
        for source in ((self._buckets.memory_parts() if self._buckets is not None else {}),
                       self._store.memory_parts()):
            for name, nbytes in source.items():
                parts[name] += nbytes
        if self.is_trained:
            parts["quantizer"] = sum(a.nbytes for a in self._search_quantizer())
            parts["writer"] += sum(a.nbytes for a in self._writer_quantizer())
        parts["writer"] += self._labels.nbytes()
        resident = sum(parts[p] for p in self.RESIDENT_PARTS)
        return {**{p: parts[p] for p in self.RESIDENT_PARTS}, "resident": resident,
                "vectors": parts["vectors"], "writer": parts["writer"],
                "total": resident + parts["vectors"] + parts["writer"], "spare": parts["spare"]}

    #: The parts of :meth:`memory_usage` that add up to ``resident``.
    RESIDENT_PARTS = ("codes", "factors", "list_slots", "slot_ids", "tombstones", "tables",
                      "quantizer")

    def _search_quantizer(self) -> tuple[np.ndarray, ...]:
        """The centroid and rotation arrays the compiled search reads."""
        return (self._centroids_t, self._centroid_norms, self._centroids_rot, self._projection_t)

    def _writer_quantizer(self) -> tuple[np.ndarray, ...]:
        """Centroid arrays only updates read (the rotation is shared with the search)."""
        return (self._centroids,)

    def _prepare(self, x: Any, name: str) -> np.ndarray:
        x = as_float32_matrix(x, self._dim, name)
        if self._metric == "cosine":
            x = normalize_rows(x, name)
        return x

    def _require_writable(self, action: str) -> None:
        if self._read_only_reason is not None:
            raise ReadOnlyIndexError(f"cannot {action}: {self._read_only_reason}")

    # -------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to one self-describing file (see docs/format.md).

        The file is written to a temporary name, fsynced and renamed: a crash in the
        middle of a save leaves the previous file intact.  Read it back with
        :func:`binidx.load`.
        """
        from . import _persist

        _persist.save(self, path)

    def __reduce__(self):
        # Pickle through the same bytes as a file, so both paths share their checks.
        from . import _persist

        return (_persist.from_bytes, (_persist.to_bytes(self),))

    # ----------------------------------------------------------- state export
    def _get_state(self) -> tuple[dict, dict]:
        """The index as a parameter dict and named flat arrays (what files store).

        Buckets are concatenated (``list_sizes`` splits ``codes``, ``factors`` and
        ``list_slots`` again; ``factor_scales`` has one row per bucket); ``vectors`` and ``slot_ids`` are the slot-indexed arrays
        themselves, free slots having id -1, so saving copies no vector.
        """
        params = {"dim": self._dim, "metric": self._metric, "n_bits": self._n_bits,
                  "seed": self._seed, "n_lists": self.n_lists, "n_probe": self._n_probe,
                  "n_rerank": self._n_rerank, "probe_ratio": self._probe_ratio,
                  "is_trained": self.is_trained,
                  "balance": self.balance}
        arrays: dict[str, np.ndarray] = {}
        if self.is_trained:
            with self._write_batch():
                self._purge_tombstones(np.flatnonzero(self._buckets.dead))
                sizes, codes, factors, list_slots, scales = self._buckets.export()
                hw = self._store.high_water
                params["scale"] = self._scale
                params["layout"] = CODE_LAYOUT
                arrays = {"centroids": self._centroids, "projection": self._projection,
                          "list_sizes": sizes, "codes": codes, "factors": factors,
                          "factor_scales": scales, "list_slots": list_slots, "vectors": self._store.vectors[:hw],
                          "slot_ids": self._store.live_slot_ids()}
                if self._labels.used:
                    arrays["labels"] = self._labels.slot_labels[:hw]
        return params, arrays

    @classmethod
    def _from_state(cls, params: dict, arrays: dict, *, read_only_reason: str | None = None,
                    copy: bool = True) -> Index:
        """Rebuild an index from :meth:`_get_state` output.

        With ``copy=False`` the index takes the arrays over (they become its buckets and
        may be written to); the loaders pass arrays they own, or read-only mapped views.
        """
        if copy:
            arrays = {name: np.array(a) for name, a in arrays.items()}
        index = cls(params["dim"], metric=params["metric"], n_lists=params["n_lists"],
                    n_bits=params["n_bits"], seed=params["seed"],
                    balance=bool(params.get("balance", True)))
        index._n_probe, index._n_rerank = params.get("n_probe"), params.get("n_rerank")
        index._probe_ratio = params.get("probe_ratio")  # (older files have none: None)
        if params.get("is_trained"):
            index._set_trained_state(arrays["centroids"], arrays["projection"], params["scale"])
            sizes = np.asarray(arrays["list_sizes"], dtype=np.int64)
            list_slots = arrays["list_slots"]
            index._buckets = BucketStore.from_arrays(sizes, arrays["codes"], arrays["factors"],
                                                     list_slots, arrays["factor_scales"])
            slot_buckets = np.full(arrays["slot_ids"].shape[0], -1, dtype=np.int32)
            slot_buckets[list_slots] = np.repeat(np.arange(sizes.shape[0], dtype=np.int32), sizes)
            index._store = VectorStore.from_arrays(arrays["vectors"], arrays["slot_ids"], slot_buckets)
            if "labels" in arrays:
                index._labels = LabelStore.from_array(arrays["labels"])
            else:
                index._labels.grow(arrays["slot_ids"].shape[0])
        index._read_only_reason = read_only_reason
        index._batch = index._epoch + 1
        index._publish()
        return index

    # ------------------------------------------------------------ write batches
    @contextmanager
    def _write_batch(self):
        """One writer at a time; at the end the batch's result is published to searches."""
        with self._write_mutex:
            self._batch = self._epoch + 1
            self._store.recycle(self._readers.oldest_read_epoch())
            if self._buckets is not None:
                self._buckets.begin_batch()
            self._store.dead.begin_batch()
            self._batch_inserted, self._batch_removed_from = 0, []
            try:
                yield
                # Rebalance first: buckets it rewrites or dissolves drop their tombstones
                # on the way, so the purge after it copies none of them.
                if self.balance and (self._batch_inserted or self._batch_removed_from):
                    from . import _balance

                    removed_from = np.concatenate(self._batch_removed_from or [np.zeros(0, np.int32)])
                    _balance.rebalance(self, self._batch_inserted, removed_from)
                if self._buckets is not None and self._batch_removed_from:
                    self._purge_tombstones()
                    self._compact_if_sparse()
                if self._batch_inserted and 2 * self._batch_inserted >= len(self):
                    # A bulk load (at least half the index): drop the growth slack that
                    # rebalancing's appends left, once, at the cost of copying the lists.
                    self._buckets.trim()
            finally:
                self._publish()

    def _publish(self) -> None:
        """Make the state written so far the one new searches see."""
        self._epoch = self._batch
        self._version = self._epoch
        if not self.is_trained:
            return
        # Without tombstones dead_pages is None: the kernel then skips its pass over the
        # admitted candidates looking for them.
        dead_pages, dead_keepalive = self._store.dead.view()
        self._readers.publish(Snapshot(
            self._epoch, n_lists=self._centroids.shape[0], centroids_t=self._centroids_t,
            centroid_norms=self._centroid_norms, centroids_rot=self._centroids_rot,
            projection_t=self._projection_t, vectors=self._store.vectors,
            slot_ids=self._store.slot_ids, dead_pages=dead_pages, dead_keepalive=dead_keepalive,
            n_live=len(self._store),
            **self._buckets.view()))

    def _require_trained(self, action: str) -> None:
        if not self.is_trained:
            raise NotTrainedError(f"cannot {action}: the index is not trained; call index.train(x) first")


def _rotate_rows(rows: np.ndarray, projection_t: np.ndarray) -> np.ndarray:
    """``rows @ projection_t``, one row at a time (bits independent of the batch)."""
    return np.ascontiguousarray(np.matmul(rows[:, None, :], projection_t)[:, 0, :])


def build(x: Any, ids: Any = None, **params: Any) -> Index:
    """Train an index on ``x`` and add ``x`` to it, in one call.

    Parameters
    ----------
    x : array-like of shape (n, dim)
        The vectors.
    ids : array-like of shape (n,), optional
        Their ids (default 0..n-1).
    **params
        ``metric``, ``n_lists``, ``n_bits``, ``seed``: see :class:`Index`.

    Returns
    -------
    Index

    Examples
    --------
    >>> import numpy as np, binidx
    >>> x = np.random.default_rng(1).standard_normal((1000, 16)).astype(np.float32)
    >>> len(binidx.build(x, metric="cosine"))
    1000
    """
    arr = as_float32_matrix(x, None, "x")
    index = Index(arr.shape[1], **params)
    index.train(arr)
    index.add(arr, ids)
    return index
