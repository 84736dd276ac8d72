"""Small real datasets shipped with binidx, for the demo, the tests and quick experiments.

=========  ======  =======  ===  ======  =============================================
name       base    queries  dim  metric  what
=========  ======  =======  ===  ======  =============================================
sift-20k   20,000  200      128  l2      SIFT descriptors of real photos (uint8 values)
text-5k    5,000   100      384  cosine  all-MiniLM-L6-v2 sentence embeddings
=========  ======  =======  ===  ======  =============================================

They are deterministic subsets of the development sets in ``../shared/data`` made by
``tools/make_embedded_data.py``, with exact top-100 ground truth recomputed on the
subsets.  ``text-5k`` is stored as float16 to keep the package small; the ground truth
is exact for the float16 values as loaded (widened to float32).

:func:`load_folder` reads a dataset of the same shape from a texmex folder such as
``../shared/data/dev-sift``.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .vecio import read_vectors

_PACKAGE_DATA = "data"
_MANIFEST = "manifest.json"


class Dataset(NamedTuple):
    """Vectors, metric and exact ground truth of one embedded dataset.

    Attributes
    ----------
    base : ndarray of shape (n_base, dim), float32
        The vectors to index.
    queries : ndarray of shape (n_queries, dim), float32
        Query vectors (none of them is in ``base``).
    groundtruth : ndarray of shape (n_queries, 100), int64
        Row numbers in ``base`` of the exact 100 nearest neighbours of each query, best
        first, ties broken by the smaller row number.
    metric : str
        ``"l2"`` or ``"cosine"``: pass it to :class:`binidx.Index`.
    name : str
        The dataset name.
    groundtruth_distances : ndarray of shape (n_queries, 100), float32, or None
        The exact distance of each ground-truth neighbour, in the convention of
        :meth:`binidx.Index.search` (squared L2 for l2, cosine similarity for cosine);
        None for a folder that does not store them.
    """

    base: np.ndarray
    queries: np.ndarray
    groundtruth: np.ndarray
    metric: str
    name: str
    groundtruth_distances: np.ndarray


def _manifest() -> dict:
    text = resources.files("binidx").joinpath(_PACKAGE_DATA, _MANIFEST).read_text("utf-8")
    return json.loads(text)


def available() -> list[str]:
    """Names of the embedded datasets.

    Returns
    -------
    list of str
        Sorted names accepted by :func:`load_embedded`.

    Examples
    --------
    >>> from binidx import datasets
    >>> datasets.available()
    ['sift-20k', 'text-5k']
    """
    return sorted(_manifest())


def load_embedded(name: str) -> Dataset:
    """Load one embedded dataset into memory.

    Parameters
    ----------
    name : str
        One of :func:`available`: ``"sift-20k"`` or ``"text-5k"``.

    Returns
    -------
    Dataset
        NamedTuple ``(base, queries, groundtruth, metric, name, groundtruth_distances)``;
        vectors are float32 (the exact uint8 values for SIFT, the float16 values widened
        for text), fresh arrays the caller may modify.

    Raises
    ------
    ValueError
        If ``name`` is not an embedded dataset (the message lists the names).

    Examples
    --------
    >>> import binidx
    >>> from binidx.datasets import load_embedded
    >>> ds = load_embedded("sift-20k")
    >>> ds.base.shape, ds.metric
    ((20000, 128), 'l2')
    >>> index = binidx.build(ds.base, metric=ds.metric)
    >>> D, I = index.search(ds.queries[:1], k=1, n_probe=index.n_lists, n_rerank=len(index))
    >>> int(I[0, 0]) == int(ds.groundtruth[0, 0])
    True
    """
    manifest = _manifest()
    if name not in manifest:
        raise ValueError(f"no embedded dataset named {name!r}; available: {', '.join(sorted(manifest))}")
    entry = manifest[name]
    folder = resources.files("binidx").joinpath(_PACKAGE_DATA)

    def read(key: str) -> np.ndarray:
        # as_file gives a real path even when the package is imported from a zip.
        with resources.as_file(folder.joinpath(entry["files"][key])) as path:
            return np.array(read_vectors(path, mmap=False))

    return Dataset(
        base=read("base").astype(np.float32),
        queries=read("query").astype(np.float32),
        groundtruth=read("groundtruth").astype(np.int64),
        metric=entry["metric"],
        name=name,
        groundtruth_distances=read("groundtruth_distances").astype(np.float32),
    )


_GT_K = 100
# Files that may hold the distances of the ground-truth neighbours, in the order tried.
_GT_DISTANCE_FILES = ("groundtruth_distances.fvecs", "groundtruth_sqdist.ivecs",
                      "groundtruth_ip.fvecs")


def _metric_from_meta(text: str) -> str:
    t = text.strip().lower()
    if t.startswith(("l2", "euclid")):
        return "l2"
    if "cos" in t or "angular" in t:
        return "cosine"
    if t.startswith(("ip", "inner", "dot")):
        return "ip"
    raise ValueError(f"meta.json names the metric {text!r}; pass metric='l2', 'ip' or 'cosine'")


def load_folder(path: str | os.PathLike, metric: str | None = None) -> Dataset:
    """Load a texmex dataset folder (the layout of ``../shared/data/dev-sift``).

    Parameters
    ----------
    path : str or os.PathLike
        A folder with ``base.{bvecs,fvecs,npy}`` and ``query.*``, and optionally
        ``groundtruth.ivecs``, the distances of those neighbours
        (``groundtruth_distances.fvecs``, ``groundtruth_sqdist.ivecs`` or
        ``groundtruth_ip.fvecs``) and a ``meta.json`` naming the metric.
    metric : {"l2", "ip", "cosine"}, optional
        Overrides ``meta.json``; required when the folder has none.

    Returns
    -------
    Dataset
        Vectors as float32.  Without ``groundtruth.ivecs`` the exact top-100 is computed
        with :func:`binidx.exact_search`; ``groundtruth_distances`` is None when no
        distance file is present and the ground truth was read, not computed.

    Raises
    ------
    FileNotFoundError
        If the base or query file is missing.
    ValueError
        If no metric is given and ``meta.json`` does not name one binidx knows.

    Examples
    --------
    >>> from binidx.datasets import load_folder
    >>> ds = load_folder("../shared/data/dev-sift")      # doctest: +SKIP
    >>> ds.base.shape, ds.metric                          # doctest: +SKIP
    ((200000, 128), 'l2')
    """
    folder = Path(path)

    def find(stem: str) -> Path:
        for ext in (".bvecs", ".fvecs", ".npy"):
            if (folder / (stem + ext)).is_file():
                return folder / (stem + ext)
        raise FileNotFoundError(f"{folder} has no {stem}.bvecs, {stem}.fvecs or {stem}.npy")

    base = np.array(read_vectors(find("base"), mmap=False), dtype=np.float32)
    queries = np.array(read_vectors(find("query"), mmap=False), dtype=np.float32)
    if metric is None:
        meta = folder / "meta.json"
        if not meta.is_file():
            raise ValueError(f"{folder} has no meta.json naming the metric; pass metric='l2', 'ip' or 'cosine'")
        metric = _metric_from_meta(str(json.loads(meta.read_text("utf-8")).get("metric", "")))
    gt_distances = None
    if (folder / "groundtruth.ivecs").is_file():
        groundtruth = np.array(read_vectors(folder / "groundtruth.ivecs", mmap=False), dtype=np.int64)
        for name in _GT_DISTANCE_FILES:
            if (folder / name).is_file():
                gt_distances = np.array(read_vectors(folder / name, mmap=False), dtype=np.float32)
                break
    else:
        from ._exact import exact_search

        gt_distances, groundtruth = exact_search(base, queries, min(_GT_K, len(base)), metric=metric)
    return Dataset(base=base, queries=queries, groundtruth=groundtruth, metric=metric,
                   name=folder.name, groundtruth_distances=gt_distances)
