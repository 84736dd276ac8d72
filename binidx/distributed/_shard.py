"""One shard: a durable index behind the methods the router calls.

:class:`ShardServer` is plain Python (the tests drive it without Ray too); the router
runs it as a Ray actor.  Ray calls ``__init__`` again with the same arguments each time
it restarts the actor, so a restarted shard reopens its directory, which replays the
write-ahead log, before it answers anything.

Every write is idempotent, because Ray may run a write a second time: when the actor
dies after the operation reached the log but before the reply got out, Ray restarts the
actor (which recovers the operation from disk) and retries the call.

- ``add``: ids already present with equal vectors are skipped (that is what a retry
  sees); an id present with a different vector is a real conflict (KeyError).
- ``upsert``: rows already stored with equal vectors are skipped, so a retry neither
  changes nor logs anything.
- ``remove``: ids that are not present are skipped.

"Equal" is float32 ``==`` after the index's own conversion (and normalisation for
cosine): exactly what the first attempt stored.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .._durable import open as open_durable
from .._exact import normalize_rows
from .._validation import as_float32_matrix, as_ids
from ..errors import BinidxError, ConcurrencyError, InvalidInputError
from ._layout import check_shard_marker
from ._routing import shard_of

# After a crash, the previous holder of the directory lock may take a while to be
# gone (a process being killed; on NFSv4 a lost node's lock lives until its lease
# expires, 90 s by default): wait this long before giving up.
_LOCK_WAIT_S = 120.0


class ShardServer:
    """Serve one shard directory.

    Parameters
    ----------
    directory : str
        The shard's durable index (``PATH/shard-XXXX``).
    uid : str
        The sharded index's uid (checked against the directory's marker).
    shard, n_shards : int
        This shard's number and the shard count: every id it is sent must route here.
    sync : {"always", "never"} or float
        Flush policy of the write-ahead log (see :func:`binidx.open`).
    """

    def __init__(self, directory: str, uid: str, shard: int, n_shards: int,
                 sync: str | float = "always") -> None:
        check_shard_marker(directory, uid, shard, n_shards)
        self._directory = directory
        self._shard = shard
        self._n_shards = n_shards
        self._sync = sync
        self._crash_after_write = False
        started = time.monotonic()
        self._db = self._open(started)
        self._opened_s = time.monotonic() - started

    def _open(self, started: float):
        while True:
            try:
                return open_durable(self._directory, sync=self._sync)
            except ConcurrencyError:
                if time.monotonic() - started > _LOCK_WAIT_S:
                    raise
                time.sleep(0.1)

    # ----------------------------------------------------------------- writes
    def add(self, x: np.ndarray, ids: np.ndarray) -> int:
        """Add vectors; ids already present with the same vector are skipped.

        Returns the number of vectors actually added by this call.
        """
        x, ids = self._checked(x, ids)
        present, same = self._compare(x, ids)
        if (present & ~same).any():
            bad = int(ids[present & ~same][0])
            raise KeyError(
                f"id {bad} is already in the index with a different vector (shard "
                f"{self._shard}); use upsert() to replace vectors, or remove them first")
        return self._write("add", x[~present], ids[~present]) if not present.all() else 0

    def upsert(self, x: np.ndarray, ids: np.ndarray) -> int:
        """Insert or replace vectors; rows already stored bit-identically are skipped.

        Returns the number of vectors actually written by this call.
        """
        x, ids = self._checked(x, ids)
        present, same = self._compare(x, ids)
        change = ~(present & same)
        return self._write("upsert", x[change], ids[change]) if change.any() else 0

    def _compare(self, x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which ids are present, and which of those hold exactly the row given."""
        present = self._present(ids)
        same = np.zeros(ids.size, dtype=bool)
        if present.any():
            given = x[present]
            if self._db.metric == "cosine":
                # What the index stores: the same normalisation of the same float32 rows.
                given = normalize_rows(given, "x")
            same[present] = (self._db.get(ids[present]) == given).all(axis=1)
        return present, same

    def remove(self, ids: np.ndarray) -> int:
        """Remove the ids that are present; returns how many were removed by this call."""
        ids = self._checked_ids(ids)
        return self._write("remove", ids)

    def _write(self, op: str, *args: Any) -> int:
        try:
            if op == "remove":
                done = self._db.remove(*args, missing="ignore")
            else:
                done = len(getattr(self._db, op)(*args))
        except BinidxError:
            if self._db._broken is not None:
                # The operation is in the log but the in-memory index may hold part of
                # it: reopen (which replays the log) so that this shard serves again.
                self._db.close()
                self._db = self._open(time.monotonic())
            raise
        if self._crash_after_write:
            os._exit(70)  # logged and applied, never acknowledged: what a retry must survive
        return done

    def _crash_after_next_write(self) -> None:
        """Fault injection for tests: the next write is logged, then the process dies
        before replying (Ray restarts the actor, which forgets this flag)."""
        self._crash_after_write = True

    def _checked(self, x: Any, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = self._checked_ids(ids)
        return as_float32_matrix(x, self._db.dim, "x"), ids

    def _checked_ids(self, ids: Any) -> np.ndarray:
        arr = np.asarray(ids)
        ids = as_ids(arr, arr.size)
        if ids.size:
            owner = shard_of(ids, self._n_shards)
            wrong = np.flatnonzero(owner != self._shard)
            if wrong.size:
                # Writing it here would hide it from every later lookup of that id.
                i = int(wrong[0])
                raise InvalidInputError(
                    f"id {int(ids[i])} belongs to shard {int(owner[i])}, not to shard "
                    f"{self._shard}: the caller routes with another shard count")
        return ids

    def _present(self, ids: np.ndarray) -> np.ndarray:
        db = self._db
        return np.fromiter((i in db for i in ids.tolist()), dtype=bool, count=ids.size)

    # ------------------------------------------------------------------ reads
    def search(self, q: np.ndarray | bytes, k: int, n_probe: int, n_rerank: int,
               n_threads: int | None, probe_ratio: float | None = None) -> bytes:
        """Top ``k`` of this shard, with exact (reranked) distances.

        ``q`` is an array, or for small batches the raw float32 bytes of one; the result
        is :func:`pack_result` bytes.  Plain bytes cross Ray ~1 ms faster per call than
        small NumPy arrays (measured in docs/distributed.md), which matters for
        one-query searches.  The router sends ``probe_ratio`` resolved (inf: fixed
        probing), so the shard's own default is never used.
        """
        if isinstance(q, bytes):
            q = np.frombuffer(q, dtype=np.float32).reshape(-1, self._db.dim)
        d, i = self._db.search(q, k, n_probe=n_probe, n_rerank=n_rerank, n_threads=n_threads,
                               probe_ratio=probe_ratio)
        return pack_result(d, i)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` are present (bool array)."""
        return self._present(self._checked_ids(ids))

    def get(self, ids: np.ndarray) -> np.ndarray:
        return self._db.get(self._checked_ids(ids))

    def ids(self) -> np.ndarray:
        return self._db.ids()

    def count(self) -> int:
        return len(self._db)

    def checkpoint(self) -> None:
        self._db.checkpoint()

    def info(self) -> dict:
        """Where and what this shard is (for monitoring and tests)."""
        out = {"shard": self._shard, "directory": self._directory, "n": len(self._db),
               "pid": os.getpid(), "log_records": self._db.log_records,
               "last_seq": self._db.last_seq, "open_seconds": self._opened_s}
        try:
            import ray

            ctx = ray.get_runtime_context()
            out["node_id"] = ctx.get_node_id()
            out["restarted"] = bool(ctx.was_current_actor_reconstructed)
        except Exception:  # noqa: BLE001 - outside Ray there is no runtime context
            out["node_id"], out["restarted"] = None, False
        return out

    def close(self) -> None:
        """Flush the log and release the directory (the actor is stopped afterwards)."""
        self._db.close()


def pack_result(distances: np.ndarray, ids: np.ndarray) -> bytes:
    """``(distances, ids)`` of shape (n, k) as one bytes object: float32 then int64."""
    return (np.ascontiguousarray(distances, dtype=np.float32).tobytes()
            + np.ascontiguousarray(ids, dtype=np.int64).tobytes())


def unpack_result(data: bytes, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_result` (read-only views of ``data``)."""
    split = 4 * n * k
    if len(data) != 12 * n * k:
        raise ValueError(f"a shard answered {len(data)} bytes for {n} x {k} results")
    return (np.frombuffer(data, np.float32, count=n * k).reshape(n, k),
            np.frombuffer(data, np.int64, count=n * k, offset=split).reshape(n, k))
