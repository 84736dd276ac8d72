"""The benchmark suite's confirm phase: candidate tracking, adapter release, interleaved
rounds, the median-of-ratios report, and one real CLI run on tiny synthetic data.

Everything but the last test runs on fake adapters and hand-built lines, in milliseconds.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import weakref
from typing import ClassVar

import numpy as np
import pytest

from benchmarks import runner
from benchmarks.adapters.base import Adapter, pad_ids
from benchmarks.config import check_confirm, load_config
from benchmarks.datasets import Dataset
from benchmarks.metrics import exact_knn
from benchmarks.report import confirmed_ratios, summary_markdown
from benchmarks.runner import CandidatePool, run_sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("batch-1t", "batch-all", "single")


class Fake(Adapter):
    """An adapter whose recall@10 is exactly ``p / 10``: it returns the first ``p`` true
    neighbours and -1 after them.  Every instance alive is in ``Fake.live``."""

    name = "fake"
    query_keys = ("p",)
    live: ClassVar[weakref.WeakSet] = weakref.WeakSet()
    fits = 0
    gt: np.ndarray
    rows: dict

    def __init__(self, metric="l2", dim=4, **build_params):
        super().__init__(metric, dim, **build_params)
        Fake.live.add(self)

    def fit(self, x, ids=None):
        Fake.fits += 1

    def query(self, q, k):
        p = int(self.query_params.get("p", k))
        rows = [Fake.rows[v.tobytes()] for v in np.asarray(q, dtype=np.float32)]
        return pad_ids(Fake.gt[rows, :p], k)

    def memory_bytes(self):
        return {"resident": 100, "total": 200}

    def factory(self):
        return f"Fake({self.build_params})"


@pytest.fixture
def fake_registry(monkeypatch):
    """Engines fake-a, fake-b, fake-c, all built from ``Fake``."""
    Fake.fits = 0
    monkeypatch.setattr(runner, "get_adapter_class", lambda name: Fake)
    monkeypatch.setattr(runner, "log", lambda msg: None)
    yield
    Fake.live = weakref.WeakSet()


def _dataset() -> Dataset:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 4)).astype(np.float32)
    queries = rng.normal(size=(12, 4)).astype(np.float32)
    gt = exact_knn(base, queries, 100, "l2")
    Fake.gt, Fake.rows = gt, {v.tobytes(): i for i, v in enumerate(queries)}
    return Dataset("toy", base, queries, "l2", gt, "test")


def _sweep_line(recall: float, qps: float) -> dict:
    return {"recall@10": recall, "cpu_qps": qps, "qps": qps}


def _brute_force_top(offers: list[tuple], mode: str, target: float, n: int) -> list[tuple]:
    """The ``n`` fastest offers of ``mode`` reaching ``target``; ties to the first offered."""
    ok = [(qps, build, p) for m, build, p, recall, qps in offers
          if m == mode and recall >= target]
    return [(b, p) for _, b, p in sorted(ok, key=lambda o: -o[0])[:n]]


# -- candidate tracking and adapter release ------------------------------------------

def test_overtaken_adapter_is_released_at_once():
    Fake.live = weakref.WeakSet()
    pool = CandidatePool("fake", [0.9], 1)
    a = pool.start_build(Fake(), {"factory": "A"})
    pool.offer(a, "batch-1t", {"p": 9}, _sweep_line(0.95, 10.0))
    pool.end_build(a)
    assert len(Fake.live) == 1  # A holds the candidate: kept after its sweep
    b = pool.start_build(Fake(), {"factory": "B"})
    pool.offer(b, "batch-1t", {"p": 8}, _sweep_line(0.85, 99.0))  # too inaccurate
    assert len(Fake.live) == 2
    pool.offer(b, "batch-1t", {"p": 9}, _sweep_line(0.92, 20.0))  # overtakes A's point
    assert len(Fake.live) == 1 and list(pool.kept()) == [b]  # A released mid-sweep of B
    c = pool.start_build(Fake(), {"factory": "C"})
    pool.offer(c, "batch-1t", {"p": 10}, _sweep_line(1.0, 5.0))  # slower: no candidate
    assert len(Fake.live) == 2  # C is still being swept
    pool.end_build(c)
    assert len(Fake.live) == 1 and pool.base_line(b) == {"factory": "B"}
    pool.close()
    assert len(Fake.live) == 0


def test_pool_keeps_exactly_the_builds_of_the_top_candidates():
    Fake.live = weakref.WeakSet()
    rng = np.random.default_rng(7)
    targets, n, modes = [0.95, 0.99], 2, MODES
    pool = CandidatePool("fake", targets, n)
    offers: list[tuple] = []
    for _ in range(12):
        build = pool.start_build(Fake(), {})
        for p in range(6):
            for mode in modes:
                recall = float(rng.choice([0.9, 0.96, 0.995]))
                qps = float(rng.integers(1, 50))  # integers: ties happen
                offers.append((mode, build, {"p": p}, recall, qps))
                pool.offer(build, mode, {"p": p}, _sweep_line(recall, qps))
        pool.end_build(build)
        want = {(m, t): _brute_force_top(offers, m, t, n) for m in modes for t in targets}
        got = {key: [(pt.build, pt.query_params) for pt in ranked]
               for key, ranked in pool.best.items()}
        assert got == {key: top for key, top in want.items() if top}
        held = {b for top in want.values() for b, _ in top}
        assert set(pool.kept()) == held
        assert len(Fake.live) == len(held) <= n * len(targets) * len(modes)


def test_points_measures_a_shared_candidate_once_with_every_role():
    pool = CandidatePool("fake", [0.95, 0.99], 2)
    build = pool.start_build(Fake(), {})
    pool.offer(build, "single", {"p": 1}, _sweep_line(0.96, 30.0))
    pool.offer(build, "single", {"p": 2}, _sweep_line(0.995, 20.0))
    pool.offer(build, "single", {"p": 3}, _sweep_line(0.999, 10.0))
    points = {pt.query_params["p"]: pt.roles for pt in pool.points("single")}
    assert points == {1: [(0.95, 0)], 2: [(0.95, 1), (0.99, 0)], 3: [(0.99, 1)]}
    assert pool.points("batch-1t") == []


def test_batch_all_ranks_by_wall_qps_and_one_thread_modes_by_cpu_qps():
    pool = CandidatePool("fake", [0.9], 1)
    build = pool.start_build(Fake(), {})
    for mode in ("batch-all", "batch-1t"):
        pool.offer(build, mode, {"p": 1}, {"recall@10": 0.95, "qps": 10.0, "cpu_qps": 90.0})
        pool.offer(build, mode, {"p": 2}, {"recall@10": 0.95, "qps": 20.0, "cpu_qps": 80.0})
    assert [pt.query_params for pt in pool.points("batch-all")] == [{"p": 2}]
    assert [pt.query_params for pt in pool.points("batch-1t")] == [{"p": 1}]


# -- run_sweeps: interleaved rounds on fake engines ------------------------------------

def _fake_config(rounds: int) -> dict:
    grid = {"build": {"n": [1, 2, 3]}, "query": {"p": [9, 10]}}
    return {"k": 10, "repeats": 1, "single_queries": 5, "stop_at_recall": None,
            "max_batch_s": None, "modes": list(MODES), "path": "fake.json",
            "confirm": {"rounds": rounds, "targets": [0.9, 0.95], "candidates": 2},
            "engines": {"fake-a": grid, "fake-b": grid, "fake-c": grid}}


def test_confirm_rounds_rotate_engines_and_never_rebuild(fake_registry):
    ds, sink = _dataset(), io.StringIO()
    lines = run_sweeps(ds, _fake_config(rounds=3), ["fake-a", "fake-b", "fake-c"], sink)
    assert Fake.fits == 9  # 3 engines x 3 builds, none rebuilt for the confirm phase
    assert len(Fake.live) == 0  # every adapter released when the run ends
    assert [json.loads(s) for s in sink.getvalue().splitlines()] == lines
    sweep = [ln for ln in lines if ln["phase"] == "sweep"]
    confirm = [ln for ln in lines if ln["phase"] == "confirm"]
    assert len(sweep) == 3 * 3 * 2 * 3  # engines x builds x query settings x modes
    extra = {"round", "target", "candidate_rank"}
    fields = {ln["mode"]: set(ln) for ln in sweep}
    for ln in confirm:
        assert set(ln) == fields[ln["mode"]] | extra
        assert ln["recall@10"] >= ln["target"]
    # Per engine, mode and target: 2 candidates x 3 rounds.
    for engine in ("fake-a", "fake-b", "fake-c"):
        for mode in MODES:
            for target in (0.9, 0.95):
                mine = [(ln["round"], ln["candidate_rank"]) for ln in confirm
                        if (ln["engine"], ln["mode"], ln["target"]) == (engine, mode, target)]
                assert sorted(mine) == [(r, i) for r in range(3) for i in range(2)]
    # Within a round and mode the engines come in an order rotated by one per round.
    for r, want in enumerate([["fake-a", "fake-b", "fake-c"], ["fake-b", "fake-c", "fake-a"],
                              ["fake-c", "fake-a", "fake-b"]]):
        for mode in MODES:
            seen = [ln["engine"] for ln in confirm if ln["round"] == r and ln["mode"] == mode]
            assert list(dict.fromkeys(seen)) == want
    # Rounds run one after another: no round-1 line before the last round-0 line.
    order = [ln["round"] for ln in confirm]
    assert order == sorted(order)


def test_without_confirm_each_adapter_is_freed_before_the_next_build(fake_registry,
                                                                    monkeypatch):
    live_at_fit = []
    monkeypatch.setattr(Fake, "fit", lambda self, x, ids=None: live_at_fit.append(len(Fake.live)))
    lines = run_sweeps(_dataset(), _fake_config(rounds=0), ["fake-a", "fake-b"], io.StringIO())
    assert live_at_fit == [1] * 6
    assert {ln["phase"] for ln in lines} == {"sweep"}


def test_confirm_keeps_at_most_candidates_x_targets_x_modes_per_engine(fake_registry,
                                                                      monkeypatch):
    live_at_fit = []
    monkeypatch.setattr(Fake, "fit", lambda self, x, ids=None: live_at_fit.append(len(Fake.live)))
    cfg = _fake_config(rounds=1)
    cfg["engines"] = {"fake-a": {"build": {"n": list(range(30))}, "query": {"p": [10]}}}
    run_sweeps(_dataset(), cfg, ["fake-a"], io.StringIO())
    # Each build's point has recall 1 and a noisy QPS: the kept set changes, but apart
    # from the build being made it never exceeds 2 candidates x 2 targets x 3 modes.
    assert len(live_at_fit) == 30 and max(live_at_fit) <= 1 + 2 * 2 * 3


# -- config ----------------------------------------------------------------------------

def test_config_fills_confirm_defaults_and_rejects_bad_values(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"engines": {}, "confirm": {"rounds": 3}}))
    assert load_config(str(path))["confirm"] == {"rounds": 3, "targets": [0.95, 0.99],
                                                 "candidates": 2}
    path.write_text(json.dumps({"engines": {}}))
    assert load_config(str(path))["confirm"]["rounds"] == 7
    with pytest.raises(ValueError, match=r"confirm rounds must be an integer >= 0 \(0 turns"):
        check_confirm({"rounds": -1, "targets": [0.95], "candidates": 2})
    with pytest.raises(ValueError, match=r"confirm targets must be .* in \(0, 1\]"):
        check_confirm({"rounds": 1, "targets": [95], "candidates": 2})
    with pytest.raises(ValueError, match=r"unknown confirm keys \['round'\]"):
        check_confirm({"round": 1, "rounds": 1, "targets": [0.9], "candidates": 1})


# -- report ----------------------------------------------------------------------------

def _line(engine, qps, *, recall=0.96, phase=None, **extra):
    ln = {"dataset": "d", "n_base": 10, "dim": 2, "metric": "l2", "n_queries": 5, "k": 10,
          "mode": "batch-1t", "threads": 1, "engine": engine, "factory": engine.upper(),
          "build_params": {}, "query_params": {}, "recall@10": recall, "qps": qps,
          "cpu_qps": qps, "build_s": 1.0, "bytes_per_vector_resident": 8.0,
          "bytes_per_vector_total": 16.0, "run_id": "r1", **extra}
    if phase:
        ln["phase"] = phase
    return ln


def _confirm(engine, qps_by_round, *, params, rank=0, recall=0.96, target=0.95, run="r1"):
    return [_line(engine, q, recall=recall, phase="confirm", round=r, target=target,
                  candidate_rank=rank, query_params=params, run_id=run)
            for r, q in enumerate(qps_by_round)]


def _report_lines() -> list[dict]:
    # binidx [100, 200, 300] and ivf [50, 400, 150]: per-round ratios 2, 0.5, 2 have the
    # median 2.0, while the medians give 200 / 150 = 1.33.
    return [
        _line("binidx", 300, params={}), _line("ivf", 150),  # old lines: no phase = sweep
        *_confirm("binidx", [100, 200, 300], params={"n_probe": 8}),
        *_confirm("binidx", [90, 95, 99], params={"n_probe": 16}, rank=1),
        *_confirm("ivf", [50, 400, 150], params={"nprobe": 8}),
        *_confirm("ivf", [40, 45, 60], params={"nprobe": 12}, rank=1),
        # Fastest of all, but its confirmed recall misses the target: not eligible.
        *_confirm("ivf", [900, 900, 900], params={"nprobe": 4}, rank=1, recall=0.94),
    ]


def test_confirmed_ratio_is_the_median_of_per_round_ratios():
    got = confirmed_ratios(_report_lines(), "batch-1t", 0.95)
    assert set(got) == {"binidx", "ivf"}
    assert got["binidx"]["query_params"] == {"n_probe": 8} and got["binidx"]["ratio"] is None
    ivf = got["ivf"]
    assert ivf["query_params"] == {"nprobe": 8} and ivf["key"] == "cpu_qps"
    assert (ivf["qps"], ivf["qps_min"], ivf["qps_max"], ivf["rounds"]) == (150, 50, 400, 3)
    assert ivf["ratio"] == 2.0 and got["binidx"]["qps"] / ivf["qps"] != 2.0
    assert (ivf["ratio_min"], ivf["ratio_max"], ivf["ratio_rounds"]) == (0.5, 2.0, 3)
    assert confirmed_ratios(_report_lines(), "batch-1t", 0.99) == {}
    no_ref = confirmed_ratios(_report_lines(), "batch-1t", 0.95, reference="faiss")
    assert no_ref["ivf"]["ratio"] is None


def test_confirmed_ratio_pairs_rounds_of_the_same_run_only():
    lines = [*_confirm("binidx", [100, 200], params={}, run="r1"),
             *_confirm("ivf", [50, 100], params={}, run="r2")]
    assert confirmed_ratios(lines, "batch-1t", 0.95)["ivf"]["ratio"] is None
    with pytest.raises(ValueError, match="confirm lines of several datasets"):
        confirmed_ratios(lines + [{**lines[0], "dataset": "e"}], "batch-1t", 0.95)


def test_summary_has_the_confirm_section_and_sweep_tables_ignore_it():
    text = summary_markdown(_report_lines())
    rows = [r for r in text.splitlines() if r.startswith("| ")]
    # Sweep tables: binidx 300, ivf 150 from the two sweep lines, 2.00x at 0.95; the
    # confirm lines (up to 900 QPS) must not leak in.
    assert "| binidx | 300 | 300 | not reached | 0.9600 |" in text
    assert any(r.startswith("| ivf | 150 | 150 | not reached |") and r.endswith("| 2.00x |")
               for r in rows)
    assert "900" not in text
    assert "## Confirmed at equal recall (3 interleaved rounds)" in text
    assert "### Batched queries, 1 thread, recall@10 >= 0.95 (CPU-time QPS)" in text
    assert "| binidx | n_probe=8 | 0.9600 | 200 (100-300) | reference |" in text
    assert "| ivf | nprobe=8 | 0.9600 | 150 (50-400) | 2.00x (0.50-2.00) |" in text
    assert text.index("| binidx | n_probe=8") < text.index("| ivf | nprobe=8")  # by QPS


def test_summary_without_confirm_lines_has_no_section():
    text = summary_markdown(_report_lines()[:2])
    assert "Confirmed at equal recall" not in text and "| binidx | 300 |" in text


# -- the real command ---------------------------------------------------------------------

def _cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BINIDX_BENCH_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def test_run_with_confirm_rounds_end_to_end(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("hnswlib")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({
        "k": 10, "repeats": 1, "single_queries": 10, "modes": ["batch-1t", "single"],
        "confirm": {"rounds": 7, "targets": [0.9, 0.99], "candidates": 2},
        "engines": {"faiss-ivf": {"build": {"n_lists": [16]}, "query": {"nprobe": [2, 4, 8, 16]}},
                    "hnswlib": {"build": {"M": [8], "ef_construction": [40]},
                                "query": {"ef": [10, 20, 40]}}}}))
    out = tmp_path / "out"
    proc = _cli("run", "--dataset", "synthetic:n=800,nq=30,dim=8,seed=5", "--config", str(cfg),
                "--confirm-rounds", "2", "--out", str(out), "--no-plot", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.jsonl", encoding="utf-8") as f:
        lines = [json.loads(s) for s in f]
    confirm = [ln for ln in lines if ln["phase"] == "confirm"]
    assert {ln["phase"] for ln in lines} == {"sweep", "confirm"}
    assert {ln["round"] for ln in confirm} == {0, 1}  # --confirm-rounds beat the config's 7
    assert {ln["engine"] for ln in confirm} == {"faiss-ivf", "hnswlib"}
    assert {ln["target"] for ln in confirm} <= {0.9, 0.99}
    assert {ln["candidate_rank"] for ln in confirm} <= {0, 1}
    assert all(ln["recall@10"] >= ln["target"] and ln["cpu_qps"] > 0 for ln in confirm)
    assert "keeping" in proc.stderr and "confirm: 2 rounds" in proc.stderr
    summary = (out / "summary.md").read_text()
    assert "## Confirmed at equal recall (2 interleaved rounds)" in summary
    assert "### One query per call, 1 thread, recall@10 >= 0.9 (CPU-time QPS)" in summary
    assert "| faiss-ivf | n_lists=16, nprobe=" in summary
    # The summary command reads the same file and writes the same section.
    again = _cli("summary", str(out / "results.jsonl"), "--out", str(tmp_path / "s"),
                 tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    section = summary[summary.index("## Confirmed"):summary.index("### Indexes built")]
    assert section in again.stdout

    bad = _cli("run", "--dataset", "synthetic:n=800,nq=30,dim=8", "--confirm-rounds", "-1",
               tmp_path=tmp_path)
    assert bad.returncode == 2
    assert "--confirm-rounds: must be >= 0 (0 turns the confirm phase off), got -1" in bad.stderr
