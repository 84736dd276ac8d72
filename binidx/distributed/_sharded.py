"""The router: :class:`ShardedIndex` spreads one index over Ray actors, one per shard.

Writes go to the shard that owns each id (``_routing.shard_of``); a search goes to every
shard and the per-shard top k are merged by (distance, id).  Every shard started from
the same trained template (centroids, rotation), so a vector gets the same code, bucket
and exact distance whichever shard holds it: with ``n_probe = n_lists`` and a rerank
budget that covers the probed buckets, the merged result is exactly what one local
:class:`~binidx.Index` holding every vector returns.
"""
from __future__ import annotations

import contextlib
import math
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
from ray import exceptions as ray_exc

from .. import _wal
from .._durable import open as open_durable
from .._exact import normalize_rows
from .._persist import load as load_index
from .._validation import as_float32_matrix, as_ids, check_positive_int, check_probe_ratio
from .._version import __version__
from ..errors import IndexFormatError, InvalidInputError
from ..index import Index
from . import _layout
from ._results import ShardedSearchResult, ShardUnavailableError, merge, reason
from ._routing import HASH_NAME, shard_of
from ._shard import ShardServer, unpack_result

NAMESPACE = "binidx"
"""Ray namespace of the shard actors, so that any driver finds them by name."""

DEFAULT_MAX_TASK_RETRIES = 3
"""How often Ray re-sends a call whose shard actor died while running it (every write is
idempotent, so a re-sent write cannot apply twice)."""

DEFAULT_READY_TIMEOUT = 300.0
"""Seconds ``create`` / ``open`` wait for every shard to have opened its directory."""

MAX_SHARDS = 9999

# Query batches up to this size are sent inside each call rather than through ray.put
# (Ray itself inlines arguments below 100 KiB).
_INLINE_BYTES = 64 * 1024

_ACTOR_CLASS = None


def _actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = ray.remote(ShardServer)
    return _ACTOR_CLASS


def _empty_copy(index: Index) -> Index:
    """A trained index with the same centroids, rotation and defaults, and no vectors."""
    out = Index(index.dim, metric=index.metric, n_lists=index.n_lists, n_bits=index.n_bits,
                seed=index.seed, balance=False)
    params, arrays = index._get_state()
    with out._write_batch():
        out._set_trained_state(np.array(arrays["centroids"]), np.array(arrays["projection"]),
                               params["scale"])
    out._n_probe, out._n_rerank = params["n_probe"], params["n_rerank"]
    out._probe_ratio = params.get("probe_ratio")
    return out


def _check_actor_options(actor_options: Any) -> None:
    if actor_options is not None and not (callable(actor_options)
                                          or isinstance(actor_options, dict)):
        raise InvalidInputError(f"actor_options must be a dict or a callable taking the "
                                f"shard number, got {type(actor_options).__name__}")


def _template_property(name: str, doc: str) -> property:
    """A read-only property answered by the local template (every shard has the same)."""
    return property(lambda self: getattr(self._template, name), doc=doc)


class ShardedIndex:
    """An index spread over Ray actors, one durable index per shard.

    Build one with :meth:`create`, reconnect with :meth:`open`.  Each shard is a named
    Ray actor (restarted by Ray when it dies) that keeps its vectors in a durable index
    (snapshot + write-ahead log, :func:`binidx.open`) in ``path/shard-XXXX``; ``path``
    must be storage that every Ray node reaches at the same path.

    Ids route to shards by ``splitmix64(id) % n_shards``.  A search goes to every shard;
    each returns its top ``k`` with exact distances and the router merges them.

    Guarantees
    ----------
    - A write that returned is on disk in its shard's log (flushed as ``sync`` says) and
      survives the shard actor's death and restart.
    - ``add``, ``upsert`` and ``remove`` are idempotent, so Ray's retries after an actor
      death, and the caller's own retries after an error, never apply one twice:
      adding an id that is present with the bit-identical vector is a no-op.
    - A write to several shards is not atomic across them: when a shard fails, the
      others have applied their part (the error says which); retrying is safe.
    - Results do not depend on the shard count when every probed candidate is reranked
      (see :meth:`search`).

    Examples
    --------
    Needs a Ray cluster (``ray.init()``), hence skipped as a doctest:

    >>> import numpy as np, ray, tempfile, os                       # doctest: +SKIP
    >>> from binidx.distributed import ShardedIndex                  # doctest: +SKIP
    >>> ray.init(num_cpus=2)                                         # doctest: +SKIP
    >>> x = np.random.default_rng(0).standard_normal((5000, 32)).astype(np.float32)  # doctest: +SKIP
    >>> where = os.path.join(tempfile.mkdtemp(), "catalog")          # doctest: +SKIP
    >>> with ShardedIndex.create(where, 4, 32, train_x=x) as index:  # doctest: +SKIP
    ...     _ = index.add(x, ids=np.arange(5000))
    ...     D, I = index.search(x[:3], k=5)
    ...     I[:, 0].tolist()
    [0, 1, 2]
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("create a sharded index with ShardedIndex.create(path, n_shards, dim, "
                        "train_x=...) or connect to one with ShardedIndex.open(path)")

    # ------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike, n_shards: int, dim: int | None = None, *,
               train_x: Any = None, trained: Index | None = None, metric: str = "l2",
               n_lists: int | None = None, n_bits: int | None = None, seed: int = 0,
               sync: str | float = "always", detached: bool = False,
               actor_options: dict | Callable[[int], dict] | None = None,
               timeout: float | None = DEFAULT_READY_TIMEOUT) -> ShardedIndex:
        """Train once, lay out ``n_shards`` empty shards under ``path`` and start them.

        Connect to the cluster first (``ray.init(address=...)``); without it Ray starts
        a local instance on this machine.

        Parameters
        ----------
        path : str or os.PathLike
            A new (or empty) directory on storage that every Ray node mounts at the same
            path (NFS, CephFS, a cloud file system ...).  Made absolute.
        n_shards : int
            Number of shards, fixed for the life of the index (changing it needs a
            rebuild: ids route by ``hash(id) % n_shards``).
        dim : int, optional
            Vector dimension; by default that of ``train_x`` / ``trained``.
        train_x : array-like of shape (n, dim), optional
            Sample to train the buckets and the encoder on (see :meth:`binidx.Index.train`).
            Give ``train_x`` or ``trained``.
        trained : Index, optional
            A trained index whose centroids, rotation and search defaults every shard
            starts from (its vectors, if any, are not copied).
        metric, n_lists, n_bits, seed
            As for :class:`binidx.Index` (used with ``train_x``).
        sync : {"always", "never"} or float, default "always"
            Flush policy of every shard's write-ahead log (see :func:`binidx.open`).
        detached : bool, default False
            Start the actors with ``lifetime="detached"``: they outlive this process and
            keep serving other clients until ``close(stop=True)``.  Otherwise they stop
            when this handle is closed or this process exits.
        actor_options : dict or callable, optional
            Passed to ``.options()`` of every shard actor, over the defaults
            (``max_restarts=-1``, ``max_task_retries=3``, ``scheduling_strategy="SPREAD"``),
            e.g. ``{"num_cpus": 4, "memory": 16 * 2**30}`` to reserve a node's share.  A
            callable is called with the shard number and returns that shard's options
            (to pin shards to nodes: ``SPREAD`` is only best effort).
        timeout : float or None, default 300
            Seconds to wait for every shard to be up (None: no limit).

        Returns
        -------
        ShardedIndex
        """
        n_shards = check_positive_int(n_shards, "n_shards", maximum=MAX_SHARDS)
        _check_actor_options(actor_options)
        if (train_x is None) == (trained is None):
            raise InvalidInputError("pass exactly one of train_x= (vectors to train the buckets "
                                    "and encoder on) and trained= (a trained binidx.Index)")
        sync = _wal._check_sync(sync)
        if trained is not None:
            if not isinstance(trained, Index):
                raise InvalidInputError(f"trained must be a binidx.Index, got "
                                        f"{type(trained).__name__}")
            trained._require_trained("start a sharded index from it")
            if dim is not None and dim != trained.dim:
                raise InvalidInputError(f"dim={dim} but the trained index has dim={trained.dim}")
            template = _empty_copy(trained)
        else:
            x = as_float32_matrix(train_x, dim, "train_x")
            # Shards share one set of buckets, never rebalanced: every shard then probes
            # the same buckets as one local index would (docs/distributed.md).
            template = Index(x.shape[1], metric=metric, n_lists=n_lists, n_bits=n_bits,
                             seed=seed, balance=False).train(x)
        path = os.path.abspath(os.fspath(path))
        if os.path.exists(_layout.manifest_path(path)):
            raise InvalidInputError(f"{path} already holds a sharded index; connect to it with "
                                    "ShardedIndex.open(path), or choose a new directory")
        if os.path.isdir(path) and os.listdir(path):
            raise InvalidInputError(
                f"{path} is not empty (a creation that did not finish leaves shard "
                "directories but no manifest); choose a new directory or empty it")
        if os.path.exists(path) and not os.path.isdir(path):
            raise InvalidInputError(f"{path} is a file; a sharded index needs a directory")
        os.makedirs(path, exist_ok=True)
        uid = secrets.token_hex(8)
        template.save(_layout.template_path(path))
        for s in range(n_shards):
            directory = _layout.shard_dir(path, s)
            open_durable(directory, template, sync=sync).close()
            _layout.write_shard_marker(directory, uid, s, n_shards)
        manifest = {"kind": _layout.KIND, "version": _layout.FORMAT_VERSION, "uid": uid,
                    "n_shards": n_shards, "routing": HASH_NAME, "dim": template.dim,
                    "metric": template.metric, "n_bits": template.n_bits,
                    "n_lists": template.n_lists, "seed": template.seed, "sync": sync,
                    "n_probe": template._n_probe, "n_rerank": template._n_rerank,
                    "probe_ratio": template._probe_ratio,
                    "created_by": f"binidx {__version__}"}
        # Written last: a directory with a manifest is complete.
        _layout.write_json(_layout.manifest_path(path), manifest)
        return cls._start(path, manifest, template, detached, actor_options, timeout)

    @classmethod
    def open(cls, path: str | os.PathLike, *, detached: bool = False,
             actor_options: dict | Callable[[int], dict] | None = None,
             timeout: float | None = DEFAULT_READY_TIMEOUT) -> ShardedIndex:
        """Connect to the sharded index in ``path``.

        Shard actors that are alive (started by another client, or detached) are found
        by name; missing or dead ones are started again and recover from their
        directories.

        Parameters
        ----------
        path : str or os.PathLike
        detached, actor_options, timeout
            As for :meth:`create`; they apply to the actors this call starts.

        Returns
        -------
        ShardedIndex

        Raises
        ------
        FileNotFoundError
            If ``path`` holds no sharded index.
        IndexFormatError
            If its manifest or template is damaged.
        ShardUnavailableError
            If a shard does not come up within ``timeout`` (the message gives its error,
            for example a shard directory that this node cannot see).
        """
        _check_actor_options(actor_options)
        path = os.path.abspath(os.fspath(path))
        manifest = _layout.read_manifest(path)
        template = load_index(_layout.template_path(path))
        expected = (manifest["dim"], manifest["metric"], manifest["n_bits"], manifest["n_lists"])
        got = (template.dim, template.metric, template.n_bits, template.n_lists)
        if not template.is_trained or got != expected:
            raise IndexFormatError(
                f"{_layout.template_path(path)} does not match {_layout.MANIFEST_NAME} "
                f"(dim, metric, n_bits, n_lists: {got} vs {expected}); the directory is damaged")
        template._n_probe, template._n_rerank = manifest.get("n_probe"), manifest.get("n_rerank")
        template._probe_ratio = manifest["probe_ratio"]  # (checked by read_manifest)
        return cls._start(path, manifest, template, detached, actor_options, timeout)

    @classmethod
    def _start(cls, path: str, manifest: dict, template: Index, detached: bool,
               actor_options: dict | Callable[[int], dict] | None,
               timeout: float | None) -> ShardedIndex:
        self = object.__new__(cls)
        self._path = path
        self._manifest = manifest
        self._template = template
        self._n_shards = manifest["n_shards"]
        self._detached = bool(detached)
        self._actor_options = actor_options
        self._actors: list[Any] = [None] * self._n_shards
        self._created: set[int] = set()
        self._closed = False
        try:
            self._connect(range(self._n_shards), timeout)
        except BaseException:
            self.close()  # stop the actors this call started; they hold directory locks
            raise
        return self

    def _actor_name(self, shard: int) -> str:
        return f"binidx-{self._manifest['uid']}-shard-{shard:04d}"

    def _connect(self, shards: Any, timeout: float | None) -> None:
        for s in shards:
            name = self._actor_name(s)
            try:
                self._actors[s] = ray.get_actor(name, namespace=NAMESPACE)
                continue
            except ValueError:
                pass  # not running: start it; it recovers its directory
            options = {"max_restarts": -1, "max_task_retries": DEFAULT_MAX_TASK_RETRIES,
                       "scheduling_strategy": "SPREAD", **self._shard_options(s)}
            if self._detached:
                options["lifetime"] = "detached"
            self._actors[s] = _actor_class().options(
                name=name, namespace=NAMESPACE, get_if_exists=True, **options,
            ).remote(_layout.shard_dir(self._path, s), self._manifest["uid"], s,
                     self._n_shards, self._manifest.get("sync", "always"))
            self._created.add(s)
        refs = {s: self._actors[s].info.remote() for s in shards}
        self._gather(refs, timeout, "start", allow_partial=False)

    def _shard_options(self, shard: int) -> dict:
        opts = self._actor_options
        if callable(opts):
            opts = opts(shard)
            if not isinstance(opts, dict):
                raise InvalidInputError(f"actor_options({shard}) returned a "
                                        f"{type(opts).__name__}, expected a dict")
        return dict(opts or {})

    def reconnect(self, timeout: float | None = DEFAULT_READY_TIMEOUT) -> list[int]:
        """Start again every shard actor that is dead for good (killed without restart,
        or out of restarts); live ones are kept.

        Each restarted shard recovers its directory before this returns.  A shard that
        Ray is still restarting is left to Ray.

        Returns
        -------
        list of int
            The shards started again.
        """
        self._check_open()
        refs = {s: a.info.remote() for s, a in enumerate(self._actors)}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        ready = set(ready)
        dead = []
        for s, ref in refs.items():
            if ref in ready:
                try:
                    ray.get(ref)
                except ray_exc.RayActorError:  # dead for good: a restarting one would answer
                    dead.append(s)
        if dead:
            self._connect(dead, timeout)
        return dead

    def close(self, stop: bool | None = None, *, timeout: float | None = 60.0) -> None:
        """Let go of the shards; idempotent.

        Parameters
        ----------
        stop : bool, optional
            Stop shard actors (their logs are flushed and directories released first).
            By default the actors this handle started are stopped unless they are
            detached; ``True`` stops every shard (shutting down a detached service);
            ``False`` stops none.
        timeout : float or None, default 60
            Seconds to wait for the shards to flush.
        """
        if self._closed:
            return
        self._closed = True
        if stop is None:
            targets = [] if self._detached else sorted(self._created)
        else:
            targets = list(range(self._n_shards)) if stop else []
        if not ray.is_initialized():
            return  # the cluster is gone, and the actors with it
        refs = []
        for s in targets:
            # Ray raises a plain Exception for a call to an actor it no longer knows.
            with contextlib.suppress(Exception):
                refs.append(self._actors[s].close.remote())
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for s in targets:
            ray.kill(self._actors[s], no_restart=True)

    def __getstate__(self) -> dict:
        # A copy sent to a Ray task or another process is another client of the same
        # shards: it must not stop them when it is closed.
        state = dict(self.__dict__)
        state["_created"] = set()
        return state

    def __enter__(self) -> ShardedIndex:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- properties
    @property
    def path(self) -> str:
        """The directory (absolute)."""
        return self._path

    @property
    def n_shards(self) -> int:
        return self._n_shards

    dim = _template_property("dim", "Dimension of the vectors.")
    metric = _template_property("metric", '``"l2"``, ``"ip"`` or ``"cosine"``.')
    n_bits = _template_property("n_bits", "Bits per binary code.")
    n_lists = _template_property("n_lists", "Buckets (the same in every shard).")

    @property
    def n_probe(self) -> int:
        """Default buckets visited per query on every shard (see :attr:`binidx.Index.n_probe`);
        setting it (None: automatic) is saved in the manifest for every client."""
        return self._template.n_probe

    @n_probe.setter
    def n_probe(self, value: int | None) -> None:
        self._template.n_probe = value
        self._save_defaults()

    @property
    def n_rerank(self) -> int:
        """Default exact-rerank candidates per query and shard (None: automatic, 100)."""
        return self._template.n_rerank

    @n_rerank.setter
    def n_rerank(self, value: int | None) -> None:
        self._template.n_rerank = value
        self._save_defaults()

    @property
    def probe_ratio(self) -> float | None:
        """Default adaptive-probing ratio on every shard (see
        :attr:`binidx.Index.probe_ratio`; None: fixed n_probe); setting it is saved in
        the manifest for every client."""
        return self._template.probe_ratio

    @probe_ratio.setter
    def probe_ratio(self, value: float | None) -> None:
        self._template.probe_ratio = value
        self._save_defaults()

    def _save_defaults(self) -> None:
        self._manifest["n_probe"] = self._template._n_probe
        self._manifest["n_rerank"] = self._template._n_rerank
        self._manifest["probe_ratio"] = self._template._probe_ratio
        _layout.write_json(_layout.manifest_path(self._path), self._manifest)

    def template(self) -> Index:
        """An empty local :class:`~binidx.Index` trained exactly like every shard.

        Adding the same vectors to it gives, for the same search parameters, the
        results of this sharded index when every probed candidate is reranked.
        """
        return _empty_copy(self._template)

    def actor(self, shard: int):
        """The Ray actor handle of one shard (for monitoring or fault injection)."""
        return self._actors[check_positive_int(shard, "shard", minimum=0,
                                               maximum=self._n_shards - 1)]

    def shard_of(self, ids: Any) -> np.ndarray:
        """The shard that owns each id (``splitmix64(id) % n_shards``)."""
        arr = np.asarray(ids)
        return shard_of(as_ids(arr, arr.size), self._n_shards)

    # ------------------------------------------------------------------ calls
    def _gather(self, refs: dict[int, Any], timeout: float | None, what: str, *,
                allow_partial: bool, applied_note: bool = False
                ) -> tuple[dict[int, Any], dict[int, str]]:
        """Wait for per-shard calls; results by shard, and why the others failed.

        An exception raised by the shard's own code (a KeyError for a conflicting id ...)
        is re-raised as it is.  A shard that is dead or did not answer within
        ``timeout`` is an outage: ShardUnavailableError unless ``allow_partial``.
        """
        if not refs:
            return {}, {}
        started = time.monotonic()
        try:
            # The common case in one call (ray.wait first would add ~0.5 ms per call).
            values = ray.get(list(refs.values()), timeout=timeout)
            return dict(zip(refs, values)), {}
        except ray_exc.RayError:
            pass  # a shard failed or the time is up: sort out who answered, below
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=left)
        ready = set(ready)
        results: dict[int, Any] = {}
        failed: dict[int, str] = {}
        user_error: BaseException | None = None
        for s, ref in refs.items():
            if ref not in ready:
                failed[s] = f"no answer within {timeout} s (restarting, overloaded or unreachable)"
                continue
            try:
                results[s] = ray.get(ref)
            except ray_exc.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if user_error is None:
                    user_error = cause if isinstance(cause, BaseException) else exc
            except ray_exc.RayError as exc:
                failed[s] = reason(exc)
        if user_error is not None:
            raise user_error
        if failed and not (allow_partial and results):
            details = "; ".join(f"shard {s}: {why}" for s, why in sorted(failed.items()))
            message = (f"{what}: {len(failed)} of {len(refs)} shards did not answer "
                       f"(shards {sorted(failed)}) - {details}")
            if applied_note:
                message += (f". Shards {sorted(results)} applied their part; the call is "
                            "idempotent, so retry it once the shards are back")
            elif allow_partial:
                message += ". No shard answered, so there is no partial result"
            else:
                message += (". Retry later, call reconnect() to restart shards that are dead "
                            "for good, or pass allow_partial=True to search the others")
            raise ShardUnavailableError(message, failed, tuple(sorted(results)))
        return results, failed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the sharded index {self._path} is closed; connect again with "
                             "ShardedIndex.open(path)")

    def _vectors(self, x: Any) -> np.ndarray:
        """Validated float32 rows, not normalised: each shard normalises (cosine) once,
        exactly as a local index does, so that the stored vectors are bit-identical."""
        x32 = as_float32_matrix(x, self.dim, "x")
        if self.metric == "cosine":
            normalize_rows(x32, "x")  # only to refuse zero rows here, before any shard
        return x32

    def _by_shard(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        owner = shard_of(ids, self._n_shards)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self._n_shards + 1))
        return {s: order[bounds[s]:bounds[s + 1]] for s in range(self._n_shards)
                if bounds[s + 1] > bounds[s]}

    # ----------------------------------------------------------------- writes
    def add(self, x: Any, ids: Any, *, timeout: float | None = None) -> np.ndarray:
        """Add vectors under new ids, each to the shard that owns it.

        Parameters
        ----------
        x : array-like of shape (n, dim)
        ids : array-like of shape (n,)
            Distinct int64 ids >= 0.  Required: a default such as "largest id + 1"
            could not be reproduced by a retried call.
        timeout : float, optional
            Seconds to wait for the shards (default: no limit).  After a timeout the
            write may still be applied; retrying it is safe.

        Returns
        -------
        ndarray of shape (n,), int64
            The ids.

        Raises
        ------
        KeyError
            If an id is already present with a different vector (use :meth:`upsert`).
            An id present with the bit-identical vector is accepted as already added, so
            that repeating an add (a retry) is harmless.
        ShardUnavailableError
            If a shard did not confirm; the others have applied their part.
        """
        self._check_open()
        if ids is None:
            raise InvalidInputError("a ShardedIndex needs explicit ids in add(x, ids): a "
                                    "default such as 'largest id + 1' changes between a call "
                                    "and its retry")
        return self._write_rows("add", x, ids, timeout)

    def upsert(self, x: Any, ids: Any, *, timeout: float | None = None) -> np.ndarray:
        """Insert vectors, replacing those whose id is present; idempotent.

        Same arguments as :meth:`add`; returns the ids.
        """
        self._check_open()
        return self._write_rows("upsert", x, ids, timeout)

    def _write_rows(self, op: str, x: Any, ids: Any, timeout: float | None) -> np.ndarray:
        x = self._vectors(x)
        ids = Index._distinct_ids(ids, x.shape[0], inserting=True)
        refs = {s: getattr(self._actors[s], op).remote(x[rows], ids[rows])
                for s, rows in self._by_shard(ids).items()}
        self._gather(refs, timeout, op, allow_partial=False, applied_note=True)
        return ids

    def remove(self, ids: Any, missing: str = "raise", *, timeout: float | None = None) -> int:
        """Remove the vectors with these ids.

        The shards are first asked which ids they hold, so that the answer describes the
        index before the call even when Ray re-sends the removal after a shard restart.

        Parameters
        ----------
        ids : array-like of int
            Distinct ids.
        missing : {"raise", "ignore"}, default "raise"
            Ids that are not present raise ``KeyError`` (and nothing is removed), or are
            skipped.
        timeout : float, optional

        Returns
        -------
        int
            How many of ``ids`` were present, and are now removed.
        """
        self._check_open()
        if missing not in ("raise", "ignore"):
            raise InvalidInputError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        ids = Index._distinct_ids(ids)
        present = self._contains_many(ids, timeout)
        if missing == "raise" and not present.all():
            absent = ids[~present]
            raise KeyError(
                f"id {int(absent[0])} is not in the index ({absent.size} of the {ids.size} "
                "given ids are not); check the ids, or pass missing='ignore'")
        ids = ids[present]
        refs = {s: self._actors[s].remove.remote(ids[rows])
                for s, rows in self._by_shard(ids).items()}
        self._gather(refs, timeout, "remove", allow_partial=False, applied_note=True)
        return int(ids.size)

    def checkpoint(self, *, timeout: float | None = None) -> None:
        """Snapshot every shard and empty its log (faster restarts; see
        :meth:`binidx.DurableIndex.checkpoint`)."""
        self._check_open()
        refs = {s: a.checkpoint.remote() for s, a in enumerate(self._actors)}
        self._gather(refs, timeout, "checkpoint", allow_partial=False, applied_note=True)

    # ------------------------------------------------------------------ reads
    def search(self, q: Any, k: int = 10, n_probe: int | None = None,
               n_rerank: int | None = None, n_threads: int | None = None, *,
               timeout: float | None = None, allow_partial: bool = False,
               probe_ratio: float | None = None) -> ShardedSearchResult:
        """Search every shard and merge their top ``k``.

        Parameters
        ----------
        q : array-like of shape (n_queries, dim) or (dim,)
        k : int, default 10
        n_probe : int, optional
            Buckets visited per query in each shard (default :attr:`n_probe`).  Every
            shard has the same buckets, so a query visits the same buckets as in one
            local index.
        n_rerank : int, optional
            Candidates reranked exactly per query *in each shard* (default
            :attr:`n_rerank`, at least ``k``).  The merged result therefore reranks up to
            ``n_shards * n_rerank`` candidates: it is never worse than a local index
            with the same parameters, and equal to it when ``n_rerank`` covers the
            probed buckets.
        n_threads : int, optional
            Threads per shard (default: all cores of the shard's node).
        timeout : float, optional
            Seconds to wait for the shards (default: no limit).
        allow_partial : bool, default False
            When some (not all) shards fail or time out, return the merge of the others
            instead of raising; ``result.failed`` names the missing shards.
        probe_ratio : float, optional
            Adaptive probing (default :attr:`probe_ratio`), as in
            :meth:`binidx.Index.search`: every shard visits, of its ``n_probe`` nearest
            buckets, those within this ratio of the nearest one's squared distance.  The
            buckets depend only on the query and the shared centroids, so every shard
            visits the same ones, as one local index would.

        Returns
        -------
        ShardedSearchResult
            ``(distances, ids)`` of shape (n_queries, k), best first, ties broken by the
            smaller id, padded with id -1 and the worst distance; plus ``answered`` and
            ``failed``.

        Raises
        ------
        ShardUnavailableError
            If a shard did not answer (and ``allow_partial`` is False), or none did.
        """
        self._check_open()
        k = check_positive_int(k, "k")
        q = as_float32_matrix(q, self.dim, "q")
        if self.metric == "cosine":
            normalize_rows(q, "q")  # refuse zero rows here, with the router's message
        n_probe = check_positive_int(n_probe, "n_probe", allow_none=True) or self.n_probe
        n_rerank = check_positive_int(n_rerank, "n_rerank", allow_none=True) or self.n_rerank
        n_threads = check_positive_int(n_threads, "n_threads", allow_none=True)
        probe_ratio = (check_probe_ratio(probe_ratio) if probe_ratio is not None
                       else self.probe_ratio)
        # Every setting is sent resolved: a shard's own defaults are never used, and a
        # ratio of inf is fixed probing (None would mean the shard's default).
        if probe_ratio is None:
            probe_ratio = math.inf
        # A large batch goes to the object store once for every shard; a small one travels
        # as bytes inside each call, faster than a put (~1 ms) or an inline small array.
        q_arg = ray.put(q) if q.nbytes > _INLINE_BYTES else q.tobytes()
        refs = {s: a.search.remote(q_arg, k, n_probe, n_rerank, n_threads, probe_ratio)
                for s, a in enumerate(self._actors)}
        results, failed = self._gather(refs, timeout, "search", allow_partial=allow_partial)
        parts = [unpack_result(results[s], q.shape[0], k) for s in sorted(results)]
        d, i = merge(parts, k, self.metric)
        return ShardedSearchResult(d, i, tuple(sorted(results)), failed)

    def _contains_many(self, ids: np.ndarray, timeout: float | None) -> np.ndarray:
        present = np.zeros(ids.size, dtype=bool)
        groups = self._by_shard(ids)
        refs = {s: self._actors[s].contains.remote(ids[rows]) for s, rows in groups.items()}
        for s, found in self._gather(refs, timeout, "look up ids", allow_partial=False)[0].items():
            present[groups[s]] = found
        return present

    def get(self, ids: Any, *, timeout: float | None = None) -> np.ndarray:
        """The stored vectors of these ids (normalised ones for cosine), like
        :meth:`binidx.Index.get`; KeyError if one is missing."""
        self._check_open()
        arr = np.asarray(ids)
        ids = as_ids(arr, arr.size)
        out = np.empty((ids.size, self.dim), dtype=np.float32)
        groups = self._by_shard(ids)
        refs = {s: self._actors[s].get.remote(ids[rows]) for s, rows in groups.items()}
        for s, vectors in self._gather(refs, timeout, "get", allow_partial=False)[0].items():
            out[groups[s]] = vectors
        return out

    def ids(self, *, timeout: float | None = None) -> np.ndarray:
        """All ids, sorted, int64."""
        self._check_open()
        refs = {s: a.ids.remote() for s, a in enumerate(self._actors)}
        parts, _ = self._gather(refs, timeout, "ids", allow_partial=False)
        return np.sort(np.concatenate([parts[s] for s in sorted(parts)]))

    def __contains__(self, id_: Any) -> bool:
        self._check_open()
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)):
            return False
        ids = np.array([id_], dtype=np.int64)
        return bool(self._contains_many(ids, None)[0])

    def __len__(self) -> int:
        self._check_open()
        refs = {s: a.count.remote() for s, a in enumerate(self._actors)}
        return int(sum(self._gather(refs, None, "len", allow_partial=False)[0].values()))

    def shard_sizes(self, *, timeout: float | None = None) -> np.ndarray:
        """Vectors per shard, int64 array of shape (n_shards,)."""
        self._check_open()
        refs = {s: a.count.remote() for s, a in enumerate(self._actors)}
        counts, _ = self._gather(refs, timeout, "shard_sizes", allow_partial=False)
        return np.array([counts[s] for s in range(self._n_shards)], dtype=np.int64)

    def info(self, *, timeout: float | None = None) -> list[dict]:
        """Per shard: number, directory, vectors, node id, pid, whether Ray restarted it,
        log records since the last checkpoint."""
        self._check_open()
        refs = {s: a.info.remote() for s, a in enumerate(self._actors)}
        got, _ = self._gather(refs, timeout, "info", allow_partial=False)
        return [got[s] for s in range(self._n_shards)]

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"n_shards={self._n_shards}"
        return (f"binidx.distributed.ShardedIndex({self._path!r}, {state}, dim={self.dim}, "
                f"metric={self.metric!r}, n_lists={self.n_lists})")
