"""Tests of the ``binidx`` command line: real commands on real files, outputs checked.

Most tests call :func:`binidx.cli.main` in-process (the same code the console script and
``python -m binidx`` run) with files written to ``tmp_path``; a few run
``python -m binidx`` as a subprocess to check the entry point itself.  Vectors are a
slice of the shared dev-sift set when it is present, synthetic clustered data otherwise.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import binidx
from binidx import _format, _kmeans, _storage, cli, vecio
from binidx.errors import VectorFileError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dev-sift"
N_BASE, N_QUERY, DIM_SYNTH = 4000, 60, 32
N_LISTS = 32


def _real_or_synthetic() -> tuple[np.ndarray, np.ndarray]:
    if (DATA / "base.bvecs").is_file() and (DATA / "query.bvecs").is_file():
        base = vecio.read_vectors(DATA / "base.bvecs", max_rows=N_BASE, mmap=False)
        queries = vecio.read_vectors(DATA / "query.bvecs", max_rows=N_QUERY, mmap=False)
        return base, queries
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(40, DIM_SYNTH)) * 4
    base = centers[rng.integers(40, size=N_BASE)] + rng.normal(size=(N_BASE, DIM_SYNTH))
    queries = centers[rng.integers(40, size=N_QUERY)] + rng.normal(size=(N_QUERY, DIM_SYNTH))
    return base.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Base, queries and exact ground truth on disk, plus one index built from them."""
    d = tmp_path_factory.mktemp("cli")
    base, queries = _real_or_synthetic()
    ext = ".bvecs" if base.dtype == np.uint8 else ".fvecs"
    paths = {"dir": d, "base": str(d / f"base{ext}"), "queries": str(d / f"queries{ext}"),
             "gt": str(d / "gt.ivecs"), "index": str(d / "base.binidx")}
    vecio.write_vectors(paths["base"], base)
    vecio.write_vectors(paths["queries"], queries)
    gt = binidx.exact_search(base, queries, 20).ids
    vecio.write_vectors(paths["gt"], gt)
    code, _, err = run(["build", paths["base"], "-o", paths["index"], "--n-lists", str(N_LISTS),
                        "-q"])
    assert code == 0, err
    paths.update(base_array=base, queries_array=queries, gt_array=gt)
    return paths


def run(argv: list[str], capsys=None) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def run_json(argv: list[str]) -> dict:
    code, out, err = run([*argv, "--json"])
    assert code == 0, err
    return json.loads(out)


def copy_index(files: dict, tmp_path: Path) -> str:
    dst = str(tmp_path / "copy.binidx")
    shutil.copyfile(files["index"], dst)
    return dst


def reference_recall(base, queries, found, k, metric="l2") -> float:
    """Tie-aware recall@k computed independently of the CLI, from the raw vectors."""
    exact = binidx.exact_search(base, queries, k, metric=metric)
    b = base.astype(np.float64)
    total = 0.0
    for qi, q in enumerate(queries.astype(np.float64)):
        kth = exact.distances[qi, k - 1]
        ids = [i for i in dict.fromkeys(found[qi, :k].tolist()) if i >= 0]
        dist = ((b[ids] - q) ** 2).sum(axis=1)
        total += np.count_nonzero(dist <= kth * (1 + 1e-6) + 1e-9) / k
    return total / len(queries)


# ------------------------------------------------------------------------- build / eval


def test_build_then_eval_recall_matches_ground_truth(files, tmp_path):
    k = 10
    res = tmp_path / "res.ivecs"
    code, _, err = run(["query", files["index"], files["queries"], "-k", k, "-o", res, "-q"])
    assert code == 0, err
    found = vecio.read_vectors(res, mmap=False)
    expected = reference_recall(files["base_array"], files["queries_array"], found, k)
    with_file = run_json(["eval", files["index"], files["queries"], files["gt"], "-k", k])
    exact = run_json(["eval", files["index"], files["queries"], "-k", k])
    assert with_file["recall@10"] == pytest.approx(expected, abs=1e-12)
    assert exact["recall@10"] == pytest.approx(expected, abs=1e-12)
    assert exact["ground_truth"] == "exact" and with_file["ground_truth"] == files["gt"]
    assert 0.5 < expected < 1.0 or expected == 1.0
    assert with_file["qps"] > 0 and with_file["queries"] == N_QUERY


def test_probing_everything_is_exact(files):
    n = len(files["base_array"])
    # Self-balancing may have split a bucket or two after the build: ask for more probes
    # than there are buckets (the CLI clips to n_lists).
    got = run_json(["eval", files["index"], files["queries"], files["gt"], "-k", 20,
                    "--n-probe", 10 * N_LISTS, "--n-rerank", n, "--threads", 1, "--repeat", 2])
    assert got["recall@20"] == 1.0
    assert N_LISTS <= got["n_probe"] < 10 * N_LISTS and got["repeat"] == 2


def test_build_summary_and_same_seed_same_file(files, tmp_path):
    summary = run_json(["build", files["base"], "-o", tmp_path / "a.binidx", "--n-lists",
                        N_LISTS])
    assert summary["vectors"] == len(files["base_array"])
    # N_LISTS trained; balancing may split a few oversized buckets after the add.
    assert N_LISTS <= summary["n_lists"] <= N_LISTS + 4 and summary["metric"] == "l2"
    assert summary["train_vectors"] == _kmeans.training_sample_size(len(files["base_array"]),
                                                                     N_LISTS)
    assert (tmp_path / "a.binidx").read_bytes() == Path(files["index"]).read_bytes()


def _block_owner(f):
    """The bucket of each block of codes / factors of a decoded index file."""
    sizes = f.arrays["list_sizes"]
    return np.repeat(np.arange(sizes.shape[0]), _storage.n_blocks(sizes))


def test_streaming_build_with_sampled_training(files, tmp_path, monkeypatch):
    """Small blocks and a sample smaller than the file: same index as blocks of any size."""
    monkeypatch.setattr(cli, "CHUNK_ROWS", 333)
    out = tmp_path / "small.binidx"
    code, _, err = run(["build", files["base"], "-o", out, "--n-lists", 16, "-q"])
    assert code == 0, err
    monkeypatch.setattr(cli, "CHUNK_ROWS", 1 << 20)
    code, _, err = run(["build", files["base"], "-o", tmp_path / "big.binidx", "--n-lists", 16,
                        "-q"])
    assert code == 0, err
    from binidx._format import read_index_file

    small, big = read_index_file(out), read_index_file(tmp_path / "big.binidx")
    assert small.params == big.params
    for name, arr in big.arrays.items():
        if name in ("factors", "factor_scales"):
            continue
        np.testing.assert_array_equal(small.arrays[name], arr, err_msg=name)
    # Factors are bytes in steps of per-bucket scales: blocks added one after the other
    # may grow a bucket's scale (to twice what it needs, re-quantising its bytes), one
    # add takes the exact scale.  Either way a factor is within a step of its value.
    small_f, big_f = (_storage.dequantize_factors(f.arrays["factors"].transpose(0, 2, 1),
                                                  f.arrays["factor_scales"][owner][:, None, :])
                      for f, owner in ((small, _block_owner(small)), (big, _block_owner(big))))
    step = np.maximum(small.arrays["factor_scales"], big.arrays["factor_scales"])
    assert (np.abs(small_f - big_f) <= 1.5 * step[_block_owner(big)][:, None, :] + 1e-6).all()
    assert (big.arrays["factor_scales"] <= small.arrays["factor_scales"] * (1 + 1e-6)).all()
    assert len(binidx.load(out)) == len(files["base_array"])


def test_cosine_build_from_hdf5_with_eval(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(3)
    train = rng.normal(size=(1500, 12)).astype(np.float32)
    test = rng.normal(size=(20, 12)).astype(np.float32)
    gt = binidx.exact_search(train, test, 10, metric="cosine").ids
    path = tmp_path / "fake-12-angular.hdf5"
    with h5py.File(path, "w") as f:
        f["train"], f["test"], f["neighbors"] = train, test, gt.astype(np.int32)
    idx = tmp_path / "cos.binidx"
    code, _, err = run(["build", f"{path}:train", "-o", idx, "--metric", "cosine",
                        "--n-lists", 8, "-q"])
    assert code == 0, err
    got = run_json(["eval", idx, f"{path}:test", f"{path}:neighbors", "-k", 10,
                    "--n-probe", 8, "--n-rerank", 1500])
    assert got["recall@10"] == 1.0


# ------------------------------------------------------------------------- query outputs


def test_query_outputs_agree_in_every_format(files, tmp_path):
    k = 5
    ids_npy, dist_fvecs = tmp_path / "r.npy", tmp_path / "d.fvecs"
    code, _, err = run(["query", files["index"], files["queries"], "-k", k, "-o", ids_npy,
                        "--distances", dist_fvecs, "-q"])
    assert code == 0, err
    ids, dist = np.load(ids_npy), vecio.read_vectors(dist_fvecs, mmap=False)
    assert ids.shape == dist.shape == (N_QUERY, k) and ids.dtype == np.int64
    index = binidx.load(files["index"])
    direct = index.search(files["queries_array"], k)
    np.testing.assert_array_equal(ids, direct.ids)
    np.testing.assert_array_equal(dist, direct.distances)

    for name in ("r.ivecs", "r.csv", "r.jsonl"):
        code, _, err = run(["query", files["index"], files["queries"], "-k", k, "-o",
                            tmp_path / name, "-q"])
        assert code == 0, err
    np.testing.assert_array_equal(vecio.read_vectors(tmp_path / "r.ivecs", mmap=False), ids)
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == N_QUERY
    first = json.loads(lines[3])
    assert first["query"] == 3 and first["ids"] == ids[3].tolist()
    assert np.allclose(first["distances"], dist[3], rtol=1e-7)
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0] == "query,rank,id,distance" and len(rows) == 1 + N_QUERY * k
    q, r, i, dv = rows[1 + 2 * k + 1].split(",")
    assert (int(q), int(r), int(i)) == (2, 1, ids[2, 1]) and float(dv) == pytest.approx(dist[2, 1])

    code, out, err = run(["query", files["index"], files["queries"], "-k", k, "-o", "-"])
    assert code == 0
    assert [json.loads(line)["ids"] for line in out.splitlines()] == ids.tolist()
    assert "searched" in err  # the summary goes to stderr when stdout carries results


def test_short_results_leave_out_padding(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    vecio.write_vectors(tmp_path / "x.npy", x)
    idx = tmp_path / "x.binidx"
    assert run(["build", tmp_path / "x.npy", "-o", idx, "--n-lists", 1, "-q"])[0] == 0
    code, out, _ = run(["query", idx, tmp_path / "x.npy", "-k", 8, "-o", "-", "-q"])
    assert code == 0
    assert [len(json.loads(line)["ids"]) for line in out.splitlines()] == [6] * 6
    assert run(["query", idx, tmp_path / "x.npy", "-k", 8, "-o", tmp_path / "r.ivecs", "-q"])[0] == 0
    assert (vecio.read_vectors(tmp_path / "r.ivecs")[:, 6:] == -1).all()


# --------------------------------------------------------------------- ids, add, remove


@pytest.mark.parametrize("ext", [".npy", ".txt", ".ivecs"])
def test_ids_round_trip(files, tmp_path, ext):
    n = len(files["base_array"])
    rng = np.random.default_rng(5)
    ids = rng.choice(2**31 - 1 if ext == ".ivecs" else 2**40, size=n, replace=False)
    id_file = tmp_path / f"ids{ext}"
    if ext == ".npy":
        np.save(id_file, ids)
    elif ext == ".txt":
        id_file.write_text("# one id per line\n" + "\n".join(map(str, ids)) + "\n")
    else:
        vecio.write_vectors(id_file, ids.reshape(-1, 1))
    idx = tmp_path / "ids.binidx"
    code, _, err = run(["build", files["base"], "-o", idx, "--ids", id_file, "--n-lists", 16,
                        "-q"])
    assert code == 0, err
    np.testing.assert_array_equal(binidx.load(idx).ids(), np.sort(ids))
    # Each of the first vectors, used as a query, finds itself (distance 0) under its id.
    queries = tmp_path / "self.npy"
    np.save(queries, files["base_array"][:25])
    code, _, err = run(["query", idx, queries, "-k", 1, "-o", tmp_path / "r.npy",
                        "--distances", tmp_path / "d.npy", "--n-probe", 16, "-q"])
    assert code == 0, err
    dist = np.load(tmp_path / "d.npy")[:, 0]
    found = np.load(tmp_path / "r.npy")[:, 0]
    # Duplicate vectors exist in real data: a distance-0 hit must carry one of their ids.
    assert (dist == 0).all()
    exact_dup = [set(np.flatnonzero((files["base_array"] == v).all(axis=1)).tolist())
                 for v in files["base_array"][:25]]
    position = {int(v): i for i, v in enumerate(ids)}
    assert all(position[int(f)] in dup for f, dup in zip(found, exact_dup))


def test_add_and_remove_rewrite_the_index(files, tmp_path):
    base = files["base_array"]
    half = len(base) // 2
    vecio.write_vectors(tmp_path / "a.npy", base[:half])
    vecio.write_vectors(tmp_path / "b.npy", base[half:])
    idx = tmp_path / "i.binidx"
    assert run(["build", tmp_path / "a.npy", "-o", idx, "--n-lists", 16, "-q"])[0] == 0
    new_ids = np.arange(10_000, 10_000 + len(base) - half)
    np.save(tmp_path / "new_ids.npy", new_ids)
    got = run_json(["add", idx, tmp_path / "b.npy", "--ids", tmp_path / "new_ids.npy"])
    assert got["added"] == len(base) - half and got["vectors"] == len(base)
    index = binidx.load(idx)
    assert int(new_ids[7]) in index
    np.testing.assert_array_equal(index.get([int(new_ids[7])])[0], base[half + 7])

    # Default ids continue after the largest one.
    got = run_json(["add", idx, tmp_path / "a.npy"])
    assert binidx.load(idx).ids().max() == new_ids.max() + half

    (tmp_path / "rm.txt").write_text("3\n10000\n10001\n")
    got = run_json(["remove", idx, tmp_path / "rm.txt"])
    assert (got["removed"], got["not_found"]) == (3, 0)
    got = run_json(["remove", idx, "4,5,5"])
    assert got["removed"] == 2 and got["vectors"] == len(base) + half - 5
    index = binidx.load(idx)
    assert 3 not in index and 10000 not in index and 4 not in index and 6 in index

    before = idx.read_bytes()
    code, _, err = run(["remove", idx, "6,999999"])
    assert code == 1
    assert re.search(r"record 1 holds id 999999, which is not in .*nothing was removed.*"
                     r"--ignore-missing", err)
    assert idx.read_bytes() == before  # an error leaves the file untouched
    got = run_json(["remove", idx, "6,999999", "--ignore-missing"])
    assert (got["removed"], got["not_found"]) == (1, 1)


def test_info_reports_header_counts_histogram_memory(files):
    code, out, err = run(["info", files["index"]])
    assert code == 0, err
    assert re.search(rf"vectors\s+{len(files['base_array']):,} of dim \d+, metric l2", out)
    assert f"binidx-index v{_format.FORMAT_VERSION}" in out and f"{N_LISTS} buckets" in out
    hist = [line for line in out.splitlines() if re.match(r"\s+\d+ -\s+\d+\s", line)]
    assert sum(int(line.split()[-1]) for line in hist) == N_LISTS
    got = run_json(["info", files["index"]])
    index = binidx.load(files["index"])
    assert got["memory"] == index.memory_usage()
    assert got["header"] == binidx.read_metadata(files["index"])
    assert sum(b["buckets"] for b in got["histogram"]) == N_LISTS
    assert got["n_probe"] == index.n_probe and got["vectors"] == len(index)


def test_probe_ratio_in_query_eval_and_info(files, tmp_path):
    idx = copy_index(files, tmp_path)
    q = files["queries_array"]
    index = binidx.load(idx)
    adaptive = index.search(q, 10, n_probe=16, n_rerank=50, probe_ratio=1.2)
    fixed = index.search(q, 10, n_probe=16, n_rerank=50)
    assert not np.array_equal(adaptive.ids, fixed.ids)  # the ratio changes what is visited
    base = ["query", idx, files["queries"], "-k", 10, "--n-probe", 16, "--n-rerank", 50]
    got = run_json([*base, "--probe-ratio", 1.2, "-o", tmp_path / "a.npy"])
    assert got["probe_ratio"] == 1.2 and got["n_probe"] == 16
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), adaptive.ids)
    code, out, err = run([*base, "-o", tmp_path / "a.npy", "--probe-ratio", "1.2"])
    assert code == 0 and "n_probe=16, probe_ratio=1.2, n_rerank=50" in out, err
    # An index whose default is a ratio: the CLI uses it unless told 'none'.
    index.probe_ratio = 1.2
    index.save(idx)
    assert run_json([*base, "-o", tmp_path / "d.npy"])["probe_ratio"] == 1.2
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), adaptive.ids)
    assert run_json([*base, "--probe-ratio", "none", "-o", tmp_path / "f.npy"])["probe_ratio"] is None
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), fixed.ids)
    assert binidx.load(idx).probe_ratio == 1.2  # a query does not rewrite the file
    ev = run_json(["eval", idx, files["queries"], files["gt"], "-k", 10, "--n-probe", 16,
                   "--n-rerank", 50])
    assert ev["probe_ratio"] == 1.2
    assert ev["recall@10"] == pytest.approx(
        reference_recall(files["base_array"], q, adaptive.ids, 10), abs=1e-12)
    code, out, err = run(["info", idx])
    assert code == 0 and "probe_ratio 1.2 (n_probe is a cap)" in out, err
    assert run_json(["info", idx])["probe_ratio"] == 1.2
    code, out, _ = run(["info", files["index"]])
    assert "probe_ratio none (fixed n_probe)" in out


# ------------------------------------------------------------------ malformed inputs


def _record_bytes(dim: int) -> int:
    return 4 + 4 * dim


def _make_inputs(d: Path) -> dict:
    """Small malformed files of every kind the issue lists, plus good ones around them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    vecio.write_vectors(d / "good.fvecs", x)
    raw = (d / "good.fvecs").read_bytes()
    rec = _record_bytes(8)
    bad = bytearray(raw)
    bad[5 * rec:5 * rec + 4] = np.int32(9).tobytes()
    (d / "inconsistent.fvecs").write_bytes(bytes(bad))
    (d / "truncated.fvecs").write_bytes(raw[:-7])
    with_nan = x.copy()
    with_nan[150, 2] = np.nan
    vecio.write_vectors(d / "nan.fvecs", with_nan)
    with_inf = x.copy()
    with_inf[42, 0] = np.inf
    np.save(d / "inf.npy", with_inf)
    zero = x.copy()
    zero[17] = 0
    vecio.write_vectors(d / "zero.fvecs", zero)
    (d / "empty.fvecs").write_bytes(b"")
    np.save(d / "empty.npy", np.zeros((0, 8), np.float32))
    vecio.write_vectors(d / "dim7.fvecs", x[:, :7])
    np.save(d / "dup_ids.npy", np.r_[np.arange(199), 12])
    np.save(d / "short_ids.npy", np.arange(10))
    np.save(d / "float_ids.npy", np.arange(200.0))
    (d / "bad_ids.txt").write_text("1\n2\nseven\n")
    np.save(d / "gt_rows.npy", np.zeros((3, 10), np.int64))
    np.save(d / "gt_cols.npy", np.zeros((200, 4), np.int64))
    np.save(d / "gt_unknown.npy", np.full((200, 10), 123456, np.int64))
    assert cli.main(["build", str(d / "good.fvecs"), "-o", str(d / "good.binidx"),
                     "--n-lists", "4", "-q"]) == 0
    return {"x": x}


MALFORMED = [
    # (command line with {d} for the folder, exit code, message pattern)
    ("build {d}/inconsistent.fvecs -o {d}/o.binidx",
     1, r"inconsistent\.fvecs: record 5 declares dimension 9 but the file's first record has 8"),
    ("build {d}/truncated.fvecs -o {d}/o.binidx",
     1, r"truncated\.fvecs: record 199 is truncated"),
    ("build {d}/nan.fvecs -o {d}/o.binidx --n-lists 4",
     1, r"nan\.fvecs: record 150 contains NaN in column 2"),
    ("add {d}/good.binidx {d}/nan.fvecs",
     1, r"nan\.fvecs: record 150 contains NaN in column 2"),
    ("query {d}/good.binidx {d}/nan.fvecs -o {d}/r.npy",
     1, r"nan\.fvecs: record 150 contains NaN in column 2"),
    ("build {d}/inf.npy -o {d}/o.binidx --n-lists 4",
     1, r"inf\.npy: record 42 contains an infinite value in column 0"),
    ("build {d}/zero.fvecs -o {d}/o.binidx --metric cosine --n-lists 4",
     1, r"zero\.fvecs: record 17 is a zero vector"),
    ("build {d}/empty.fvecs -o {d}/o.binidx", 1, r"empty\.fvecs: the file is empty"),
    ("build {d}/empty.npy -o {d}/o.binidx", 1, r"empty\.npy: holds no vectors"),
    ("query {d}/good.binidx {d}/dim7.fvecs -o {d}/r.npy",
     1, (r"dim7\.fvecs: record 0 has dimension 7, but the index .*good\.binidx holds "
         r"vectors of dimension 8")),
    ("add {d}/good.binidx {d}/dim7.fvecs", 1, r"dim7\.fvecs: record 0 has dimension 7"),
    ("build {d}/missing.fvecs -o {d}/o.binidx", 1, r"missing\.fvecs: no such file"),
    ("build {d}/good.vec -o {d}/o.binidx", 1, r"good\.vec: unknown vector file type"),
    ("build {d}/good.fvecs -o {d}/no/such/o.binidx",
     1, r"o\.binidx: cannot write the index: folder .* does not exist"),
    ("build {d}/good.fvecs -o {d}/o.binidx --n-lists 500",
     1, r"good\.fvecs: holds 200 vectors, fewer than --n-lists 500"),
    ("build {d}/good.fvecs -o {d}/o.binidx --ids {d}/dup_ids.npy",
     1, r"dup_ids\.npy: id 12 appears at records 12 and 199"),
    ("build {d}/good.fvecs -o {d}/o.binidx --ids {d}/short_ids.npy",
     1, r"short_ids\.npy: holds 10 ids, but .*good\.fvecs holds 200 vectors"),
    ("build {d}/good.fvecs -o {d}/o.binidx --ids {d}/float_ids.npy",
     1, r"float_ids\.npy: holds float64 values; ids must be integers"),
    ("build {d}/good.fvecs -o {d}/o.binidx --ids {d}/bad_ids.txt",
     1, r"bad_ids\.txt: not a valid \.txt file of integer ids \(.*'seven'.*row 2"),
    ("add {d}/good.binidx {d}/good.fvecs --ids {d}/dup_ids.npy",
     1, r"dup_ids\.npy: id 12 appears at records 12 and 199"),
    ("info {d}/good.fvecs", 1, r"good\.fvecs is not a binidx index file"),
    ("query {d}/missing.binidx {d}/good.fvecs -o {d}/r.npy",
     1, r"missing\.binidx: no such index file"),
    ("eval {d}/good.binidx {d}/good.fvecs {d}/gt_rows.npy",
     1, r"gt_rows\.npy: holds 3 rows, but .*good\.fvecs holds 200 queries"),
    ("eval {d}/good.binidx {d}/good.fvecs {d}/gt_cols.npy -k 10",
     1, r"gt_cols\.npy: lists 4 neighbours per query, fewer than -k 10"),
    ("eval {d}/good.binidx {d}/good.fvecs {d}/gt_unknown.npy",
     1, r"gt_unknown\.npy: record 0 lists id 123456, which is not in the index"),
    ("remove {d}/good.binidx 1,2,77777", 1, r"record 2 holds id 77777, which is not in"),
    # Usage errors: wrong whatever the files hold.
    ("query {d}/good.binidx {d}/good.fvecs -o {d}/r.txt", 2, r"-o .*r\.txt: unknown result file type"),
    ("query {d}/good.binidx {d}/good.fvecs -o {d}/r.npy --distances {d}/d.ivecs",
     2, r"--distances .*d\.ivecs: unknown result file type"),
    ("query {d}/good.binidx {d}/good.fvecs -o {d}/r.npy -k 0",
     2, r"argument -k: expected a positive integer, got '0'"),
    ("query {d}/good.binidx {d}/good.fvecs -o {d}/r.npy --probe-ratio 0.5",
     2, r"--probe-ratio must be a number >= 1 \(a ratio.* got 0\.5"),
    ("eval {d}/good.binidx {d}/good.fvecs --probe-ratio nan",
     2, r"--probe-ratio must be a number >= 1 \(a ratio.* got nan"),
    ("eval {d}/good.binidx {d}/good.fvecs --probe-ratio wide",
     2, r"argument --probe-ratio: expected a number >= 1 or 'none', got 'wide'"),
    ("build {d}/good.fvecs -o {d}/o.binidx --n-bits 100",
     2, r"argument --n-bits: expected a multiple of 64"),
    ("build {d}/good.fvecs -o {d}/o.binidx --metric hamming", 2, r"argument --metric: invalid choice"),
    ("build {d}/good.fvecs", 2, r"the following arguments are required: -o/--output"),
    ("frobnicate", 2, r"invalid choice: 'frobnicate'"),
]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("malformed")
    _make_inputs(d)
    return d


@pytest.mark.parametrize("line, code, pattern", MALFORMED, ids=[m[0].split()[0] + ":" + m[2][:40]
                                                               for m in MALFORMED])
def test_malformed_inputs_give_one_line_and_exit_code(bad_dir, line, code, pattern):
    argv = line.format(d=bad_dir).split()
    got, out, err = run(argv)
    assert got == code, err
    assert re.search(pattern, err), err
    assert "Traceback" not in err and out == ""
    if code == 1:
        assert err.startswith("binidx: error: ") and err.count("\n") == 1
    assert not (bad_dir / "o.binidx").exists()  # nothing half-built is left behind


def test_debug_shows_the_exception(bad_dir):
    with pytest.raises(VectorFileError, match=r"record 150 contains NaN"):
        cli.main(["build", str(bad_dir / "nan.fvecs"), "-o", str(bad_dir / "o.binidx"),
                  "--n-lists", "4", "--debug"])


def test_nan_in_a_later_block_names_the_file_record(bad_dir, monkeypatch):
    monkeypatch.setattr(cli, "CHUNK_ROWS", 64)  # record 150 is row 22 of the third block
    code, _, err = run(["build", bad_dir / "nan.fvecs", "-o", bad_dir / "o.binidx",
                        "--n-lists", 2])
    assert code == 1 and "nan.fvecs: record 150 contains NaN in column 2" in err


# ------------------------------------------------------------------ help, docs, entry


def _subparsers() -> dict:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def test_every_command_has_help_with_an_example():
    commands = _subparsers()
    assert set(commands) == set(cli.COMMANDS) == {"build", "query", "add", "remove", "info",
                                                  "eval"}
    for name in commands:
        code, out, _ = run([name, "--help"])
        assert code == 0
        example = out.split("example:", 1)[1]
        assert f"binidx {name} " in example, name


def test_docs_describe_every_command_and_option():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, parser in _subparsers().items():
        assert re.search(rf"^## `binidx {name}", text, re.MULTILINE), f"docs/cli.md lacks `binidx {name}`"
        section = text.split(f"## `binidx {name}", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in section or flag in text.split("## ", 2)[1], \
                        f"docs/cli.md does not mention {flag} of binidx {name}"


def test_python_dash_m_and_version(bad_dir):
    version = subprocess.run([sys.executable, "-m", "binidx", "--version"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.strip() == f"binidx {binidx.__version__}"
    proc = subprocess.run([sys.executable, "-m", "binidx", "query", str(bad_dir / "good.binidx"),
                           str(bad_dir / "truncated.fvecs"), "-o", "-"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "truncated.fvecs: record 199 is truncated" \
        in proc.stderr
    env = {**os.environ, "COLUMNS": "80"}
    usage = subprocess.run([sys.executable, "-m", "binidx"], capture_output=True, text=True,
                           timeout=60, env=env, check=False)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: binidx")


def test_quiet_and_json_flags_in_either_position(files, tmp_path):
    code, out, err = run(["--quiet", "build", files["base"], "-o", tmp_path / "q.binidx",
                          "--n-lists", 8])
    assert (code, out, err) == (0, "", "")
    code, out, _ = run(["--json", "info", tmp_path / "q.binidx"])
    assert code == 0 and json.loads(out)["n_lists"] == 8


def test_tie_aware_recall_counts_ties_once():
    true_keys = np.array([[0.0, 1.0, 2.0]])
    true_ids = np.array([[4, 5, 6]])
    # id 9 ties with the 3rd true neighbour: correct; a repeated id counts once.
    assert cli.tie_aware_recall(np.array([[0.0, 2.0, 3.0]]), np.array([[4, 9, 8]]), true_keys,
                                true_ids).tolist() == [2 / 3]
    assert cli.tie_aware_recall(np.array([[0.0, 0.0, 1.0]]), np.array([[4, 4, 5]]), true_keys,
                                true_ids).tolist() == [2 / 3]
    # Fewer true neighbours than k (tiny index): the denominator is what exists.
    assert cli.tie_aware_recall(np.array([[0.0, np.inf]]), np.array([[4, -1]]),
                                np.array([[0.0, np.inf]]), np.array([[4, -1]])).tolist() == [1.0]
