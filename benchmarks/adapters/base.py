"""The interface every engine adapter implements (ann-benchmarks' ``BaseANN``, trimmed).

An adapter owns one index of one engine.  The runner calls, in order::

    a = Adapter(metric, dim, **build_params)
    a.set_threads(n); a.fit(x[, ids])           # train + add with ids (default 0..n-1)
    a.set_query_params(**query_params)
    a.query(q, k) / a.query_one(v, k)           # ids only: the runner recomputes distances
    a.add(x, ids); a.remove(ids)                # churn runbook
    a.memory_bytes() -> {"resident": ..., "total": ...}
    a.bucket_sizes() -> vectors per bucket, or None (churn runbook)

Adapters return neighbour *ids* (int64, -1 for "not found") and never distances, so that
every engine is judged by the same exact distance computation in :mod:`benchmarks.metrics`.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


class EngineUnavailable(RuntimeError):
    """The engine's library is missing or too old; the message says what to install."""


class UnsupportedMetric(ValueError):
    """The engine cannot search this metric honestly on this data."""


class Adapter:
    """Base class: subclasses set ``name`` and implement the methods below.

    Parameters
    ----------
    metric : {"l2", "ip"}
        Distance of the dataset.  Cosine datasets are normalised by the loader and
        reach the adapters as ``"ip"``.
    dim : int
        Vector dimension.
    **build_params
        Engine-specific build parameters, echoed in every result line.
    """

    name: ClassVar[str] = "base"
    #: Whether ``add`` / ``remove`` work after ``fit`` (used by the churn runbook).
    supports_updates: ClassVar[bool] = False
    #: Search parameters the engine accepts; others are refused so a typo in a config fails.
    query_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, metric: str, dim: int, **build_params: Any) -> None:
        if metric not in ("l2", "ip"):
            raise UnsupportedMetric(f"{self.name}: metric must be 'l2' or 'ip', got {metric!r}")
        self.metric = metric
        self.dim = int(dim)
        self.build_params = dict(build_params)
        self.query_params: dict[str, Any] = {}
        self.threads = 1

    # -- lifecycle -------------------------------------------------------------------
    def set_threads(self, n_threads: int) -> None:
        """Use ``n_threads`` threads for the following build and search calls."""
        self.threads = int(n_threads)

    def fit(self, x: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Train on and add ``x`` (float32, shape (n, dim)) with ``ids`` (default 0..n-1).

        Only engines with ``supports_updates`` accept ``ids``.
        """
        raise NotImplementedError

    def set_query_params(self, **params: Any) -> None:
        """Set the search-time parameters used by the next ``query`` calls.

        Raises
        ------
        ValueError
            For a parameter this engine does not have; the message lists the valid ones.
        """
        unknown = sorted(set(params) - set(self.query_keys))
        if unknown:
            raise ValueError(
                f"{self.name} has no search parameter {unknown}; it accepts {list(self.query_keys)}"
            )
        self.query_params = dict(params)

    def query(self, q: np.ndarray, k: int) -> np.ndarray:
        """Search a batch: int64 ids of shape (n_queries, k), -1 where fewer were found."""
        raise NotImplementedError

    def query_one(self, v: np.ndarray, k: int) -> np.ndarray:
        """Search one vector of shape (dim,) the way a service would call it; ids (k,)."""
        return self.query(v.reshape(1, -1), k)[0]

    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Insert ``x`` under the int64 external ``ids``."""
        raise NotImplementedError(f"{self.name} does not support add after fit")

    def remove(self, ids: np.ndarray) -> None:
        """Delete the vectors with these external ids."""
        raise NotImplementedError(f"{self.name} does not support remove")

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the search structure (``resident``) and of everything kept (``total``)."""
        raise NotImplementedError

    def bucket_sizes(self) -> np.ndarray | None:
        """Vectors in each bucket (int64, shape (n_lists,)), or None without buckets.

        The churn runbook reads bucket balance from it; graph indexes keep the default.
        """
        return None

    # -- description -----------------------------------------------------------------
    def factory(self) -> str:
        """Exact description of the index built, e.g. a FAISS factory string."""
        return self.name

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this adapter uses."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.factory()}, {self.query_params})"


def pad_ids(ids: np.ndarray, k: int) -> np.ndarray:
    """Return ``ids`` as int64 of width ``k``, padding short rows with -1."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim == 1:
        ids = ids.reshape(1, -1)
    if ids.shape[1] >= k:
        return ids[:, :k]
    out = np.full((ids.shape[0], k), -1, dtype=np.int64)
    out[:, : ids.shape[1]] = ids
    return out
