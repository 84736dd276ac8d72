"""hnswlib adapter (M=16, ef_construction=200 unless the config says otherwise).

Deletes use ``mark_deleted``; when built with ``allow_replace_deleted`` new vectors reuse
the deleted slots (``add_items(..., replace_deleted=True)``), which is how hnswlib keeps
memory bounded under churn.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from .base import Adapter, EngineUnavailable

try:
    import hnswlib
except ImportError:  # pragma: no cover
    hnswlib = None


class Hnswlib(Adapter):
    """``hnswlib.Index`` with labels equal to the external ids."""

    name = "hnswlib"
    supports_updates = True
    query_keys = ("ef",)

    def __init__(self, metric: str, dim: int, **build_params: Any) -> None:
        if hnswlib is None:
            raise EngineUnavailable("hnswlib is not installed; run `pip install hnswlib`")
        super().__init__(metric, dim, **build_params)
        self.index = None

    def _p(self, key: str, default: Any) -> Any:
        return self.build_params.get(key, default)

    def factory(self) -> str:
        return (f"hnswlib.Index(space={'l2' if self.metric == 'l2' else 'ip'!r}, dim={self.dim})"
                f".init_index(M={int(self._p('M', 16))}, "
                f"ef_construction={int(self._p('ef_construction', 200))}, "
                f"random_seed={int(self._p('seed', 100))}, "
                f"allow_replace_deleted={bool(self._p('allow_replace_deleted', False))})")

    def fit(self, x: np.ndarray, ids: np.ndarray | None = None) -> None:
        self.index = hnswlib.Index(space="l2" if self.metric == "l2" else "ip", dim=self.dim)
        # Headroom for churn; replace_deleted keeps the count near the live size.
        capacity = int(len(x) * float(self._p("capacity_factor", 1.0))) + 1
        self.index.init_index(max_elements=capacity, M=int(self._p("M", 16)),
                              ef_construction=int(self._p("ef_construction", 200)),
                              random_seed=int(self._p("seed", 100)),
                              allow_replace_deleted=bool(self._p("allow_replace_deleted", False)))
        self.index.add_items(x, np.arange(len(x)) if ids is None else np.asarray(ids),
                             num_threads=self.threads)
        self.n_deleted = 0

    def set_query_params(self, **params: Any) -> None:
        super().set_query_params(**params)
        self.index.set_ef(int(params.get("ef", 10)))

    def query(self, q: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(q, k=k, num_threads=self.threads)
        return labels.astype(np.int64)

    def query_one(self, v: np.ndarray, k: int) -> np.ndarray:
        return self.index.knn_query(v, k=k, num_threads=1)[0][0].astype(np.int64)

    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        replace = bool(self._p("allow_replace_deleted", False))
        free = self.n_deleted if replace else 0
        needed = self.index.get_current_count() + max(0, len(x) - free)
        if needed > self.index.get_max_elements():
            self.index.resize_index(needed)
        self.index.add_items(x, np.asarray(ids), num_threads=self.threads,
                             replace_deleted=replace)
        if replace:
            self.n_deleted -= min(free, len(x))

    def remove(self, ids: np.ndarray) -> None:
        for label in np.asarray(ids).tolist():
            self.index.mark_deleted(label)
        self.n_deleted += len(ids)

    def memory_bytes(self) -> dict[str, int]:
        # hnswlib exposes no size accessor; its saved file is the in-memory layout
        # (vectors + links + labels), so the file size is the honest number.
        fd, path = tempfile.mkstemp(suffix=".hnsw")
        os.close(fd)
        try:
            self.index.save_index(path)
            size = os.path.getsize(path)
        finally:
            os.unlink(path)
        return {"resident": size, "total": size}

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        return {"hnswlib": metadata.version("hnswlib")}
