"""Tests of the write-ahead log (binidx/_wal.py, docs/format.md section 2)."""
from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from binidx import _wal
from binidx._wal import FILE_HEADER_SIZE, FRAME_SIZE, LogRecord, WriteAheadLog
from binidx.errors import ConcurrencyError, IndexFormatError, InvalidDtypeError, InvalidInputError

GOLDEN = Path(__file__).parent / "data" / "golden" / "wal_v1.binwal"
# Never changes once committed.  Create a missing one with
#   BINIDX_WRITE_GOLDEN=1 python -m pytest tests/test_wal.py -k golden
GOLDEN_SHA256 = "9227ded82d811cb641ce3b25f7fec0e79c2f039932b5678de70e2f5d30ea1742"


def _op(seq: int) -> tuple[str, dict, dict]:
    """Deterministic content of the operation with sequence number ``seq``."""
    rng = np.random.default_rng(seq)
    n = seq % 4
    ops = ("add", "upsert", "remove")
    op = ops[seq % 3]
    arrays = {"ids": np.arange(seq * 10, seq * 10 + n, dtype=np.int64)}
    if op != "remove":
        arrays["x"] = rng.standard_normal((n, 6)).astype(np.float32)
    return op, arrays, {"seq_hint": seq, "tag": "é" * (seq % 3)}


def _check_record(rec: LogRecord) -> None:
    op, arrays, meta = _op(rec.seq)
    assert rec.op == op and rec.meta == meta
    assert list(rec.arrays) == list(arrays)
    for name, want in arrays.items():
        assert rec.arrays[name].dtype == want.dtype and rec.arrays[name].shape == want.shape
        np.testing.assert_array_equal(rec.arrays[name], want)


def _fill(path: Path, n: int, sync: str | float = "never") -> list[int]:
    """Append operations 1..n (with their deterministic content); return record end offsets."""
    ends = []
    with WriteAheadLog(path, sync=sync) as log:
        for seq in range(log.last_seq + 1, log.last_seq + n + 1):
            op, arrays, meta = _op(seq)
            assert log.append(op, arrays, meta) == seq
            ends.append(log._end)
    return ends


# ------------------------------------------------------------------------ basics

@pytest.mark.parametrize("sync", ["always", "never", 0.01])
def test_append_and_replay_round_trip(tmp_path: Path, sync) -> None:
    path = tmp_path / "ops.wal"
    _fill(path, 7, sync=sync)
    with WriteAheadLog(path, sync=sync) as log:
        assert (log.base_seq, log.last_seq, log.n_records, log.dropped_bytes) == (0, 7, 7, 0)
        records = list(log.replay())
        assert [r.seq for r in records] == list(range(1, 8))
        for r in records:
            _check_record(r)
        assert [r.seq for r in log.replay(after_seq=5)] == [6, 7]
        assert list(log.replay(after_seq=7)) == []
        assert all(a.flags.writeable for r in records for a in r.arrays.values())


def test_new_log_is_created_atomically_with_a_valid_header(tmp_path: Path) -> None:
    path = tmp_path / "new.wal"
    with WriteAheadLog(path) as log:
        assert log.n_records == 0 and log.last_seq == 0
    assert path.stat().st_size == FILE_HEADER_SIZE
    assert path.read_bytes().startswith(b"\x89BINWAL\n")
    assert os.listdir(tmp_path) == ["new.wal"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(
    st.text(min_size=1, max_size=6),
    hnp.arrays(st.sampled_from(["?", "u1", "<i4", ">i8", "<f2", "<f4", ">f8", "<c8"]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=3), min_size=1, max_size=4))
def test_arrays_round_trip_property(tmp_path_factory: pytest.TempPathFactory,
                                    batches: list) -> None:
    path = tmp_path_factory.mktemp("wal") / "p.wal"
    with WriteAheadLog(path, sync="never") as log:
        for arrays in batches:
            log.append("op", arrays)
    with WriteAheadLog(path, sync="never") as log:
        for rec, arrays in zip(log.replay(), batches, strict=True):
            assert list(rec.arrays) == list(arrays) and rec.meta == {}
            for name, want in arrays.items():
                got = rec.arrays[name]
                assert got.shape == want.shape
                assert got.tobytes() == want.astype(got.dtype).tobytes()


def test_flusher_thread_group_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    log = WriteAheadLog(tmp_path / "g.wal", sync=0.02)
    for _ in range(50):
        log.append("add", {"ids": np.arange(2)})
    assert len(calls) < 5  # appends do not flush one by one
    deadline = time.monotonic() + 5
    while log._dirty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not log._dirty and calls  # ... the background thread did
    log.close()
    assert log.closed


def test_always_flushes_each_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    with WriteAheadLog(tmp_path / "a.wal", sync="always") as log:
        for _ in range(3):
            log.append("add", {})
        assert len(calls) == 3


@pytest.mark.parametrize("sync", ["sometimes", 0, -1.0, float("nan"), True, None])
def test_bad_sync_policy(tmp_path: Path, sync) -> None:
    with pytest.raises(InvalidInputError, match="sync must be 'always', 'never' or a positive"):
        WriteAheadLog(tmp_path / "x.wal", sync=sync)


@pytest.mark.parametrize("args, error, match", [
    (("", {}), InvalidInputError, "op must be a non-empty string"),
    (("add", {"x": np.array(["s"])}), InvalidDtypeError, "cannot store"),
    (("add", {"x": np.zeros(1)}, {"bad": float("inf")}), InvalidInputError, "strict JSON"),
    (("add", {"x": np.zeros(1)}, [1]), InvalidInputError, "meta must be a dict"),
    (("add", [np.zeros(1)]), InvalidInputError, "arrays must be a dict"),
])
def test_append_rejects_bad_input_and_writes_nothing(tmp_path: Path, args, error,
                                                     match: str) -> None:
    with WriteAheadLog(tmp_path / "x.wal", sync="never") as log:
        with pytest.raises(error, match=match):
            log.append(*args)
        assert log.last_seq == 0
    assert (tmp_path / "x.wal").stat().st_size == FILE_HEADER_SIZE


def test_single_writer(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    log = WriteAheadLog(path)
    with pytest.raises(ConcurrencyError, match="already open by another WriteAheadLog"):
        WriteAheadLog(path)
    log.close()
    WriteAheadLog(path).close()


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path / "x.wal")
    log.close()
    log.close()  # idempotent
    for call in (lambda: log.append("a", {}), lambda: log.replay(), lambda: log.reset(0)):
        with pytest.raises(ValueError, match="is closed"):
            call()


def test_failed_write_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.wal"
    _fill(path, 2)
    log = WriteAheadLog(path, sync="never")
    size = path.stat().st_size
    real = os.pwrite

    def half_then_full_disk(fd, data, offset):
        real(fd, bytes(data[:len(data) // 2]), offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        log.append(*_op(3)[:2], _op(3)[2])
    monkeypatch.setattr(os, "pwrite", real)
    assert path.stat().st_size == size and log.last_seq == 2
    op, arrays, meta = _op(3)
    assert log.append(op, arrays, meta) == 3
    log.close()
    with WriteAheadLog(path) as log:
        assert log.dropped_bytes == 0
        for rec in log.replay():
            _check_record(rec)


# ------------------------------------------------------------------------ torn tails

def test_torn_tail_at_every_offset_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "full.wal"
    ends = _fill(path, 4)
    full = path.read_bytes()
    good_end = ends[-2]
    work = tmp_path / "torn.wal"
    for cut in range(good_end + 1, len(full)):
        work.write_bytes(full[:cut])
        with WriteAheadLog(work, sync="never") as log:
            assert log.last_seq == 3 and log.dropped_bytes == cut - good_end, cut
            assert work.stat().st_size == good_end  # cut off on open
            records = list(log.replay())
            assert [r.seq for r in records] == [1, 2, 3]
            op, arrays, meta = _op(4)
            assert log.append(op, arrays, meta) == 4  # new records follow the good ones
    assert work.read_bytes() == full


def test_zero_filled_tail_is_dropped(tmp_path: Path) -> None:
    """After a power loss the file can be longer than the data that reached the disk."""
    path = tmp_path / "x.wal"
    ends = _fill(path, 3)
    data = path.read_bytes()
    for zeros_from in (ends[1], ends[1] + 5, ends[1] + FRAME_SIZE + 3):
        path.write_bytes(data[:zeros_from] + bytes(len(data) - zeros_from + 100))
        with WriteAheadLog(path, sync="never") as log:
            assert log.last_seq == 2
            assert path.stat().st_size == ends[1]


def test_last_record_with_bad_payload_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    ends = _fill(path, 3)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with WriteAheadLog(path) as log:
        assert log.last_seq == 2 and log.dropped_bytes == len(data) - ends[1]


def test_corruption_before_the_last_record_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    ends = _fill(path, 3)
    full = path.read_bytes()
    # Every byte of records 1 and 2 (frames and payloads), flipped one at a time.
    for pos in range(FILE_HEADER_SIZE, ends[1]):
        data = bytearray(full)
        data[pos] ^= 0x20
        path.write_bytes(bytes(data))
        with pytest.raises(IndexFormatError, match="the log is (damaged|corrupted)"):
            WriteAheadLog(path, sync="never")
        assert path.read_bytes() == bytes(data)  # nothing was cut off


def test_garbage_tail_is_dropped_but_not_when_a_valid_frame_follows(tmp_path: Path) -> None:
    """Stale blocks can follow the data after a power loss; a valid frame after them cannot."""
    path = tmp_path / "x.wal"
    ends = _fill(path, 3)
    data = path.read_bytes()
    garbage = b"\x01\xfe" * (FRAME_SIZE + 10)
    path.write_bytes(data[:ends[1]] + garbage)
    with WriteAheadLog(path, sync="never") as log:
        assert log.last_seq == 2 and log.dropped_bytes == len(garbage)
    path.write_bytes(data[:ends[1]] + garbage + data[ends[1]:])
    with pytest.raises(IndexFormatError, match="record 3 .* is damaged and valid records follow"):
        WriteAheadLog(path)


def test_sequence_gap_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    ends = _fill(path, 3)
    data = bytearray(path.read_bytes())
    frame = _wal._FRAME.pack(5, *_wal._FRAME.unpack_from(data, ends[0])[1:3], 0)[:20]
    data[ends[0]:ends[0] + FRAME_SIZE] = frame + _wal.struct.pack("<I", _wal.crc32(frame))
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="has sequence number 5, expected 2"):
        WriteAheadLog(path)


# ------------------------------------------------------------------------ bad files

def test_not_a_log(tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(IndexFormatError, match=r"not a binidx write-ahead log \(it looks like "
                                               r"a NumPy \.npy file\)"):
        WriteAheadLog(npy)
    empty = tmp_path / "empty.wal"
    empty.write_bytes(b"")
    with pytest.raises(IndexFormatError, match=r"not a binidx write-ahead log \(it is empty"):
        WriteAheadLog(empty)
    index = tmp_path / "x.binidx"
    from binidx._format import write_index_file
    write_index_file(index, kind="k", params={}, arrays={})
    with pytest.raises(IndexFormatError, match="not a binidx write-ahead log"):
        WriteAheadLog(index)


def test_damaged_or_newer_log_header(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    _fill(path, 1)
    data = path.read_bytes()
    path.write_bytes(data[:20])
    with pytest.raises(IndexFormatError, match="is truncated: 20 bytes"):
        WriteAheadLog(path)
    for pos in range(8, FILE_HEADER_SIZE):
        damaged = bytearray(data)
        damaged[pos] ^= 0x04
        path.write_bytes(bytes(damaged))
        match = r"log format version \d+; this binidx" if pos < 12 else "checksum mismatch"
        with pytest.raises(IndexFormatError, match=match):
            WriteAheadLog(path)
    newer = bytearray(data)
    newer[8] = 2
    path.write_bytes(bytes(newer))
    with pytest.raises(IndexFormatError, match="log format version 2; .* upgrade binidx"):
        WriteAheadLog(path)


# ------------------------------------------------------------------------ reset

def test_reset_and_truncate(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    _fill(path, 5)
    with WriteAheadLog(path, sync="never") as log:
        log.reset(5)
        assert (log.base_seq, log.last_seq, log.n_records) == (5, 5, 0)
        assert path.stat().st_size == FILE_HEADER_SIZE
        assert log.append("add", {}) == 6
        log.truncate()
        assert (log.base_seq, log.last_seq) == (6, 6)
        assert log.append("add", {}) == 7
        with pytest.raises(IndexFormatError, match="operations 4..6 are missing"):
            log.replay(after_seq=3)
        with pytest.raises(InvalidInputError, match="start_seq must be a non-negative"):
            log.reset(-1)
    assert sorted(os.listdir(tmp_path)) == ["x.wal"]
    with WriteAheadLog(path) as log:
        assert [r.seq for r in log.replay(6)] == [7]
        # the lock moved to the new file
        with pytest.raises(ConcurrencyError):
            WriteAheadLog(path)


# ------------------------------------------------------------------------ golden file

def test_golden_log_replays_forever(tmp_path: Path) -> None:
    if os.environ.get("BINIDX_WRITE_GOLDEN") and not GOLDEN.exists():
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path / "g.wal"
        with WriteAheadLog(tmp, sync="never") as log:
            log.reset(40)
        _fill(tmp, 5)
        shutil.copyfile(tmp, GOLDEN)
    assert GOLDEN.exists(), f"missing golden file {GOLDEN}"
    assert hashlib.sha256(GOLDEN.read_bytes()).hexdigest() == GOLDEN_SHA256, \
        "a committed golden log must never change; add a new one for a new log version"
    work = tmp_path / "copy.wal"  # opening may cut a torn tail: never touch the original
    shutil.copyfile(GOLDEN, work)
    with WriteAheadLog(work, sync="never") as log:
        assert (log.base_seq, log.last_seq, log.dropped_bytes) == (40, 45, 0)
        records = list(log.replay(40))
        assert [r.seq for r in records] == [41, 42, 43, 44, 45]
        for rec in records:
            _check_record(rec)


# ------------------------------------------------------------------------ crash test

_CHILD = textwrap.dedent("""
    import numpy as np
    from binidx._wal import WriteAheadLog


    log = WriteAheadLog({path!r}, sync={sync!r})
    print("open", log.base_seq, log.last_seq, flush=True)
    while True:
        seq = log.last_seq + 1
        op, arrays, meta = _op(seq)
        if seq % 3 == 0:  # some large records, so kills also land mid-write
            arrays = dict(arrays, big=np.full(500_000, seq % 251, dtype=np.uint8))
            meta = dict(meta, big=True)
        assert log.append(op, arrays, meta) == seq
        print("ack", seq, flush=True)
        if seq % 97 == 0:  # a checkpoint: everything up to seq is "in the snapshot"
            log.reset(seq)
            print("reset", seq, flush=True)
""")


@pytest.mark.parametrize("sync", ["always", 0.05])
def test_sigkill_loses_no_acknowledged_record(tmp_path: Path, sync) -> None:
    path = tmp_path / "crash.wal"
    rng = np.random.default_rng(99)
    script = _CHILD.format(path=str(path), sync=sync).replace(
        "from binidx._wal", inspect.getsource(_op) + "\nfrom binidx._wal")
    acked, reset_at, kills, torn = 0, 0, 0, 0
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                 text=True, env=env)
        first = child.stdout.readline().split()
        assert first[0] == "open" and int(first[2]) >= acked, first
        time.sleep(float(rng.uniform(0.02, 0.3)))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        kills += child.returncode == -signal.SIGKILL
        # Only whole lines count: the kill can cut the last print short.
        for line in out.split("\n")[:-1]:
            word, seq = line.split()
            if word == "ack":
                acked = int(seq)
            elif word == "reset":
                reset_at = int(seq)
        with WriteAheadLog(path, sync="never") as log:
            torn += log.dropped_bytes > 0
            # A reset that completed but was not yet printed is also fine.
            assert log.base_seq >= reset_at
            assert log.last_seq >= acked, (log.last_seq, acked)
            seqs = []
            for rec in log.replay(log.base_seq):
                seqs.append(rec.seq)
                if rec.meta.get("big"):
                    big = rec.arrays.pop("big")
                    assert big.shape == (500_000,) and np.all(big == rec.seq % 251)
                    rec.meta.pop("big")
                _check_record(rec)
            assert seqs == list(range(log.base_seq + 1, log.last_seq + 1))
            acked = max(acked, log.last_seq)  # a record written but not acked is kept
    assert kills == 6 and acked > 20, (acked, reset_at, torn)
