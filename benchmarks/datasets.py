"""Loading benchmark datasets and their exact ground truth.

A dataset is given to the CLI as one string:

* a folder with ``base.{fvecs,bvecs,npy}``, ``query.*`` and optionally ``groundtruth.ivecs``
  and ``meta.json`` (the layout of ``../shared/data/dev-sift``; ``meta.json``'s ``metric``
  names the metric);
* an ann-benchmarks ``.hdf5`` file (``train`` / ``test`` / ``neighbors`` datasets and the
  ``distance`` attribute);
* a single base file (``.fvecs``, ``.bvecs``, ``.npy``, ``file.hdf5:name``) together with
  ``--queries``;
* ``synthetic`` or ``synthetic:n=20000,nq=200,dim=64,metric=l2,seed=0`` - a Gaussian
  mixture, only a fallback for when no real data is around;
* a registered name (:data:`NAMED`), e.g. ``sift-1m``: a folder under ``$BINIDX_DATA_DIR``
  (default ``~/.cache/binidx-data``) made by the script the entry names.

Ground truth that is missing, too short, or invalidated by ``--max-base`` is computed
exactly (:func:`benchmarks.metrics.exact_knn`) and cached under ``cache_dir``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from binidx.vecio import parse_source, read_vectors

from .metrics import exact_knn

GT_K = 100
_VEC_EXTS = (".fvecs", ".bvecs", ".npy", ".hdf5", ".h5")
#: Datasets known by name: name -> the command that makes them.  They are too large for
#: the repository and live in ``$BINIDX_DATA_DIR/<name>``.
NAMED = {
    "sift-1m": "THREADS=2 nice -n 10 ~/.cache/binidx-dev-data/venv/bin/python "
               "benchmarks/make_sift1m.py  (venv recipe in its docstring; ~15 min)",
}


def data_dir() -> str:
    """``$BINIDX_DATA_DIR`` or ``~/.cache/binidx-data``: where named datasets live."""
    return os.path.expanduser(os.environ.get(
        "BINIDX_DATA_DIR", os.path.join("~", ".cache", "binidx-data")))


def resolve_named(spec: str) -> str:
    """The folder of a registered dataset name; any other spec comes back unchanged.

    Raises
    ------
    FileNotFoundError
        When the name is registered but its folder has not been made yet; the message
        gives the command that makes it.
    """
    if spec not in NAMED:
        return spec
    folder = os.path.join(data_dir(), spec)
    if not os.path.exists(os.path.join(folder, "base.bvecs")):
        raise FileNotFoundError(
            f"dataset {spec!r} not found in {folder} (set BINIDX_DATA_DIR if it lives "
            f"elsewhere); make it with: {NAMED[spec]}")
    return folder


@dataclass
class Dataset:
    """Vectors, metric and exact ground truth of one benchmark dataset.

    ``base`` and ``queries`` are C-contiguous float32; ``metric`` is ``"l2"`` or ``"ip"``
    (cosine data is normalised on load and searched as ``"ip"``); ``gt`` holds the exact
    neighbours (int64, shape (n_queries, >= 100 or n_base)).
    """

    name: str
    base: np.ndarray
    queries: np.ndarray
    metric: str
    gt: np.ndarray
    source: str
    notes: list[str] = field(default_factory=list)
    #: Name before ``--max-base`` cut it (picks the sweep config).
    family: str = ""

    def describe(self) -> dict:
        """The fields written into every result line."""
        return {"dataset": self.name, "n_base": len(self.base),
                "n_queries": len(self.queries), "dim": int(self.base.shape[1]),
                "metric": self.metric, "source": self.source}


def parse_metric(text: str | None) -> str | None:
    """Map the metric spellings of texmex/ann-benchmarks/meta.json to l2/ip/cosine."""
    if text is None:
        return None
    t = str(text).strip().lower()
    if t.startswith(("l2", "euclid")):
        return "l2"
    if t.startswith(("ip", "inner", "dot")):
        return "ip"
    if t.startswith(("cos", "angular")):
        return "cosine"
    raise ValueError(f"unknown metric {text!r}; use l2, ip or cosine")


def _find(folder: str, stem: str) -> str | None:
    for ext in _VEC_EXTS:
        path = os.path.join(folder, stem + ext)
        if os.path.exists(path):
            return path
    return None


def _load_folder(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str | None]:
    base_path, query_path = _find(folder, "base"), _find(folder, "query")
    if base_path is None or query_path is None:
        raise FileNotFoundError(
            f"{folder} has no base.* and query.* vector files "
            f"(looked for extensions {', '.join(_VEC_EXTS)})"
        )
    gt_path = os.path.join(folder, "groundtruth.ivecs")
    gt = read_vectors(gt_path, mmap=False) if os.path.exists(gt_path) else None
    metric = None
    meta_path = os.path.join(folder, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            metric = parse_metric(json.load(f).get("metric"))
    return read_vectors(base_path, mmap=False), read_vectors(query_path, mmap=False), gt, metric


def _load_hdf5(path: str):
    import h5py

    with h5py.File(path, "r") as f:
        metric = parse_metric(f.attrs.get("distance", None) or None)
        gt = np.asarray(f["neighbors"]) if "neighbors" in f else None
    return (read_vectors(f"{path}:train", mmap=False), read_vectors(f"{path}:test", mmap=False),
            gt, metric)


def synthetic(n: int = 20_000, nq: int = 200, dim: int = 64, seed: int = 0,
              clusters: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian mixture: clustered like real embeddings, unlike uniform noise.

    Returns
    -------
    base : ndarray of float32, shape (n, dim)
    queries : ndarray of float32, shape (nq, dim), drawn from the same mixture
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(4, n // 500)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    scale = rng.uniform(0.2, 0.6, size=clusters).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        c = rng.integers(clusters, size=m)
        return centers[c] + scale[c, None] * rng.normal(size=(m, dim)).astype(np.float32)

    return draw(n), draw(nq)


def _parse_synthetic(spec: str) -> dict:
    params: dict = {}
    if ":" in spec:
        for item in filter(None, spec.split(":", 1)[1].split(",")):
            key, _, value = item.partition("=")
            params[key.strip()] = value.strip()
    out = {"n": int(params.pop("n", 20_000)), "nq": int(params.pop("nq", 200)),
           "dim": int(params.pop("dim", 64)), "seed": int(params.pop("seed", 0))}
    metric = params.pop("metric", "l2")
    if params:
        raise ValueError(f"unknown synthetic parameters {sorted(params)}; "
                         "use n, nq, dim, seed, metric")
    return {**out, "metric": metric}


def _cache_key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_stamp(spec: str) -> list:
    path = parse_source(spec)[0]
    if os.path.isdir(path):
        return sorted((n, os.path.getsize(os.path.join(path, n))) for n in os.listdir(path))
    return [os.path.getsize(path)] if os.path.exists(path) else []


def default_cache_dir() -> str:
    """``$BINIDX_BENCH_CACHE`` or ``~/.cache/binidx-benchmarks`` (never the data folder)."""
    return os.environ.get("BINIDX_BENCH_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "binidx-benchmarks"))


def load_dataset(spec: str, *, queries: str | None = None, metric: str | None = None,
                 max_base: int | None = None, max_queries: int | None = None,
                 cache_dir: str | None = None, gt_k: int = GT_K) -> Dataset:
    """Load a dataset, normalise cosine data, and make sure exact ground truth exists.

    Parameters
    ----------
    spec : str
        Folder, ``.hdf5`` file, base vector file (with ``queries``), ``synthetic[:...]`` or
        a name in :data:`NAMED` (``sift-1m``).
    queries : str, optional
        Query file when ``spec`` is a single base file.
    metric : {"l2", "ip", "cosine"}, optional
        Overrides the metric read from ``meta.json`` / the HDF5 attribute (default l2).
    max_base, max_queries : int, optional
        Keep only the first rows (quick runs); a shortened base gets new ground truth.
    cache_dir : str, optional
        Where computed ground truth is cached (default :func:`default_cache_dir`).
    gt_k : int, default 100
        Neighbours per query kept in the ground truth.

    Returns
    -------
    Dataset
    """
    notes: list[str] = []
    file_metric = None
    spec = resolve_named(spec)
    if spec.startswith("synthetic"):
        p = _parse_synthetic(spec)
        base, qs = synthetic(p["n"], p["nq"], p["dim"], p["seed"])
        gt, file_metric = None, parse_metric(p["metric"])
        name = f"synthetic-{p['n']}x{p['dim']}"
        notes.append("synthetic Gaussian mixture (fallback data, not a real distribution)")
    elif os.path.isdir(spec):
        base, qs, gt, file_metric = _load_folder(spec)
        name = os.path.basename(os.path.normpath(spec))
    elif spec.lower().endswith((".hdf5", ".h5")):
        base, qs, gt, file_metric = _load_hdf5(spec)
        name = os.path.splitext(os.path.basename(spec))[0]
    else:
        if queries is None:
            raise ValueError(f"{spec} is a single vector file; pass the queries with --queries")
        base, qs, gt = read_vectors(spec, mmap=False), read_vectors(queries, mmap=False), None
        name = os.path.splitext(os.path.basename(spec.split(":")[0]))[0]
    metric = parse_metric(metric) or file_metric or "l2"
    family = name

    if max_base is not None and max_base < len(base):
        base, gt = base[:max_base], None
        name += f"-{max_base}"
        notes.append(f"base cut to its first {max_base} vectors; ground truth recomputed")
    if max_queries is not None and max_queries < len(qs):
        qs = qs[:max_queries]
        gt = None if gt is None else gt[:max_queries]
    base = np.ascontiguousarray(base, dtype=np.float32)
    qs = np.ascontiguousarray(qs, dtype=np.float32)
    if metric == "cosine":
        base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30)
        qs /= np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-30)
        metric = "ip"
        notes.append("cosine: vectors normalised, searched by inner product")

    want = min(gt_k, len(base))
    if gt is None or gt.shape[1] < want:
        cache_dir = cache_dir or default_cache_dir()
        key = _cache_key(os.path.abspath(spec) if not spec.startswith("synthetic") else spec,
                         _file_stamp(spec), queries, len(base), len(qs), metric, want)
        path = os.path.join(cache_dir, f"gt-{name}-{key}.npy")
        if os.path.exists(path):
            gt = np.load(path)
        else:
            gt = exact_knn(base, qs, want, metric)
            os.makedirs(cache_dir, exist_ok=True)
            tmp = path + f".{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, gt)
            os.replace(tmp, path)
            notes.append(f"ground truth computed and cached in {path}")
    return Dataset(name=name, base=base, queries=qs, metric=metric,
                   gt=np.asarray(gt, dtype=np.int64), source=spec, notes=notes,
                   family=family)
