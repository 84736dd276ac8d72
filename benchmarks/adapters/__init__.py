"""Engine adapters, looked up by name.

Each name maps to ``module:Class`` and the module is imported only when the engine is
used, so a missing library (or a binidx without its engine yet) only affects that engine.
"""
from __future__ import annotations

import importlib

from .base import Adapter, EngineUnavailable, UnsupportedMetric

ENGINES: dict[str, str] = {
    "binidx": "binidx_engine:Binidx",
    "faiss-exact": "faiss_engines:FaissExact",
    "faiss-ivf": "faiss_engines:FaissIVFFlat",
    "faiss-ivf-sh": "faiss_engines:FaissIVFSpectralHash",
    "faiss-ivf-rabitq": "faiss_engines:FaissIVFRaBitQ",
    "faiss-ivfpq-fs": "faiss_engines:FaissIVFPQFastScan",
    "faiss-binary-ivf": "faiss_engines:FaissBinaryIVF",
    "faiss-hnsw": "faiss_engines:FaissHNSW",
    "hnswlib": "hnswlib_engine:Hnswlib",
}


def get_adapter_class(name: str) -> type[Adapter]:
    """Return the adapter class registered as ``name``.

    Raises
    ------
    KeyError
        If no engine has that name; the message lists the known ones.
    """
    if name not in ENGINES:
        raise KeyError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


__all__ = ["ENGINES", "Adapter", "EngineUnavailable", "UnsupportedMetric", "get_adapter_class"]
