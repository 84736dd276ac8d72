"""Reading and writing vector files: texmex ``.fvecs``/``.bvecs``/``.ivecs``, ``.npy``,
ann-benchmarks HDF5 and small text/CSV files.

Every reader returns a 2-D array of shape ``(n, dim)`` in the file's own dtype; converting
to float32 (and checking values for NaN) is the index's job, not this module's.

Texmex files have no global header: each record is a little-endian int32 ``dim`` followed
by ``dim`` values (float32 for ``.fvecs``, int32 for ``.ivecs``, uint8 for ``.bvecs``).  The
readers take ``dim`` from the first record, then check that the file size is a whole
number of records and that *every* record repeats the same ``dim``.  That check reads one
int32 per record through a strided memory map, a window at a time, so it is cheap and
keeps memory flat even for files larger than RAM.

Every problem is raised as :class:`binidx.errors.VectorFileError` with a one-line message
naming the file, the record at fault (when there is one) and what is wrong.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple, Union

import numpy as np

from ._format import atomic_write
from .errors import InvalidInputError, VectorFileError

__all__ = [
    "VectorFileInfo",
    "iter_vector_chunks",
    "parse_source",
    "read_vectors",
    "vector_file_info",
    "write_vectors",
]

PathLike = Union[str, "os.PathLike[str]"]

# Value dtype of each texmex flavour; the record is always int32 dim + dim values.
_TEXMEX = {"fvecs": np.dtype("<f4"), "ivecs": np.dtype("<i4"), "bvecs": np.dtype("u1")}
_HDF5_EXTS = (".hdf5", ".h5")
_TEXT_DELIMITERS = {"csv": ",", "tsv": "\t", "txt": None}  # None: any whitespace
_FORMAT_OF_EXT = {
    ".fvecs": "fvecs", ".bvecs": "bvecs", ".ivecs": "ivecs", ".npy": "npy",
    ".hdf5": "hdf5", ".h5": "hdf5", ".csv": "csv", ".tsv": "tsv", ".txt": "txt",
}
_SUPPORTED = (".fvecs, .bvecs, .ivecs, .npy, .hdf5/.h5 (as file.hdf5:dataset), "
              ".csv, .tsv, .txt")

# A texmex header above this is taken as garbage (a different format or a damaged file)
# rather than as a real dimension; no embedding in use comes close.
MAX_DIM = 1 << 20
# Records whose headers are checked per memory-map window: bounds the pages resident at once.
_HEADER_WINDOW = 1 << 16
# Rows converted and written per step by write_vectors, so a memmapped input is never
# copied whole.
_WRITE_CHUNK = 1 << 16


class VectorFileInfo(NamedTuple):
    """What :func:`vector_file_info` learns from a file's headers.

    Attributes
    ----------
    n : int
        Number of vectors.
    dim : int
        Dimension of each vector.
    dtype : numpy.dtype
        dtype that :func:`read_vectors` returns for this file.
    format : str
        One of ``'fvecs'``, ``'bvecs'``, ``'ivecs'``, ``'npy'``, ``'hdf5'``, ``'csv'``,
        ``'tsv'``, ``'txt'``.
    """

    n: int
    dim: int
    dtype: np.dtype
    format: str


# ---------------------------------------------------------------------------------------
# Source names and formats


def parse_source(spec: PathLike) -> tuple[str, str | None]:
    """Split an ann-benchmarks style source ``'file.hdf5:dataset'`` into its two parts.

    Only a name whose part before the last ``':'`` ends in ``.hdf5`` or ``.h5`` is split,
    so other paths containing colons are left alone.

    Parameters
    ----------
    spec : str or os.PathLike
        A file path, optionally followed by ``:dataset`` for HDF5 files.

    Returns
    -------
    path : str
        The file path.
    dataset : str or None
        The HDF5 dataset name, or None when none was given (or the file is not HDF5).

    Examples
    --------
    >>> parse_source("glove-100-angular.hdf5:train")
    ('glove-100-angular.hdf5', 'train')
    >>> parse_source("base.fvecs")
    ('base.fvecs', None)
    """
    text = os.fspath(spec)
    if not isinstance(text, str):  # bytes paths
        text = os.fsdecode(text)
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(_HDF5_EXTS):
        return head, (tail or None)
    return text, None


def _format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    fmt = _FORMAT_OF_EXT.get(ext)
    if fmt is None:
        shown = f"extension {ext!r}" if ext else "no extension"
        raise VectorFileError(
            f"{path}: unknown vector file type ({shown}); supported: {_SUPPORTED}"
        )
    return fmt


def _file_size(path: str) -> int:
    """Size of an existing regular file, or a VectorFileError saying why it cannot be read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VectorFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise VectorFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if os.path.isdir(path):
        raise VectorFileError(f"{path}: is a directory, not a vector file")
    if not os.access(path, os.R_OK):
        raise VectorFileError(f"{path}: permission denied")
    return st.st_size


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype


def _check_chunk_size(chunk_size: Any) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _check_max_rows(max_rows: Any) -> int | None:
    if max_rows is None:
        return None
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) \
            or max_rows < 0:
        raise InvalidInputError(f"max_rows must be None or an integer >= 0, got {max_rows!r}")
    return int(max_rows)


# ---------------------------------------------------------------------------------------
# Texmex (.fvecs / .bvecs / .ivecs)


class _Texmex(NamedTuple):
    path: str
    fmt: str
    dim: int
    value: np.dtype      # on-disk value dtype (little-endian)
    record: np.dtype     # structured: int32 'd' + dim values 'v'
    n: int               # complete records
    remainder: int       # bytes after the last complete record


def _texmex_layout(path: str, fmt: str) -> _Texmex:
    """Read the first header and the file size; validates everything except other headers."""
    size = _file_size(path)
    if size == 0:
        raise VectorFileError(f"{path}: the file is empty; a .{fmt} file holds at least one "
                              "record (int32 dimension followed by the values)")
    if size < 4:
        raise VectorFileError(f"{path}: record 0 is truncated: the file has {size} bytes, too "
                              f"few for the 4-byte dimension header; not a valid .{fmt} file")
    with open(path, "rb") as f:
        dim = _header_at(f, 0)
    if not 1 <= dim <= MAX_DIM:
        hint = ""
        swapped = int(np.array(dim, dtype="<i4").byteswap())
        if 1 <= swapped <= MAX_DIM:
            hint = f" (read big-endian it would be {swapped}: was it written on a " \
                   "big-endian machine?)"
        raise VectorFileError(
            f"{path}: record 0 declares dimension {dim}, outside 1..{MAX_DIM}; the file is "
            f"not a valid .{fmt} file{hint}"
        )
    value = _TEXMEX[fmt]
    record = np.dtype([("d", "<i4"), ("v", value, (dim,))])
    n, remainder = divmod(size, record.itemsize)
    return _Texmex(path, fmt, dim, value, record, n, remainder)


def _guess_texmex_flavour(lay: _Texmex) -> str | None:
    """The texmex flavour whose record size would make this file consistent, if any.

    Only used to add a hint to an error (a ``.bvecs`` file named ``.fvecs`` is the usual
    cause of a bad header at record 1).
    """
    size = lay.n * lay.record.itemsize + lay.remainder
    for fmt, value in _TEXMEX.items():
        if value.itemsize == lay.value.itemsize:  # same record size: cannot explain it
            continue
        rec = 4 + lay.dim * value.itemsize
        if size % rec or size // rec < 2:
            continue
        with open(lay.path, "rb") as f:
            # The second and the last headers agreeing is evidence enough for a hint.
            headers = [_header_at(f, rec), _header_at(f, size - rec)]
        if headers == [lay.dim, lay.dim]:
            return fmt
    return None


def _header_at(f: Any, offset: int) -> int:
    f.seek(offset)
    return int(np.frombuffer(f.read(4), dtype="<i4")[0])


def _raise_bad_header(lay: _Texmex, index: int, declared: int) -> None:
    guess = _guess_texmex_flavour(lay)
    hint = f" (its sizes fit .{guess}: is the extension wrong?)" if guess else ""
    raise VectorFileError(
        f"{lay.path}: record {index} declares dimension {declared} but the file's first "
        f"record has {lay.dim}; the file is not a valid .{lay.fmt} file{hint}"
    )


def _check_headers(lay: _Texmex, headers: np.ndarray, first: int) -> None:
    """Raise for the first entry of ``headers`` (records ``first``...) that is not ``dim``."""
    bad = np.flatnonzero(headers != lay.dim)
    if bad.size:
        i = int(bad[0])
        _raise_bad_header(lay, first + i, int(headers[i]))


def _scan_headers(lay: _Texmex, stop: int, mm: np.memmap | None = None) -> None:
    """Check the headers of records ``0..stop``, one memory-map window at a time.

    With ``mm`` (a map of the whole file) its pages are used; otherwise each window gets
    its own short-lived map, so only one window's pages are resident at once.
    """
    for start in range(0, stop, _HEADER_WINDOW):
        count = min(_HEADER_WINDOW, stop - start)
        if mm is not None:
            _check_headers(lay, mm["d"][start:start + count], start)
            continue
        win = np.memmap(lay.path, dtype=lay.record, mode="r",
                        offset=start * lay.record.itemsize, shape=(count,))
        try:
            _check_headers(lay, win["d"], start)
        finally:
            del win


def _raise_if_truncated(lay: _Texmex) -> None:
    if not lay.remainder:
        return
    # A wrong header earlier in the file explains a bad size better than "truncated" does
    # (for example a .bvecs file read as .fvecs), so look for one first.
    _scan_headers(lay, lay.n)
    if lay.remainder >= 4:
        with open(lay.path, "rb") as f:
            declared = _header_at(f, lay.n * lay.record.itemsize)
        if declared != lay.dim:
            _raise_bad_header(lay, lay.n, declared)
    raise VectorFileError(
        f"{lay.path}: record {lay.n} is truncated: the file ends {lay.remainder} bytes into "
        f"it, but each record takes {lay.record.itemsize} bytes (4-byte dimension + "
        f"{lay.dim} x {lay.value.itemsize}-byte values); the file is not a valid "
        f".{lay.fmt} file (was it cut short?)"
    )


def _texmex_records(lay: _Texmex, stop: int, chunk_size: int
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_index, records)`` for records ``0..stop``, headers checked.

    ``records`` is one reused buffer: the caller copies the values out before the next
    step, so streaming holds one block of records plus the caller's copy.
    """
    buf = np.empty(min(chunk_size, stop), dtype=lay.record)
    with open(lay.path, "rb") as f:
        for start in range(0, stop, chunk_size):
            count = min(chunk_size, stop - start)
            recs = buf[:count]
            got = f.readinto(recs.view(np.uint8))
            if got != recs.nbytes:  # the file shrank while we read it
                raise VectorFileError(
                    f"{lay.path}: record {start + got // lay.record.itemsize} could not be "
                    "read: the file ended early (is it being written?)"
                )
            _check_headers(lay, recs["d"], start)
            yield start, recs


def _texmex_blocks(lay: _Texmex, stop: int, chunk_size: int) -> Iterator[np.ndarray]:
    """Yield fresh contiguous native-dtype blocks of the values of records ``0..stop``."""
    out_dtype = _native(lay.value)
    for _, recs in _texmex_records(lay, stop, chunk_size):
        # Always a copy: a one-row block is "contiguous" and would otherwise alias the buffer.
        yield np.array(recs["v"], dtype=out_dtype, order="C", copy=True)


def _read_texmex(path: str, fmt: str, mmap: bool, max_rows: int | None) -> np.ndarray:
    lay = _texmex_layout(path, fmt)
    _raise_if_truncated(lay)
    stop = lay.n if max_rows is None else min(max_rows, lay.n)
    if mmap:
        mm = np.memmap(path, dtype=lay.record, mode="r", shape=(lay.n,))
        _scan_headers(lay, stop, mm)
        return mm["v"][:stop]
    out = np.empty((stop, lay.dim), dtype=_native(lay.value))
    for start, recs in _texmex_records(lay, stop, _HEADER_WINDOW):
        out[start:start + recs.shape[0]] = recs["v"]
    return out


# ---------------------------------------------------------------------------------------
# NumPy .npy


class _Npy(NamedTuple):
    path: str
    shape: tuple[int, int]
    dtype: np.dtype
    fortran: bool
    offset: int


def _npy_layout(path: str) -> _Npy:
    size = _file_size(path)
    if size == 0:
        raise VectorFileError(f"{path}: the file is empty; not a valid .npy file")
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported "
                                 "(binidx reads versions 1.0 and 2.0)")
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        detail = " ".join(str(exc).split())  # numpy's messages may span lines
        raise VectorFileError(f"{path}: not a valid .npy file ({detail})") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
        raise VectorFileError(f"{path}: holds dtype {dtype}, but vectors must be numbers "
                              "(bool, integer or float)")
    if len(shape) != 2:
        raise VectorFileError(f"{path}: holds an array of shape {shape}, but vectors must be "
                              "a 2-D array of shape (n, dim)")
    if shape[1] < 1:
        raise VectorFileError(f"{path}: holds an array of shape {shape}; the dimension must be "
                              "at least 1")
    needed = shape[0] * shape[1] * dtype.itemsize
    have = size - offset
    if have < needed:
        # Rows of a C-order array end one after another; name the first incomplete one.
        row = have // (shape[1] * dtype.itemsize) if not fortran else 0
        where = f"row {row} is the first incomplete one" if not fortran else \
            "the array is in Fortran order, so every row is incomplete"
        raise VectorFileError(
            f"{path}: truncated: the header promises shape {shape} of {dtype} ({needed} "
            f"bytes of data) but only {have} bytes follow it; {where}"
        )
    return _Npy(path, (int(shape[0]), int(shape[1])), dtype, bool(fortran), offset)


def _npy_memmap(lay: _Npy) -> np.memmap:
    return np.memmap(lay.path, dtype=lay.dtype, mode="r", offset=lay.offset, shape=lay.shape,
                     order="F" if lay.fortran else "C")


def _read_npy(path: str, mmap: bool, max_rows: int | None) -> np.ndarray:
    lay = _npy_layout(path)
    if lay.shape[0] == 0:  # np.memmap cannot map zero bytes
        return np.empty(lay.shape, dtype=lay.dtype)
    stop = lay.shape[0] if max_rows is None else min(max_rows, lay.shape[0])
    mm = _npy_memmap(lay)
    if mmap:
        return mm[:stop]
    out = np.array(mm[:stop], order="C")
    del mm
    return out


def _npy_blocks(lay: _Npy, chunk_size: int) -> Iterator[np.ndarray]:
    n, dim = lay.shape
    if lay.fortran:
        # Rows are strided across the whole file: map it per block and drop the map, so
        # the pages touched do not pile up in the process's resident set.
        for start in range(0, n, chunk_size):
            mm = _npy_memmap(lay)
            block = np.array(mm[start:start + chunk_size], order="C")
            del mm
            yield block
        return
    with open(lay.path, "rb") as f:
        f.seek(lay.offset)
        for start in range(0, n, chunk_size):
            count = min(chunk_size, n - start)
            flat = np.fromfile(f, dtype=lay.dtype, count=count * dim)
            if flat.size != count * dim:
                raise VectorFileError(f"{lay.path}: row {start + flat.size // dim} could not "
                                      "be read: the file ended early (is it being written?)")
            yield flat.reshape(count, dim)


# ---------------------------------------------------------------------------------------
# HDF5 (ann-benchmarks layout: train / test / neighbors / distances)


def _h5py():
    try:
        import h5py
    except ImportError:
        return None
    return h5py


def _hdf5_datasets(h5file: Any, h5py: Any) -> list[str]:
    names: list[str] = []
    h5file.visititems(lambda name, obj: names.append(name)
                      if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_hdf5_dataset(path: str, dataset: str | None) -> tuple[Any, Any]:
    """Open ``path`` and return ``(file, dataset)``; the caller closes the file."""
    _file_size(path)
    h5py = _h5py()
    if h5py is None:
        raise VectorFileError(f"{path}: reading HDF5 files needs h5py, which is not "
                              "installed: pip install h5py")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        detail = " ".join(str(exc).split())
        raise VectorFileError(f"{path}: not a readable HDF5 file ({detail})") from None
    try:
        available = ", ".join(repr(name) for name in _hdf5_datasets(h5, h5py)) or "none"
        if dataset is None:
            raise VectorFileError(f"{path}: name the dataset to read as {path}:DATASET; "
                                  f"datasets in the file: {available}")
        obj = h5.get(dataset)
        if obj is None:
            raise VectorFileError(f"{path}: no dataset {dataset!r}; datasets in the file: "
                                  f"{available}")
        if not isinstance(obj, h5py.Dataset):
            raise VectorFileError(f"{path}: {dataset!r} is a group, not a dataset; datasets "
                                  f"in the file: {available}")
        where = f"{path}:{dataset}"
        if obj.dtype.kind not in "biuf" or obj.dtype.fields is not None:
            raise VectorFileError(f"{where}: holds dtype {obj.dtype}, but vectors must be "
                                  "numbers (bool, integer or float)")
        if obj.ndim != 2 or obj.shape[1] < 1:
            raise VectorFileError(f"{where}: has shape {obj.shape}, but vectors must be a 2-D "
                                  "dataset of shape (n, dim) with dim >= 1")
    except BaseException:
        h5.close()
        raise
    return h5, obj


def _hdf5_memmap(path: str, ds: Any, stop: int) -> np.ndarray | None:
    """Zero-copy map of a contiguous, unfiltered dataset (the ann-benchmarks files are)."""
    if ds.chunks is not None or ds.compression is not None or getattr(ds, "external", None):
        return None
    offset = ds.id.get_offset()
    if offset is None or stop == 0:  # storage not allocated yet, or nothing to map
        return None
    mm = np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
    return mm[:stop]


def _read_hdf5(path: str, dataset: str | None, mmap: bool, max_rows: int | None) -> np.ndarray:
    h5, ds = _open_hdf5_dataset(path, dataset)
    with h5:
        stop = ds.shape[0] if max_rows is None else min(max_rows, ds.shape[0])
        if mmap:
            mapped = _hdf5_memmap(path, ds, stop)
            if mapped is not None:
                return mapped
        return ds[:stop]


def _hdf5_blocks(path: str, dataset: str | None, chunk_size: int) -> Iterator[np.ndarray]:
    h5, ds = _open_hdf5_dataset(path, dataset)
    with h5:
        for start in range(0, ds.shape[0], chunk_size):
            yield ds[start:start + chunk_size]


# ---------------------------------------------------------------------------------------
# Text (.csv / .tsv / .txt), for small inputs


def _read_text(path: str, fmt: str, max_rows: int | None) -> np.ndarray:
    _file_size(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            arr = np.loadtxt(path, dtype=np.float32, delimiter=_TEXT_DELIMITERS[fmt],
                             comments="#", ndmin=2, max_rows=max_rows)
    except (ValueError, UnicodeDecodeError) as exc:
        # numpy adds a hint about `usecols` that does not apply to vectors: keep the fact.
        detail = " ".join(str(exc).split(";")[0].split())
        raise VectorFileError(f"{path}: not a valid .{fmt} file of numbers ({detail})") from None
    if arr.size == 0 and max_rows != 0:
        raise VectorFileError(f"{path}: the file holds no vectors (it is empty or only "
                              "comments)")
    return arr


# ---------------------------------------------------------------------------------------
# Public readers


def read_vectors(path: PathLike, *, mmap: bool = True, max_rows: int | None = None
                 ) -> np.ndarray:
    """Read a vector file into an array of shape (n, dim) in the file's own dtype.

    Parameters
    ----------
    path : str or os.PathLike
        ``.fvecs`` (float32), ``.bvecs`` (uint8), ``.ivecs`` (int32), ``.npy`` (as stored),
        ``file.hdf5:dataset`` or ``file.h5:dataset`` (as stored), ``.csv`` / ``.tsv`` /
        ``.txt`` (float32; meant for small inputs, ``#`` starts a comment).
    mmap : bool, default True
        Memory-map instead of reading when the format allows: texmex and ``.npy`` files
        always, HDF5 datasets when stored contiguous and unfiltered.  The result is then a
        read-only :class:`numpy.memmap` view (for texmex, strided: the dimension headers
        sit between rows); copy it with ``np.array(x)`` to get a contiguous array.  Text
        files are always read.
    max_rows : int, optional
        Read only the first ``max_rows`` vectors.

    Returns
    -------
    numpy.ndarray of shape (n, dim)

    Raises
    ------
    VectorFileError
        Unknown extension, missing, empty, truncated or inconsistent file, missing HDF5
        dataset or h5py.  Texmex files have every record header checked.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.fvecs")
    >>> write_vectors(path, np.eye(3, dtype=np.float32))
    >>> read_vectors(path).shape
    (3, 3)
    """
    max_rows = _check_max_rows(max_rows)
    file, dataset = parse_source(path)
    fmt = _format_of(file)
    if fmt in _TEXMEX:
        return _read_texmex(file, fmt, mmap, max_rows)
    if fmt == "npy":
        return _read_npy(file, mmap, max_rows)
    if fmt == "hdf5":
        return _read_hdf5(file, dataset, mmap, max_rows)
    return _read_text(file, fmt, max_rows)


def iter_vector_chunks(path: PathLike, chunk_size: int = 65536) -> Iterator[np.ndarray]:
    """Stream a vector file as blocks of at most ``chunk_size`` rows.

    The file is never held in memory whole (except text files, which are small by
    intent): memory stays at a few blocks, one read buffer plus the blocks the caller still
    holds (streaming a 1M x 128 .fvecs file with the default size peaks ~100 MB above the
    interpreter).  Each block is a fresh C-contiguous array of shape (<= chunk_size, dim)
    in the same dtype :func:`read_vectors` returns; the caller may keep or modify it.

    The file name, its size and the first header are checked when this function is
    called, so a missing or truncated file raises here, before any block; the other
    texmex record headers are checked as their block is read, so a bad record in the
    middle raises after the blocks before it were yielded.

    Parameters
    ----------
    path : str or os.PathLike
        Any source :func:`read_vectors` accepts.
    chunk_size : int, default 65536
        Rows per block; the last block may be shorter.

    Yields
    ------
    numpy.ndarray of shape (<= chunk_size, dim)

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.bvecs")
    >>> write_vectors(path, np.arange(20, dtype=np.uint8).reshape(5, 4))
    >>> [block.shape for block in iter_vector_chunks(path, chunk_size=2)]
    [(2, 4), (2, 4), (1, 4)]
    """
    chunk_size = _check_chunk_size(chunk_size)
    file, dataset = parse_source(path)
    fmt = _format_of(file)
    if fmt in _TEXMEX:
        lay = _texmex_layout(file, fmt)
        _raise_if_truncated(lay)
        return _texmex_blocks(lay, lay.n, chunk_size)
    if fmt == "npy":
        return _npy_blocks(_npy_layout(file), chunk_size)
    if fmt == "hdf5":
        _open_hdf5_dataset(file, dataset)[0].close()  # fail now, not at the first next()
        return _hdf5_blocks(file, dataset, chunk_size)
    arr = _read_text(file, fmt, None)
    return (arr[start:start + chunk_size].copy() for start in range(0, arr.shape[0], chunk_size))


def vector_file_info(path: PathLike) -> VectorFileInfo:
    """Describe a vector file (count, dimension, dtype, format) from its headers only.

    Texmex files get the same checks as :func:`read_vectors` (size and every record
    header, read through a windowed memory map) but no vector values are read.  ``.npy``
    and HDF5 files are described from their headers.  Text files have no header and are
    parsed whole.

    Parameters
    ----------
    path : str or os.PathLike
        Any source :func:`read_vectors` accepts.

    Returns
    -------
    VectorFileInfo
        ``(n, dim, dtype, format)``.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.ivecs")
    >>> write_vectors(path, np.zeros((4, 10), dtype=np.int32))
    >>> vector_file_info(path)
    VectorFileInfo(n=4, dim=10, dtype=dtype('int32'), format='ivecs')
    """
    file, dataset = parse_source(path)
    fmt = _format_of(file)
    if fmt in _TEXMEX:
        lay = _texmex_layout(file, fmt)
        _raise_if_truncated(lay)
        _scan_headers(lay, lay.n)
        return VectorFileInfo(lay.n, lay.dim, _native(lay.value), fmt)
    if fmt == "npy":
        npy = _npy_layout(file)
        return VectorFileInfo(npy.shape[0], npy.shape[1], npy.dtype, fmt)
    if fmt == "hdf5":
        h5, ds = _open_hdf5_dataset(file, dataset)
        with h5:
            return VectorFileInfo(int(ds.shape[0]), int(ds.shape[1]), ds.dtype, fmt)
    arr = _read_text(file, fmt, None)
    return VectorFileInfo(arr.shape[0], arr.shape[1], arr.dtype, fmt)


# ---------------------------------------------------------------------------------------
# Writing


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.flatnonzero(mask.ravel())[0]), mask.shape)
    return int(row), int(col)


def _to_integer_format(block: np.ndarray, first_row: int, path: str, fmt: str) -> np.ndarray:
    """Convert ``block`` to int32/uint8 for .ivecs/.bvecs, refusing values that would change."""
    target = _TEXMEX[fmt]
    info = np.iinfo(target)
    if block.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(block) | (block != np.round(block)) \
                | (block < info.min) | (block > info.max)
    elif np.can_cast(block.dtype, target):
        bad = None
    else:
        bad = (block < info.min) | (block > info.max)
    if bad is not None and bad.any():
        row, col = _first_bad(bad)
        raise VectorFileError(
            f"{path}: cannot write row {first_row + row}: column {col} holds "
            f"{block[row, col].item()!r}, but .{fmt} stores integers {info.min}..{info.max} "
            f"({target.name}); write .fvecs or .npy instead, or round and clip the data"
        )
    return block.astype(target)


def _to_float32(block: np.ndarray, first_row: int, path: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # overflow is reported below, with its position
        out = block.astype("<f4")
    if block.dtype.kind == "f" and block.dtype.itemsize > 4:
        overflow = np.isinf(out) & np.isfinite(block)
        if overflow.any():
            row, col = _first_bad(overflow)
            raise VectorFileError(
                f"{path}: cannot write row {first_row + row}: column {col} holds "
                f"{block[row, col].item()!r}, beyond float32's range, which .fvecs stores; "
                "write .npy to keep float64"
            )
    return out


def _write_texmex(f: Any, arr: np.ndarray, path: str, fmt: str) -> None:
    record = np.dtype([("d", "<i4"), ("v", _TEXMEX[fmt], (arr.shape[1],))])
    for start in range(0, arr.shape[0], _WRITE_CHUNK):
        block = np.asarray(arr[start:start + _WRITE_CHUNK])
        if fmt == "fvecs":
            values = _to_float32(block, start, path)
        else:
            values = _to_integer_format(block, start, path, fmt)
        recs = np.empty(block.shape[0], dtype=record)
        recs["d"] = arr.shape[1]
        recs["v"] = values
        f.write(recs.tobytes())


def _write_text(f: Any, arr: np.ndarray, fmt: str) -> None:
    # Enough significant digits that reading back gives the same float (9 for float32).
    if arr.dtype.kind in "biu":
        number = "%d"
    else:
        number = "%.9g" if arr.dtype.itemsize <= 4 else "%.17g"
    delimiter = _TEXT_DELIMITERS[fmt] or " "
    for start in range(0, arr.shape[0], _WRITE_CHUNK):
        np.savetxt(f, np.asarray(arr[start:start + _WRITE_CHUNK]), fmt=number,
                   delimiter=delimiter)


def _check_writable_array(array: Any, path: str, fmt: str) -> np.ndarray:
    try:
        arr = np.asanyarray(array)
    except (ValueError, TypeError) as exc:
        raise VectorFileError(f"{path}: cannot write: the data is not an array of numbers "
                              f"({exc})") from None
    if arr.dtype.kind not in "biuf" or arr.dtype.fields is not None:
        raise VectorFileError(f"{path}: cannot write dtype {arr.dtype}: .{fmt} holds numbers "
                              "(bool, integer or float) only")
    if arr.ndim != 2:
        raise VectorFileError(f"{path}: cannot write an array of shape {arr.shape}: vectors "
                              "must be 2-D (n, dim); use x.reshape(1, -1) for one vector")
    if arr.shape[1] < 1:
        raise VectorFileError(f"{path}: cannot write an array of shape {arr.shape}: the "
                              "dimension must be at least 1")
    if fmt in _TEXMEX and arr.shape[1] > MAX_DIM:
        raise VectorFileError(f"{path}: cannot write dimension {arr.shape[1]} to .{fmt}: "
                              f"binidx reads texmex dimensions up to {MAX_DIM}; write .npy")
    if fmt != "npy" and arr.shape[0] == 0:
        raise VectorFileError(f"{path}: cannot write 0 vectors to .{fmt}: the file would be "
                              "empty and could not be read back; write .npy for empty arrays")
    return arr


def write_vectors(path: PathLike, array: Any) -> None:
    """Write vectors to a file whose format is chosen by the extension, atomically.

    The data goes to a temporary file in the same folder, which is flushed, fsynced and
    then renamed over ``path``: readers see the old file or the new one, never half of it.

    Parameters
    ----------
    path : str or os.PathLike
        ``.fvecs`` (stored as float32; integers accepted), ``.ivecs`` (int32) and
        ``.bvecs`` (uint8; floats accepted only when they are exact integers in range),
        ``.npy`` (as is), ``.csv`` / ``.tsv`` / ``.txt`` (text, full precision).
    array : array-like of shape (n, dim)
        Numbers (bool, integer or float).  Memory-mapped inputs are converted in chunks.

    Raises
    ------
    VectorFileError
        Unknown or unwritable extension (HDF5 is read-only here), a shape that is not
        (n, dim), or values the format cannot hold exactly (e.g. 0.5 or 300 to ``.bvecs``).

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.bvecs")
    >>> write_vectors(path, np.array([[0, 255], [7, 8]]))
    >>> read_vectors(path, mmap=False)
    array([[  0, 255],
           [  7,   8]], dtype=uint8)
    """
    file = os.fsdecode(os.fspath(path))
    fmt = _format_of(file)
    if fmt == "hdf5":
        raise VectorFileError(f"{file}: writing HDF5 is not supported; write .npy or .fvecs, "
                              "or use h5py directly")
    arr = _check_writable_array(array, file, fmt)
    folder = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(folder):
        raise VectorFileError(f"{file}: cannot write: folder {folder} does not exist")

    def emit(f: Any) -> None:
        if fmt in _TEXMEX:
            _write_texmex(f, arr, file, fmt)
        elif fmt == "npy":
            np.save(f, np.asarray(arr), allow_pickle=False)
        else:
            _write_text(f, arr, fmt)

    try:
        # Temporary file in the same folder, fsync, rename, folder fsync (binidx._format).
        atomic_write(file, emit)
    except OSError as exc:
        raise VectorFileError(f"{file}: cannot write ({exc.strerror or exc})") from None
