"""Index.save / binidx.load (with and without mmap) / read_metadata / pickle: round trips,
zero-copy read-only mapping, golden files, and clear errors for foreign, damaged or
inconsistent files."""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import binidx
from binidx import _format, _persist, _storage
from binidx._durable import LOG_NAME, SNAPSHOT_NAME
from binidx.errors import IndexFormatError, NotTrainedError, ReadOnlyIndexError

METRICS = ["l2", "ip", "cosine"]
GOLDEN_DIR = Path(__file__).parent / "data" / "golden"
# Golden files never change once committed; a new format version adds new files.
# Create missing ones (only) with  BINIDX_WRITE_GOLDEN=1 python -m pytest tests/test_persist.py
GOLDEN_INDEX_SHA256 = {
    1: "0a71614fcb6e7721d4eebebe637b9a77da5b5e354dfef9d1c5681f03f90173ce",
    2: "ffdb6ffd10d01ac657b380f95c3b9a7ad4a73598a794a0551bf8c0fcf614b599",
}
GOLDEN_DURABLE_SHA256 = {
    SNAPSHOT_NAME: "cb45cd7523fc3ed9e9784f27dfbe904f6d638951a5cbfed67db908bc780e8866",
    LOG_NAME: "21c5dc24643a2aa7a0e0fed562e8edba3edcf286bd3868cc8ed1781a3f0c302f",
}
GOLDEN_REMOVED = list(range(1000, 1257, 7))


def mixture(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((10, dim)) * 3.0
    return (centers[rng.integers(10, size=n)] + rng.standard_normal((n, dim))).astype(np.float32)


def churned_index(metric: str, n: int = 1500, dim: int = 16) -> binidx.Index:
    """An index whose slots are not in bucket order: removals, re-adds, an upsert."""
    x = mixture(n, dim, seed=1)
    index = binidx.build(x, ids=np.arange(n) * 3 + 5, metric=metric, n_bits=128, seed=4)
    index.remove(np.arange(5, 3 * n, 9))
    index.add(mixture(40, dim, seed=2), ids=np.arange(10**9, 10**9 + 40))
    index.upsert(mixture(5, dim, seed=3), ids=[8, 11, 14, 10**12, 10**12 + 1])
    index.n_probe, index.n_rerank = 5, 60
    return index


def assert_same_index(a: binidx.Index, b: binidx.Index, q: np.ndarray) -> None:
    ids = a.ids()
    assert np.array_equal(ids, b.ids()) and len(a) == len(b)
    assert np.array_equal(a.get(ids), b.get(ids))
    assert (a.dim, a.metric, a.n_bits, a.n_lists, a.seed, a.n_probe, a.n_rerank) == \
        (b.dim, b.metric, b.n_bits, b.n_lists, b.seed, b.n_probe, b.n_rerank)
    for kwargs in ({}, {"n_probe": a.n_lists, "n_rerank": len(a)}, {"n_probe": 1}):
        ra, rb = a.search(q, k=10, **kwargs), b.search(q, k=10, **kwargs)
        assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.distances, rb.distances)


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path: Path, metric: str, mmap: bool) -> None:
    index = churned_index(metric)
    path = tmp_path / "i.binidx"
    index.save(path)
    loaded = binidx.load(path, mmap=mmap)
    assert_same_index(index, loaded, mixture(30, 16, seed=5))
    # Saving the loaded index writes the same bytes: nothing was lost or reordered.
    loaded.save(tmp_path / "again.binidx")
    assert (tmp_path / "again.binidx").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("mmap", [False, True])
def test_labels_round_trip(tmp_path: Path, mmap: bool) -> None:
    x = mixture(800, 16, seed=30)
    index = binidx.build(x, n_lists=8, seed=1)
    index.upsert(x[:300] + 0.5, ids=np.arange(300), labels=np.arange(300) % 5)
    index.remove(np.arange(0, 300, 4))
    index.add(mixture(20, 16, seed=31), ids=np.arange(2000, 2020), labels=np.full(20, 7))
    index.save(tmp_path / "l.binidx")
    assert "labels" in {s["name"] for s in binidx.read_metadata(tmp_path / "l.binidx")["sections"]}
    loaded = binidx.load(tmp_path / "l.binidx", mmap=mmap)
    q = mixture(12, 16, seed=32)
    for labels in ([0], [1, 7], [4, 99]):
        a, b = index.search(q, k=8, labels=labels), loaded.search(q, k=8, labels=labels)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.distances, b.distances)
        assert (a.ids[:, 0] >= 0).all()
    assert (loaded.search(q, k=3, labels=[7]).ids >= 2000).all()


def test_loaded_index_is_independent_and_writable(tmp_path: Path) -> None:
    index = churned_index("l2")
    path = tmp_path / "i.binidx"
    index.save(path)
    before = path.read_bytes()
    loaded = binidx.load(path)
    loaded.add(mixture(3, 16, seed=6), ids=[1, 2, 4])
    loaded.remove(loaded.ids()[-50:])
    loaded.upsert(mixture(1, 16, seed=7), ids=[1])
    assert path.read_bytes() == before and len(binidx.load(path)) == len(index)
    assert len(loaded) == len(index) + 3 - 50


def test_empty_trained_index_round_trip(tmp_path: Path) -> None:
    x = mixture(500, 8, seed=8)
    empty = binidx.Index(8, metric="ip", n_lists=5).train(x)
    for mmap in (False, True):
        empty.save(tmp_path / "e.binidx")
        loaded = binidx.load(tmp_path / "e.binidx", mmap=mmap)
        assert len(loaded) == 0 and loaded.is_trained and loaded.n_lists == 5
        d, i = loaded.search(x[:2], k=3)
        assert (i == -1).all() and (d == -np.inf).all()
    loaded = binidx.load(tmp_path / "e.binidx")
    loaded.add(x)
    fresh = binidx.Index(8, metric="ip", n_lists=5).train(x)
    fresh.add(x)
    assert_same_index(fresh, loaded, x[:20])


def test_untrained_index_round_trip(tmp_path: Path) -> None:
    index = binidx.Index(12, metric="cosine", n_lists=3, n_bits=128, seed=9)
    index.save(tmp_path / "u.binidx")
    for mmap in (False, True):
        loaded = binidx.load(tmp_path / "u.binidx", mmap=mmap)
        assert not loaded.is_trained and len(loaded) == 0
        assert (loaded.dim, loaded.metric, loaded.n_lists, loaded.n_bits, loaded.seed) == \
            (12, "cosine", 3, 128, 9)
    with pytest.raises(NotTrainedError, match="call index.train"):
        loaded.search(np.ones(12), k=1)
    trained = binidx.load(tmp_path / "u.binidx").train(mixture(300, 12, seed=10))
    assert trained.is_trained and trained.n_lists == 3


@pytest.mark.parametrize("metric", METRICS)
def test_pickle_round_trip(metric: str, tmp_path: Path) -> None:
    index = churned_index(metric, n=600)
    q = mixture(10, 16, seed=11)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert_same_index(index, pickle.loads(pickle.dumps(index, protocol=protocol)), q)
    # A mapped index pickles to a writable copy.
    index.save(tmp_path / "i.binidx")
    copy = pickle.loads(pickle.dumps(binidx.load(tmp_path / "i.binidx", mmap=True)))
    copy.remove(copy.ids()[:3])
    assert len(copy) == len(index) - 3
    assert pickle.loads(pickle.dumps(binidx.Index(4))).is_trained is False


def test_damaged_pickle_raises_format_error() -> None:
    data = bytearray(_persist.to_bytes(churned_index("l2", n=300)))
    data[-10] ^= 0xFF
    with pytest.raises(IndexFormatError, match=r"index bytes: section '\w+' checksum mismatch"):
        _persist.from_bytes(bytes(data))


# ------------------------------------------------------------------ memory mapping

def test_mmap_is_zero_copy_and_fast(tmp_path: Path) -> None:
    x = mixture(20_000, 32, seed=12)
    index = binidx.build(x, n_lists=32)
    path = tmp_path / "big.binidx"
    index.save(path)
    size = path.stat().st_size
    tracemalloc.start()
    mapped = binidx.load(path, mmap=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # The sections are not read into memory; the consistency checks allocate small
    # per-vector temporaries (a bincount of the slots, a sort of the ids: ~25 bytes per
    # vector against ~160 in the file).
    assert peak < size / 4, (peak, size)
    for arr in (mapped._store.vectors, mapped._store.slot_ids, mapped._buckets.codes[0]):
        assert not arr.flags.writeable and not arr.flags.owndata
        base = arr
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj
        assert type(base).__name__ == "mmap", type(base)  # a view of the mapping
    assert mapped.search(x[:5], k=1, n_probe=32).ids[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_mapped_index_refuses_changes_with_a_clear_message(tmp_path: Path) -> None:
    index = churned_index("l2", n=400)
    index.save(tmp_path / "i.binidx")
    mapped = binidx.load(tmp_path / "i.binidx", mmap=True)
    why = (r"it was loaded with mmap=True and its arrays are read-only views of the file; "
           r"load it with mmap=False to change it")
    x = mixture(2, 16, seed=13)
    for action, call in [("add vectors", lambda: mapped.add(x, ids=[1, 2])),
                         ("remove vectors", lambda: mapped.remove(mapped.ids()[:1])),
                         ("upsert vectors", lambda: mapped.upsert(x, ids=[1, 2])),
                         ("train", lambda: mapped.train(x))]:
        with pytest.raises(ReadOnlyIndexError, match=f"cannot {action}: {why}"):
            call()
    assert len(mapped) == len(index)
    mapped.n_probe = 2  # search defaults are not file content
    assert mapped.search(x, k=1).ids.shape == (2, 1)


def test_mapping_survives_the_file_being_replaced(tmp_path: Path) -> None:
    path = tmp_path / "i.binidx"
    first = churned_index("l2", n=400)
    first.save(path)
    mapped = binidx.load(path, mmap=True)
    binidx.build(mixture(300, 16, seed=14), n_lists=3).save(path)  # rename over it
    q = mixture(5, 16, seed=15)
    assert np.array_equal(mapped.search(q, k=5).ids, first.search(q, k=5).ids)
    assert len(binidx.load(path, mmap=True)) == 300


# ------------------------------------------------------------------ metadata

def test_read_metadata(tmp_path: Path) -> None:
    index = churned_index("cosine", n=500)
    path = tmp_path / "i.binidx"
    index.save(path)
    meta = binidx.read_metadata(path)
    assert meta["kind"] == "binidx.Index" and meta["format_version"] == _format.FORMAT_VERSION
    p = meta["params"]
    assert (p["dim"], p["metric"], p["n_bits"], p["n_lists"], p["n_probe"], p["n_rerank"]) == \
        (16, "cosine", 128, index.n_lists, 5, 60)
    sections = {s["name"]: s for s in meta["sections"]}
    assert sections["list_slots"]["shape"] == [len(index)]
    assert sections["vectors"]["shape"] == [sections["slot_ids"]["shape"][0], 16]
    assert meta["file_size"] == path.stat().st_size
    # Only the header is read: damage inside a section does not bother it.
    data = bytearray(path.read_bytes())
    data[sections["vectors"]["offset"] + 3] ^= 0x40
    path.write_bytes(bytes(data))
    assert binidx.read_metadata(path)["params"] == p
    with pytest.raises(IndexFormatError, match=r"section 'vectors' checksum mismatch"):
        binidx.load(path)


def test_other_kinds_of_binidx_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.binidx"
    _format.write_index_file(path, kind="SomethingElse", params={}, arrays={})
    for call in (binidx.read_metadata, binidx.load, lambda p: binidx.load(p, mmap=True)):
        with pytest.raises(IndexFormatError, match=r"holds a 'SomethingElse', not a binidx.Index"):
            call(path)


# ------------------------------------------------------------------ bad files

def _foreign(tmp_path: Path, kind: str) -> Path:
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    path = tmp_path / kind
    if kind == "npy":
        np.save(path, x)
        return path.with_suffix(".npy")
    if kind == "faiss":
        import faiss

        index = faiss.IndexFlatL2(8)
        index.add(x)
        faiss.write_index(index, str(path))
    elif kind == "hnswlib":
        import hnswlib

        h = hnswlib.Index("l2", 8)
        h.init_index(60)
        h.add_items(x)
        h.save_index(str(path))
    elif kind == "log":
        binidx.open(tmp_path / "d", binidx.build(x, n_lists=2), sync="never").close()
        return tmp_path / "d" / LOG_NAME
    else:
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind, match", [
    ("npy", r"not a binidx index file \(it looks like a NumPy .npy file\)"),
    ("faiss", r"it looks like a FAISS index \(type code 'IxF2'\)"),
    ("hnswlib", r"it looks like an hnswlib index"),
    ("log", r"it looks like a binidx write-ahead log"),
    ("empty", r"is empty \(0 bytes\)"),
])
def test_foreign_files_through_load(tmp_path: Path, kind: str, match: str) -> None:
    path = _foreign(tmp_path, kind)
    for call in (binidx.load, lambda p: binidx.load(p, mmap=True), binidx.read_metadata):
        with pytest.raises(IndexFormatError, match=match):
            call(path)


def test_truncated_and_bit_flipped_files(tmp_path: Path) -> None:
    path = tmp_path / "i.binidx"
    churned_index("l2", n=400).save(path)
    data = path.read_bytes()
    sections = {s["name"]: s for s in binidx.read_metadata(path)["sections"]}
    cases = [
        (data[:len(data) // 2], "is truncated"),
        (data[:20], "is truncated: 20 bytes is shorter than the 32-byte binidx prelude"),
        (data + b"\0" * 64, "extra data follows the index"),
    ]
    flipped = bytearray(data)
    flipped[sections["codes"]["offset"]] ^= 1
    cases.append((bytes(flipped), r"section 'codes' checksum mismatch: the file is damaged"))
    flipped = bytearray(data)
    flipped[40] ^= 1
    cases.append((bytes(flipped), "header checksum mismatch"))
    newer = bytearray(data)
    newer[8:12] = (7).to_bytes(4, "little")
    cases.append((bytes(newer), "written by binidx file format version 7; .* upgrade binidx"))
    for content, match in cases:
        path.unlink()
        path.write_bytes(content)
        with pytest.raises(IndexFormatError, match=match):
            binidx.load(path)
        if "checksum mismatch: the file" not in match:  # mmap skips section checksums
            with pytest.raises(IndexFormatError, match=match):
                binidx.load(path, mmap=True)


def _rewrite(path: Path, edit) -> None:
    """Rewrite an index file with edited params / arrays (valid checksums, bad content)."""
    f = _format.read_index_file(path)
    params, arrays = dict(f.params), dict(f.arrays)
    edit(params, arrays)
    _format.write_index_file(path, kind=f.kind, params=params, arrays=arrays)


@pytest.mark.parametrize("edit, match", [
    (lambda p, a: a.pop("codes"), "section 'codes' is missing"),
    (lambda p, a: p.pop("metric"), "parameter 'metric' is missing"),
    (lambda p, a: a.update(slot_ids=a["slot_ids"].astype(np.int32)),
     "section 'slot_ids' has dtype int32"),
    (lambda p, a: a.update(list_sizes=a["list_sizes"] + 1), r"section '\w+' has shape"),
    (lambda p, a: a.update(list_sizes=-a["list_sizes"]), "negative bucket sizes"),
    (lambda p, a: a.update(vectors=a["vectors"][:-1]), r"section 'vectors' has shape"),
    (lambda p, a: a.update(codes=a["codes"][:, :1]), r"section 'codes' has shape"),
    (lambda p, a: a.update(projection=a["projection"][:64]), r"section 'projection' has shape"),
    (lambda p, a: p.update(n_lists=p["n_lists"] + 1), "n_lists=.* but there are"),
    (lambda p, a: a["list_slots"].__setitem__(3, 10**6), "refers to a slot outside"),
    (lambda p, a: a["list_slots"].__setitem__(3, a["list_slots"][4]),
     "a slot is listed in more than one bucket position"),
    (lambda p, a: a["slot_ids"].__setitem__(a["list_slots"][3], -1),
     "not exactly the slots holding an id"),
    (lambda p, a: a["slot_ids"].__setitem__(a["list_slots"][3], a["slot_ids"][a["list_slots"][4]]),
     r"id \d+ is stored twice"),
    (lambda p, a: p.update(layout="rows"), "pre-release development build"),
    (lambda p, a: a.update(labels=np.zeros(3, np.int64)),
     r"section 'labels' has dtype int64 and shape \(3,\)"),
    (lambda p, a: a.update(labels=np.full(a["slot_ids"].shape, -2)), "a label is below -1"),
    (lambda p, a: a.update(labels=np.where(a["slot_ids"] >= 0, -1, 3)),
     "a free slot carries a label"),
    (lambda p, a: p.update(scale=None), "encoder scale is missing or not finite"),
    (lambda p, a: a.update(factor_scales=-a["factor_scales"] - 1), "a factor scale is negative"),
    (lambda p, a: a.update(factor_scales=a["factor_scales"][:-1]),
     r"section 'factor_scales' has shape"),
    (lambda p, a: a.update(factors=a["factors"].astype(np.float32)),
     "section 'factors' has dtype float32"),
    (lambda p, a: p.update(is_trained=False), "an untrained index carries arrays"),
    (lambda p, a: p.update(metric="hamming"), "inconsistent index content .*metric"),
])
def test_inconsistent_content_is_refused(tmp_path: Path, edit, match: str) -> None:
    path = tmp_path / "i.binidx"
    churned_index("l2", n=300).save(path)
    _rewrite(path, edit)
    for mmap in (False, True):
        with pytest.raises(IndexFormatError, match=match):
            binidx.load(path, mmap=mmap)


# ------------------------------------------------------------------ golden files

def _golden_index() -> binidx.Index:
    x = mixture(257, 16, seed=11)
    index = binidx.build(x, ids=np.arange(1000, 1257), n_lists=4, n_bits=64, seed=0)
    index.remove(GOLDEN_REMOVED)
    index.n_probe = 2
    return index


@pytest.mark.parametrize("version", sorted(GOLDEN_INDEX_SHA256))
def test_golden_index_file_loads_forever(version: int) -> None:
    path = GOLDEN_DIR / f"index_v{version}.binidx"
    if (os.environ.get("BINIDX_WRITE_GOLDEN") and not path.exists()
            and version == _format.FORMAT_VERSION):
        _golden_index().save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == GOLDEN_INDEX_SHA256[version], "the golden file changed; add a new one instead"
    want_ids = sorted(set(range(1000, 1257)) - set(GOLDEN_REMOVED))
    for mmap in (False, True):
        index = binidx.load(path, mmap=mmap)
        assert (index.dim, index.metric, index.n_lists, index.n_bits, index.n_probe) == \
            (16, "l2", 4, 64, 2)
        assert index.ids().tolist() == want_ids
        x = index.get(want_ids)
        got = index.search(x[:20] + 0.01, k=5, n_probe=4, n_rerank=len(index))
        want = binidx.exact_search(x, x[:20] + 0.01, k=5)
        assert np.array_equal(got.ids, np.asarray(want_ids)[want.ids])


def test_golden_durable_directory_opens_forever(tmp_path: Path) -> None:
    """A durable directory of binidx 0.1 (snapshot + log with 3 records) replays forever."""
    golden = GOLDEN_DIR / "durable_v1"
    if os.environ.get("BINIDX_WRITE_GOLDEN") and not golden.exists():
        x = mixture(100, 8, seed=21)
        with binidx.open(golden, binidx.build(x, metric="cosine", n_lists=2),
                         sync="never") as db:
            db.remove([0, 1, 2])
            db.checkpoint()
            db.add(x[:2] * 2, ids=[500, 501])
            db.upsert(x[3:4] + 1, ids=[3])
            db.remove([500])
        os.unlink(golden / "LOCK")
    for name, digest in GOLDEN_DURABLE_SHA256.items():
        assert hashlib.sha256((golden / name).read_bytes()).hexdigest() == digest, name
    shutil.copytree(golden, tmp_path / "db")
    with binidx.open(tmp_path / "db", sync="never") as db:
        assert db.log_records == 3 and db.last_seq == 4 and db.metric == "cosine"
        ids = db.ids().tolist()
        assert ids == [*range(3, 100), 501]
        x = mixture(100, 8, seed=21)
        unit = x[:2] / np.linalg.norm(x[:2], axis=1, keepdims=True)
        assert np.allclose(db.get([501]), unit[1:2], atol=1e-6)
    assert binidx.read_metadata(golden / SNAPSHOT_NAME)["params"]["durable_seq"] == 1


# ------------------------------------------------- format version 1 (float32 factors)

def _save_as_version_1(index: binidx.Index, path: Path, monkeypatch) -> None:
    """Write ``index`` as binidx 0.1 did: float32 factors, no factor scales."""
    params, arrays = index._get_state()
    sizes = arrays["list_sizes"]
    owner = np.repeat(np.arange(sizes.shape[0]), _storage.n_blocks(sizes))
    arrays["factors"] = (arrays.pop("factor_scales")[owner][:, :, None]
                         * arrays["factors"].astype(np.float32))
    monkeypatch.setattr(_format, "FORMAT_VERSION", 1)
    _format.write_index_file(path, kind=_persist.KIND, params=params, arrays=arrays)
    monkeypatch.undo()


@pytest.mark.parametrize("mmap", [False, True])
def test_version_1_file_loads_with_its_factors_quantised(tmp_path: Path, mmap: bool) -> None:
    """A version-1 file (the golden one) is read with each bucket's float32 factors
    turned into bytes exactly as a build quantises them: scale = largest / 255, each
    factor within half a step; saving it again writes the current version."""
    path = GOLDEN_DIR / "index_v1.binidx"
    old = _format.read_index_file(path)
    assert old.header["format_version"] == 1 and old.arrays["factors"].dtype == np.float32
    index = binidx.load(path, mmap=mmap)
    sizes = old.arrays["list_sizes"]
    owner = np.repeat(np.arange(sizes.shape[0]), _storage.n_blocks(sizes))
    scales = index._buckets.scales
    for b in range(index.n_lists):
        want = old.arrays["factors"][owner == b].max(axis=(0, 2)) / np.float32(255)
        np.testing.assert_allclose(scales[b], want, rtol=1e-6)
    stored = np.concatenate([index._buckets.factors[b] for b in range(index.n_lists)])
    floats = stored.astype(np.float32) * scales[owner][:, :, None]
    assert (np.abs(floats - old.arrays["factors"]) <= scales[owner][:, :, None] / 2 + 1e-7).all()
    index.save(tmp_path / "now.binidx")
    again = binidx.load(tmp_path / "now.binidx", mmap=mmap)
    assert binidx.read_metadata(tmp_path / "now.binidx")["format_version"] == \
        _format.FORMAT_VERSION
    assert_same_index(index, again, mixture(20, 16, seed=9))


def test_version_1_round_trip_keeps_the_factors(tmp_path: Path, monkeypatch) -> None:
    """Bytes -> float32 (version 1) -> bytes again: each bucket gets the exact scale of
    its largest factor (never larger than it had: a bucket grown by later adds has
    headroom) and every factor stands for the same value within half a step."""
    index = churned_index("ip", n=600)
    _save_as_version_1(index, tmp_path / "v1.binidx", monkeypatch)
    loaded = binidx.load(tmp_path / "v1.binidx")
    for b in range(index.n_lists):
        _, was, _, old_scales = index._buckets.read_quantized(b)
        _, now, _, new_scales = loaded._buckets.read_quantized(b)
        assert (new_scales <= old_scales * (1 + 1e-6)).all()
        assert (np.abs(now * new_scales - was * old_scales) <= new_scales / 2 + 1e-6).all()
    q = mixture(20, 16, seed=8)
    got = loaded.search(q, 10, n_probe=loaded.n_lists, n_rerank=len(loaded))
    want = index.search(q, 10, n_probe=index.n_lists, n_rerank=len(index))
    assert np.array_equal(got.ids, want.ids) and np.array_equal(got.distances, want.distances)


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.update(factors=-a["factors"]), "version 1 factor is negative or not finite"),
    (lambda a: a.update(factors=a["factors"][:-1]), "version 1 factors do not match"),
])
def test_damaged_version_1_file_is_refused(tmp_path: Path, monkeypatch, edit, match) -> None:
    path = tmp_path / "v1.binidx"
    _save_as_version_1(churned_index("l2", n=300), path, monkeypatch)
    f = _format.read_index_file(path)
    arrays = dict(f.arrays)
    edit(arrays)
    monkeypatch.setattr(_format, "FORMAT_VERSION", 1)
    _format.write_index_file(path, kind=f.kind, params=f.params, arrays=arrays)
    monkeypatch.undo()
    for mmap in (False, True):
        with pytest.raises(IndexFormatError, match=match):
            binidx.load(path, mmap=mmap)
