"""Tests of binidx.vecio: vector file readers and writers."""
from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from binidx import vecio
from binidx.errors import InvalidInputError, VectorFileError
from binidx.vecio import (
    VectorFileInfo,
    iter_vector_chunks,
    parse_source,
    read_vectors,
    vector_file_info,
    write_vectors,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_sift = pytest.mark.skipif(not (DATA / "dev-sift" / "base.bvecs").is_file(),
                                reason="shared/data/dev-sift is absent")
needs_text = pytest.mark.skipif(not (DATA / "dev-text" / "base.fvecs").is_file(),
                                reason="shared/data/dev-text is absent")

FILE_SETTINGS = settings(max_examples=25, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])


def naive_read_texmex(path: Path, rows: list[int]) -> list[np.ndarray]:
    """Independent reader: walk the records one by one with struct."""
    code = {".fvecs": ("f", 4), ".ivecs": ("i", 4), ".bvecs": ("B", 1)}[path.suffix]
    out = {}
    with open(path, "rb") as f:
        dim = struct.unpack("<i", f.read(4))[0]
        record = 4 + dim * code[1]
        for r in rows:
            f.seek(r * record)
            assert struct.unpack("<i", f.read(4))[0] == dim
            out[r] = np.array(struct.unpack(f"<{dim}{code[0]}", f.read(dim * code[1])))
    return [out[r] for r in rows]


def texmex_bytes(rows: list[list[int]], value: str = "<f4") -> bytes:
    """Raw texmex records, each with its own declared dimension (so tests can lie)."""
    return b"".join(np.array([len(r)], "<i4").tobytes() + np.array(r, value).tobytes()
                    for r in rows)


def raises_one_line(match: str, exc: type = VectorFileError):
    """pytest.raises that also checks the message is a single line."""
    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(exc, match=match)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self._ctx.__exit__(*args)
            assert "\n" not in str(self.info.value), str(self.info.value)
            return handled
    return _Check()


# ---------------------------------------------------------------------------------------
# Round trips


# Which dtypes each format stores, and the dtype it reads back.
ROUND_TRIP = {
    ".fvecs": ([np.float32, np.int16, np.uint8], np.float32),
    ".ivecs": ([np.int32, np.int8, np.uint16], np.int32),
    ".bvecs": ([np.uint8], np.uint8),
    ".npy": ([np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_], None),
    ".csv": ([np.float32, np.int32], np.float32),
    ".tsv": ([np.float32], np.float32),
    ".txt": ([np.float32, np.uint8], np.float32),
}


@st.composite
def array_for(draw, ext):
    dtypes, _ = ROUND_TRIP[ext]
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = (draw(st.integers(1, 40)), draw(st.integers(1, 24)))
    if dtype.kind == "f":
        elements = st.floats(width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False)
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@pytest.mark.parametrize("ext", sorted(ROUND_TRIP))
def test_round_trip_every_format(tmp_path, ext):
    @FILE_SETTINGS
    @given(array=array_for(ext), chunk=st.integers(1, 50))
    def check(array, chunk):
        path = tmp_path / f"x{ext}"
        write_vectors(path, array)
        expected_dtype = ROUND_TRIP[ext][1] or array.dtype
        expected = array.astype(expected_dtype)
        for mmap in (True, False):
            got = read_vectors(path, mmap=mmap)
            assert got.dtype == expected_dtype and got.shape == array.shape
            np.testing.assert_array_equal(got, expected)
        blocks = list(iter_vector_chunks(path, chunk_size=chunk))
        assert all(0 < b.shape[0] <= chunk and b.flags.c_contiguous for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks), expected)
        info = vector_file_info(path)
        assert (info.n, info.dim, info.dtype) == (array.shape[0], array.shape[1],
                                                  expected_dtype)
        assert info.format == ext[1:]
    check()


def test_write_is_atomic_and_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "x.bvecs"
    write_vectors(path, np.full((3, 4), 9, dtype=np.uint8))
    before = path.read_bytes()
    with raises_one_line(r"cannot write row 1: column 2 holds 0\.5"):
        write_vectors(path, np.array([[1, 2, 3, 4], [1, 2, 0.5, 4]]))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["x.bvecs"]  # no temporary file left behind


def test_written_file_gets_umask_permissions(tmp_path):
    path = tmp_path / "x.npy"
    write_vectors(path, np.zeros((2, 2)))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_fortran_order_npy_reads_and_streams_in_row_order(tmp_path):
    array = np.asfortranarray(np.arange(60, dtype=np.float32).reshape(12, 5))
    path = tmp_path / "f.npy"
    np.save(path, array)
    np.testing.assert_array_equal(read_vectors(path), array)
    np.testing.assert_array_equal(read_vectors(path, mmap=False, max_rows=4), array[:4])
    np.testing.assert_array_equal(np.concatenate(list(iter_vector_chunks(path, 5))), array)


@pytest.mark.parametrize("ext", [".fvecs", ".bvecs", ".ivecs", ".npy", ".csv"])
@pytest.mark.parametrize("chunk_size", [1, 3, 5, 10, 11, 65536])
def test_chunks_equal_full_read(tmp_path, ext, chunk_size):
    array = np.arange(70, dtype=np.uint8).reshape(10, 7)
    path = tmp_path / f"x{ext}"
    write_vectors(path, array)
    blocks = list(iter_vector_chunks(path, chunk_size=chunk_size))
    assert [b.shape[0] for b in blocks[:-1]] == [chunk_size] * (len(blocks) - 1)
    np.testing.assert_array_equal(np.concatenate(blocks), read_vectors(path))


@pytest.mark.parametrize("ext", [".fvecs", ".npy", ".csv"])
def test_max_rows(tmp_path, ext):
    array = np.arange(40, dtype=np.float32).reshape(8, 5)
    path = tmp_path / f"x{ext}"
    write_vectors(path, array)
    for mmap in (True, False):
        np.testing.assert_array_equal(read_vectors(path, mmap=mmap, max_rows=3), array[:3])
        assert read_vectors(path, mmap=mmap, max_rows=100).shape == (8, 5)
    with raises_one_line("max_rows must be None or an integer >= 0", InvalidInputError):
        read_vectors(path, max_rows=-1)


def test_text_formats_read_comments_and_whitespace(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("# id-less vectors\n1, 2.5, -3\n4,5,6e-1\n")
    np.testing.assert_array_equal(read_vectors(path),
                                  np.array([[1, 2.5, -3], [4, 5, 0.6]], np.float32))
    path = tmp_path / "x.txt"
    path.write_text("1 2\t3\n")
    assert read_vectors(path).shape == (1, 3)


def test_write_converts_what_the_format_holds_exactly(tmp_path):
    ints = np.array([[0, 255], [16777216, -3]], dtype=np.int64)
    write_vectors(tmp_path / "a.fvecs", ints)  # integers to float32 are accepted
    np.testing.assert_array_equal(read_vectors(tmp_path / "a.fvecs"), ints.astype(np.float32))
    write_vectors(tmp_path / "b.bvecs", np.array([[0.0, 255.0]]))  # exact integral floats
    np.testing.assert_array_equal(read_vectors(tmp_path / "b.bvecs"), [[0, 255]])
    write_vectors(tmp_path / "c.ivecs", np.array([[2**31 - 1, -2**31]], dtype=np.int64))
    np.testing.assert_array_equal(read_vectors(tmp_path / "c.ivecs"), [[2**31 - 1, -2**31]])
    write_vectors(tmp_path / "d.npy", np.zeros((0, 3)))  # .npy can hold no vectors
    assert read_vectors(tmp_path / "d.npy").shape == (0, 3)
    memmapped = read_vectors(tmp_path / "b.bvecs")
    write_vectors(tmp_path / "e.fvecs", memmapped)  # strided memmap input
    np.testing.assert_array_equal(read_vectors(tmp_path / "e.fvecs"), [[0, 255]])


# ---------------------------------------------------------------------------------------
# Memory maps


@pytest.mark.parametrize("ext", [".fvecs", ".bvecs", ".npy"])
def test_mmap_is_zero_copy_view_of_the_file(tmp_path, ext):
    n, dim = 20000, 128  # 10 MB as fvecs
    array = (np.arange(n * dim) % 251).astype(np.uint8).reshape(n, dim)
    path = tmp_path / f"big{ext}"
    write_vectors(path, array)
    got = read_vectors(path)
    assert isinstance(got, np.memmap) and not got.flags.writeable
    assert got.shape == (n, dim)
    # Change the last value on disk: a true map sees it without re-reading.
    itemsize = got.dtype.itemsize
    with open(path, "r+b") as f:
        f.seek(-itemsize, os.SEEK_END)
        f.write(np.array([77], dtype=got.dtype).tobytes())
    assert got[-1, -1] == 77
    copied = read_vectors(path, mmap=False)
    assert not isinstance(copied, np.memmap) and copied.flags.c_contiguous


# ---------------------------------------------------------------------------------------
# Malformed texmex files


def test_unknown_extension_names_supported_ones(tmp_path):
    path = tmp_path / "x.dat"
    path.write_bytes(b"1234")
    with raises_one_line(r"x\.dat: unknown vector file type \(extension '\.dat'\); "
                         r"supported: \.fvecs, \.bvecs, \.ivecs, \.npy, \.hdf5"):
        read_vectors(path)
    with raises_one_line("unknown vector file type"):
        write_vectors(tmp_path / "y.bin", np.zeros((1, 1)))


def test_missing_file_and_directory(tmp_path):
    with raises_one_line(r"nope\.fvecs: no such file"):
        read_vectors(tmp_path / "nope.fvecs")
    with raises_one_line(r"nope\.npy: no such file"):
        iter_vector_chunks(tmp_path / "nope.npy")  # raises at the call, not at next()
    (tmp_path / "d.fvecs").mkdir()
    with raises_one_line("is a directory, not a vector file"):
        vector_file_info(tmp_path / "d.fvecs")


@pytest.mark.parametrize("ext", [".fvecs", ".bvecs", ".ivecs", ".npy", ".csv"])
def test_empty_file(tmp_path, ext):
    path = tmp_path / f"empty{ext}"
    path.write_bytes(b"")
    match = "holds no vectors" if ext == ".csv" else "the file is empty"
    with raises_one_line(match):
        read_vectors(path)


def test_too_short_for_a_header(tmp_path):
    path = tmp_path / "x.ivecs"
    path.write_bytes(b"\x01\x00")
    with raises_one_line("record 0 is truncated: the file has 2 bytes, too few for the "
                         "4-byte dimension header"):
        read_vectors(path)


def test_truncated_last_record(tmp_path):
    path = tmp_path / "t.fvecs"
    path.write_bytes(texmex_bytes([[1, 2, 3, 4]] * 4)[:-11])
    message = (r"t\.fvecs: record 3 is truncated: the file ends 9 bytes into it, but each "
               r"record takes 20 bytes \(4-byte dimension \+ 4 x 4-byte values\)")
    for call in (read_vectors, vector_file_info, iter_vector_chunks):
        with raises_one_line(message):
            call(path)


def test_inconsistent_dimension_found_in_every_record(tmp_path, monkeypatch):
    # Small windows so the bad header sits in a later window of the scan.
    monkeypatch.setattr(vecio, "_HEADER_WINDOW", 4)
    rows = [[1, 2, 3, 4]] * 1041 + [[9] * 4] * 5
    raw = bytearray(texmex_bytes(rows))
    raw[1041 * 20:1041 * 20 + 4] = np.array([64], "<i4").tobytes()  # header lies, size doesn't
    path = tmp_path / "base.fvecs"
    path.write_bytes(bytes(raw))
    message = (r"^.*base\.fvecs: record 1041 declares dimension 64 but the file's first record "
               r"has 4; the file is not a valid \.fvecs file$")
    for call in (read_vectors, vector_file_info):
        with raises_one_line(message):
            call(path)
    with raises_one_line(message):
        read_vectors(path, mmap=False)
    # Streaming yields the good blocks first, then stops at the bad record.
    chunks = iter_vector_chunks(path, chunk_size=1000)
    assert next(chunks).shape == (1000, 4)
    with raises_one_line(message):
        next(chunks)
    assert read_vectors(path, max_rows=1041).shape == (1041, 4)  # only read rows are checked


def test_inconsistent_dimension_that_also_breaks_the_size(tmp_path):
    path = tmp_path / "x.ivecs"
    path.write_bytes(texmex_bytes([[1, 2, 3], [4, 5, 6], [7, 8]], "<i4"))
    with raises_one_line("record 2 declares dimension 2 but the file's first record has 3"):
        read_vectors(path)


@needs_sift
def test_bvecs_named_fvecs_gets_a_hint(tmp_path):
    path = tmp_path / "query.fvecs"
    path.write_bytes((DATA / "dev-sift" / "query.bvecs").read_bytes()[:132 * 50])
    with raises_one_line(r"record 1 declares dimension \d+ but the file's first record has "
                         r"128; the file is not a valid \.fvecs file \(its sizes fit \.bvecs: "
                         r"is the extension wrong\?\)"):
        read_vectors(path)


@pytest.mark.parametrize("dim", [0, -5, (1 << 20) + 1])
def test_absurd_dimension(tmp_path, dim):
    path = tmp_path / "x.fvecs"
    path.write_bytes(np.array([dim, 0, 0], "<i4").tobytes())
    with raises_one_line(rf"record 0 declares dimension {dim}, outside 1\.\.1048576; the "
                         r"file is not a valid \.fvecs file"):
        read_vectors(path)


def test_big_endian_file_gets_a_hint(tmp_path):
    path = tmp_path / "x.ivecs"
    path.write_bytes(np.array([3, 1, 2, 3], ">i4").tobytes())
    with raises_one_line(r"read big-endian it would be 3"):
        read_vectors(path)


def test_bad_chunk_size(tmp_path):
    with raises_one_line("chunk_size must be a positive integer, got 0", InvalidInputError):
        iter_vector_chunks(tmp_path / "x.fvecs", chunk_size=0)


# ---------------------------------------------------------------------------------------
# Malformed .npy and text files


def test_npy_malformed(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(b"this is not numpy")
    with raises_one_line(r"x\.npy: not a valid \.npy file \("):
        read_vectors(path)
    np.save(path, np.zeros((4, 3, 2)))
    with raises_one_line(r"shape \(4, 3, 2\), but vectors must be a 2-D array"):
        read_vectors(path)
    np.save(path, np.zeros(5))
    with raises_one_line(r"shape \(5,\), but vectors must be a 2-D"):
        vector_file_info(path)
    np.save(path, np.array([["a", "b"]]))
    with raises_one_line(r"holds dtype <U1, but vectors must be numbers"):
        read_vectors(path)
    np.save(path, np.arange(50, dtype=np.float64).reshape(10, 5))
    path.write_bytes(path.read_bytes()[:-100])
    with raises_one_line(r"truncated: the header promises shape \(10, 5\) of float64 "
                         r"\(400 bytes of data\) but only 300 bytes follow it; row 7 is the "
                         r"first incomplete one"):
        iter_vector_chunks(path)


def test_text_malformed(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2,3\n4,five,6\n")
    with raises_one_line(r"x\.csv: not a valid \.csv file of numbers \(could not convert "
                         r"string 'five'"):
        read_vectors(path)
    path.write_text("1,2,3\n4,5\n")
    with raises_one_line(r"not a valid \.csv file of numbers \(the number of columns changed "
                         r"from 3 to 2 at row 2\)"):
        read_vectors(path)
    path.write_text("# only a comment\n")
    with raises_one_line("holds no vectors"):
        read_vectors(path)


# ---------------------------------------------------------------------------------------
# Writing what a format cannot hold


@pytest.mark.parametrize("ext, array, match", [
    (".bvecs", np.array([[1.0, 0.5]]),
     r"row 0: column 1 holds 0\.5, but \.bvecs stores integers 0\.\.255 \(uint8\)"),
    (".bvecs", np.array([[1, 2], [3, 256]]), r"row 1: column 1 holds 256"),
    (".bvecs", np.array([[-1]], dtype=np.int8), r"column 0 holds -1"),
    (".ivecs", np.array([[np.nan]]), r"holds nan, but \.ivecs stores integers"),
    (".ivecs", np.array([[2**40]]),
     r"holds 1099511627776, but \.ivecs stores integers -2147483648\.\.2147483647"),
    (".fvecs", np.array([[1e300]]), r"holds 1e\+300, beyond float32's range"),
    (".fvecs", np.array([[1 + 2j]]), r"cannot write dtype complex128"),
    (".npy", np.array([[object()]]), r"cannot write dtype object"),
    (".fvecs", np.zeros(4), r"cannot write an array of shape \(4,\): vectors must be 2-D"),
    (".fvecs", np.zeros((3, 0)), r"the dimension must be at least 1"),
    (".csv", np.zeros((0, 3)), r"cannot write 0 vectors to \.csv"),
    (".hdf5", np.zeros((1, 3)), r"writing HDF5 is not supported"),
])
def test_write_refuses_what_the_format_cannot_hold(tmp_path, ext, array, match):
    path = tmp_path / f"x{ext}"
    with raises_one_line(match):
        write_vectors(path, array)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_write_into_missing_folder(tmp_path):
    with raises_one_line(r"cannot write: folder .*nope does not exist"):
        write_vectors(tmp_path / "nope" / "x.fvecs", np.zeros((1, 1)))


# ---------------------------------------------------------------------------------------
# HDF5 (ann-benchmarks layout)


@pytest.fixture
def ann_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    data = {
        "train": rng.standard_normal((300, 16)).astype(np.float32),
        "test": rng.standard_normal((20, 16)).astype(np.float32),
        "neighbors": rng.integers(0, 300, (20, 10)).astype(np.int32),
        "distances": rng.random((20, 10)).astype(np.float32),
    }
    path = tmp_path / "fake-16-euclidean.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "euclidean"
        for name, value in data.items():
            f.create_dataset(name, data=value)
        f.create_dataset("extra/packed", data=data["train"], chunks=(7, 16), compression="gzip")
    return path, data


def test_hdf5_ann_benchmarks_layout(ann_hdf5):
    path, data = ann_hdf5
    for name, value in data.items():
        got = read_vectors(f"{path}:{name}")
        assert isinstance(got, np.memmap)  # contiguous datasets are mapped, not read
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)
        np.testing.assert_array_equal(read_vectors(f"{path}:{name}", mmap=False), value)
        blocks = list(iter_vector_chunks(f"{path}:{name}", chunk_size=7))
        np.testing.assert_array_equal(np.concatenate(blocks), value)
        assert vector_file_info(f"{path}:{name}") == VectorFileInfo(*value.shape, value.dtype,
                                                                    "hdf5")
    packed = read_vectors(f"{path}:extra/packed", max_rows=5)  # chunked + gzip: read
    assert not isinstance(packed, np.memmap)
    np.testing.assert_array_equal(packed, data["train"][:5])


def test_hdf5_errors(ann_hdf5, tmp_path, monkeypatch):
    path, _ = ann_hdf5
    available = r"'distances', 'extra/packed', 'neighbors', 'test', 'train'"
    with raises_one_line(rf"name the dataset to read as .*hdf5:DATASET; datasets in the "
                         rf"file: {available}"):
        read_vectors(path)
    with raises_one_line(rf"no dataset 'learn'; datasets in the file: {available}"):
        iter_vector_chunks(f"{path}:learn")
    with raises_one_line(r"'extra' is a group, not a dataset"):
        vector_file_info(f"{path}:extra")
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5 at all")
    with raises_one_line(r"bogus\.h5: not a readable HDF5 file"):
        read_vectors(f"{bogus}:train")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with raises_one_line(r"reading HDF5 files needs h5py, which is not installed: "
                         r"pip install h5py"):
        read_vectors(f"{path}:train")


def test_parse_source():
    assert parse_source("a/b.hdf5:train") == ("a/b.hdf5", "train")
    assert parse_source(Path("x.H5:group/test")) == ("x.H5", "group/test")
    assert parse_source("x.hdf5") == ("x.hdf5", None)
    assert parse_source("x.hdf5:") == ("x.hdf5", None)
    assert parse_source("c:/data/base.fvecs") == ("c:/data/base.fvecs", None)
    assert parse_source("odd:name.npy") == ("odd:name.npy", None)


# ---------------------------------------------------------------------------------------
# Arbitrary bytes: a clean error or a valid array, never a crash or another exception


@pytest.mark.parametrize("ext", [".fvecs", ".bvecs", ".ivecs", ".npy"])
def test_arbitrary_bytes_never_crash(tmp_path, ext):
    header = st.sampled_from([b"", np.array([2], "<i4").tobytes(), b"\x93NUMPY\x01\x00"])

    @FILE_SETTINGS
    @given(raw=st.tuples(header, st.binary(max_size=64)).map(b"".join))
    def check(raw):
        path = tmp_path / f"x{ext}"
        path.write_bytes(raw)
        try:
            got = read_vectors(path, mmap=False)
        except VectorFileError as exc:
            assert "\n" not in str(exc)
            return
        assert got.ndim == 2 and got.shape[1] >= 1
        np.testing.assert_array_equal(np.concatenate(list(iter_vector_chunks(path, 3)))
                                      if got.shape[0] else got, got)
    check()


# ---------------------------------------------------------------------------------------
# The real development data


@needs_sift
def test_dev_sift_files():
    base_path = DATA / "dev-sift" / "base.bvecs"
    base = read_vectors(base_path)
    assert isinstance(base, np.memmap)
    assert base.shape == (200000, 128) and base.dtype == np.uint8
    rows = [0, 1, 77777, 199999]
    for row, expected in zip(rows, naive_read_texmex(base_path, rows)):
        np.testing.assert_array_equal(base[row], expected)
    gt_path = DATA / "dev-sift" / "groundtruth.ivecs"
    gt = read_vectors(gt_path, mmap=False)
    assert gt.shape == (2000, 100) and gt.dtype == np.int32
    assert gt.min() >= 0 and gt.max() < 200000
    for row, expected in zip([0, 1999], naive_read_texmex(gt_path, [0, 1999])):
        np.testing.assert_array_equal(gt[row], expected)
    assert vector_file_info(DATA / "dev-sift" / "query.bvecs") == VectorFileInfo(
        2000, 128, np.dtype(np.uint8), "bvecs")


@needs_text
def test_dev_text_files():
    path = DATA / "dev-text" / "query.fvecs"
    query = read_vectors(path)
    assert query.shape == (1000, 384) and query.dtype == np.float32
    for row, expected in zip([0, 999], naive_read_texmex(path, [0, 999])):
        np.testing.assert_array_equal(query[row], expected.astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(query[:50], axis=1), 1.0, atol=1e-4)
    info = vector_file_info(DATA / "dev-text" / "base.fvecs")
    assert info == VectorFileInfo(50000, 384, np.dtype(np.float32), "fvecs")
