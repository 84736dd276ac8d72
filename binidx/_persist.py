"""Saving and loading an :class:`~binidx.Index` through the binidx file format (_format.py).

The index is written as its parameter dict plus named flat arrays (``Index._get_state``).
Everything read back is checked against everything else (shapes, dtypes, counts) before
an Index is assembled: the compiled kernels trust these arrays, so a file that passes the
format's checksums but carries inconsistent content must still be refused, not crash.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import _format
from ._storage import BLOCK, n_blocks, quantize_factors, scale_for_max
from ._validation import first_duplicate
from .errors import IndexFormatError
from .index import CODE_LAYOUT

KIND = "binidx.Index"

# name -> (dtype, number of dimensions)
_SECTIONS = {
    "centroids": ("<f4", 2),
    "projection": ("<f4", 2),
    "list_sizes": ("<i8", 1),
    "codes": ("<u8", 3),
    "factors": ("|u1", 3),
    "factor_scales": ("<f4", 2),
    "list_slots": ("<i4", 1),
    "vectors": ("<f4", 2),
    "slot_ids": ("<i8", 1),
}

MMAP_READ_ONLY = ("it was loaded with mmap=True and its arrays are read-only views of the file; "
                  "load it with mmap=False to change it")


def save(index, path: str | os.PathLike, extra_params: dict | None = None) -> None:
    """Write ``index`` to ``path`` atomically.

    ``extra_params`` are stored in the header's params next to the index's own (a durable
    index records the last operation its snapshot holds); they may not replace one.
    """
    params, arrays = index._get_state()
    if extra_params:
        clash = sorted(set(extra_params) & set(params))
        if clash:
            raise ValueError(f"extra params {clash} would replace the index's own")
        params = {**params, **extra_params}
    _format.write_index_file(path, kind=KIND, params=params, arrays=arrays)


def to_bytes(index) -> bytes:
    params, arrays = index._get_state()
    return _format.index_file_to_bytes(KIND, params, arrays)


def load(path: str | os.PathLike, *, mmap: bool = False):
    """Read an index written by :meth:`binidx.Index.save`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    mmap : bool, default False
        Map the file instead of reading it: opening takes milliseconds whatever the
        size, pages are read on first touch and shared between processes.  A mapped
        index is read-only (``add`` / ``remove`` raise :class:`ReadOnlyIndexError`).

    Returns
    -------
    Index

    Raises
    ------
    IndexFormatError
        If the file is not a binidx index, is damaged, truncated or of a newer version.

    Examples
    --------
    >>> import numpy as np, binidx, tempfile, os
    >>> x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.binidx")
    >>> binidx.build(x).save(path)
    >>> len(binidx.load(path, mmap=True))
    500
    """
    return load_with_params(path, mmap=mmap)[0]


def load_with_params(path: str | os.PathLike, *, mmap: bool = False) -> tuple[Any, dict]:
    """:func:`load`, also returning the header's params (including any ``extra_params``)."""
    f = _format.read_index_file(path, mmap=mmap)
    index = _assemble(f, os.fspath(path), read_only_reason=MMAP_READ_ONLY if mmap else None)
    return index, f.params


def from_bytes(data: bytes):
    return _assemble(_format.index_file_from_bytes(data), "pickled index", None)


def read_metadata(path: str | os.PathLike) -> dict:
    """Header of an index file (parameters, counts, sections) without reading the arrays.

    Examples
    --------
    >>> import numpy as np, binidx, tempfile, os
    >>> x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.binidx")
    >>> binidx.build(x, metric="cosine").save(path)
    >>> binidx.read_metadata(path)["params"]["metric"]
    'cosine'
    """
    header = _format.read_header(path)
    if header.get("kind") != KIND:
        raise IndexFormatError(f"{path}: holds a {header.get('kind')!r}, not a {KIND}")
    return header


def _assemble(f: _format.IndexFile, where: str, read_only_reason: str | None):
    """Check the content of a decoded file and build the Index."""
    from .index import Index

    if f.kind != KIND:
        raise IndexFormatError(f"{where}: holds a {f.kind!r}, not a {KIND}")
    params, arrays = f.params, f.arrays
    try:
        if f.header.get("format_version") == 1 and params.get("is_trained"):
            arrays = _upgrade_v1(arrays)
        _check_consistency(params, arrays)
        return Index._from_state(params, arrays, read_only_reason=read_only_reason, copy=False)
    except IndexFormatError as exc:
        raise IndexFormatError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(
            f"{where}: inconsistent index content ({exc!r}); the file is damaged") from None


def _upgrade_v1(arrays: dict) -> dict:
    """The arrays of a format-version-1 index file (float32 factors) as version 2 stores
    them: each bucket's factors as bytes in steps of a scale that maps its largest factor
    to 255, exactly as an index built now quantises them.  The other arrays are kept (a
    mapped file stays mapped); only the factors, 2 bytes per vector, are new memory."""
    factors, sizes = arrays.get("factors"), arrays.get("list_sizes")
    if (not isinstance(factors, np.ndarray) or factors.dtype != np.dtype("<f4")
            or factors.ndim != 3 or factors.shape[1:] != (2, BLOCK)
            or not isinstance(sizes, np.ndarray) or sizes.ndim != 1 or (sizes < 0).any()
            or int(n_blocks(sizes).sum()) != factors.shape[0]):
        raise IndexFormatError("inconsistent index content: the version 1 factors do not "
                               "match the bucket sizes; the file is damaged")
    if not np.isfinite(factors).all() or (factors < 0).any():
        raise IndexFormatError("inconsistent index content: a version 1 factor is negative "
                               "or not finite; the file is damaged")
    owner = np.repeat(np.arange(sizes.shape[0]), n_blocks(sizes))
    top = np.zeros((sizes.shape[0], 2), np.float32)
    np.maximum.at(top, owner, factors.max(axis=2))
    scales = scale_for_max(top)
    quantized = quantize_factors(factors, scales[owner][:, :, None])
    return {**arrays, "factors": quantized, "factor_scales": scales}


def _check_consistency(params: dict, arrays: dict) -> None:
    def bad(msg: str) -> None:
        raise IndexFormatError(f"inconsistent index content: {msg}; the file is damaged")

    for key in ("dim", "metric", "n_bits", "seed", "is_trained"):
        if key not in params:
            bad(f"parameter {key!r} is missing")
    if not params["is_trained"]:
        if arrays:
            bad("an untrained index carries arrays")
        return
    layout = params.get("layout")
    if layout != CODE_LAYOUT:
        raise IndexFormatError(
            f"its codes are laid out as {layout!r}, this binidx reads {CODE_LAYOUT!r}; the file "
            "was written by a pre-release development build: rebuild the index from its vectors"
        )
    for name, (dtype, ndim) in _SECTIONS.items():
        if name not in arrays:
            bad(f"section {name!r} is missing")
        a = arrays[name]
        if a.dtype != np.dtype(dtype) or a.ndim != ndim:
            bad(f"section {name!r} has dtype {a.dtype} and {a.ndim} dimensions, "
                f"expected {dtype} and {ndim}")
    dim, n_bits = int(params["dim"]), int(params["n_bits"])
    n_lists = arrays["centroids"].shape[0]
    n_slots = arrays["slot_ids"].shape[0]
    sizes = arrays["list_sizes"]
    if sizes.shape != (n_lists,):
        bad(f"section 'list_sizes' has shape {sizes.shape}, expected {(n_lists,)}")
    if (sizes < 0).any():
        bad("negative bucket sizes")
    n = int(sizes.sum())
    blocks = int(n_blocks(sizes).sum())
    expect = {
        "centroids": (n_lists, dim),
        "projection": (n_bits, dim),
        "codes": (blocks, n_bits // 64, BLOCK),
        "factors": (blocks, 2, BLOCK),
        "factor_scales": (n_lists, 2),
        "list_slots": (n,),
        "vectors": (n_slots, dim),
    }
    for name, shape in expect.items():
        if arrays[name].shape != shape:
            bad(f"section {name!r} has shape {arrays[name].shape}, expected {shape}")
    if n_lists < 1 or params.get("n_lists") != n_lists:
        bad(f"n_lists={params.get('n_lists')} but there are {n_lists} centroids")
    # The kernels index the vectors by these slots: each must be in range, used once,
    # and name a live slot; and the live ids must be distinct.
    slots, slot_ids = arrays["list_slots"], arrays["slot_ids"]
    if n and (int(slots.min()) < 0 or int(slots.max()) >= n_slots):
        bad(f"a bucket refers to a slot outside 0..{n_slots - 1}")
    if n and int(np.bincount(slots, minlength=n_slots).max()) > 1:
        bad("a slot is listed in more than one bucket position")
    live = slot_ids >= 0
    if int(live.sum()) != n or (n and not live[slots].all()):
        bad("the slots listed in the buckets are not exactly the slots holding an id")
    # A sort, not np.unique: NumPy 2's hash-based unique is ~90x slower on 1M int64 ids
    # (0.94 s against 0.01 s), which alone made a mapped open of 1M vectors take a second.
    dup = first_duplicate(slot_ids[live]) if n else None
    if dup is not None:
        bad(f"id {dup} is stored twice")
    if "labels" in arrays:
        labels = arrays["labels"]
        if labels.dtype != np.dtype("<i8") or labels.shape != (n_slots,):
            bad(f"section 'labels' has dtype {labels.dtype} and shape {labels.shape}, "
                f"expected <i8 and {(n_slots,)}")
        if n_slots and int(labels.min()) < -1:
            bad("a label is below -1")
    labels = arrays.get("labels")  # optional: only indexes that were given labels have it
    if labels is not None:
        if labels.dtype != np.dtype("<i8") or labels.shape != (n_slots,):
            bad(f"section 'labels' has dtype {labels.dtype} and shape {labels.shape}, "
                f"expected <i8 and {(n_slots,)}")
        if n_slots and (int(labels.min()) < -1 or (labels[~live] != -1).any()):
            bad("a label is below -1, or a free slot carries a label")
    scales = arrays["factor_scales"]
    if not np.isfinite(scales).all() or (scales < 0).any():
        bad("a factor scale is negative or not finite")
    if not isinstance(params.get("scale"), (int, float)) or not np.isfinite(params["scale"]):
        bad("the encoder scale is missing or not finite")
