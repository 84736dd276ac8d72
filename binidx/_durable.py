"""Durable indexes: a snapshot file plus a write-ahead log in one directory.

``binidx.open(directory)`` gives a :class:`DurableIndex`.  Every ``add`` / ``upsert`` /
``remove`` is checked, then appended to the log (``binidx._wal``), then applied to the
in-memory :class:`~binidx.Index`; ``checkpoint()`` saves the index as a new snapshot
(an ordinary index file, ``binidx._persist``) and empties the log.  Opening loads the
snapshot and replays the log records that came after it.

Directory layout (docs/format.md, section 3)::

    snapshot.binidx   Index.save format; params["durable_seq"] = last operation it holds
    log.binwal        the operations after the last checkpoint
    LOCK              empty; an exclusive flock on it marks the one writer

Why validate before logging: an operation in the log is replayed on every open, so an
operation that would fail (an id already present, a wrong dimension, NaN) must never
reach it; otherwise replay would hit the same failure and the directory could not be
opened again.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from . import _persist, _wal
from ._exact import SearchResult, normalize_rows
from ._format import remove_quietly
from ._labels import as_labels
from ._validation import as_float32_matrix, as_ids, first_duplicate
from .errors import BinidxError, ConcurrencyError, IndexFormatError, InvalidInputError

try:  # POSIX only; without it the single-writer rule is the caller's to keep
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SNAPSHOT_NAME = "snapshot.binidx"
LOG_NAME = "log.binwal"
LOCK_NAME = "LOCK"
SEQ_PARAM = "durable_seq"
"""Snapshot parameter holding the sequence number of the last logged operation applied."""

# op -> (required arrays, optional arrays)
_OPS = {"add": (("x", "ids"), ("labels",)), "upsert": (("x", "ids"), ("labels",)),
        "remove": (("ids",), ())}


def open(directory: str | os.PathLike, index: Any = None, *,
         sync: str | float = "always") -> DurableIndex:
    """Open the durable index kept in ``directory``, or create it from ``index``.

    A durable index survives crashes: each ``add`` / ``upsert`` / ``remove`` is written
    to a write-ahead log before it returns, and opening the directory again loads the
    last snapshot and replays the log.  See :class:`DurableIndex`.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the snapshot and the log live.  To create a durable index, give a directory
        that does not exist (it is created) or holds no index yet.
    index : Index, optional
        Required to create a new durable index: a trained (possibly empty) index whose
        contents become the first snapshot.  The durable index keeps its own copy, so
        later changes to ``index`` are not logged.  Must be None for an existing
        directory.
    sync : {"always", "never"} or float, default "always"
        When logged operations are forced to disk (``fdatasync``):

        - ``"always"``: before each operation returns; survives power loss.
        - ``t`` seconds: group commit, a background flush every ``t`` s; power loss
          can lose the last ``t`` s of acknowledged operations.
        - ``"never"``: left to the operating system.

        Every policy survives the crash of the process (SIGKILL, an exception, OOM
        kill): an operation has reached the operating system before it returns.  The
        cost of each is measured in docs/format.md.

    Returns
    -------
    DurableIndex

    Raises
    ------
    FileNotFoundError
        If ``directory`` holds no durable index and ``index`` is None.
    InvalidInputError
        If ``index`` is given but ``directory`` already holds a durable index, or
        ``index`` is not a trained :class:`~binidx.Index`.
    ConcurrencyError
        If another process (or another handle in this one) has the directory open.
    IndexFormatError
        If the snapshot or the log is damaged or does not belong together.

    Examples
    --------
    >>> import numpy as np, binidx, tempfile, os
    >>> x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> where = os.path.join(tempfile.mkdtemp(), "vectors")
    >>> with binidx.open(where, binidx.build(x), sync="never") as db:
    ...     db.remove([0, 1])
    ...     _ = db.add(x[:2], ids=[1000, 1001])
    2
    >>> with binidx.open(where) as db:     # the log is replayed
    ...     len(db), 1000 in db, 0 in db
    (500, True, False)
    """
    return DurableIndex(directory, index, sync=sync)


def _try_exclusive_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` without waiting; False if someone else holds it.

    ``flock`` (not ``lockf``) because its locks belong to the open file, so a second
    open in the same process conflicts too.
    """
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class DurableIndex:
    """An :class:`~binidx.Index` whose changes are logged to disk before they return.

    Create it with :func:`binidx.open`.  It answers ``search``, ``get``, ``ids``, ``in``
    and ``len`` like an Index; ``add``, ``upsert`` and ``remove`` are validated, appended
    to the write-ahead log, then applied.

    Guarantees
    ----------
    - An operation that returned (was *acknowledged*) is in the index after any crash
      of the process, and after power loss too with ``sync="always"``.
    - An operation that raised a validation error (``KeyError`` for a present / absent
      id, ``InvalidInputError`` for a wrong dimension or NaN ...) was not logged and
      changed nothing.
    - An operation interrupted by a crash before it returned may or may not be in the
      index when it is reopened, but it is there whole or not at all.
    - ``checkpoint()`` is atomic: a crash during it leaves the previous snapshot and
      log, which give the same index.
    - One writer per directory: a second open, in this or another process, raises
      :class:`~binidx.ConcurrencyError`.  Other processes may read the last snapshot
      with ``binidx.load(directory / "snapshot.binidx", mmap=True)`` (without the
      operations logged since).

    Search defaults (:attr:`n_probe`, :attr:`n_rerank`, :attr:`probe_ratio`) are not
    logged: they are saved by the next :meth:`checkpoint`.

    Attributes
    ----------
    directory : str
        The directory, as given.
    """

    def __init__(self, directory: str | os.PathLike, index: Any = None, *,
                 sync: str | float = "always") -> None:
        from .index import Index

        self.directory = os.fspath(directory)
        self._sync = _wal._check_sync(sync)
        self._closed = True  # until fully open, so that a failed open leaves nothing usable
        self._broken: BaseException | None = None
        self._write_lock = threading.Lock()
        if index is not None and not isinstance(index, Index):
            raise InvalidInputError(f"index must be a binidx.Index, got {type(index).__name__}")
        if index is not None and not index.is_trained:
            raise InvalidInputError("index must be trained to start a durable index (its "
                                    "buckets are fixed from then on); call index.train(x) first")
        self._snapshot_path = os.path.join(self.directory, SNAPSHOT_NAME)
        self._log_path = os.path.join(self.directory, LOG_NAME)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise InvalidInputError(f"{self.directory} is a file; binidx.open needs a directory "
                                    "(a durable index is a snapshot plus a log)")
        self._check_existing(index)
        if index is not None:
            os.makedirs(self.directory, exist_ok=True)
        self._lock_fd = self._lock_directory()
        try:
            self._check_existing(index)  # again, now that no other writer can change it
            self._remove_stray_temporaries()
            if index is not None:
                self._create(index)
            self._index, seq = self._load_snapshot()
            self._wal = self._open_log()
            try:
                self._replay(seq)
            except BaseException:
                self._wal.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._closed = False

    # ------------------------------------------------------------------ opening
    def _check_existing(self, index: Any) -> None:
        has_snapshot = os.path.exists(self._snapshot_path)
        if index is not None and has_snapshot:
            raise InvalidInputError(
                f"{self.directory} already holds a durable index; open it with "
                "binidx.open(directory) without index=, or choose a new directory")
        if has_snapshot:
            return
        log_size = os.path.getsize(self._log_path) if os.path.exists(self._log_path) else 0
        if log_size > _wal.FILE_HEADER_SIZE:
            raise IndexFormatError(
                f"{self.directory} holds a log ({LOG_NAME}) but no snapshot ({SNAPSHOT_NAME}): "
                "the snapshot was deleted or the directory is damaged; restore the snapshot "
                "from a backup")
        if index is None:
            raise FileNotFoundError(
                f"{self.directory} holds no durable index (no {SNAPSHOT_NAME}); to create "
                "one, pass a trained index: binidx.open(directory, index)")

    def _lock_directory(self) -> int:
        path = os.path.join(self.directory, LOCK_NAME)
        # A separate lock file, never replaced, rather than the log's own lock: a
        # checkpoint replaces the log file by rename, and a process that opened the old
        # file just before could otherwise lock that unlinked file and think it writes.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        if not _try_exclusive_flock(fd):
            os.close(fd)
            raise ConcurrencyError(
                f"{self.directory} is already open as a durable index (by another process "
                "or another binidx.open in this one); a durable index has one writer: "
                "close the other handle first")
        return fd

    def _remove_stray_temporaries(self) -> None:
        # A crash during a checkpoint can leave a partly written snapshot under a temporary
        # name (see _format.atomic_write); only the lock holder writes here, so any such
        # file is dead.  They can be as large as the index, hence the cleanup.
        prefix = f".{SNAPSHOT_NAME}."
        for name in os.listdir(self.directory):
            if name.startswith(prefix) and name.endswith(".tmp"):
                remove_quietly(os.path.join(self.directory, name))

    def _create(self, index: Any) -> None:
        if os.path.exists(self._log_path):
            # Left by a creation that crashed before its snapshot was written (it holds
            # no records, _check_existing made sure): start the log afresh.
            os.unlink(self._log_path)
        _persist.save(index, self._snapshot_path, {SEQ_PARAM: 0})

    def _load_snapshot(self) -> tuple[Any, int]:
        index, params = _persist.load_with_params(self._snapshot_path, mmap=False)
        seq = params.get(SEQ_PARAM)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise IndexFormatError(
                f"{self._snapshot_path} is an index file but not the snapshot of a durable "
                f"index (its params lack a valid {SEQ_PARAM!r}); load it with binidx.load, "
                "or create a durable index from it in a new directory")
        if not index.is_trained:
            raise IndexFormatError(f"{self._snapshot_path} holds an untrained index; "
                                   "the snapshot is damaged")
        return index, seq

    def _open_log(self) -> _wal.WriteAheadLog:
        try:
            return _wal.WriteAheadLog(self._log_path, sync=self._sync)
        except ConcurrencyError:
            raise ConcurrencyError(
                f"the log of {self.directory} is open elsewhere (a WriteAheadLog opened on "
                f"{LOG_NAME} directly?); close it first") from None

    def _replay(self, seq: int) -> None:
        wal = self._wal
        for rec in wal.replay(seq):  # raises if the log starts after the snapshot
            try:
                self._apply(rec.op, self._record_arrays(rec))
            except (KeyError, ValueError, TypeError, BinidxError) as exc:
                raise IndexFormatError(
                    f"{self._log_path}: record {rec.seq} ({rec.op!r}) cannot be applied to "
                    f"the snapshot ({exc}); the log does not belong to this snapshot or is "
                    "damaged") from None
        if wal.last_seq < seq:
            # The snapshot holds operations whose records did not survive (possible after
            # a power loss with sync other than "always"): number new records after the
            # snapshot's, or the next open would skip them as already applied.
            wal.reset(seq)

    def _record_arrays(self, rec: _wal.LogRecord) -> dict:
        """Check a log record's shape and types before it is applied."""
        if rec.op not in _OPS:
            raise InvalidInputError(f"unknown operation {rec.op!r}")
        required, optional = _OPS[rec.op]
        names = set(rec.arrays)
        if not set(required) <= names <= set(required + optional):
            raise InvalidInputError(f"arrays {sorted(names)}, expected {list(required)} "
                                    f"and optionally {list(optional)}")
        ids = rec.arrays["ids"]
        if ids.dtype != np.int64 or ids.ndim != 1:
            raise InvalidInputError(f"ids of dtype {ids.dtype} and shape {ids.shape}")
        labels = rec.arrays.get("labels")
        if labels is not None and (labels.dtype != np.int64 or labels.shape != ids.shape):
            raise InvalidInputError(f"labels of dtype {labels.dtype} and shape {labels.shape}")
        if "x" in rec.arrays:
            x = rec.arrays["x"]
            if x.dtype != np.float32 or x.shape != (ids.shape[0], self._index.dim):
                raise InvalidInputError(f"vectors of dtype {x.dtype} and shape {x.shape}")
        return rec.arrays

    def _apply(self, op: str, arrays: dict) -> None:
        if op == "remove":
            self._index.remove(arrays["ids"])
        elif op == "add":
            self._index.add(arrays["x"], arrays["ids"], labels=arrays.get("labels"))
        else:
            self._index.upsert(arrays["x"], arrays["ids"], labels=arrays.get("labels"))

    # ------------------------------------------------------------------ updates
    def add(self, x: Any, ids: Any = None, labels: Any = None) -> np.ndarray:
        """Add vectors under new ids; logged before it returns.

        Parameters
        ----------
        x : array-like of shape (n, dim)
        ids : array-like of shape (n,), optional
            Distinct int64 ids >= 0 not in the index; by default sequential ids after
            the largest one in the index.
        labels : array-like of shape (n,), optional
            Integer labels >= 0 for filtered search (see :meth:`binidx.Index.add`).

        Returns
        -------
        ndarray of shape (n,), int64
            The ids.

        Raises
        ------
        KeyError
            If an id is already in the index (nothing is logged or added).
        """
        with self._write_lock:
            self._check_usable("add vectors")
            x32 = self._vectors(x)
            n = x32.shape[0]
            if ids is None:
                ids = np.arange(n, dtype=np.int64) + self._next_default_id()
            else:
                ids = self._distinct_ids(ids, n, inserting=True)
                present = [i for i in ids.tolist() if i in self._index]
                if present:
                    raise KeyError(
                        f"id {present[0]} is already in the index ({len(present)} of the "
                        "given ids are); use upsert() to replace vectors, or remove them first")
            self._log_and_apply("add", self._record(x32, ids, labels))
        return ids

    def upsert(self, x: Any, ids: Any, labels: Any = None) -> np.ndarray:
        """Insert vectors, replacing those whose id is in the index; logged before it returns.

        Same arguments and result as :meth:`binidx.Index.upsert`: ``x`` of shape
        (n, dim), ``ids`` n distinct int64 ids, optional ``labels``; returns the ids.
        """
        with self._write_lock:
            self._check_usable("upsert vectors")
            x32 = self._vectors(x)
            ids = self._distinct_ids(ids, x32.shape[0], inserting=True)
            self._log_and_apply("upsert", self._record(x32, ids, labels))
        return ids

    def remove(self, ids: Any, missing: str = "raise") -> int:
        """Remove the vectors with these ids; logged before it returns.

        Parameters
        ----------
        ids : array-like of int
            Distinct ids.
        missing : {"raise", "ignore"}, default "raise"
            Ids not in the index raise ``KeyError`` (nothing is removed or logged), or
            are skipped.

        Returns
        -------
        int
            How many vectors were removed.
        """
        if missing not in ("raise", "ignore"):
            raise InvalidInputError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        with self._write_lock:
            self._check_usable("remove vectors")
            arr = np.asarray(ids)
            ids = self._distinct_ids(arr, arr.size)
            present = np.fromiter((i in self._index for i in ids.tolist()), dtype=bool,
                                  count=ids.size)
            if missing == "raise" and not present.all():
                absent = ids[~present]
                raise KeyError(
                    f"id {int(absent[0])} is not in the index ({absent.size} of the {ids.size} "
                    "given ids are not); check the ids, or pass missing='ignore'")
            ids = ids[present]
            if ids.size:  # removing nothing is not worth a log record
                self._log_and_apply("remove", {"ids": ids})
        return int(ids.size)

    @staticmethod
    def _record(x32: np.ndarray, ids: np.ndarray, labels: Any) -> dict:
        arrays = {"x": x32, "ids": ids}
        if labels is not None:
            arrays["labels"] = as_labels(labels, ids.shape[0])
        return arrays

    def _vectors(self, x: Any) -> np.ndarray:
        """The float32 rows that are logged, after every check the Index will make."""
        x32 = as_float32_matrix(x, self._index.dim, "x")
        if self._index.metric == "cosine":
            normalize_rows(x32, "x")  # refuses zero rows; the Index normalises on apply
        return x32

    @staticmethod
    def _distinct_ids(ids: Any, n: int, *, inserting: bool = False) -> np.ndarray:
        # Every check Index makes on ids must be made here too, before logging: a
        # logged operation that the Index then refuses would fail again on every replay.
        ids = as_ids(ids, n)
        dup = first_duplicate(ids)
        if dup is not None:
            raise InvalidInputError(f"ids contains {dup} more than once; ids must be distinct")
        if inserting and ids.size and int(ids.min()) < 0:
            raise InvalidInputError(f"ids must be >= 0 (negative ids are reserved: -1 marks "
                                    f"a missing search result), got {int(ids.min())}")
        return ids

    def _next_default_id(self) -> int:
        # The rule of Index.add (largest id + 1), computed here because the ids must be
        # known before the operation is logged.
        return self._index._store.max_id() + 1

    def _log_and_apply(self, op: str, arrays: dict) -> None:
        self._wal.append(op, arrays)  # on failure nothing is logged and nothing applied
        try:
            self._apply(op, arrays)
        except BaseException as exc:
            # The operation is logged, so it will be replayed on the next open, but the
            # in-memory index may hold part of it: refuse further work on this handle.
            self._broken = exc
            raise BinidxError(
                f"{self.directory}: operation {op!r} was logged but applying it failed "
                f"({exc!r}); the in-memory index may be inconsistent, so this handle is "
                "unusable: close it and binidx.open the directory again (the log replays "
                "the operation)") from exc

    # ------------------------------------------------------------------ reading
    def search(self, q: Any, k: int = 10, n_probe: int | None = None,
               n_rerank: int | None = None, n_threads: int | None = None, *,
               labels: Any = None, allowed_ids: Any = None,
               probe_ratio: float | None = None) -> SearchResult:
        """Search like :meth:`binidx.Index.search` (every acknowledged change is visible)."""
        self._check_usable("search")
        return self._index.search(q, k, n_probe=n_probe, n_rerank=n_rerank,
                                  n_threads=n_threads, labels=labels, allowed_ids=allowed_ids,
                                  probe_ratio=probe_ratio)

    def compile_filter(self, allowed_ids: Any = None, labels: Any = None):
        """A reusable filter for ``search(..., allowed_ids=filter)``, like
        :meth:`binidx.Index.compile_filter`."""
        self._check_usable("compile a filter")
        return self._index.compile_filter(allowed_ids, labels)

    def get(self, ids: Any) -> np.ndarray:
        """The stored vectors of these ids, like :meth:`binidx.Index.get`."""
        self._check_usable("get vectors")
        return self._index.get(ids)

    def ids(self) -> np.ndarray:
        """All ids in the index, sorted, int64."""
        self._check_usable("list ids")
        return self._index.ids()

    def __contains__(self, id_: Any) -> bool:
        self._check_usable("look up an id")
        return id_ in self._index

    def __len__(self) -> int:
        self._check_usable("count vectors")
        return len(self._index)

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self._index.dim

    @property
    def metric(self) -> str:
        """``"l2"``, ``"ip"`` or ``"cosine"``."""
        return self._index.metric

    @property
    def n_bits(self) -> int:
        """Bits per binary code."""
        return self._index.n_bits

    @property
    def n_lists(self) -> int:
        """Number of buckets."""
        return self._index.n_lists

    @property
    def n_probe(self) -> int:
        """Default buckets visited per query (see :attr:`binidx.Index.n_probe`); saved
        by the next :meth:`checkpoint`, not logged."""
        return self._index.n_probe

    @n_probe.setter
    def n_probe(self, value: int | None) -> None:
        self._index.n_probe = value

    @property
    def n_rerank(self) -> int:
        """Default rerank candidates per query; saved by the next :meth:`checkpoint`."""
        return self._index.n_rerank

    @n_rerank.setter
    def n_rerank(self, value: int | None) -> None:
        self._index.n_rerank = value

    @property
    def probe_ratio(self) -> float | None:
        """Default adaptive-probing ratio (see :attr:`binidx.Index.probe_ratio`; None:
        every query visits n_probe buckets); saved by the next :meth:`checkpoint`."""
        return self._index.probe_ratio

    @probe_ratio.setter
    def probe_ratio(self, value: float | None) -> None:
        self._index.probe_ratio = value

    @property
    def sync(self) -> str | float:
        """The log's flush policy."""
        return self._sync

    @property
    def last_seq(self) -> int:
        """Sequence number of the last logged operation (0 before the first)."""
        return self._wal.last_seq

    @property
    def log_records(self) -> int:
        """Operations logged since the last checkpoint (what the next open replays)."""
        return self._wal.n_records

    # ------------------------------------------------------------- persistence
    def checkpoint(self) -> None:
        """Write a new snapshot and empty the log.

        The snapshot is written to a temporary file, fsynced and renamed, and only then
        is the log reset (atomically too): a crash at any moment leaves a snapshot and a
        log that give the same index.  Updates wait while it runs; searches do not.
        Call it when the log has grown large enough that replaying it on open is slow
        (:attr:`log_records`).
        """
        with self._write_lock:
            self._check_usable("checkpoint")
            seq = self._wal.last_seq
            _persist.save(self._index, self._snapshot_path, {SEQ_PARAM: seq})
            self._wal.reset(seq)

    def save(self, path: str | os.PathLike) -> None:
        """Write the current index to a plain index file (:func:`binidx.load` reads it)."""
        with self._write_lock:
            self._check_usable("save")
            self._index.save(path)

    def close(self) -> None:
        """Flush the log (unless ``sync="never"``), release the directory. Idempotent.

        No checkpoint is made: the next open replays the log.
        """
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._wal.close()
            finally:
                os.close(self._lock_fd)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _check_usable(self, action: str) -> None:
        if self._closed:
            raise ValueError(f"cannot {action}: the durable index {self.directory} is closed; "
                             "binidx.open it again")
        if self._broken is not None:
            raise BinidxError(
                f"cannot {action}: an earlier operation on {self.directory} failed after it "
                f"was logged ({self._broken!r}); close this handle and binidx.open the "
                "directory again")

    def __enter__(self) -> DurableIndex:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):
        raise TypeError("a DurableIndex cannot be pickled (it owns a directory lock and an "
                        "open log); pickle an Index, or binidx.open the directory elsewhere")

    def __repr__(self) -> str:
        if self._closed:
            return f"binidx.DurableIndex({self.directory!r}, closed)"
        return (f"binidx.DurableIndex({self.directory!r}, n={len(self._index)}, "
                f"dim={self.dim}, metric={self.metric!r}, log_records={self.log_records}, "
                f"sync={self._sync!r})")
