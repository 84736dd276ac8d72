"""The binidx index file: a parameter mapping plus named NumPy arrays in one file.

``docs/format.md`` is the normative specification; this module implements it.  In short::

    prelude   32 bytes   magic, format version, flags, header length, header checksum
    header    JSON       kind, params, file size and one entry per array section
    padding   to 64      zero bytes
    sections  raw        each array in C order, little-endian, starting 64-byte aligned

Everything read from a file is distrusted until checked: every length, offset, dtype and
shape in the header is validated against the real file size before any array is
allocated or mapped, so a damaged or foreign file raises
:class:`~binidx.errors.IndexFormatError` instead of allocating terabytes or crashing.

Files are written to a temporary file in the target directory, flushed, fsynced and
renamed over the target, and the directory is fsynced: a crash mid-write leaves the old
file intact.  The same encoder and decoder serve :func:`index_file_to_bytes` /
:func:`index_file_from_bytes`, which pickling uses.
"""
from __future__ import annotations

import io
import json
import math
import mmap as _mmap
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ._version import __version__
from .errors import IndexFormatError, InvalidDtypeError, InvalidInputError

FORMAT_VERSION = 2
"""The newest index file format version this binidx writes and reads.

The container (prelude, header, sections) is the same in versions 1 and 2; what changed
is the content of an index file (docs/format.md 1.9): version 2 stores each vector's
correction factors as bytes with per-bucket scales.  Readers of version 2 still read
version 1 files."""

MAGIC = b"\x89BINIDX\n"
# Non-ASCII first byte (like PNG's) so no text file starts with it; the final newline
# makes a text-mode transfer that rewrites line endings visibly corrupt the magic.

ALIGNMENT = 64
"""Every array section starts at a multiple of this many bytes (a cache line, and
enough for any SIMD load the kernels do on a memory-mapped section)."""

MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Readers refuse a declared header longer than this, whatever the file size."""

MAX_NDIM = 32

_PRELUDE = struct.Struct("<8sIIQII")  # magic, version, flags, header_len, header_crc, reserved
PRELUDE_SIZE = _PRELUDE.size  # 32
_FORMAT_NAME = "binidx-index"
_CHUNK = 16 * 1024 * 1024  # bytes read per step when checksumming without a mapping

# The dtypes a section may have, as numpy's ``dtype.str``: explicit little-endian (or
# byte-order-free ``|`` for one-byte types), so that a file means the same on every host.
SECTION_DTYPES = frozenset(
    ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8",
     "<f2", "<f4", "<f8", "<c8", "<c16"]
)


class IndexFile(NamedTuple):
    """What :func:`read_index_file` returns.

    Attributes
    ----------
    kind : str
        What the file holds (for example the index class name); chosen by the writer.
    params : dict
        The parameter mapping given to :func:`write_index_file`, as JSON gave it back
        (tuples come back as lists).
    arrays : dict of str to numpy.ndarray
        The named arrays, in the order they were written.
    header : dict
        The whole decoded JSON header (format version, binidx version, sections ...).
    """

    kind: str
    params: dict
    arrays: dict
    header: dict


class _Section(NamedTuple):
    name: str
    dtype: np.dtype
    shape: tuple
    offset: int
    nbytes: int
    crc32: int


# --------------------------------------------------------------------------- helpers
# Shared with the write-ahead log (binidx._wal), which frames arrays the same way.

def crc32(data: Any, value: int = 0) -> int:
    """CRC-32 (zlib's polynomial) of a bytes-like object, continuing from ``value``."""
    return zlib.crc32(data, value) & 0xFFFFFFFF


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    """Round ``n`` up to a multiple of ``alignment``."""
    return -(-n // alignment) * alignment


def fsync_directory(directory: str) -> None:
    """Make a rename or file creation inside ``directory`` durable.

    Some platforms (Windows) cannot open a directory; there the rename is as durable as
    the file system makes it, which is the best that can be done.
    """
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    """Delete a temporary file while already handling an error (never masks that error)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, emit: Callable[[BinaryIO], None]) -> None:
    """Write a file through ``emit(fileobj)`` so that readers see the old or the new file.

    The bytes go to a temporary file in the same directory (same file system, so the
    rename is atomic), which is flushed and fsynced before ``os.replace`` puts it in place;
    the directory is then fsynced so the rename itself survives a power loss.  On any
    error the temporary file is removed and the old file is untouched.
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    # Not tempfile.mkstemp: its 0600 mode would make every saved index private.  Mode
    # 0666 lets the umask decide, as for any new file; a replaced file keeps its mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "wb") as f:
            emit(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_directory(directory)


def section_dtype(dtype: Any, what: str) -> np.dtype:
    """Return the little-endian form of an array dtype binidx can store, or raise."""
    dt = np.dtype(dtype)
    if dt.kind in "biufc" and not dt.fields and dt.subdtype is None:
        le = dt.newbyteorder("<") if dt.byteorder not in ("|", "<", "=") else dt
        le = np.dtype(le.str.replace("=", "<"))
        if le.str in SECTION_DTYPES:
            return le
    raise InvalidDtypeError(
        f"{what} has dtype {dt} which binidx files cannot store; use one of bool, "
        "(u)int8/16/32/64, float16/32/64 or complex64/128"
    )


def as_section_array(name: str, array: Any) -> np.ndarray:
    """Return ``array`` as a C-contiguous little-endian array ready to be written."""
    arr = np.asarray(array)
    dt = section_dtype(arr.dtype, f"array {name!r}")
    if arr.ndim > MAX_NDIM:
        raise InvalidInputError(
            f"array {name!r} has {arr.ndim} dimensions; binidx files store at most {MAX_NDIM}"
        )
    return np.asarray(arr, dtype=dt, order="C")  # unlike ascontiguousarray, keeps 0-d


def array_bytes(arr: np.ndarray) -> memoryview:
    """A flat byte view of a C-contiguous array (works for 0-d and empty arrays too)."""
    return memoryview(arr.reshape(-1).view(np.uint8))


def _json_default(value: Any) -> Any:
    # NumPy scalars are common in parameter dicts (np.int64 counts); store them as plain
    # JSON numbers.  Arrays do not belong in params: they have their own sections.
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        return value.item()
    if isinstance(value, np.ndarray):
        raise InvalidInputError(
            "params must not contain NumPy arrays; pass them in arrays= so they are "
            "stored as binary sections"
        )
    raise InvalidInputError(
        f"params must be JSON-serialisable (str, int, float, bool, None, list, dict); "
        f"got a {type(value).__name__}"
    )


def dump_json(obj: Any, what: str) -> bytes:
    """Strict, deterministic JSON encoding (sorted keys, no NaN) of ``obj``."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                          ensure_ascii=False, default=_json_default)
    except ValueError as exc:  # NaN / inf, or a circular reference
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(
            f"{what} must be strict JSON: {exc} (replace NaN / inf by None or a string)"
        ) from None
    except TypeError as exc:  # e.g. non-string dict keys that JSON cannot sort
        raise InvalidInputError(f"{what} must be JSON-serialisable: {exc}") from None
    return text.encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _unique_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_json(data: bytes, where: str) -> Any:
    """Decode strict JSON (UTF-8, no NaN, no duplicate keys) or raise IndexFormatError."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant,
                          object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise IndexFormatError(f"{where} is not valid JSON ({exc}): the file is damaged") from None


def is_int(value: Any) -> bool:
    """True for a JSON integer (bool is not one, although Python says it is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_shape(shape: Any, dtype: np.dtype, where: str) -> tuple:
    """Validate a shape read from a file; return it as a tuple of ints.

    NumPy refuses shapes whose product of non-zero dimensions overflows, even for empty
    arrays, so that product is bounded here too.
    """
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise IndexFormatError(f"{where} has an invalid shape {shape!r}: the file is damaged")
    bound = dtype.itemsize
    for d in shape:
        if not is_int(d) or d < 0:
            raise IndexFormatError(
                f"{where} has an invalid shape {shape!r}: the file is damaged")
        bound *= max(d, 1)
        if bound >= 2**62:
            raise IndexFormatError(
                f"{where} declares an impossibly large shape {shape!r}: the file is damaged")
    return tuple(shape)


def check_dtype_str(value: Any, where: str) -> np.dtype:
    """Validate a dtype string read from a file against :data:`SECTION_DTYPES`."""
    if not isinstance(value, str) or value not in SECTION_DTYPES:
        raise IndexFormatError(
            f"{where} has dtype {value!r}, which is not one a binidx file may hold "
            f"({', '.join(sorted(SECTION_DTYPES))}): the file is damaged or newer than this binidx"
        )
    return np.dtype(value)


def describe_foreign(head: bytes) -> str:
    """Guess what a file that is not a binidx file is, from its first bytes ('' if unknown)."""
    signatures = (
        (b"\x93NUMPY", "a NumPy .npy file"),
        (b"PK\x03\x04", "a zip archive (for example a NumPy .npz file)"),
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
        (b"\x1f\x8b", "a gzip-compressed file"),
        (b"\x89BINWAL\n", "a binidx write-ahead log"),
        (MAGIC[:7] + b"\r",
         "a binidx index file whose line endings were converted (copied in text mode)"),
    )
    for prefix, what in signatures:
        if head.startswith(prefix):
            return what
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    fourcc = head[:4]
    if len(fourcc) == 4 and fourcc[:1] == b"I" and fourcc.isalnum():
        return f"a FAISS index (type code {fourcc.decode('ascii')!r})"
    if len(head) >= 48:
        # hnswlib's save_index writes no magic: its header starts with offsetLevel0 (0),
        # then max_elements, cur_element_count, size_data_per_element, label_offset,
        # offsetData as little-endian size_t.
        off0, max_el, count, per_el, label_off, data_off = struct.unpack_from("<6Q", head)
        if off0 == 0 and 0 < per_el < 2**32 and count <= max_el < 2**48 and \
                label_off < per_el and data_off < per_el:
            return "an hnswlib index (written by save_index)"
    sample = head[:256]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "a text file"
    return ""


# --------------------------------------------------------------------------- writing

def _plan(kind: str, params: Mapping, arrays: Mapping) -> tuple[bytes, list, int]:
    """Lay out a file: return (prelude + header bytes, [(offset, array)], file size)."""
    if not isinstance(kind, str) or not kind:
        raise InvalidInputError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(params, Mapping):
        raise InvalidInputError(f"params must be a dict, got {type(params).__name__}")
    if not isinstance(arrays, Mapping):
        raise InvalidInputError(f"arrays must be a dict of name -> array, got "
                                f"{type(arrays).__name__}")
    prepared = []
    for name, array in arrays.items():
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"array names must be non-empty strings, got {name!r}")
        arr = as_section_array(name, array)
        prepared.append((name, arr, crc32(array_bytes(arr))))
    params_json = dump_json(dict(params), "params")  # fail early, before any layout
    params_value = json.loads(params_json)

    # The header holds the offsets, and the offsets depend on the header's length: start
    # the data right after an underestimate of the header and move it back until the
    # header fits.  Offsets only grow, so this stops (after two or three rounds) at the
    # first aligned offset after the header, as docs/format.md prescribes.
    data_start = align_up(PRELUDE_SIZE + len(params_json))
    while True:
        sections, layout, pos = [], [], data_start
        for name, arr, crc in prepared:
            pos = align_up(pos)
            sections.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                             "offset": pos, "nbytes": arr.nbytes, "crc32": crc})
            layout.append((pos, arr))
            pos += arr.nbytes
        header = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "binidx_version": __version__,
            "kind": kind,
            "params": params_value,
            "file_size": pos,
            "sections": sections,
        }
        header_json = dump_json(header, "header")
        if PRELUDE_SIZE + len(header_json) <= data_start:
            break
        data_start = align_up(PRELUDE_SIZE + len(header_json))
    prelude_head = _PRELUDE.pack(MAGIC, FORMAT_VERSION, 0, len(header_json), 0, 0)[:24]
    header_crc = crc32(header_json, crc32(prelude_head))
    prelude = _PRELUDE.pack(MAGIC, FORMAT_VERSION, 0, len(header_json), header_crc, 0)
    return prelude + header_json, layout, pos


def _emit(f: BinaryIO, head: bytes, layout: list, file_size: int) -> None:
    """Write the planned file: header, zero padding, sections, zero padding to the end."""
    f.write(head)
    pos = len(head)
    for offset, arr in layout:
        f.write(bytes(offset - pos))
        f.write(array_bytes(arr))
        pos = offset + arr.nbytes
    f.write(bytes(file_size - pos))


def write_index_file(path: str | os.PathLike, *, kind: str, params: Mapping,
                     arrays: Mapping[str, np.ndarray]) -> None:
    """Write a parameter mapping and named arrays to one self-describing binidx file.

    The write is atomic: the data goes to a temporary file in the same directory which
    is fsynced and renamed over ``path``, and the directory is fsynced.  A crash at any
    moment leaves either the old file or the complete new one.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    kind : str
        What the file holds (for example ``"IVFBinaryIndex"``); returned by the reader.
    params : dict
        JSON-serialisable parameters (NumPy scalars are accepted and stored as numbers;
        NaN and infinity are refused because strict JSON cannot hold them).
    arrays : dict of str to array_like
        Named arrays of a bool, integer, float or complex dtype, any shape (including
        0-d and empty).  They are stored C-ordered and little-endian.

    Raises
    ------
    InvalidInputError
        If ``kind``, ``params`` or an array name is not acceptable.
    InvalidDtypeError
        If an array has a dtype a binidx file cannot hold (object, string, structured).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "demo.binidx")
    >>> write_index_file(p, kind="demo", params={"dim": 4},
    ...                  arrays={"x": np.arange(8, dtype=np.float32).reshape(2, 4)})
    >>> read_index_file(p).arrays["x"].shape
    (2, 4)
    """
    head, layout, size = _plan(kind, params, arrays)
    atomic_write(path, lambda f: _emit(f, head, layout, size))


def index_file_to_bytes(kind: str, params: Mapping, arrays: Mapping[str, np.ndarray]) -> bytes:
    """Encode exactly the bytes :func:`write_index_file` would write (used for pickling).

    Examples
    --------
    >>> import numpy as np
    >>> data = index_file_to_bytes("demo", {"dim": 2}, {"x": np.zeros(2, np.float32)})
    >>> index_file_from_bytes(data).params
    {'dim': 2}
    """
    head, layout, size = _plan(kind, params, arrays)
    buf = io.BytesIO()
    _emit(buf, head, layout, size)
    return buf.getvalue()


# --------------------------------------------------------------------------- reading

def _parse(read: Callable[[int, int], bytes], size: int, name: str) -> tuple[dict, list]:
    """Validate the prelude and header of a file of ``size`` bytes; return (header, sections).

    ``read(offset, n)`` returns exactly ``n`` bytes; it is only called for ranges that
    have been checked to lie inside the file.
    """
    if size == 0:
        raise IndexFormatError(f"{name} is empty (0 bytes); it is not a binidx index file")
    head = read(0, min(size, 512))
    if not head.startswith(MAGIC[:min(size, len(MAGIC))]) or size < len(MAGIC):
        if head.startswith(MAGIC[:size]) and size < len(MAGIC):
            raise IndexFormatError(
                f"{name} is truncated: it has only {size} bytes of a binidx index file")
        what = describe_foreign(head)
        raise IndexFormatError(
            f"{name} is not a binidx index file" + (f" (it looks like {what})" if what else
                                                    " (its first bytes are not binidx's magic)"))
    if size < PRELUDE_SIZE:
        raise IndexFormatError(
            f"{name} is truncated: {size} bytes is shorter than the {PRELUDE_SIZE}-byte "
            "binidx prelude")
    _, version, flags, header_len, header_crc, reserved = _PRELUDE.unpack_from(head)
    # The magic and the version field are frozen across format versions, so the version
    # can be judged before anything else in the file is interpreted.
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{name} was written by binidx file format version {version}; this binidx "
            f"({__version__}) reads format versions up to {FORMAT_VERSION}: upgrade binidx "
            "to read it (if the file was written by this version, it is damaged)")
    if version == 0:
        raise IndexFormatError(f"{name} declares format version 0, which does not exist: "
                               "the file is damaged")
    if header_len < 2 or header_len > MAX_HEADER_BYTES or PRELUDE_SIZE + header_len > size:
        raise IndexFormatError(
            f"{name} declares a {header_len}-byte header, but the file has {size} bytes: "
            "it is truncated or damaged")
    header_bytes = read(PRELUDE_SIZE, header_len)
    if crc32(header_bytes, crc32(head[:24])) != header_crc:
        raise IndexFormatError(f"{name}: header checksum mismatch: the file is damaged")
    if flags != 0 or reserved != 0:
        raise IndexFormatError(
            f"{name} uses format flags {flags:#x} / reserved {reserved:#x} that this binidx "
            "does not know: upgrade binidx or replace the damaged file")
    header = load_json(header_bytes, f"{name}: the header")
    return header, _check_header(header, version, header_len, size, name)


def _check_header(header: Any, version: int, header_len: int, size: int, name: str) -> list:
    """Check every field of a decoded header against the file it came from."""
    def bad(msg: str) -> IndexFormatError:
        return IndexFormatError(f"{name}: {msg}: the file is damaged")

    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    if header.get("format") != _FORMAT_NAME:
        raise bad(f"the header's format field is {header.get('format')!r}, "
                  f"not {_FORMAT_NAME!r}")
    if header.get("format_version") != version or not is_int(version):
        raise bad(f"the header says format version {header.get('format_version')!r} but "
                  f"the prelude says {version}")
    for key, typ in (("kind", str), ("binidx_version", str), ("params", dict),
                     ("sections", list)):
        if not isinstance(header.get(key), typ):
            raise bad(f"the header field {key!r} is missing or not a {typ.__name__}")
    declared = header.get("file_size")
    if not is_int(declared):
        raise bad("the header field 'file_size' is missing or not an integer")
    if declared != size:
        if declared > size:
            raise IndexFormatError(
                f"{name} is truncated: its header says {declared} bytes, the file has {size}")
        raise IndexFormatError(
            f"{name} has {size} bytes but its header says {declared}: extra data follows "
            "the index (damaged, or something was appended to it)")
    sections, names = [], set()
    prev_end = PRELUDE_SIZE + header_len
    for i, entry in enumerate(header["sections"]):
        if not isinstance(entry, dict):
            raise bad(f"section entry {i} is not a JSON object")
        sname = entry.get("name")
        if not isinstance(sname, str) or not sname or sname in names:
            raise bad(f"section entry {i} has a missing, empty or repeated name {sname!r}")
        names.add(sname)
        where = f"section {sname!r}"
        dtype = check_dtype_str(entry.get("dtype"), f"{name}: {where}")
        shape = check_shape(entry.get("shape"), dtype, f"{name}: {where}")
        offset, nbytes, crc = entry.get("offset"), entry.get("nbytes"), entry.get("crc32")
        if not (is_int(offset) and is_int(nbytes) and is_int(crc) and 0 <= crc < 2**32):
            raise bad(f"{where} has a missing or invalid offset, nbytes or crc32")
        if nbytes != math.prod(shape) * dtype.itemsize:
            raise bad(f"{where} declares {nbytes} bytes but shape {list(shape)} of "
                      f"{dtype.str} needs {math.prod(shape) * dtype.itemsize}")
        if offset % ALIGNMENT or offset < prev_end:
            raise bad(f"{where} starts at byte {offset}, which is not {ALIGNMENT}-byte "
                      "aligned after the previous section")
        if offset + nbytes > size:
            raise IndexFormatError(
                f"{name} is truncated or damaged: {where} ends at byte {offset + nbytes} "
                f"but the file has {size} bytes")
        prev_end = offset + nbytes
        sections.append(_Section(sname, dtype, shape, offset, nbytes, crc))
    return sections


def _checksum_error(name: str, section: _Section) -> IndexFormatError:
    return IndexFormatError(
        f"{name}: section {section.name!r} checksum mismatch: the file is damaged "
        "(restore it from a backup or rebuild the index)")


def _display_name(path: str | os.PathLike) -> str:
    return os.fspath(path)


def read_header(path: str | os.PathLike) -> dict:
    """Read and validate the header of a binidx file without reading any array data.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        The decoded JSON header: ``format``, ``format_version``, ``binidx_version``,
        ``kind``, ``params``, ``file_size`` and ``sections`` (a list of dicts with
        ``name``, ``dtype``, ``shape``, ``offset``, ``nbytes``, ``crc32``).

    Raises
    ------
    IndexFormatError
        If the file is not a binidx file, is truncated, damaged or of a newer version.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "demo.binidx")
    >>> write_index_file(p, kind="demo", params={"dim": 3}, arrays={"x": np.zeros(3)})
    >>> read_header(p)["sections"][0]["shape"]
    [3]
    """
    name = _display_name(path)
    with open(path, "rb", buffering=0) as f:
        header, _ = _parse(_file_reader(f, name), os.fstat(f.fileno()).st_size, name)
    return header


def _file_reader(f: BinaryIO, name: str) -> Callable[[int, int], bytes]:
    def read(offset: int, n: int) -> bytes:
        data = os.pread(f.fileno(), n, offset)
        while len(data) < n:  # pread may return short reads; an empty one means EOF
            more = os.pread(f.fileno(), n - len(data), offset + len(data))
            if not more:
                raise IndexFormatError(f"{name} shrank while it was being read; retry when "
                                       "no other process is writing it")
            data += more
        return data
    return read


def _read_section_into(f: BinaryIO, section: _Section, name: str, verify: bool) -> np.ndarray:
    arr = np.empty(section.shape, dtype=section.dtype)
    view = array_bytes(arr)
    done, crc = 0, 0
    while done < section.nbytes:
        n = os.preadv(f.fileno(), [view[done:done + _CHUNK]], section.offset + done)
        if n <= 0:
            raise IndexFormatError(f"{name} shrank while it was being read; retry when no "
                                   "other process is writing it")
        if verify:
            crc = crc32(view[done:done + n], crc)
        done += n
    if verify and crc != section.crc32:
        raise _checksum_error(name, section)
    return arr


def read_index_file(path: str | os.PathLike, *, mmap: bool = False,
                    verify: bool | None = None) -> IndexFile:
    """Read a binidx file written by :func:`write_index_file`.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool, default False
        If False, each section is read into a fresh writable array.  If True, the file is
        memory-mapped once and every array is a read-only, zero-copy view of the mapping
        (writing to one raises ``ValueError: assignment destination is read-only``); the
        pages are shared with every other process that maps the same file and are read
        from disk only when touched.  The mapping stays valid while any array of it
        lives, even if the file is replaced (binidx replaces files by rename); the file
        must never be truncated in place while mapped.
    verify : bool, optional
        Whether to check each section's CRC-32.  Defaults to True without ``mmap`` and
        to False with it: checksumming reads every byte, which would turn a
        milliseconds-long memory-mapped open of a large index into a full read.  The
        header checksum, every size, offset, dtype and shape are always checked.

    Returns
    -------
    IndexFile
        ``(kind, params, arrays, header)``.

    Raises
    ------
    IndexFormatError
        If the file is not a binidx file (the message says what it looks like: a NumPy
        .npy file, a FAISS or hnswlib index ...), is truncated or damaged (naming the
        section whose checksum fails), or was written by a newer format version.
    OSError
        If the file cannot be opened (``FileNotFoundError``, ``PermissionError`` ...).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "demo.binidx")
    >>> write_index_file(p, kind="demo", params={}, arrays={"ids": np.arange(3)})
    >>> f = read_index_file(p, mmap=True)
    >>> f.arrays["ids"].tolist(), f.arrays["ids"].flags.writeable
    ([0, 1, 2], False)
    """
    if verify is None:
        verify = not mmap
    name = _display_name(path)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        header, sections = _parse(_file_reader(f, name), size, name)
        arrays = {}
        if not mmap:
            for s in sections:
                arrays[s.name] = _read_section_into(f, s, name, verify)
            return IndexFile(header["kind"], header["params"], arrays, header)
        # One mapping for the whole file; validated offsets guarantee every view lies
        # inside it.  The fd can be closed right away: the mapping keeps its own reference.
        mapping = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
    if len(mapping) != size:
        raise IndexFormatError(f"{name} changed size while it was being opened; retry")
    for s in sections:
        if verify and crc32(memoryview(mapping)[s.offset:s.offset + s.nbytes]) != s.crc32:
            raise _checksum_error(name, s)
        count = s.nbytes // s.dtype.itemsize
        arrays[s.name] = np.frombuffer(mapping, dtype=s.dtype, count=count,
                                       offset=s.offset).reshape(s.shape)
    return IndexFile(header["kind"], header["params"], arrays, header)


def index_file_from_bytes(data: bytes | bytearray | memoryview) -> IndexFile:
    """Decode bytes made by :func:`index_file_to_bytes`, checking everything.

    The arrays are writable copies, independent of ``data``.

    Raises
    ------
    IndexFormatError
        As :func:`read_index_file`.

    Examples
    --------
    >>> import numpy as np
    >>> data = index_file_to_bytes("demo", {}, {"x": np.arange(4, dtype=np.uint8)})
    >>> index_file_from_bytes(data).arrays["x"].tolist()
    [0, 1, 2, 3]
    """
    view = memoryview(data).cast("B")
    name = "the binidx index bytes"
    header, sections = _parse(lambda off, n: bytes(view[off:off + n]), len(view), name)
    arrays = {}
    for s in sections:
        raw = view[s.offset:s.offset + s.nbytes]
        if crc32(raw) != s.crc32:
            raise _checksum_error(name, s)
        arrays[s.name] = np.frombuffer(raw, dtype=s.dtype).reshape(s.shape).copy()
    return IndexFile(header["kind"], header["params"], arrays, header)
