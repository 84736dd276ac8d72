"""binidx.open / DurableIndex: logging before acknowledging, replay, checkpoints, the
single-writer lock, clear errors for damaged directories, SIGKILL crash tests and a fuzz
of damaged snapshot and log files."""
from __future__ import annotations

import inspect
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import binidx
from binidx._durable import LOG_NAME, SNAPSHOT_NAME
from binidx._reference import neighbour_mismatch
from binidx._wal import WriteAheadLog
from binidx.errors import (
    BinidxError,
    ConcurrencyError,
    IndexFormatError,
    InvalidInputError,
)

METRICS = ["l2", "ip", "cosine"]


def mixture(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, dim)) * 3.0
    return (centers[rng.integers(8, size=n)] + rng.standard_normal((n, dim))).astype(np.float32)


def state(index) -> tuple[np.ndarray, np.ndarray]:
    """(sorted ids, their stored vectors) of an Index or DurableIndex."""
    ids = index.ids()
    return ids, index.get(ids) if ids.size else np.zeros((0, index.dim), np.float32)


def assert_same_state(a, b) -> None:
    ia, va = state(a)
    ib, vb = state(b)
    assert np.array_equal(ia, ib)
    assert np.array_equal(va, vb)


def full_search(index, q: np.ndarray, k: int):
    return index.search(q, k=k, n_probe=index.n_lists, n_rerank=max(len(index), k))


def assert_matches_exact(index, model: dict[int, np.ndarray], q: np.ndarray, k: int = 10) -> None:
    """Probing every bucket and reranking everything equals brute force over ``model``."""
    ids = np.array(sorted(model), dtype=np.int64)
    x = np.stack([model[i] for i in ids.tolist()]) if ids.size else np.zeros((0, index.dim))
    got = full_search(index, q, k)
    want = binidx.exact_search(x, q, k + 5, metric=index.metric)
    want_ids = np.where(want.ids >= 0, ids[np.maximum(want.ids, 0)], -1)
    msg = neighbour_mismatch(got.distances, got.ids, want.distances, want_ids,
                             rtol=1e-4, atol=1e-4)
    assert msg is None, msg


def small_index(metric: str = "l2", n: int = 600, dim: int = 16, seed: int = 0) -> binidx.Index:
    return binidx.build(mixture(n, dim, seed), metric=metric, n_lists=6, seed=seed)


def churn(target, rng: np.random.Generator, n_ops: int) -> None:
    """Apply the same random updates to ``target`` (an Index or a DurableIndex)."""
    next_id = max(10_000, int(target.ids().max()) + 1 if len(target) else 0)
    for _ in range(n_ops):
        present = target.ids()
        kind = rng.choice(["add", "upsert", "remove"])
        n = int(rng.integers(1, 20))
        labels = rng.integers(0, 4, n) if rng.random() < 0.5 else None
        if kind == "add":
            target.add(mixture(n, target.dim, int(rng.integers(1 << 30))),
                       np.arange(next_id, next_id + n), labels=labels)
            next_id += n
        elif kind == "upsert":
            ids = np.concatenate([rng.choice(present, min(n, present.size), replace=False),
                                  np.arange(next_id, next_id + 3)])
            next_id += 3
            labels = None if labels is None else rng.integers(0, 4, ids.size)
            target.upsert(mixture(ids.size, target.dim, int(rng.integers(1 << 30))), ids,
                          labels=labels)
        else:
            target.remove(rng.choice(present, min(n, present.size), replace=False))


# ------------------------------------------------------------------- round trips

@pytest.mark.parametrize("metric", METRICS)
def test_reopen_replays_the_log_exactly(tmp_path: Path, metric: str) -> None:
    plain = small_index(metric)
    with binidx.open(tmp_path / "db", small_index(metric), sync="never") as db:
        assert isinstance(db, binidx.DurableIndex) and db.log_records == 0
        churn(db, np.random.default_rng(1), 25)
        churn(plain, np.random.default_rng(1), 25)
        assert db.log_records == db.last_seq == 25
        assert_same_state(db, plain)
    q = mixture(15, 16, seed=9)
    with binidx.open(tmp_path / "db") as db:
        # Replaying the logged float32 rows through the same code gives the same bits,
        # cosine normalisation included.
        assert_same_state(db, plain)
        assert len(db) == len(plain) and db.dim == 16 and db.metric == metric
        for a, b in zip(full_search(db, q, 10), full_search(plain, q, 10)):
            assert np.array_equal(a, b)
        a, b = db.search(q, k=5), plain.search(q, k=5)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.distances, b.distances)
        # Labels are logged too: filtered searches agree.
        allowed = plain.ids()[::3]
        for kwargs in ({"labels": [1, 3]}, {"allowed_ids": allowed},
                       {"allowed_ids": db.compile_filter(allowed, labels=[0, 2])}):
            a = db.search(q, k=5, **kwargs)
            other = kwargs if "labels" in kwargs else {
                "allowed_ids": plain.compile_filter(allowed, labels=[0, 2])
                if not isinstance(kwargs["allowed_ids"], np.ndarray) else allowed}
            b = plain.search(q, k=5, **other)
            assert np.array_equal(a.ids, b.ids) and (a.ids[:, 0] >= 0).all()


def test_index_protocol(tmp_path: Path) -> None:
    x = mixture(300, 8, seed=3)
    index = binidx.build(x, n_lists=4)
    n_lists = index.n_lists  # 4 trained, more if balancing split an oversized bucket
    with binidx.open(tmp_path / "db", index, sync="never") as db:
        assert db.add(x[:2] + 1).tolist() == [300, 301]     # default ids as Index.add
        assert 301 in db and 302 not in db and "301" not in db
        assert db.upsert(x[:1] * 2, [0]).tolist() == [0]
        assert np.array_equal(db.get([0]), x[:1] * 2)
        assert db.remove([1, 2, 10_000], missing="ignore") == 2
        assert db.remove([], missing="ignore") == 0
        assert len(db) == 300 and db.ids()[-1] == 301
        assert db.n_bits == 64 and db.n_lists == n_lists >= 4 and db.sync == "never"
        assert db.last_seq == 3  # the empty remove was not logged
        d, i = db.search(x[5], k=1)
        assert d.shape == (1, 1) and i[0, 0] == 5
        assert "log_records=3" in repr(db)
        db.save(tmp_path / "plain.binidx")
    assert_same_state(binidx.load(tmp_path / "plain.binidx"), db._index)
    assert "closed" in repr(db)


def test_creating_from_an_empty_trained_index(tmp_path: Path) -> None:
    x = mixture(400, 8, seed=4)
    empty = binidx.Index(8, n_lists=4).train(x)
    with binidx.open(tmp_path / "new" / "db", empty, sync="never") as db:
        assert len(db) == 0 and db.ids().size == 0
        assert (db.search(x[:2], k=3).ids == -1).all()
        db.add(x[:10])
    empty.add(x[10:20])  # the durable index copied it: this is not logged
    with binidx.open(tmp_path / "new" / "db") as db:
        assert db.ids().tolist() == list(range(10))


def test_checkpoint_writes_a_loadable_snapshot_and_empties_the_log(tmp_path: Path) -> None:
    with binidx.open(tmp_path, small_index(), sync="never") as db:
        churn(db, np.random.default_rng(2), 10)
        db.n_probe = 3
        db.checkpoint()
        assert db.log_records == 0 and db.last_seq == 10
        snap = binidx.load(tmp_path / SNAPSHOT_NAME, mmap=True)
        assert_same_state(snap, db)
        assert binidx.read_metadata(tmp_path / SNAPSHOT_NAME)["params"]["durable_seq"] == 10
        churn(db, np.random.default_rng(3), 4)
        expect = state(db)
    with binidx.open(tmp_path) as db:
        assert db.n_probe == 3 and db.log_records == 4 and db.last_seq == 14
        ids, vectors = state(db)
        assert np.array_equal(ids, expect[0]) and np.array_equal(vectors, expect[1])


def test_probe_ratio_is_passed_to_search_and_kept_by_checkpoint(tmp_path: Path) -> None:
    x = mixture(3000, 16, seed=5)
    index = binidx.build(x, n_lists=48, seed=5)
    q = mixture(40, 16, seed=6)
    adaptive = index.search(q, 10, n_probe=24, n_rerank=40, probe_ratio=1.1)
    fixed = index.search(q, 10, n_probe=24, n_rerank=40)
    assert not np.array_equal(adaptive.ids, fixed.ids)  # the ratio visits fewer buckets
    with binidx.open(tmp_path, index, sync="never") as db:
        assert db.probe_ratio is None
        got = db.search(q, 10, n_probe=24, n_rerank=40, probe_ratio=1.1)
        assert np.array_equal(got.ids, adaptive.ids)
        db.probe_ratio = 1.1
        assert np.array_equal(db.search(q, 10, n_probe=24, n_rerank=40).ids, adaptive.ids)
        with pytest.raises(InvalidInputError, match="probe_ratio must be a number >= 1"):
            db.probe_ratio = 0.5
        assert db.probe_ratio == 1.1
        db.checkpoint()
    with binidx.open(tmp_path) as db:
        assert db.probe_ratio == 1.1
        db.probe_ratio = None
        assert np.array_equal(db.search(q, 10, n_probe=24, n_rerank=40).ids, fixed.ids)


def test_crash_between_snapshot_and_log_reset_replays_nothing_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with binidx.open(tmp_path, small_index(), sync="never") as db:
        db.add(mixture(5, 16, 1), np.arange(5000, 5005))
        db.remove([0, 1])

        def crash(self, start_seq):
            raise OSError("simulated crash after the snapshot was renamed")

        monkeypatch.setattr(WriteAheadLog, "reset", crash)
        with pytest.raises(OSError, match="simulated crash"):
            db.checkpoint()
        monkeypatch.undo()
        assert db.log_records == 2  # the old log is still there ...
        expect = state(db)
    with binidx.open(tmp_path) as db:  # ... and is skipped: its records are in the snapshot
        ids, vectors = state(db)
        assert np.array_equal(ids, expect[0]) and np.array_equal(vectors, expect[1])
        assert db.log_records == 2 and db.last_seq == 2
        db.add(mixture(1, 16, 2), [6000])
    with binidx.open(tmp_path) as db:
        assert 6000 in db and 0 not in db and len(db) == 604


def test_log_behind_the_snapshot_is_renumbered(tmp_path: Path) -> None:
    # After a power loss without sync="always", the snapshot can hold operations whose
    # log records were lost; new records must be numbered after the snapshot's.
    with binidx.open(tmp_path, small_index(), sync="never") as db:
        churn(db, np.random.default_rng(4), 5)
        db.checkpoint()
    (tmp_path / LOG_NAME).unlink()
    WriteAheadLog(tmp_path / LOG_NAME).close()  # an empty log starting at 0
    with binidx.open(tmp_path, sync="never") as db:
        assert db.last_seq == 5
        db.add(mixture(2, 16, 5), [7000, 7001])
    with binidx.open(tmp_path) as db:
        assert 7000 in db and 7001 in db


def test_group_commit_and_always(tmp_path: Path) -> None:
    for sync in ("always", 0.01):
        where = tmp_path / str(sync)
        with binidx.open(where, small_index(), sync=sync) as db:
            db.remove([3])
            time.sleep(0.03)
        with binidx.open(where) as db:
            assert 3 not in db


# ------------------------------------------------------------------- validation

def test_rejected_operations_log_nothing_and_change_nothing(tmp_path: Path) -> None:
    x = mixture(300, 8, seed=5)
    with binidx.open(tmp_path, binidx.build(x, metric="cosine", n_lists=4), sync="never") as db:
        before = state(db)
        bad = [
            (lambda: db.add(x[:2], [5, 9999]), KeyError, "id 5 is already in the index"),
            (lambda: db.remove([1, 9999]), KeyError, "id 9999 is not in the index"),
            (lambda: db.add(x[:2, :4], [900, 901]), InvalidInputError,
             "x has dimension 4, but the index was built with dim=8"),
            (lambda: db.upsert(np.full((1, 8), np.nan), [1]), InvalidInputError, "NaN"),
            (lambda: db.add(np.zeros((1, 8)), [902]), InvalidInputError, "zero vector"),
            (lambda: db.upsert(x[:2], [1, 1]), InvalidInputError, "contains 1 more than once"),
            (lambda: db.add(x[:2], [1]), InvalidInputError, "1 entries but there are 2"),
            (lambda: db.remove([1.5]), BinidxError, "must be integers"),
            (lambda: db.add(x[:1], [-3]), InvalidInputError, "ids must be >= 0"),
            (lambda: db.upsert(x[:2], [4, -1]), InvalidInputError, "ids must be >= 0"),
            (lambda: db.remove([1], missing="skip"), InvalidInputError, "missing must be"),
        ]
        for call, error, match in bad:
            with pytest.raises(error, match=match):
                call()
        assert db.last_seq == 0
        ids, vectors = state(db)
        assert np.array_equal(ids, before[0]) and np.array_equal(vectors, before[1])
    assert os.path.getsize(tmp_path / LOG_NAME) == 32  # the log header only


def test_refuses_exactly_what_the_index_refuses(tmp_path: Path) -> None:
    """The durable index checks operations itself, before logging them; it must refuse
    exactly what Index refuses, or a logged operation would fail on every replay."""
    rng = np.random.default_rng(11)
    x = mixture(200, 8, seed=12)
    plain = binidx.build(x, metric="cosine", n_lists=3)
    db = binidx.open(tmp_path, pickle.loads(pickle.dumps(plain)), sync="never")
    bad_rows = [np.full(8, np.nan), np.zeros(8), np.full(8, np.inf), np.ones(8)]
    refused = 0
    for _ in range(300):
        n = int(rng.integers(0, 4))
        ids = rng.choice([-2, -1, 0, 1, 150, 199, 200, 201, 10**12], size=n).tolist()
        rows = [bad_rows[int(rng.integers(4))] if rng.random() < 0.15 else x[rng.integers(200)]
                for _ in range(n if rng.random() < 0.9 else n + 1)]
        xs = np.array(rows, dtype=np.float32).reshape(-1, 8)
        if rng.random() < 0.05:
            xs = xs[:, :4]
        kind = ["add", "upsert", "remove"][int(rng.integers(3))]
        missing = "raise" if rng.random() < 0.7 else "ignore"
        labels = [None, rng.integers(0, 3, len(rows)), rng.integers(-1, 3, len(rows)),
                  np.zeros(len(rows) + 1, int), np.full(len(rows), 0.5)][int(rng.integers(5))]
        outcomes = []
        for target in (plain, db):
            try:
                if kind == "remove":
                    target.remove(ids, missing=missing)
                else:
                    getattr(target, kind)(xs, ids, labels=labels)
                outcomes.append(None)
            except (KeyError, ValueError, TypeError) as exc:
                outcomes.append(type(exc))
        assert (outcomes[0] is None) == (outcomes[1] is None), (kind, ids, xs, outcomes)
        refused += outcomes[1] is not None
    assert 50 < refused < 250, refused
    expect = state(db)
    db.close()
    with binidx.open(tmp_path) as db:
        ids, vectors = state(db)
        assert np.array_equal(ids, expect[0]) and np.array_equal(vectors, expect[1])
    assert np.array_equal(ids, plain.ids())


def test_failure_after_logging_poisons_the_handle_and_replays_on_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = binidx.open(tmp_path, small_index(), sync="never")

    def fail(self, x, ids=None, labels=None):
        raise MemoryError("simulated")

    monkeypatch.setattr(binidx.Index, "add", fail)
    with pytest.raises(BinidxError, match=r"'add' was logged but applying it failed "
                                          r"\(MemoryError\('simulated'\)\).*open the directory"):
        db.add(mixture(2, 16, 6), [8000, 8001])
    monkeypatch.undo()
    for call in (lambda: db.search(mixture(1, 16, 7)), lambda: db.remove([0]), db.checkpoint):
        with pytest.raises(BinidxError, match="an earlier operation .* failed after it was logged"):
            call()
    db.close()
    with binidx.open(tmp_path) as db:
        assert 8000 in db and 8001 in db and db.last_seq == 1


# ------------------------------------------------------------- opening errors

def test_single_writer_in_this_process_and_another(tmp_path: Path) -> None:
    with binidx.open(tmp_path / "db", small_index(), sync="never"):
        with pytest.raises(ConcurrencyError, match=rf"{tmp_path / 'db'} is already open as a "
                                                   "durable index .* one writer"):
            binidx.open(tmp_path / "db")
        code = (f"import binidx\ntry:\n    binidx.open({str(tmp_path / 'db')!r})\n"
                "except binidx.ConcurrencyError as e:\n    print('refused:', e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=True)
        assert "refused:" in out.stdout and "already open" in out.stdout, out
    binidx.open(tmp_path / "db").close()  # released by close


def test_opening_errors(tmp_path: Path) -> None:
    index = small_index()
    with pytest.raises(FileNotFoundError, match=r"holds no durable index \(no snapshot.binidx\);"
                                                r" to create one, pass a trained index"):
        binidx.open(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file; binidx.open needs a directory"):
        binidx.open(tmp_path / "file", index)
    with pytest.raises(InvalidInputError, match="index must be trained"):
        binidx.open(tmp_path / "u", binidx.Index(16))
    with pytest.raises(InvalidInputError, match="index must be a binidx.Index, got ndarray"):
        binidx.open(tmp_path / "u", np.zeros((3, 16)))
    with pytest.raises(InvalidInputError, match="sync must be 'always', 'never' or a positive"):
        binidx.open(tmp_path / "u", index, sync="sometimes")
    assert not (tmp_path / "u").exists()
    binidx.open(tmp_path / "db", index).close()
    with pytest.raises(InvalidInputError, match="already holds a durable index; open it with "
                                                r"binidx.open\(directory\) without index="):
        binidx.open(tmp_path / "db", index)
    db = binidx.open(tmp_path / "db")
    db.close()
    db.close()  # idempotent
    with pytest.raises(ValueError, match="cannot add vectors: the durable index .* is closed"):
        db.add(mixture(1, 16, 0))
    with pytest.raises(ValueError, match="cannot count vectors: .* is closed"):
        len(db)
    with binidx.open(tmp_path / "db") as db, \
            pytest.raises(TypeError, match="DurableIndex cannot be pickled"):
        pickle.dumps(db)


def test_interrupted_creation_can_be_redone(tmp_path: Path) -> None:
    # A creation that crashed after the lock and the empty log, before the snapshot.
    (tmp_path / "LOCK").touch()
    WriteAheadLog(tmp_path / LOG_NAME).close()
    with pytest.raises(FileNotFoundError, match="holds no durable index"):
        binidx.open(tmp_path)
    (tmp_path / f".{SNAPSHOT_NAME}.0123456789ab.tmp").write_bytes(b"partial")
    with binidx.open(tmp_path, small_index(), sync="never") as db:
        assert len(db) == 600
    assert sorted(os.listdir(tmp_path)) == ["LOCK", LOG_NAME, SNAPSHOT_NAME]


def test_damaged_directories_say_what_is_wrong(tmp_path: Path) -> None:
    with binidx.open(tmp_path / "db", small_index(), sync="never") as db:
        db.remove([0])
    # A log with records but no snapshot.
    shutil.copytree(tmp_path / "db", tmp_path / "nosnap")
    (tmp_path / "nosnap" / SNAPSHOT_NAME).unlink()
    for index in (None, small_index()):
        with pytest.raises(IndexFormatError, match="holds a log .* but no snapshot"):
            binidx.open(tmp_path / "nosnap", index)
    # A plain index file where the snapshot should be.
    shutil.copytree(tmp_path / "db", tmp_path / "plain")
    small_index().save(tmp_path / "plain" / SNAPSHOT_NAME)
    with pytest.raises(IndexFormatError, match="not the snapshot of a durable index"):
        binidx.open(tmp_path / "plain")
    # A snapshot older than the log's start (an old snapshot restored after a checkpoint).
    shutil.copytree(tmp_path / "db", tmp_path / "old")
    old = (tmp_path / "old" / SNAPSHOT_NAME).read_bytes()
    with binidx.open(tmp_path / "old", sync="never") as db:
        db.checkpoint()
        db.remove([1])
    (tmp_path / "old" / SNAPSHOT_NAME).write_bytes(old)
    with pytest.raises(IndexFormatError, match=r"operations 1..1 are missing"):
        binidx.open(tmp_path / "old")
    # A log that belongs to another index.
    shutil.copytree(tmp_path / "db", tmp_path / "other")
    with binidx.open(tmp_path / "other", sync="never") as db:
        db.add(mixture(1, 16, 0), [123_456])
    shutil.copy(tmp_path / "db" / SNAPSHOT_NAME, tmp_path / "other" / SNAPSHOT_NAME)
    with WriteAheadLog(tmp_path / "other" / LOG_NAME, sync="never") as log:
        log.reset(0)
        log.append("remove", {"ids": np.array([999_999])})
    with pytest.raises(IndexFormatError, match=r"record 1 \('remove'\) cannot be applied to the "
                                               r"snapshot .*id 999999 is not in the index"):
        binidx.open(tmp_path / "other")


@pytest.mark.parametrize("op, arrays, match", [
    ("drop", {"ids": np.array([1])}, "unknown operation 'drop'"),
    ("remove", {"ids": np.array([1]), "x": np.zeros((1, 16), np.float32)}, "expected"),
    ("remove", {"ids": np.array([1], np.int32)}, "ids of dtype int32"),
    ("add", {"ids": np.array([5000]), "x": np.zeros((1, 16))}, "vectors of dtype float64"),
    ("add", {"ids": np.array([5000]), "x": np.zeros((1, 8), np.float32)}, r"shape \(1, 8\)"),
    ("add", {"ids": np.array([5000]), "x": np.ones((1, 16), np.float32),
             "labels": np.array([1, 2])}, r"labels of dtype int64 and shape \(2,\)"),
    ("upsert", {"ids": np.array([5000]), "x": np.ones((1, 16), np.float32),
                "labels": np.array([-4])}, "labels must be integers >= 0"),
    ("remove", {"ids": np.array([1]), "labels": np.array([1])}, "optionally"),
    ("add", {"ids": np.array([3]), "x": np.ones((1, 16), np.float32)}, "id 3 is already"),
    ("upsert", {"ids": np.array([4]), "x": np.full((1, 16), np.nan, np.float32)}, "NaN"),
])
def test_records_that_cannot_be_applied(tmp_path: Path, op: str, arrays: dict, match: str) -> None:
    binidx.open(tmp_path, small_index(), sync="never").close()
    with WriteAheadLog(tmp_path / LOG_NAME, sync="never") as log:
        log.append(op, arrays)
    with pytest.raises(IndexFormatError, match=rf"record 1 \({op!r}\) cannot be applied.*{match}"):
        binidx.open(tmp_path)


# --------------------------------------------------------------------- fuzzing

def _mutations(data: bytes, rng: np.random.Generator, n: int):
    """Damaged copies of ``data``: byte flips (often in the first KiB, where the headers
    and frames are), truncations, garbage or zeros appended."""
    size = len(data)
    for _ in range(n):
        buf = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(min(size, 1024))) if rng.random() < 0.5 \
                    else int(rng.integers(size))
                buf[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:
            del buf[int(rng.integers(size)):]
        elif kind == 2:
            buf += rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        else:
            pos = int(rng.integers(size))
            buf[pos:pos + 64] = bytes(len(buf[pos:pos + 64]))
        yield bytes(buf)


def _fingerprint(index) -> tuple:
    ids, vectors = state(index)
    return ids.tobytes(), vectors.tobytes()


# A damaged but unverified mapped file may hold any numbers: overflow warnings are fine.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fuzz_damaged_snapshots_and_logs(tmp_path: Path) -> None:
    """Thousands of damaged files (1500 snapshots, each read three ways, and 1500 logs):
    IndexFormatError or the right data, nothing else."""
    rng = np.random.default_rng(2024)
    base = tmp_path / "base"
    x = mixture(200, 8, seed=8)
    with binidx.open(base, binidx.build(x, n_lists=3), sync="never") as db:
        churn(db, np.random.default_rng(5), 3)
        db.checkpoint()
        prefixes = [_fingerprint(db)]  # the state after each logged operation
        for _ in range(6):
            churn(db, rng, 1)
            prefixes.append(_fingerprint(db))
    snapshot = (base / SNAPSHOT_NAME).read_bytes()
    log = (base / LOG_NAME).read_bytes()
    q = mixture(3, 8, seed=9)
    work = tmp_path / "work"
    work.mkdir()
    outcomes = {"error": 0, "ok": 0, "prefix": 0, "mmap-unverified": 0}
    path = tmp_path / "file.binidx"

    def try_open(snap: bytes, wal: bytes) -> tuple | None:
        for name, data in ((SNAPSHOT_NAME, snap), (LOG_NAME, wal)):
            (work / name).unlink(missing_ok=True)
            (work / name).write_bytes(data)
        try:
            with binidx.open(work, sync="never") as db:
                db.search(q, k=3, n_threads=1)
                return _fingerprint(db)
        except IndexFormatError:
            return None

    for damaged in _mutations(snapshot, rng, 1500):
        # A new file each time: rewriting a file in place under a live mapping of it
        # would be the caller's bug (SIGBUS), which binidx never does (it renames).
        path.unlink(missing_ok=True)
        path.write_bytes(damaged)
        try:
            got = _fingerprint(binidx.load(path))
            assert got == prefixes[0]  # only padding bytes were hit
            outcomes["ok"] += 1
        except IndexFormatError:
            got = None
            outcomes["error"] += 1
        try:
            mapped = binidx.load(path, mmap=True)
            mapped.search(q, k=3, n_threads=1)  # must not crash, whatever the data
            if got is not None:
                assert _fingerprint(mapped) == got
            else:  # section checksums are not verified on a mapped open (docs/format.md)
                outcomes["mmap-unverified"] += 1
            del mapped
        except IndexFormatError:
            pass
        opened = try_open(damaged, log)
        assert opened in (None, prefixes[-1])
    for damaged in _mutations(log, rng, 1500):
        opened = try_open(snapshot, damaged)
        if opened is None:
            outcomes["error"] += 1
        else:
            # Damage that looks like a torn tail (a truncation, or a bad record with no
            # valid record after it) drops the tail; damage followed by good records raises.
            assert opened in prefixes
            outcomes["prefix" if opened != prefixes[-1] else "ok"] += 1
    assert min(outcomes.values()) > 0, outcomes


# ------------------------------------------------------------------ crash tests

def vectors_for(run: int, step: int, n: int, dim: int) -> np.ndarray:
    """The vectors of operation ``step`` of child ``run`` (the parent regenerates them)."""
    return np.random.default_rng([run, step]).standard_normal((n, dim)).astype(np.float32)


def churn_until_killed(directory: str, out_path: str, run: int, sync) -> None:
    """Child process body: churn the durable index, reporting each op before and after."""
    import itertools

    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def say(line: str) -> None:
        os.write(fd, (line + "\n").encode())  # one write per line: no partial lines mid-file

    db = binidx.open(directory, sync=sync)
    rng = np.random.default_rng(run)
    present = db.ids().tolist()
    fresh = 1_000_000 * (run + 1)
    say("ready")
    for step in itertools.count():
        if step % 6 == 5:
            say(f"ckpt {step}")
            db.checkpoint()
            say(f"ckpt-done {step}")
            continue
        kind = ["add", "upsert", "remove"][int(rng.integers(3))]
        n = int(rng.integers(1, 25))
        if kind == "add" or not present:
            kind, ids = "add", list(range(fresh, fresh + n))
            fresh += n
        elif kind == "upsert":
            ids = rng.choice(present, min(n, len(present)), replace=False).tolist()
            ids += list(range(fresh, fresh + 2))
            fresh += 2
        else:
            ids = rng.choice(present, min(n, len(present)), replace=False).tolist()
        say(f"op {step} {kind} " + " ".join(map(str, ids)))
        if kind == "remove":
            db.remove(ids)
            gone = set(ids)
            present = [i for i in present if i not in gone]
        else:
            x = vectors_for(run, step, len(ids), db.dim)
            (db.add if kind == "add" else db.upsert)(x, ids)
            known = set(present)
            present += [i for i in ids if i not in known]
        say(f"ack {step}")


def save_until_killed(path: str, out_path: str, run: int) -> None:
    """Child process body: save two different indexes to one path, alternately."""
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    indexes = [binidx.build(vectors_for(run, s, 3000, 32), n_lists=8) for s in (0, 1)]
    os.write(fd, b"ready\n")
    for i in range(10**9):
        indexes[i % 2].save(path)
        os.write(fd, f"saved {i % 2}\n".encode())


# The zygote imports binidx once, warms it up, then forks one child per request, so each
# kill costs milliseconds instead of a Python start-up.  Single-threaded BLAS / OpenMP:
# forking a process whose thread pools are running is unsafe.
_ZYGOTE = textwrap.dedent("""
    import os, sys, tempfile, traceback
    import numpy as np
    import binidx
    {helpers}
    tmp = tempfile.mkdtemp()
    x = vectors_for(0, 0, 300, 32)
    with binidx.open(os.path.join(tmp, "warm"), binidx.build(x, n_lists=4), sync="never") as db:
        db.upsert(x[:5], np.arange(5)); db.remove([7]); db.add(x[:2]); db.checkpoint()
    print("zygote", flush=True)
    for line in sys.stdin:
        what, target, out, run, sync = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                if what == "churn":
                    churn_until_killed(target, out, int(run), sync if sync in ("always", "never")
                                       else float(sync))
                else:
                    save_until_killed(target, out, int(run))
            except BaseException:
                with open(out, "a") as f:
                    f.write("error " + traceback.format_exc().replace(chr(10), " | ") + chr(10))
            os._exit(1)
        print("pid", pid, flush=True)
        print("exit", os.waitpid(pid, 0)[1], flush=True)
""")


class Zygote:
    def __init__(self) -> None:
        helpers = "\n".join(inspect.getsource(f) for f in (vectors_for, churn_until_killed,
                                                            save_until_killed))
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE.format(helpers=helpers)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)
        assert self.proc.stdout.readline().strip() == "zygote"

    def kill_after(self, what: str, target: Path, out: Path, run: int, sync, delay: float,
                   wait_ready: bool) -> list[str]:
        """Fork a child, SIGKILL it ``delay`` s after it is ready (or after the fork);
        return the complete lines it wrote."""
        self.proc.stdin.write(f"{what} {target} {out} {run} {sync}\n")
        self.proc.stdin.flush()
        word, pid = self.proc.stdout.readline().split()
        assert word == "pid"
        deadline = time.monotonic() + 30
        while wait_ready and b"ready\n" not in (out.read_bytes() if out.exists() else b""):
            assert time.monotonic() < deadline, "the child never got ready"
            time.sleep(0.002)
        time.sleep(delay)
        os.kill(int(pid), signal.SIGKILL)
        word, status = self.proc.stdout.readline().split()
        lines = out.read_text().split("\n")[:-1] if out.exists() else []  # whole lines only
        errors = [line for line in lines if line.startswith("error")]
        assert not errors, errors[0].replace(" | ", "\n")
        assert word == "exit" and os.WIFSIGNALED(int(status)) \
            and os.WTERMSIG(int(status)) == signal.SIGKILL, (word, status, lines[-3:])
        out.unlink(missing_ok=True)
        return lines

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def _apply(model: dict, op: tuple, run: int, dim: int) -> dict:
    step, kind, ids = op
    model = dict(model)
    if kind == "remove":
        for i in ids:
            del model[i]
    else:
        for i, v in zip(ids, vectors_for(run, step, len(ids), dim)):
            model[i] = v
    return model


def _matches(db_state: tuple, model: dict) -> bool:
    ids, vectors = db_state
    if ids.tolist() != sorted(model):
        return False
    return all(np.array_equal(vectors[j], model[i]) for j, i in enumerate(ids.tolist()))


def test_sigkill_keeps_exactly_the_acknowledged_operations(tmp_path: Path, zygote) -> None:
    """Kill a churning child at random moments (mid-operation, mid-log-append, mid-
    checkpoint, mid-open); the reopened index must hold every acknowledged operation and
    nothing else, except that the one operation in flight at the kill (logged or not)
    may be present or absent, whole."""
    dim, rng = 32, np.random.default_rng(7)
    x = vectors_for(10**6, 0, 2000, dim)
    where = tmp_path / "db"
    binidx.open(where, binidx.build(x, n_lists=12), sync="never").close()
    model = {i: v for i, v in enumerate(x)}
    q = vectors_for(10**6, 1, 8, dim)
    stats = {"kills": 0, "in_checkpoint": 0, "in_flight_kept": 0, "in_flight_lost": 0,
             "before_ready": 0, "acked": 0}
    start = time.monotonic()
    run = 0
    while time.monotonic() - start < 20 or stats["in_checkpoint"] < 3:
        assert time.monotonic() - start < 90, stats
        run += 1
        sync = ["always", "always", 0.02, "never"][run % 4]
        wait_ready = run % 5 != 0  # every fifth kill lands anywhere, open included
        lines = zygote.kill_after("churn", where, tmp_path / "out.txt", run, sync,
                                  float(rng.uniform(0, 0.15)), wait_ready)
        stats["kills"] += 1
        stats["before_ready"] += "ready" not in lines
        pending = None
        for line in lines:
            word, *rest = line.split()
            if word == "op":
                pending = (int(rest[0]), rest[1], [int(i) for i in rest[2:]])
            elif word == "ack":
                assert pending is not None and pending[0] == int(rest[0])
                model = _apply(model, pending, run, dim)
                pending = None
                stats["acked"] += 1
        stats["in_checkpoint"] += bool(lines) and lines[-1].startswith("ckpt ")
        with binidx.open(where, sync="never") as db:
            got = state(db)
            if not _matches(got, model):
                assert pending is not None, "an acknowledged operation is missing or extra"
                with_pending = _apply(model, pending, run, dim)
                assert _matches(got, with_pending), "not the acknowledged state, with or " \
                                                    "without the operation in flight"
                model = with_pending
                stats["in_flight_kept"] += 1
            elif pending is not None:
                stats["in_flight_lost"] += 1
            assert_matches_exact(db, model, q)
        leftovers = set(os.listdir(where)) - {"LOCK", LOG_NAME, SNAPSHOT_NAME}
        assert all(name.startswith(".") for name in leftovers), leftovers
    assert stats["kills"] >= 30 and stats["acked"] > 100, stats
    assert stats["in_flight_kept"] + stats["in_flight_lost"] > 0, stats
    print(stats)


def test_sigkill_during_save_leaves_the_old_or_the_new_file(tmp_path: Path, zygote) -> None:
    path = tmp_path / "index.binidx"
    want = [_fingerprint(binidx.build(vectors_for(0, s, 3000, 32), n_lists=8)) for s in (0, 1)]
    rng = np.random.default_rng(8)
    seen, strays = set(), 0
    for _ in range(12):
        lines = zygote.kill_after("save", path, tmp_path / "out.txt", 0, "-",
                                  float(rng.uniform(0, 0.1)), True)
        if not path.exists():
            assert not any(line.startswith("saved") for line in lines)
            continue
        seen.add(want.index(_fingerprint(binidx.load(path))))  # ValueError if neither
        for name in os.listdir(tmp_path):  # a crash leaves at most a stray temporary
            assert name == "index.binidx" or name.endswith(".tmp"), name
            strays += name.endswith(".tmp")
            if name.endswith(".tmp"):
                os.unlink(tmp_path / name)
    assert seen == {0, 1} and strays > 0, (seen, strays)  # some kills landed mid-save
