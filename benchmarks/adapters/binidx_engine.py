"""binidx adapter, written against the public API of ``binidx.Index``."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Adapter, EngineUnavailable


def _import_binidx():
    try:
        import binidx
    except ImportError as exc:  # pragma: no cover
        raise EngineUnavailable(
            f"binidx cannot be imported ({exc}); run `pip install -e .`"
        ) from None
    if not hasattr(binidx, "Index"):
        raise EngineUnavailable(
            "this binidx has no `binidx.Index` yet (the engine is not built); "
            "pull the core and run `pip install -e .`"
        )
    return binidx


class Binidx(Adapter):
    """``binidx.Index`` trained and filled with ``train`` + ``add``.

    Build parameters: ``n_lists``, ``n_bits``, ``seed`` (``None`` keeps binidx's defaults).
    Search parameters: ``n_probe``, ``n_rerank``, ``probe_ratio`` (adaptive probing, with
    ``n_probe`` as the cap; ``None``, JSON null, visits all ``n_probe`` buckets: the index
    default, which this adapter never sets, is fixed probing).
    """

    name = "binidx"
    supports_updates = True
    query_keys = ("n_probe", "n_rerank", "probe_ratio")
    build_keys = ("n_lists", "n_bits", "seed")

    def __init__(self, metric: str, dim: int, **build_params: Any) -> None:
        self.binidx = _import_binidx()
        unknown = sorted(set(build_params) - set(self.build_keys))
        if unknown:
            raise ValueError(
                f"binidx has no build parameter {unknown}; it accepts {list(self.build_keys)}"
            )
        super().__init__(metric, dim, **build_params)
        self.index = None

    def _kwargs(self) -> dict[str, Any]:
        return {"n_lists": self.build_params.get("n_lists"),
                "n_bits": self.build_params.get("n_bits"),
                "seed": int(self.build_params.get("seed", 0))}

    def factory(self) -> str:
        kwargs = self._kwargs()
        if self.index is not None:  # after fit: the values binidx chose for the defaults
            kwargs.update(n_lists=self.index.n_lists, n_bits=self.index.n_bits)
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return f"binidx.Index({self.dim}, metric={self.metric!r}, {args})"

    def fit(self, x: np.ndarray, ids: np.ndarray | None = None) -> None:
        self.index = self.binidx.Index(self.dim, metric=self.metric, **self._kwargs())
        self.index.train(x)
        self.index.add(x, ids=np.arange(len(x), dtype=np.int64) if ids is None
                       else np.asarray(ids, dtype=np.int64))

    def query(self, q: np.ndarray, k: int) -> np.ndarray:
        res = self.index.search(q, k=k, n_threads=self.threads, **self.query_params)
        return np.asarray(res[1], dtype=np.int64)

    def query_one(self, v: np.ndarray, k: int) -> np.ndarray:
        res = self.index.search(v.reshape(1, -1), k=k, n_threads=1, **self.query_params)
        return np.asarray(res[1][0], dtype=np.int64)

    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        self.index.add(x, ids=np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove(np.asarray(ids, dtype=np.int64))

    def memory_bytes(self) -> dict[str, int]:
        usage = self.index.memory_usage()
        return {"resident": int(usage["resident"]), "total": int(usage["total"])}

    def bucket_sizes(self) -> np.ndarray:
        # n_lists changes as binidx splits and dissolves buckets, so read it every time.
        return np.asarray(self.index.list_sizes(), dtype=np.int64)

    def versions(self) -> dict[str, str]:
        return {"binidx": getattr(self.binidx, "__version__", "unknown")}
