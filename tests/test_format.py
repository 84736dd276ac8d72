"""Tests of the binidx index file format (binidx/_format.py, docs/format.md)."""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from binidx import _format
from binidx._format import (
    ALIGNMENT,
    FORMAT_VERSION,
    MAGIC,
    PRELUDE_SIZE,
    index_file_from_bytes,
    index_file_to_bytes,
    is_int,
    read_header,
    read_index_file,
    write_index_file,
)
from binidx.errors import IndexFormatError, InvalidDtypeError, InvalidInputError

GOLDEN_DIR = Path(__file__).parent / "data" / "golden"
# A golden file never changes once committed: a new format version adds a new file.
# Regenerate (only files that do not exist yet) with
#   BINIDX_WRITE_GOLDEN=1 python -m pytest tests/test_format.py -k golden
GOLDEN_SHA256 = {
    1: "8576ed7bd5856c4e5b560e15b2578ca6aa583b00f9c2af8c41bff1b08e67c413",
    2: "2346c057b1e54f93a6d1557194a1e74388310ff946de7443d291b35ff9da2524",
}


def _sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "centroids": rng.standard_normal((4, 8)).astype(np.float32),
        "codes": rng.integers(0, 256, size=(10, 2), dtype=np.uint8),
        "ids": np.arange(100, 110, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(2.5),
        "mask": np.array([True, False, True]),
    }


SAMPLE_PARAMS = {"dim": 8, "metric": "l2", "n_lists": 4, "nested": {"a": [1, 2, None]}}


def _assert_same_arrays(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype.newbyteorder("<") or got[name].dtype == arr.dtype
        assert got[name].shape == arr.shape, name
        np.testing.assert_array_equal(got[name], arr, err_msg=name)


@pytest.fixture
def sample_file(tmp_path: Path) -> Path:
    path = tmp_path / "sample.binidx"
    write_index_file(path, kind="Sample", params=SAMPLE_PARAMS, arrays=_sample_arrays())
    return path


@pytest.fixture
def padded_file(tmp_path: Path) -> Path:
    """A sample file whose "pad" parameter leaves room for a longer rewritten header."""
    path = tmp_path / "padded.binidx"
    write_index_file(path, kind="Sample", params={**SAMPLE_PARAMS, "pad": "." * 300},
                     arrays=_sample_arrays())
    return path


# ------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("how", ["read", "mmap", "mmap_verify", "bytes"])
def test_round_trip(sample_file: Path, how: str) -> None:
    if how == "bytes":
        got = index_file_from_bytes(sample_file.read_bytes())
    else:
        got = read_index_file(sample_file, mmap=how != "read", verify=how != "mmap")
    assert got.kind == "Sample"
    assert got.params == SAMPLE_PARAMS
    _assert_same_arrays(got.arrays, _sample_arrays())
    assert got.header["format_version"] == FORMAT_VERSION
    assert got.header["file_size"] == sample_file.stat().st_size


def test_layout_follows_the_spec(sample_file: Path) -> None:
    data = sample_file.read_bytes()
    magic, version, flags, header_len, header_crc, reserved = struct.unpack_from("<8sIIQII", data)
    assert (magic, version, flags, reserved) == (MAGIC, FORMAT_VERSION, 0, 0)
    header_json = data[PRELUDE_SIZE:PRELUDE_SIZE + header_len]
    assert zlib.crc32(data[:24] + header_json) == header_crc
    header = json.loads(header_json)
    assert header_json == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    first = (PRELUDE_SIZE + header_len + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    assert header["sections"][0]["offset"] == first
    prev_end = PRELUDE_SIZE + header_len
    for s in header["sections"]:
        assert s["offset"] % ALIGNMENT == 0 and s["offset"] >= prev_end
        raw = data[s["offset"]:s["offset"] + s["nbytes"]]
        assert zlib.crc32(raw) == s["crc32"]
        np.testing.assert_array_equal(
            np.frombuffer(raw, dtype=s["dtype"]).reshape(s["shape"]), _sample_arrays()[s["name"]])
        prev_end = s["offset"] + s["nbytes"]
    assert prev_end == len(data) == header["file_size"]
    assert set(data[PRELUDE_SIZE + header_len:first]) <= {0}  # zero padding


def test_bytes_equal_file_and_are_deterministic(sample_file: Path) -> None:
    data = index_file_to_bytes("Sample", SAMPLE_PARAMS, _sample_arrays())
    assert data == sample_file.read_bytes()
    assert data == index_file_to_bytes("Sample", dict(reversed(SAMPLE_PARAMS.items())),
                                       _sample_arrays())


def test_pickle_through_bytes() -> None:
    class Holder:  # how an Index pickles: __reduce__ to the file bytes
        def __init__(self, arrays: dict) -> None:
            self.arrays = arrays

        def __reduce__(self):
            return (_rebuild, (index_file_to_bytes("Holder", {}, self.arrays),))

    out = pickle.loads(pickle.dumps(Holder(_sample_arrays())))
    _assert_same_arrays(out.arrays, _sample_arrays())
    assert all(a.flags.writeable for a in out.arrays.values())


def _rebuild(data: bytes):
    return index_file_from_bytes(data)


def test_non_native_and_non_contiguous_inputs_are_stored_c_order_little_endian(
        tmp_path: Path) -> None:
    big = np.arange(12, dtype=">i4").reshape(3, 4)
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    strided = np.arange(20, dtype=np.int16)[::3]
    path = tmp_path / "x.binidx"
    write_index_file(path, kind="k", params={}, arrays={"b": big, "f": fortran, "s": strided})
    got = read_index_file(path)
    assert got.header["sections"][0]["dtype"] == "<i4"
    for name, want in (("b", big), ("f", fortran), ("s", strided)):
        np.testing.assert_array_equal(got.arrays[name], want)
        assert got.arrays[name].flags.c_contiguous


def test_numpy_scalars_in_params_become_json_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.binidx"
    write_index_file(path, kind="k", params={"n": np.int64(5), "r": np.float32(0.5),
                                               "t": (1, 2), "ok": np.bool_(True)}, arrays={})
    assert read_header(path)["params"] == {"n": 5, "r": 0.5, "t": [1, 2], "ok": True}


def test_no_arrays(tmp_path: Path) -> None:
    path = tmp_path / "x.binidx"
    write_index_file(path, kind="k", params={"a": 1}, arrays={})
    got = read_index_file(path, mmap=True)
    assert got.arrays == {} and got.params == {"a": 1}
    assert path.stat().st_size % ALIGNMENT == 0


_DTYPES = st.sampled_from(["?", "i1", "u1", "<i2", ">u2", "<i4", "u4", "<i8", ">u8",
                           "<f2", "<f4", ">f8", "<c8", "c16"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=12),
                          hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4,
                                                               min_side=0, max_side=5))),
                max_size=5, unique_by=lambda t: t[0]),
       st.dictionaries(st.text(max_size=8),
                       st.recursive(st.none() | st.booleans() | st.integers()
                                    | st.floats(allow_nan=False, allow_infinity=False)
                                    | st.text(max_size=8),
                                    lambda c: st.lists(c, max_size=3)
                                    | st.dictionaries(st.text(max_size=5), c, max_size=3),
                                    max_leaves=8),
                       max_size=4))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, named: list,
                             params: dict) -> None:
    arrays = dict(named)
    path = tmp_path_factory.mktemp("rt") / "p.binidx"
    write_index_file(path, kind="prop", params=params, arrays=arrays)
    data = path.read_bytes()
    assert data == index_file_to_bytes("prop", params, arrays)
    for got in (read_index_file(path), read_index_file(path, mmap=True, verify=True),
                index_file_from_bytes(data)):
        assert got.params == params
        assert list(got.arrays) == list(arrays)
        for name, want in arrays.items():
            assert got.arrays[name].shape == want.shape
            assert got.arrays[name].dtype == want.dtype.newbyteorder("<") \
                or got.arrays[name].dtype == want.dtype
            # byte-exact (NaN payloads and -0.0 included)
            assert got.arrays[name].tobytes() == want.astype(got.arrays[name].dtype).tobytes()


# ------------------------------------------------------------------------ mmap

def test_mmap_is_zero_copy_and_read_only(sample_file: Path) -> None:
    got = read_index_file(sample_file, mmap=True)
    codes = got.arrays["codes"]
    assert not codes.flags.writeable
    base = codes
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
    assert codes.ctypes.data % 64 == 0  # sections are 64-byte aligned in memory too
    with pytest.raises(ValueError, match="read-only"):
        codes[0, 0] = 1


def test_mmap_survives_replacing_the_file(sample_file: Path) -> None:
    got = read_index_file(sample_file, mmap=True)
    before = got.arrays["centroids"].copy()
    write_index_file(sample_file, kind="Other", params={},
                     arrays={"centroids": np.zeros((4, 8), np.float32)})
    np.testing.assert_array_equal(got.arrays["centroids"], before)
    assert read_index_file(sample_file).kind == "Other"


def test_read_header_reads_no_array_data(sample_file: Path) -> None:
    header = read_header(sample_file)
    assert header["kind"] == "Sample" and header["params"] == SAMPLE_PARAMS
    assert [s["name"] for s in header["sections"]] == list(_sample_arrays())
    # Damage every section: the header alone is still readable, a full read is not.
    data = bytearray(sample_file.read_bytes())
    for s in header["sections"]:
        if s["nbytes"]:
            data[s["offset"]] ^= 0xFF
    sample_file.write_bytes(bytes(data))
    assert read_header(sample_file) == header
    with pytest.raises(IndexFormatError, match="section 'centroids' checksum mismatch"):
        read_index_file(sample_file)


# ------------------------------------------------------------------------ atomic writes

def test_failed_write_leaves_old_file_and_no_temporary(sample_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    old = sample_file.read_bytes()

    def crash(f, head, layout, size):
        f.write(head[:10])
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(_format, "_emit", crash)
    with pytest.raises(KeyboardInterrupt):
        write_index_file(sample_file, kind="New", params={}, arrays={"a": np.ones(3)})
    assert sample_file.read_bytes() == old
    assert os.listdir(sample_file.parent) == [sample_file.name]


def test_write_fsyncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else fd),
        real_fsync(fd))[1])
    write_index_file(tmp_path / "x.binidx", kind="k", params={}, arrays={})
    assert len(synced) == 2
    assert str(synced[-1]) == str(tmp_path)


# ------------------------------------------------------------------------ writer errors

@pytest.mark.parametrize("kwargs, error, match", [
    ({"kind": "", "params": {}, "arrays": {}}, InvalidInputError, "kind must be a non-empty"),
    ({"kind": "k", "params": [1], "arrays": {}}, InvalidInputError, "params must be a dict"),
    ({"kind": "k", "params": {"x": float("nan")}, "arrays": {}}, InvalidInputError, "strict JSON"),
    ({"kind": "k", "params": {"x": np.zeros(2)}, "arrays": {}}, InvalidInputError,
     "must not contain NumPy arrays"),
    ({"kind": "k", "params": {"x": object()}, "arrays": {}}, InvalidInputError, "JSON-serialisable"),
    ({"kind": "k", "params": {}, "arrays": {"": np.zeros(1)}}, InvalidInputError, "non-empty strings"),
    ({"kind": "k", "params": {}, "arrays": {"s": np.array(["a"])}}, InvalidDtypeError,
     "array 's' has dtype <U1 which binidx files cannot store"),
    ({"kind": "k", "params": {}, "arrays": {"o": np.array([None])}}, InvalidDtypeError, "cannot store"),
    ({"kind": "k", "params": {}, "arrays": {"r": np.zeros(2, [("a", "i4")])}}, InvalidDtypeError,
     "cannot store"),
])
def test_writer_rejects_bad_input(tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        write_index_file(tmp_path / "x.binidx", **kwargs)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------ bad files

def _read_all_ways(path: Path) -> None:
    """Read a file every way the API allows; each must fail the same way."""
    for call in (lambda: read_header(path), lambda: read_index_file(path),
                 lambda: read_index_file(path, mmap=True),
                 lambda: index_file_from_bytes(path.read_bytes())):
        call()


def _foreign_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    import faiss
    import hnswlib

    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    out = {}
    p = tmp_path / "x.npy"
    np.save(p, x)
    out["npy"] = (p, r"not a binidx index file \(it looks like a NumPy \.npy file\)")
    p = tmp_path / "x.npz"
    np.savez(p, x=x)
    out["npz"] = (p, "looks like a zip archive")
    p = tmp_path / "flat.faiss"
    index = faiss.IndexFlatL2(8)
    index.add(x)
    faiss.write_index(index, str(p))
    out["faiss"] = (p, r"looks like a FAISS index \(type code 'IxF2'\)")
    p = tmp_path / "bin.faiss"
    bindex = faiss.IndexBinaryFlat(64)
    bindex.add(np.zeros((3, 8), np.uint8))
    faiss.write_index_binary(bindex, str(p))
    out["faiss_binary"] = (p, "looks like a FAISS index")
    p = tmp_path / "h.hnsw"
    h = hnswlib.Index("l2", 8)
    h.init_index(60)
    h.add_items(x)
    h.save_index(str(p))
    out["hnswlib"] = (p, r"looks like an hnswlib index \(written by save_index\)")
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps(x))
    out["pickle"] = (p, "looks like a Python pickle")
    p = tmp_path / "x.txt"
    p.write_text("dim,metric\n128,l2\n")
    out["text"] = (p, "looks like a text file")
    p = tmp_path / "random.bin"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out["random"] = (p, "not a binidx index file")
    p = tmp_path / "empty.bin"
    p.write_bytes(b"")
    out["empty"] = (p, r"empty \(0 bytes\); it is not a binidx index file")
    p = tmp_path / "short.bin"
    p.write_bytes(MAGIC[:5])
    out["short"] = (p, "is truncated: it has only 5 bytes")
    return out


@pytest.mark.parametrize("kind", ["npy", "npz", "faiss", "faiss_binary", "hnswlib", "pickle",
                                  "text", "random", "empty", "short"])
def test_foreign_files_are_named(tmp_path: Path, kind: str) -> None:
    path, match = _foreign_files(tmp_path)[kind]
    for read in (read_header, read_index_file, lambda p: read_index_file(p, mmap=True)):
        with pytest.raises(IndexFormatError, match=match):
            read(path)
    with pytest.raises(IndexFormatError, match=match):
        index_file_from_bytes(path.read_bytes())


def _with_prelude(data: bytes, **fields: int) -> bytes:
    magic, version, flags, hlen, hcrc, reserved = struct.unpack_from("<8sIIQII", data)
    values = {"version": version, "flags": flags, "hlen": hlen, "hcrc": hcrc, "reserved": reserved}
    values.update(fields)
    return struct.pack("<8sIIQII", magic, values["version"], values["flags"], values["hlen"],
                       values["hcrc"], values["reserved"]) + data[PRELUDE_SIZE:]


def _with_header(data: bytes, mutate, keep_offsets: bool = True) -> bytes:
    """Rewrite the JSON header (with a valid checksum), keeping the section bytes.

    With ``keep_offsets`` the sections stay where they were (the new header is padded to
    the old data start, so it must not be longer than that); otherwise they follow the
    new header directly and the declared offsets are likely wrong.
    """
    hlen = struct.unpack_from("<Q", data, 16)[0]
    header = json.loads(data[PRELUDE_SIZE:PRELUDE_SIZE + hlen])
    new = mutate(header)
    header = header if new is None else new
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    data_start = -(-(PRELUDE_SIZE + hlen) // ALIGNMENT) * ALIGNMENT
    if not keep_offsets:
        return _prelude_for(blob) + data[PRELUDE_SIZE + hlen:]
    excess = PRELUDE_SIZE + len(blob) - data_start
    if excess > 0 and isinstance(header, dict) and isinstance(header.get("params"), dict) \
            and len(header["params"].get("pad", "")) >= excess:
        # The test files carry a padding parameter to make room for longer headers.
        header["params"]["pad"] = header["params"]["pad"][excess:]
        blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert PRELUDE_SIZE + len(blob) <= data_start, "mutated header too long for the test"
    head = _prelude_for(blob)
    return head + bytes(data_start - len(head)) + data[data_start:]


def _prelude_for(blob: bytes, version: int = FORMAT_VERSION) -> bytes:
    head = struct.pack("<8sIIQ", MAGIC, version, 0, len(blob))
    return head + struct.pack("<II", zlib.crc32(head + blob), 0) + blob


def test_newer_version_says_upgrade(sample_file: Path) -> None:
    newer = FORMAT_VERSION + 1
    sample_file.write_bytes(_with_prelude(sample_file.read_bytes(), version=newer))
    with pytest.raises(IndexFormatError, match=rf"written by binidx file format version {newer}; "
                                               rf"this binidx .* reads format versions up to "
                                               rf"{FORMAT_VERSION}: upgrade binidx"):
        _read_all_ways(sample_file)


@pytest.mark.parametrize("change, match", [
    ({"version": 0}, "format version 0"),
    ({"hlen": 2**60}, "declares a 1152921504606846976-byte header"),
    ({"hlen": 1}, "declares a 1-byte header"),
    ({"hcrc": 12345}, "header checksum mismatch: the file is damaged"),
    ({"flags": 1}, "header checksum mismatch"),
])
def test_damaged_prelude(sample_file: Path, change: dict, match: str) -> None:
    sample_file.write_bytes(_with_prelude(sample_file.read_bytes(), **change))
    with pytest.raises(IndexFormatError, match=match):
        _read_all_ways(sample_file)


def test_unknown_flags_with_valid_checksum(sample_file: Path) -> None:
    data = sample_file.read_bytes()
    hlen = struct.unpack_from("<Q", data, 16)[0]
    head = struct.pack("<8sIIQ", MAGIC, 1, 4, hlen)
    blob = data[PRELUDE_SIZE:PRELUDE_SIZE + hlen]
    sample_file.write_bytes(head + struct.pack("<II", zlib.crc32(head + blob), 0)
                            + data[PRELUDE_SIZE:])
    with pytest.raises(IndexFormatError, match="flags 0x4"):
        _read_all_ways(sample_file)


def _set_section(i: int, **kv):
    def mutate(h):
        h["sections"][i].update(kv)
    return mutate


@pytest.mark.parametrize("mutate, match", [
    (lambda h: h.update(file_size=h["file_size"] + 1), "is truncated: its header says"),
    (lambda h: h.update(file_size=h["file_size"] - 1), "extra data follows"),
    (lambda h: h.update(format="numpy"), "format field is 'numpy'"),
    (lambda h: h.update(format_version=FORMAT_VERSION + 1),
     f"header says format version {FORMAT_VERSION + 1}"),
    (lambda h: h.__delitem__("kind"), "'kind' is missing"),
    (lambda h: h.update(params=[1]), "'params' is missing or not a dict"),
    (lambda h: h.update(sections={}), "'sections' is missing or not a list"),
    (lambda h: [1, 2], "header is not a JSON object"),
    (_set_section(0, dtype="<f16"), "dtype '<f16'"),
    (_set_section(0, dtype=">f4"), "dtype '>f4'"),
    (_set_section(0, dtype="O"), "dtype 'O'"),
    (_set_section(1, shape=[10, -2]), "invalid shape"),
    (_set_section(1, shape=[10, True]), "invalid shape"),
    (_set_section(1, shape=[1] * 40), "invalid shape"),
    (_set_section(1, shape=[10, 3]), "declares 20 bytes but shape"),
    (_set_section(1, shape=[0, 2**40, 2**40], nbytes=0), "impossibly large shape"),
    (_set_section(1, shape=[2**40, 2**40], nbytes=2**80), "impossibly large shape"),
    (_set_section(1, shape=[2**30, 2], nbytes=2**31), "ends at byte .* but the file has"),
    (_set_section(1, offset=3), "not 64-byte aligned"),
    (_set_section(1, offset=0), "not 64-byte aligned after the previous"),
    (_set_section(1, offset=2**70), "ends at byte"),
    (_set_section(1, offset="64"), "invalid offset"),
    (_set_section(1, crc32=-1), "invalid offset, nbytes or crc32"),
    (_set_section(1, crc32=2**32), "invalid offset, nbytes or crc32"),
    (_set_section(1, name="centroids"), "repeated name"),
    (_set_section(1, name=""), "empty or repeated name"),
    (lambda h: h["sections"].reverse(), "not 64-byte aligned after the previous"),
])
def test_damaged_header_fields(padded_file: Path, mutate, match: str) -> None:
    padded_file.write_bytes(_with_header(padded_file.read_bytes(), mutate))
    with pytest.raises(IndexFormatError, match=match):
        _read_all_ways(padded_file)


@pytest.mark.parametrize("blob, match", [
    (b"{not json", "not valid JSON"),
    (b'{"a": NaN}', "not valid JSON"),
    (b'{"a": 1, "a": 2}', "duplicate key"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
])
def test_invalid_json_header(tmp_path: Path, blob: bytes, match: str) -> None:
    path = tmp_path / "x.binidx"
    path.write_bytes(_prelude_for(blob))
    with pytest.raises(IndexFormatError, match=match):
        _read_all_ways(path)


def test_unknown_header_keys_are_ignored(padded_file: Path) -> None:
    def add_keys(h):
        h["future_info"] = {"x": 1}
        h["sections"][0]["compression_hint"] = None
    padded_file.write_bytes(_with_header(padded_file.read_bytes(), add_keys))
    _assert_same_arrays(read_index_file(padded_file).arrays, _sample_arrays())


@pytest.mark.parametrize("mmap_, verify", [(False, True), (True, True)])
def test_section_checksum_mismatch_names_the_section(sample_file: Path, mmap_: bool,
                                                     verify: bool) -> None:
    header = read_header(sample_file)
    codes = next(s for s in header["sections"] if s["name"] == "codes")
    data = bytearray(sample_file.read_bytes())
    data[codes["offset"] + 5] ^= 0x10
    sample_file.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="section 'codes' checksum mismatch: the file "
                                               "is damaged"):
        read_index_file(sample_file, mmap=mmap_, verify=verify)
    with pytest.raises(IndexFormatError, match="section 'codes' checksum mismatch"):
        index_file_from_bytes(bytes(data))
    # Without verify, a mapped open trusts the section bytes (documented trade-off).
    got = read_index_file(sample_file, mmap=True)
    assert got.arrays["codes"].ravel()[5] != _sample_arrays()["codes"].ravel()[5]


def test_every_truncation_is_reported(sample_file: Path) -> None:
    data = sample_file.read_bytes()
    for cut in range(len(data)):
        sample_file.write_bytes(data[:cut])
        with pytest.raises(IndexFormatError, match="truncated|empty"):
            read_index_file(sample_file)


def test_appended_data_is_reported(sample_file: Path) -> None:
    with open(sample_file, "ab") as f:
        f.write(b"\0" * 64)
    with pytest.raises(IndexFormatError, match="extra data follows"):
        _read_all_ways(sample_file)


def test_text_mode_copy_is_recognised(sample_file: Path) -> None:
    sample_file.write_bytes(sample_file.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(IndexFormatError, match="line endings were converted"):
        read_index_file(sample_file)


# ------------------------------------------------------------------------ fuzz

def _fuzz_base() -> tuple[bytes, dict]:
    arrays = {
        "codes": np.arange(24, dtype=np.uint8).reshape(6, 4),
        "vectors": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        "none": np.zeros((0, 4), dtype=np.int64),
        "scalar": np.array(7, dtype=np.int32),
    }
    params = {"dim": 4, "names": ["a", "b"], "pad": "." * 300}
    return index_file_to_bytes("Fuzz", params, arrays), arrays


_POOL = [None, True, False, 0, 1, -1, 63, 64, 2**31, 2**32, 2**62, 2**63, 2**64, 2**100, -2**63,
         0.5, 1e308, "", "x", "<f4", "|u1", "<i8", ">f4", "O", "V8", [], [0], [1, 2], [-1],
         [2**62, 2**62], [0, 2**70], {}, {"a": 1}, [[1]]]


def _random_header_mutant(data: bytes, rng: np.random.Generator) -> bytes:
    def mutate(header: dict) -> None:
        for _ in range(int(rng.integers(1, 4))):
            sections = [s for s in header.get("sections") or [] if isinstance(s, dict)] \
                if isinstance(header.get("sections"), list) else []
            if sections and rng.random() < 0.6:
                target = sections[int(rng.integers(len(sections)))]
            else:
                target = header
            keys = list(target) + ["extra"]
            key = keys[int(rng.integers(len(keys)))]
            roll = rng.random()
            if roll < 0.15:
                target.pop(key, None)
            elif roll < 0.3 and key in ("offset", "nbytes", "file_size") and is_int(
                    target.get(key)):
                target[key] += int(rng.choice([-64, -1, 1, 64, 2**40]))
            else:
                target[key] = _POOL[int(rng.integers(len(_POOL)))]

    keep = rng.random() < 0.9
    try:
        return _with_header(data, mutate, keep_offsets=keep)
    except AssertionError:  # grew past the data start: shift the sections instead
        return _with_header(data, lambda h: None, keep_offsets=False)


def _mutants(data: bytes, rng: np.random.Generator):
    size = len(data)
    for cut in range(size):  # every truncation, hence every section boundary
        yield f"truncate {cut}", data[:cut]
    for i in range(1500):  # byte flips anywhere, 1-3 of them
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(size)) if i % 2 else int(rng.integers(PRELUDE_SIZE))
            buf[pos] ^= int(rng.integers(1, 256)) if i % 3 else 1 << int(rng.integers(8))
        yield f"flip {i}", bytes(buf)
    for i in range(1200):  # structurally plausible headers with a valid checksum
        yield f"header {i}", _random_header_mutant(data, rng)
    for field, values in ((16, [2**63, 2**40, size, size - PRELUDE_SIZE + 1]),
                          (8, [2, 255, 2**32 - 1])):
        for v in values:  # huge declared sizes / versions in the prelude
            fmt = "<Q" if field == 16 else "<I"
            buf = bytearray(data)
            struct.pack_into(fmt, buf, field, v)
            yield f"prelude {field}={v}", bytes(buf)
    for i in range(100):  # the magic followed by noise
        yield f"noise {i}", MAGIC + rng.integers(0, 256, int(rng.integers(0, 2000)),
                                                 dtype=np.uint8).tobytes()


def _same_result(a, b) -> None:
    assert (a.kind, a.params, a.header) == (b.kind, b.params, b.header)
    assert list(a.arrays) == list(b.arrays)
    for name in a.arrays:
        assert a.arrays[name].dtype == b.arrays[name].dtype
        assert a.arrays[name].tobytes() == b.arrays[name].tobytes()


def test_fuzz_mutated_files_load_identically_or_raise_format_error(tmp_path: Path) -> None:
    data, _ = _fuzz_base()
    original = index_file_from_bytes(data)
    rng = np.random.default_rng(20240607)
    counts = {"loaded": 0, "rejected": 0}
    for i, (what, mutant) in enumerate(_mutants(data, rng)):
        path = tmp_path / f"m{i}.binidx"  # a new file each time: mappings stay valid
        path.write_bytes(mutant)
        results = []
        for read, arg, kwargs in ((index_file_from_bytes, mutant, {}),
                                  (read_index_file, path, {}),
                                  (read_index_file, path, {"mmap": True, "verify": True}),
                                  (read_index_file, path, {"mmap": True})):
            try:
                results.append(read(arg, **kwargs))
            except IndexFormatError:
                results.append(None)
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{what}: {type(exc).__name__}: {exc}")
        try:
            header = read_header(path)
        except IndexFormatError:
            header = None
        verified = results[:3]
        path.unlink()
        # The three verifying readers agree with each other.
        assert all(r is None for r in verified) or all(r is not None for r in verified), what
        if verified[0] is None:
            counts["rejected"] += 1
            continue
        counts["loaded"] += 1
        for r in verified[1:]:
            _same_result(verified[0], r)
        got = verified[0]
        if not what.startswith("header"):
            _same_result(got, original)  # only padding changed
        for s in got.header["sections"]:  # what loaded is what the header describes
            assert got.arrays[s["name"]].dtype.str == s["dtype"]
            assert list(got.arrays[s["name"]].shape) == s["shape"]
        # The unverified mapped open accepts at least what the verified ones accept.
        assert results[3] is not None and results[3].header == got.header, what
        assert header == got.header
    print(counts)
    assert counts["rejected"] > 2000 and counts["loaded"] > 10, counts


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.binary(max_size=600).map(lambda b: MAGIC + b))
def test_arbitrary_bytes_never_crash(blob: bytes) -> None:
    try:
        index_file_from_bytes(blob)
    except IndexFormatError:
        pass


# ------------------------------------------------------------------------ golden files

def _golden_content() -> tuple[str, dict, dict]:
    """The content of tests/data/golden/format_v1.binidx; never change it."""
    rng = np.random.default_rng(1)
    arrays = {
        "centroids": rng.standard_normal((4, 16)).astype(np.float32),
        "codes": rng.integers(0, 256, size=(32, 2), dtype=np.uint8),
        "ids": np.arange(1000, 1032, dtype=np.int64),
        "list_offsets": np.array([0, 8, 16, 24, 32], dtype=np.int32),
        "norms": rng.random(32).astype(np.float16),
        "deleted": np.zeros((0,), dtype=np.int64),
        "flags": np.array([True, False] * 4),
        "rotation_seed": np.array(12345, dtype=np.uint64),
        "complex": np.array([1 + 2j, -0.5j], dtype=np.complex64),
        "f64": np.array([[np.pi, -0.0], [np.inf, np.nan]]),
        "u16": np.arange(6, dtype=np.uint16).reshape(1, 2, 3),
        "i8": np.array([-128, 127], dtype=np.int8),
        "i16": np.array([-300, 300], dtype=np.int16),
        "u32": np.array([2**32 - 1], dtype=np.uint32),
        "c128": np.array([1j], dtype=np.complex128),
    }
    params = {"dim": 16, "metric": "l2", "n_lists": 4, "ntotal": 32, "seed": 0,
              "name": "golden ✓", "rerank": None, "ratios": [0.5, 1.5]}
    return "GoldenV1", params, arrays


@pytest.mark.parametrize("version", sorted(GOLDEN_SHA256))
def test_golden_files_load_forever(version: int) -> None:
    """Every format version's container golden file (the same content each time; the
    versions differ in what an index file puts in it, docs/format.md 1.9)."""
    path = GOLDEN_DIR / f"format_v{version}.binidx"
    if os.environ.get("BINIDX_WRITE_GOLDEN") and not path.exists() and FORMAT_VERSION == version:
        kind, params, arrays = _golden_content()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_index_file(path, kind=kind, params=params, arrays=arrays)
    assert path.exists(), f"missing golden file {path}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == GOLDEN_SHA256[version], \
        "a committed golden file must never change; add a new one for a new format version"
    kind, params, arrays = _golden_content()
    for got in (read_index_file(path), read_index_file(path, mmap=True, verify=True),
                index_file_from_bytes(path.read_bytes())):
        assert got.kind == kind and got.params == params
        assert got.header["format_version"] == version
        assert list(got.arrays) == list(arrays)
        for name, want in arrays.items():
            assert got.arrays[name].dtype == want.dtype and got.arrays[name].shape == want.shape
            assert got.arrays[name].tobytes() == want.tobytes(), name
