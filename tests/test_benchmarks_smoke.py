"""Smoke test of the benchmark suite: the real CLI on tiny synthetic data, in seconds.

It runs ``python -m benchmarks run`` / ``churn`` / ``summary`` / ``plot`` as a user would
(subprocess, from the repository root) and checks what they write: JSON lines with every
documented field, exact search at recall 1.0, a summary table and PNG plots.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("hnswlib")

from benchmarks.adapters import get_adapter_class
from benchmarks.config import dominated, expand
from benchmarks.metrics import RecallEvaluator, exact_knn
from benchmarks.report import pareto_front

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "synthetic:n=1500,nq=40,dim=16,seed=3"
FIELDS = ("dataset", "engine", "factory", "build_params", "query_params", "mode", "threads",
          "build_s", "bytes_per_vector_resident", "bytes_per_vector_total", "qps",
          "recall@1", "recall@10", "recall@100", "versions", "cpu", "k", "n_base")


def _binidx_ready() -> bool:
    try:
        import binidx
    except ImportError:
        return False
    return hasattr(binidx, "Index")


def _cli(*args: str, tmp_path) -> str:
    env = {**os.environ, "BINIDX_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_run_end_to_end(tmp_path):
    engines = ["faiss-exact", "faiss-ivf", "hnswlib"] + (["binidx"] if _binidx_ready() else [])
    out = tmp_path / "out"
    stdout = _cli("run", "--dataset", DATA, "--engines", ",".join(engines), "--out", str(out),
                  "--repeats", "1", "--single-queries", "10", tmp_path=tmp_path)
    lines = _lines(out / "results.jsonl")
    assert {ln["engine"] for ln in lines} == set(engines)
    assert {ln["mode"] for ln in lines} == {"batch-1t", "batch-all", "single"}
    for ln in lines:
        missing = [f for f in FIELDS if f not in ln]
        assert not missing, f"{ln['engine']} line lacks {missing}"
        assert ln["qps"] > 0 and 0.0 <= ln["recall@10"] <= 1.0
        assert ln["recall@100"] is None  # k=10: recall@100 cannot be measured
    # The config's confirm phase adds lines (tests/test_benchmarks_confirm.py checks them).
    lines = [ln for ln in lines if ln["phase"] == "sweep"]
    exact = [ln for ln in lines if ln["engine"] == "faiss-exact"]
    assert len(exact) == 3
    assert all(ln["recall@1"] == 1.0 and ln["recall@10"] == 1.0 for ln in exact)
    # A flat index stores 16 float32 per vector, plus a small header.
    assert 64 <= exact[0]["bytes_per_vector_total"] < 65
    assert exact[0]["factory"] == "Flat"
    single = [ln for ln in lines if ln["mode"] == "single"]
    assert all(ln["latency_ms_p99"] >= ln["latency_ms_p50"] > 0 for ln in single)
    # One-thread modes also carry QPS from the search thread's CPU time; all threads not.
    assert all(ln["cpu_qps"] > 0 for ln in lines if ln["mode"] != "batch-all")
    assert not any("cpu_qps" in ln for ln in lines if ln["mode"] == "batch-all")
    assert all(ln["n_queries_timed"] == 10 for ln in single)
    ivf = [ln for ln in lines if ln["engine"] == "faiss-ivf"]
    assert {ln["factory"] for ln in ivf} == {"IVF64,Flat"}
    # The widest probe of a 64-list IVF-Flat scans everything: exact.
    assert max(ln["recall@10"] for ln in ivf) == 1.0
    if "binidx" in engines:
        # Adaptive probing is swept: ratio points and fixed ones (null) at the same caps.
        sweep = [ln["query_params"] for ln in lines if ln["engine"] == "binidx"]
        ratios = {p["probe_ratio"] for p in sweep}
        assert None in ratios and ratios - {None} <= {1.6, 1.8, 2.0} and len(ratios) > 1
        assert {p["n_probe"] for p in sweep if p["probe_ratio"]} & \
            {p["n_probe"] for p in sweep if p["probe_ratio"] is None}

    summary = (out / "summary.md").read_text()
    assert summary == stdout.rstrip("\n") or summary in stdout
    assert "QPS @ R10>=0.95" in summary and "| faiss-exact |" in summary
    assert summary.count("QPS from the search thread's CPU time") == 2  # batch-1t, single
    assert "`IVF64,Flat`" in summary and "python -m benchmarks run" in summary
    pytest.importorskip("matplotlib")
    pngs = sorted(p.name for p in out.glob("pareto-*.png"))
    assert len(pngs) == 3
    assert (out / pngs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_and_plot_commands(tmp_path):
    out = tmp_path / "out"
    _cli("run", "--dataset", DATA, "--engines", "faiss-exact", "--modes", "batch-1t",
         "--out", str(out), "--repeats", "1", "--no-plot", tmp_path=tmp_path)
    assert not list(out.glob("*.png"))
    text = _cli("summary", str(out / "results.jsonl"), "--out", str(tmp_path / "s"),
                tmp_path=tmp_path)
    assert "Batched queries, 1 thread" in text and "| faiss-exact | " in text
    assert (tmp_path / "s" / "summary.md").read_text() in text
    pytest.importorskip("matplotlib")
    printed = _cli("plot", str(out / "results.jsonl"), "--out", str(tmp_path / "p"),
                   tmp_path=tmp_path)
    assert printed.strip().endswith("pareto-synthetic-1500x16-batch-1t.png")


def test_churn_end_to_end(tmp_path):
    engines = ["faiss-ivf", "hnswlib"] + (["binidx"] if _binidx_ready() else [])
    out = tmp_path / "churn"
    text = _cli("churn", "--dataset", DATA, "--engines", ",".join(engines), "--rounds", "2",
                "--out", str(out), tmp_path=tmp_path)
    lines = _lines(out / "churn-random.jsonl")
    for engine in engines:
        rounds = [ln["round"] for ln in lines if ln["engine"] == engine]
        assert rounds == [0, 1, 2, "rebuild"]
    for ln in lines:
        assert ln["n_live"] == 750  # 10% out and 10% in keeps the live count
        assert ln["stale_results"] == 0, f"{ln['engine']} returned deleted ids"
        if ln["round"] not in (0, "rebuild"):
            assert ln["insert_per_s"] > 0 and ln["delete_per_s"] > 0
    assert "## churn: synthetic-1500x16, faiss-ivf, random inserts" in text


def test_recall_counts_ties_and_only_ties():
    base = np.array([[0.0], [1.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    queries = np.array([[0.0]], dtype=np.float32)
    gt = exact_knn(base, queries, 5, "l2")
    assert gt[0].tolist() == [0, 1, 2, 3, 4]  # the tie at distance 1 goes to the smaller id
    ev = RecallEvaluator(base, queries, gt, "l2")
    # Id 2 is as close as id 1, the true 2nd neighbour: full recall@1-style credit.
    assert ev.evaluate(np.array([[0, 2]]))["recall@1"] == 1.0
    assert ev.evaluate(np.array([[2, 0, 1, 3, 4, 4, 4, 4, 4, 4]]))["recall@10"] is None
    ev10 = RecallEvaluator(np.vstack([base] * 4), queries, exact_knn(
        np.vstack([base] * 4), queries, 20, "l2"), "l2")
    # A duplicated id counts once; -1 (not found) counts as a miss.
    assert ev10.evaluate(np.array([[0, 0, 5, 10, 15, 1, 2, 6, 7, -1]]))["recall@10"] == 0.8
    assert ev10.evaluate(np.array([[4] * 10]))["recall@1"] == 0.0


def test_exact_knn_matches_brute_force_for_ip():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 8)).astype(np.float32)
    q = rng.normal(size=(7, 8)).astype(np.float32)
    want = np.argsort(-(q.astype(np.float64) @ base.T.astype(np.float64)), axis=1)[:, :10]
    assert np.array_equal(exact_knn(base, q, 10, "ip"), want)


def test_pareto_and_grids():
    assert pareto_front([(0.9, 100), (0.95, 50), (0.8, 80), (0.99, 60)]) == [(0.9, 100), (0.99, 60)]
    assert expand({"a": [1, 2], "b": 3}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert expand([{"M": 8}]) == [{"M": 8}] and expand(None) == [{}]
    assert dominated({"nprobe": 4, "k_factor": 2}, {"nprobe": 8, "k_factor": 2})
    assert not dominated({"nprobe": 4, "k_factor": 2}, {"nprobe": 8, "k_factor": 1})
    # binidx's probe_ratio: a larger ratio visits more buckets, null (fixed) visits all.
    reached = {"n_probe": 16, "n_rerank": 50, "probe_ratio": 1.8}
    assert dominated(reached, {"n_probe": 16, "n_rerank": 50, "probe_ratio": 2.0})
    assert dominated(reached, {"n_probe": 32, "n_rerank": 50, "probe_ratio": None})
    assert not dominated(reached, {"n_probe": 32, "n_rerank": 50, "probe_ratio": 1.6})
    fixed = {"n_probe": 16, "n_rerank": 50, "probe_ratio": None}
    assert dominated(fixed, dict(fixed))
    assert not dominated(fixed, {"n_probe": 32, "n_rerank": 50, "probe_ratio": 2.0})


def test_adapter_errors_name_the_fix():
    with pytest.raises(KeyError, match="unknown engine 'faiss-ivff'; known engines: binidx"):
        get_adapter_class("faiss-ivff")
    adapter = get_adapter_class("faiss-ivf")("l2", 4, n_lists=2)
    adapter.fit(np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"faiss-ivf has no search parameter \['ef'\]; "
                                         r"it accepts \['nprobe'\]"):
        adapter.set_query_params(ef=10)


def test_folder_dataset_gets_cached_ground_truth(tmp_path):
    from benchmarks.datasets import load_dataset
    from binidx.vecio import write_vectors

    rng = np.random.default_rng(1)
    folder = tmp_path / "tiny"
    folder.mkdir()
    write_vectors(str(folder / "base.fvecs"), rng.normal(size=(300, 6)).astype(np.float32))
    write_vectors(str(folder / "query.fvecs"), rng.normal(size=(5, 6)).astype(np.float32))
    (folder / "meta.json").write_text('{"metric": "inner product"}')
    cache = tmp_path / "cache"
    ds = load_dataset(str(folder), cache_dir=str(cache))
    assert ds.name == "tiny" and ds.metric == "ip" and ds.gt.shape == (5, 100)
    assert np.array_equal(ds.gt, exact_knn(ds.base, ds.queries, 100, "ip"))
    assert any("ground truth computed" in n for n in ds.notes)
    again = load_dataset(str(folder), cache_dir=str(cache), metric="cosine")
    assert again.metric == "ip" and np.allclose(np.linalg.norm(again.base, axis=1), 1.0)
    cached = load_dataset(str(folder), cache_dir=str(cache))
    assert not cached.notes and np.array_equal(cached.gt, ds.gt)
    with pytest.raises(FileNotFoundError, match="has no base.\\* and query.\\* vector files"):
        load_dataset(str(cache), cache_dir=str(cache))


def test_summary_picks_fastest_setting_per_recall_level():
    from benchmarks.report import summary_markdown

    def line(engine, recall, qps, **extra):
        return {"dataset": "d", "n_base": 10, "dim": 2, "metric": "l2", "n_queries": 5, "k": 10,
                "mode": "batch-1t", "threads": 1, "engine": engine, "factory": engine.upper(),
                "build_params": {}, "query_params": {"p": qps}, "recall@10": recall, "qps": qps,
                "build_s": 1.0, "bytes_per_vector_resident": 8.0,
                "bytes_per_vector_total": 16.0, **extra}

    text = summary_markdown([
        line("binidx", 0.96, 300), line("binidx", 0.995, 100),
        line("other", 0.91, 900), line("other", 0.97, 150), line("other", 0.98, 120),
        {"dataset": "d", "engine": "gone", "skipped": "library missing"},
    ])
    rows = {r.split(" | ")[0].strip("| "): r for r in text.splitlines() if r.startswith("| ")}
    assert rows["binidx"].startswith("| binidx | 300 | 300 | 100 | 0.9950 |")
    assert rows["other"].startswith("| other | 900 | 150 | not reached | 0.9800 |")
    assert rows["other"].endswith("| 2.00x |")  # binidx 300 QPS / other 150 QPS at 0.95
    assert "- gone: library missing" in text


def test_hdf5_and_npy_datasets(tmp_path):
    h5py = pytest.importorskip("h5py")
    from benchmarks.datasets import load_dataset

    rng = np.random.default_rng(2)
    base, queries = rng.normal(size=(200, 4)).astype(np.float32), rng.normal(size=(3, 4))
    path = tmp_path / "toy-angular.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "angular"
        f["train"], f["test"] = base, queries.astype(np.float32)
        f["neighbors"] = np.zeros((3, 5), dtype=np.int32)  # too short: must be recomputed
    ds = load_dataset(str(path), cache_dir=str(tmp_path / "c"))
    assert ds.name == "toy-angular" and ds.metric == "ip" and ds.gt.shape == (3, 100)
    assert np.array_equal(ds.gt, exact_knn(ds.base, ds.queries, 100, "ip"))

    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "q.npy", queries.astype(np.float32))
    with pytest.raises(ValueError, match="single vector file; pass the queries with --queries"):
        load_dataset(str(tmp_path / "b.npy"))
    ds = load_dataset(str(tmp_path / "b.npy"), queries=str(tmp_path / "q.npy"),
                      max_base=150, cache_dir=str(tmp_path / "c"))
    assert ds.name == "b-150" and ds.metric == "l2" and len(ds.base) == 150
    assert np.array_equal(ds.gt, exact_knn(base[:150], ds.queries, 100, "l2"))
