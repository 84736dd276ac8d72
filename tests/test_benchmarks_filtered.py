"""Smoke test of ``python -m benchmarks.filtered`` on tiny synthetic data, in seconds.

It runs the real command and checks what it writes (a line per engine setting and
filter, no result that fails its filter, binidx never short of k), plus the two pieces
that are easy to get wrong: the filtered ground truth and hnswlib's "fewer than k" path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from binidx._reference import RECALL_TARGET_DEFAULTS

pytest.importorskip("faiss")
hnswlib = pytest.importorskip("hnswlib")

from benchmarks.filtered import (
    ENGINES,
    _HnswlibSearch,
    filtered_ground_truth,
    make_labels,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "synthetic:n=3000,nq=30,dim=16,seed=5"


def test_command_writes_every_engine_and_filter(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "BINIDX_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.filtered", "--dataset", DATA, "--out", str(out),
         "--repeats", "1", "--budget-s", "1", "--min-time", "0",
         "--selectivities", "0.5,0.01"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "filtered.jsonl", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert not [ln for ln in lines if "skipped" in ln]
    assert {ln["engine"] for ln in lines} == set(ENGINES)
    assert {ln["filter"] for ln in lines} == {"none", "50%", "1%"}
    # binidx twice (default and doubled), binidx-compiled once, every other engine twice.
    assert len(lines) == 3 * (3 + 2 * 4)
    # The IVF-PQ + refine index takes its selector through base_index_params; if FAISS
    # ignored it, ids outside the filter would show up here.
    assert all(ln["wrong_results"] == 0 for ln in lines)
    for ln in lines:
        if ln["engine"].startswith("binidx"):
            assert ln["short_fraction"] == 0.0, ln
            assert ln["recall@10"] >= RECALL_TARGET_DEFAULTS, ln
    assert next(ln["n_match"] for ln in lines if ln["filter"] == "1%") < 100
    md = (out / "filtered.md").read_text(encoding="utf-8")
    for title in ("## Recall@10", "## QPS (1 thread)", "## Queries short of k results"):
        assert title in md
    assert "| binidx-compiled |" in md and "`IVF64,PQ8x4fs,RFlat`" in md
    assert md in proc.stdout


def test_filtered_ground_truth_is_brute_force_over_allowed_rows():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((7, 8)).astype(np.float32)
    rows = np.flatnonzero(make_labels(500, 10, seed=1) < 3)
    got = filtered_ground_truth(base, queries, rows, 5, "l2")
    dist = ((queries[:, None, :].astype(np.float64) - base[None, rows]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(got, rows[np.argsort(dist, axis=1)[:, :5]])
    got_ip = filtered_ground_truth(base, queries, rows, 5, "ip")
    scores = queries @ base[rows].T
    np.testing.assert_array_equal(got_ip, rows[np.argsort(-scores, axis=1)[:, :5]])


def test_hnswlib_short_results_are_recovered_not_raised():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    index = hnswlib.Index(space="l2", dim=8)
    index.init_index(max_elements=400, M=8, ef_construction=50, random_seed=1)
    index.add_items(x, np.arange(400), num_threads=1)
    index.set_ef(20)
    allowed = np.zeros(400, bool)
    allowed[[3, 50, 77]] = True  # fewer than k: hnswlib raises for the whole batch
    search = _HnswlibSearch(index, allowed.tolist().__getitem__)
    search.prepare(x[:4], 10)
    assert search.per_query
    ids = search.complete(x[:4], search(x[:4], 10), 10)
    assert ids.shape == (4, 10)
    assert (ids[:, 3:] == -1).all()
    assert all(set(row[:3].tolist()) == {3, 50, 77} for row in ids)
