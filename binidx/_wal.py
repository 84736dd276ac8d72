"""An append-only write-ahead log of index operations, for durable indexes.

``docs/format.md`` specifies the byte layout.  A log file is a 32-byte file header
(magic, version, the sequence number the log starts after, checksum) followed by
records; each record is a 24-byte frame (sequence number, payload length, payload CRC,
frame CRC) and a payload holding the operation name, a JSON ``meta`` mapping and named
arrays.

Recovery rules: a damaged or incomplete record with no valid record after it is what a
crash mid-append leaves (a torn write, or after a power loss an unsynced tail of zeros or
stale blocks), so it is dropped and cut off when the log is opened; nothing acknowledged
under the sync policy can be in it.  A damaged record with a valid record after it cannot
come from a crash: it raises :class:`~binidx.errors.IndexFormatError`.

Only one :class:`WriteAheadLog` may have a log open at a time (an exclusive ``flock``);
a second one raises :class:`~binidx.errors.ConcurrencyError`.
"""
from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

try:  # POSIX only; without it the single-writer rule is the caller's to keep
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ._format import (
    array_bytes,
    as_section_array,
    atomic_write,
    check_dtype_str,
    check_shape,
    crc32,
    describe_foreign,
    dump_json,
    fsync_directory,
    is_int,
    load_json,
    remove_quietly,
)
from ._version import __version__
from .errors import ConcurrencyError, IndexFormatError, InvalidInputError

WAL_FORMAT_VERSION = 1
WAL_MAGIC = b"\x89BINWAL\n"
_FILE_HEADER = struct.Struct("<8sIIQII")  # magic, version, flags, base_seq, reserved, crc
FILE_HEADER_SIZE = _FILE_HEADER.size  # 32
_FRAME = struct.Struct("<QQII")  # seq, payload_len, payload_crc, frame_crc
FRAME_SIZE = _FRAME.size  # 24
_META_LEN = struct.Struct("<I")
_CHUNK = 16 * 1024 * 1024  # bytes read per step when checksumming a large payload
_JOIN_BELOW = 1 << 16  # payloads smaller than this are written with one system call


class LogRecord(NamedTuple):
    """One operation read back from the log by :meth:`WriteAheadLog.replay`.

    Attributes
    ----------
    seq : int
        Its sequence number (1 for the first record ever appended, then consecutive).
    op : str
        The operation name given to :meth:`WriteAheadLog.append`.
    arrays : dict of str to numpy.ndarray
        The arrays given to ``append`` (writable; C-ordered, little-endian dtypes).
    meta : dict
        The ``meta`` mapping given to ``append`` (``{}`` if it was None).
    """

    seq: int
    op: str
    arrays: dict
    meta: dict


def _check_sync(sync: Any) -> str | float:
    if sync in ("always", "never"):
        return sync
    if isinstance(sync, (int, float)) and not isinstance(sync, bool) \
            and math.isfinite(sync) and sync > 0:
        return float(sync)
    raise InvalidInputError(
        f"sync must be 'always', 'never' or a positive number of seconds between group "
        f"commits, got {sync!r}")


def _pack_file_header(base_seq: int) -> bytes:
    head = _FILE_HEADER.pack(WAL_MAGIC, WAL_FORMAT_VERSION, 0, base_seq, 0, 0)[:28]
    return head + struct.pack("<I", crc32(head))


def _pread_exact(fd: int, n: int, offset: int, name: str) -> bytearray:
    """Read exactly ``n`` bytes at ``offset`` into a fresh buffer (the caller checked bounds)."""
    buf = bytearray(n)
    view, done = memoryview(buf), 0
    while done < n:
        got = os.preadv(fd, [view[done:done + _CHUNK]], offset + done)
        if got <= 0:
            raise IndexFormatError(f"{name} shrank while it was being read")
        done += got
    return buf


def _payload_crc(fd: int, offset: int, n: int, name: str) -> int:
    """CRC-32 of ``n`` bytes at ``offset``, read in bounded chunks."""
    crc, done = 0, 0
    while done < n:
        step = min(_CHUNK, n - done)
        crc = crc32(_pread_exact(fd, step, offset + done, name), crc)
        done += step
    return crc


def _encode_payload(op: str, arrays: Mapping, meta: Mapping | None) -> list:
    """Return the payload as a list of byte buffers (table JSON first, then arrays)."""
    if not isinstance(op, str) or not op:
        raise InvalidInputError(f"op must be a non-empty string, got {op!r}")
    if meta is not None and not isinstance(meta, Mapping):
        raise InvalidInputError(f"meta must be a dict or None, got {type(meta).__name__}")
    if not isinstance(arrays, Mapping):
        raise InvalidInputError(f"arrays must be a dict of name -> array, got "
                                f"{type(arrays).__name__}")
    table, blobs = [], []
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"array names must be non-empty strings, got {name!r}")
        arr = as_section_array(name, value)
        table.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        blobs.append(array_bytes(arr))
    doc = dump_json({"op": op, "meta": dict(meta or {}), "arrays": table}, "meta")
    return [_META_LEN.pack(len(doc)) + doc, *blobs]


def _decode_payload(payload: bytearray, where: str) -> tuple[str, dict, dict]:
    """Decode and validate a payload whose checksum has already matched."""
    def bad(msg: str) -> IndexFormatError:
        return IndexFormatError(f"{where}: {msg}: the log is damaged")

    if len(payload) < _META_LEN.size:
        raise bad("the payload is too short")
    (doc_len,) = _META_LEN.unpack_from(payload)
    if doc_len > len(payload) - _META_LEN.size:
        raise bad("the payload's table is longer than the payload")
    doc = load_json(bytes(payload[4:4 + doc_len]), f"{where}: the record table")
    if not (isinstance(doc, dict) and isinstance(doc.get("op"), str)
            and isinstance(doc.get("meta"), dict) and isinstance(doc.get("arrays"), list)):
        raise bad("the record table lacks op, meta or arrays")
    view = memoryview(payload)
    pos, arrays = 4 + doc_len, {}
    for entry in doc["arrays"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or entry["name"] in arrays:
            raise bad("an array entry has a missing or repeated name")
        dtype = check_dtype_str(entry.get("dtype"), f"{where}: array {entry['name']!r}")
        shape = check_shape(entry.get("shape"), dtype, f"{where}: array {entry['name']!r}")
        nbytes = math.prod(shape) * dtype.itemsize
        if pos + nbytes > len(payload):
            raise bad(f"array {entry['name']!r} runs past the end of its record")
        arrays[entry["name"]] = np.frombuffer(view[pos:pos + nbytes], dtype=dtype).reshape(shape)
        pos += nbytes
    if pos != len(payload):
        raise bad(f"{len(payload) - pos} unexplained bytes follow the arrays")
    return doc["op"], doc["meta"], arrays


class WriteAheadLog:
    """An append-only, checksummed log of index operations.

    Opening an existing log checks it from end to end: a torn last record (left by a crash
    mid-append) is dropped and cut off, a damaged record anywhere else raises.

    Parameters
    ----------
    path : str or os.PathLike
        The log file.  Created (atomically, with sequence numbers starting at 1) if absent;
        its directory must exist.
    sync : {"always", "never"} or float, default "always"
        When appended records are forced to stable storage (``fdatasync``):

        - ``"always"``: before :meth:`append` returns.  Nothing acknowledged is lost even
          on power loss or an OS crash; each append costs one disk flush (from tens of
          microseconds on an NVMe drive with a write cache to ~10 ms on a spinning disk).
        - a number ``t`` of seconds: group commit.  A background thread flushes at most
          every ``t`` seconds.  A crash of the process loses nothing (every append has
          reached the operating system before it returns), but power loss or an OS crash
          can lose the records of the last ``t`` seconds.
        - ``"never"``: the operating system writes back when it likes (typically within
          30 s).  Same process-crash guarantee as above; for tests and bulk loads.

        :meth:`close` and :meth:`sync` flush in every mode except ``"never"``.

    Attributes
    ----------
    path : str
    base_seq : int
        The log holds the records after this sequence number (set by :meth:`reset`).
    last_seq : int
        Sequence number of the last record (``base_seq`` if the log is empty).
    dropped_bytes : int
        Bytes of a torn tail cut off when the log was opened (0 normally).

    Raises
    ------
    IndexFormatError
        If the file is not a binidx log, is of a newer version, or is damaged before its
        last record.
    ConcurrencyError
        If another ``WriteAheadLog`` (in this or another process) has the file open.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ops.wal")
    >>> with WriteAheadLog(path, sync="never") as log:
    ...     log.append("add", {"ids": np.arange(3)}, {"note": "first"})
    1
    >>> with WriteAheadLog(path) as log:
    ...     [(r.seq, r.op, r.arrays["ids"].tolist()) for r in log.replay()]
    [(1, 'add', [0, 1, 2])]
    """

    def __init__(self, path: str | os.PathLike, *, sync: str | float = "always") -> None:
        self.path = os.fspath(path)
        self._sync = _check_sync(sync)
        self._lock = threading.Lock()
        self._fd = -1
        self._dirty = False
        self._flush_error: BaseException | None = None
        self.dropped_bytes = 0
        if not os.path.exists(self.path):
            atomic_write(self.path, lambda f: f.write(_pack_file_header(0)))
        self._fd = self._open_locked(self.path)
        try:
            self.base_seq = self._read_file_header()
            self._end, self.last_seq = self._scan()
            size = os.fstat(self._fd).st_size
            if self._end < size:  # a torn tail: cut it off so new records follow good ones
                self.dropped_bytes = size - self._end
                os.ftruncate(self._fd, self._end)
                os.fsync(self._fd)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if isinstance(self._sync, float):
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name=f"binidx-wal-flush:{self.path}")
            self._flusher.start()

    # ------------------------------------------------------------------ opening
    def _open_locked(self, path: str) -> int:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConcurrencyError(
                    f"{path} is already open by another WriteAheadLog (in this or another "
                    "process); close that one first, a log has a single writer") from None
        return fd

    def _read_file_header(self) -> int:
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, FILE_HEADER_SIZE, 0)
        name = self.path
        if not head or not head.startswith(WAL_MAGIC[:len(head)]):
            what = describe_foreign(head)
            why = (f"it looks like {what}" if what else "it is empty (0 bytes)" if not head
                   else "its first bytes are not the log's magic")
            raise IndexFormatError(
                f"{name} is not a binidx write-ahead log ({why}); pass the path of a log, "
                "or move the file away to start a new log")
        if size < FILE_HEADER_SIZE:
            raise IndexFormatError(f"{name} is truncated: {size} bytes is shorter than the "
                                   f"{FILE_HEADER_SIZE}-byte log header")
        _, version, flags, base_seq, reserved, crc = _FILE_HEADER.unpack(head)
        if version > WAL_FORMAT_VERSION:
            raise IndexFormatError(
                f"{name} was written by binidx log format version {version}; this binidx "
                f"({__version__}) reads versions up to {WAL_FORMAT_VERSION}: upgrade binidx")
        if crc32(head[:28]) != crc or version == 0:
            raise IndexFormatError(f"{name}: log header checksum mismatch: the log is damaged")
        if flags or reserved:
            raise IndexFormatError(f"{name} uses log flags {flags:#x} that this binidx does "
                                   "not know: upgrade binidx or replace the damaged log")
        return base_seq

    def _frame_at(self, pos: int, size: int) -> tuple[int, int, int] | None:
        """Return (seq, payload_len, payload_crc) of the frame at ``pos``, None if invalid."""
        if size - pos < FRAME_SIZE:
            return None
        raw = os.pread(self._fd, FRAME_SIZE, pos)
        if len(raw) < FRAME_SIZE:
            return None
        seq, plen, pcrc, fcrc = _FRAME.unpack(raw)
        return (seq, plen, pcrc) if crc32(raw[:20]) == fcrc else None

    def _record_end(self, pos: int, size: int, expected_seq: int) -> int | None:
        """Return where the record at ``pos`` ends if it is whole and valid, else None."""
        frame = self._frame_at(pos, size)
        if frame is None:
            return None
        seq, plen, pcrc = frame
        if seq != expected_seq:  # a valid frame in the wrong place is never a torn write
            raise IndexFormatError(
                f"{self.path}: the record at byte {pos} has sequence number {seq}, expected "
                f"{expected_seq}: the log is damaged")
        end = pos + FRAME_SIZE + plen
        if end > size or _payload_crc(self._fd, pos + FRAME_SIZE, plen, self.path) != pcrc:
            return None
        return end

    def _valid_frame_after(self, start: int, size: int, seqs: tuple[int, ...]) -> bool:
        """Whether a valid frame numbered one of ``seqs`` starts anywhere in [start, size).

        Searches for the frames' 8-byte sequence numbers (C-speed ``bytes.find``) and
        checks the frame CRC at each hit, so it costs one read of the tail.
        """
        patterns = [struct.pack("<Q", s) for s in seqs]
        pos = start
        while pos + FRAME_SIZE <= size:
            step = min(_CHUNK, size - pos)
            chunk = bytes(_pread_exact(self._fd, step, pos, self.path))
            for pattern in patterns:
                hit = chunk.find(pattern)
                while hit >= 0:
                    if self._frame_at(pos + hit, size) is not None:
                        return True
                    hit = chunk.find(pattern, hit + 1)
            if pos + step >= size:
                break
            pos += step - (FRAME_SIZE - 1)  # overlap: a frame may straddle two chunks
        return False

    def _scan(self) -> tuple[int, int]:
        """Walk and verify every record; return (end of the last good record, its seq).

        A record that is incomplete or fails a checksum ends the log if no valid frame
        follows it (a crash tore the tail, or after a power loss the unsynced tail holds
        zeros or stale blocks); if one does, the damage is not from a crash and raises.
        """
        size = os.fstat(self._fd).st_size
        pos, seq = FILE_HEADER_SIZE, self.base_seq
        while pos < size:
            end = self._record_end(pos, size, seq + 1)
            if end is None:
                if self._valid_frame_after(pos + 1, size, (seq + 1, seq + 2)):
                    raise IndexFormatError(
                        f"{self.path}: record {seq + 1} (at byte {pos}) is damaged and valid "
                        "records follow it: the log is corrupted, not torn by a crash; restore "
                        "it from a backup, or delete it to lose the operations since the last "
                        "checkpoint")
                break
            pos, seq = end, seq + 1
        return pos, seq

    # ------------------------------------------------------------------ writing
    def append(self, op: str, arrays: Mapping[str, np.ndarray],
               meta: Mapping | None = None) -> int:
        """Append one operation; return its sequence number.

        The record is completely written to the file before this returns (so it survives
        a crash of the process) and, with ``sync="always"``, flushed to stable storage.

        Parameters
        ----------
        op : str
            Operation name, for example ``"add"``, ``"upsert"``, ``"remove"``.
        arrays : dict of str to array_like
            The operation's data (vectors, ids ...); bool, integer, float or complex.
        meta : dict, optional
            JSON-serialisable extra information.

        Returns
        -------
        int
            The record's sequence number: ``last_seq + 1``.

        Raises
        ------
        InvalidInputError, InvalidDtypeError
            If ``op``, ``meta`` or an array cannot be logged (nothing is written).
        OSError
            If the write or the flush fails (disk full ...).  A partly written record is
            cut off again, so the log stays valid.

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> log = WriteAheadLog(os.path.join(tempfile.mkdtemp(), "a.wal"), sync="never")
        >>> log.append("remove", {"ids": np.array([7, 9])})
        1
        >>> log.close()
        """
        pieces = _encode_payload(op, arrays, meta)
        plen = sum(len(p) for p in pieces)
        pcrc = 0
        for p in pieces:
            pcrc = crc32(p, pcrc)
        with self._lock:
            self._check_open()
            if self._flush_error is not None:
                err, self._flush_error = self._flush_error, None
                raise OSError(f"a background flush of {self.path} failed earlier: {err}") \
                    from err
            seq = self.last_seq + 1
            frame = _FRAME.pack(seq, plen, pcrc, 0)[:20]
            frame += struct.pack("<I", crc32(frame))
            buffers = [frame + b"".join(pieces)] if plen < _JOIN_BELOW else [frame, *pieces]
            pos = self._end
            try:
                for buf in buffers:
                    pos = self._pwrite_all(buf, pos)
                if self._sync == "always":
                    self._fsync(self._fd)
            except BaseException:
                # Leave no partial record behind: a later append would otherwise follow
                # garbage, which the next open would have to call corruption.
                try:
                    os.ftruncate(self._fd, self._end)
                except OSError:
                    pass
                raise
            self._end = pos
            self.last_seq = seq
            self._dirty = True
        return seq

    def _pwrite_all(self, buf: bytes | memoryview, pos: int) -> int:
        view = memoryview(buf).cast("B")
        while len(view):
            n = os.pwrite(self._fd, view[:1 << 30], pos)
            view, pos = view[n:], pos + n
        return pos

    def sync(self) -> None:
        """Flush every appended record to stable storage now (whatever the policy)."""
        with self._lock:
            self._check_open()
            self._dirty = False
            fd = self._fd
        self._fsync(fd)

    @staticmethod
    def _fsync(fd: int) -> None:
        if hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:  # pragma: no cover - macOS / Windows
            os.fsync(fd)

    def _flush_loop(self) -> None:
        # Group commit: one fdatasync covers every append since the previous one.  The
        # fd cannot be closed under us: close() stops and joins this thread first.
        while not self._stop.wait(self._sync):  # type: ignore[arg-type]
            with self._lock:
                dirty, self._dirty = self._dirty, False
            if dirty:
                try:
                    self._fsync(self._fd)
                except OSError as exc:  # reported by the next append
                    self._flush_error = exc

    # ------------------------------------------------------------------ reading
    def replay(self, after_seq: int = 0) -> Iterator[LogRecord]:
        """Yield the records with a sequence number greater than ``after_seq``, in order.

        Parameters
        ----------
        after_seq : int, default 0
            Skip the records up to and including this one (those already in a snapshot).

        Yields
        ------
        LogRecord
            ``(seq, op, arrays, meta)``.

        Raises
        ------
        IndexFormatError
            If ``after_seq`` is older than the log's start (records in between are missing,
            so replaying would silently lose them) or a record fails its checksum.
        """
        if not is_int(after_seq) or after_seq < 0:
            raise InvalidInputError(f"after_seq must be a non-negative integer, got {after_seq!r}")
        with self._lock:
            self._check_open()
            end, base = self._end, self.base_seq
        if after_seq < base:
            raise IndexFormatError(
                f"{self.path} starts after operation {base}, but operations from "
                f"{after_seq + 1} were asked for: operations {after_seq + 1}..{base} are "
                "missing (the snapshot is older than the log's last checkpoint)")
        return self._records(after_seq, end)

    def _records(self, after_seq: int, end: int) -> Iterator[LogRecord]:
        pos = FILE_HEADER_SIZE
        while pos < end:
            frame = self._frame_at(pos, end)
            if frame is None:
                raise IndexFormatError(f"{self.path}: the record at byte {pos} vanished "
                                       "while it was being replayed: the log is damaged")
            seq, plen, pcrc = frame
            if seq > after_seq:
                where = f"{self.path}: record {seq}"
                payload = _pread_exact(self._fd, plen, pos + FRAME_SIZE, self.path)
                if crc32(payload) != pcrc:
                    raise IndexFormatError(f"{where} checksum mismatch: the log is damaged")
                op, meta, arrays = _decode_payload(payload, where)
                yield LogRecord(seq, op, arrays, meta)
            pos += FRAME_SIZE + plen

    @property
    def n_records(self) -> int:
        """Number of records in the log (``last_seq - base_seq``)."""
        return self.last_seq - self.base_seq

    # ------------------------------------------------------------------ trimming
    def reset(self, start_seq: int) -> None:
        """Empty the log; the next record gets sequence number ``start_seq + 1``.

        Call it after a checkpoint has durably saved every operation up to ``start_seq``.
        The new empty log replaces the old one atomically (temporary file, fsync, rename,
        directory fsync): a crash leaves either the old log or the new one, never a mix.
        """
        if not is_int(start_seq) or start_seq < 0:
            raise InvalidInputError(f"start_seq must be a non-negative integer, got {start_seq!r}")
        with self._lock:
            self._check_open()
            directory = os.path.dirname(os.path.abspath(self.path))
            # A fixed name: only the holder of the log's lock ever writes it, and a crash
            # leaves at most this one stray file, overwritten by the next reset.
            tmp = os.path.join(directory, f".{os.path.basename(self.path)}.reset")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                         0o666)
            try:
                if fcntl is not None:  # hold the lock on the new file before it is visible
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.pwrite(fd, _pack_file_header(start_seq), 0)
                os.fsync(fd)
                os.replace(tmp, self.path)
            except BaseException:
                os.close(fd)
                remove_quietly(tmp)
                raise
            fsync_directory(directory)
            os.close(self._fd)
            self._fd = fd
            self._end = FILE_HEADER_SIZE
            self.base_seq = self.last_seq = start_seq
            self._dirty = False

    def truncate(self) -> None:
        """Empty the log, keeping the sequence numbering (``reset(last_seq)``)."""
        self.reset(self.last_seq)

    # ------------------------------------------------------------------ closing
    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"the write-ahead log {self.path} is closed")

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._fd < 0

    def close(self) -> None:
        """Flush (unless ``sync="never"``), release the lock and close the file. Idempotent."""
        if self._fd < 0:
            return
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
            self._flusher = None
        with self._lock:
            fd, self._fd = self._fd, -1
        try:
            if self._sync != "never":
                self._fsync(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> WriteAheadLog:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.n_records} records after seq {self.base_seq}"
        return f"WriteAheadLog({self.path!r}, sync={self._sync!r}: {state})"
