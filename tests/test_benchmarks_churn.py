"""The churn runbook's summaries, bucket balance and tuner (benchmarks/churn.py), in seconds.

The end-to-end ``python -m benchmarks churn`` run is in test_benchmarks_smoke.py; here the
numbers issue 4 is judged by are checked against hand-made rounds whose answers are known.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from benchmarks import churn
from benchmarks.adapters import get_adapter_class
from benchmarks.datasets import load_dataset


def _line(rnd, recall, **extra):
    line = {"kind": "churn", "dataset": "d", "order": "random", "engine": "e", "dim": 128,
            "n_base": 100, "n_queries": 10, "threads": 2, "factory": "f",
            "query_params": {"nprobe": 4}, "fraction": 0.1, "round": rnd, "n_live": 50,
            "recall@1": recall, "recall@10": recall, "qps": 1.0, "stale_results": 0,
            "n_lists": 8, "bucket_max_over_mean": 2.0, "loadavg_now": [1.5, 1.0, 1.0]}
    return {**line, **extra}


def test_summary_numbers_and_criteria():
    lines = [_line(0, 0.95),
             _line(1, 0.94, insert_per_s=50_000, delete_per_s=3e6, bucket_max_over_mean=3.5),
             _line(2, 0.92, insert_per_s=30_000, delete_per_s=2e6),
             _line(3, 0.95, insert_per_s=60_000, delete_per_s=1e5),
             _line("rebuild", 0.95, bucket_max_over_mean=1.5),
             {"kind": "churn-tune", "dataset": "d"}]  # other kinds are not rounds
    (s,) = churn.summarize(lines)
    assert s["rounds"] == 3
    assert s["mean_recall@10"] == pytest.approx(0.94)
    assert s["mean_gap"] == pytest.approx(-0.01) and s["meets_mean_recall"]
    assert s["worst_gap"] == pytest.approx(-0.03) and not s["meets_worst_recall"]
    assert s["max_bucket_max_over_mean"] == 3.5 and not s["meets_balance"]
    assert s["insert_per_core"] == 25_000 and s["meets_insert"]  # median 50k over 2 threads
    assert s["delete_per_s"] == 2e6 and s["meets_delete"]
    assert s["recall_reference"] == "final live set" and s["same_set_mean_gap"] is None
    text = churn.summary_markdown([s])
    assert ("| random | e | nprobe=4 | 0.9500 | 0.9400 | 0.9500 | -1.00 ✓ | -3.00 ✗ | - | - "
            "| 3.50 ✗ |") in text


def test_same_set_rebuilds_decide_the_recall_criteria():
    # The live set drifts to harder data: the churned index tracks a fresh build of each
    # round's live set (gaps of 0 and -1 point) though it ends far below the first round.
    lines = [_line(0, 0.95),
             _line(1, 0.93, insert_per_s=1.0, delete_per_s=1.0, **{"fresh_recall@10": 0.93}),
             _line(2, 0.90, insert_per_s=1.0, delete_per_s=1.0, **{"fresh_recall@10": 0.91}),
             _line("rebuild", 0.91)]
    (s,) = churn.summarize(lines)
    assert s["recall_reference"] == "same live set"
    assert s["mean_gap"] == pytest.approx(0.9267 - 0.91, abs=1e-4)
    assert s["worst_gap"] == pytest.approx(-0.01)
    assert s["same_set_mean_gap"] == pytest.approx(-0.01 / 3)
    assert s["same_set_worst_gap"] == pytest.approx(-0.01)
    assert s["meets_mean_recall"] and s["meets_worst_recall"]
    # A round 3 points below its own fresh build fails, whatever the final rebuild says.
    lines[2]["fresh_recall@10"] = 0.93
    (s,) = churn.summarize(lines)
    assert s["same_set_worst_gap"] == pytest.approx(-0.03) and not s["meets_worst_recall"]
    assert "| +1.67 | -1.00 | -1.00 ✓ | -3.00 ✗ |" in churn.summary_markdown([s])


def test_summary_without_buckets_leaves_balance_open():
    lines = [_line(0, 0.9, n_lists=None, bucket_max_over_mean=None),
             _line(1, 0.9, n_lists=None, bucket_max_over_mean=None, insert_per_s=10.0,
                   delete_per_s=10.0),
             _line("rebuild", 0.9, n_lists=None, bucket_max_over_mean=None)]
    (s,) = churn.summarize(lines)
    assert s["max_bucket_max_over_mean"] is None and s["meets_balance"] is None
    assert not s["meets_insert"] and not s["meets_delete"]
    assert "| - | - | 5 ✗ |" in churn.summary_markdown([s])


@pytest.mark.parametrize("engine, build", [("faiss-ivf", {"n_lists": 16}),
                                           ("hnswlib", {"M": 8})])
def test_bucket_balance_of_an_ivf_and_a_graph(engine, build):
    pytest.importorskip(engine.split("-")[0])
    x = np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32)
    x[:1000] *= 0.01  # half the vectors in one tight blob: one list holds most of them
    adapter = get_adapter_class(engine)("l2", 8, **build)
    adapter.fit(x)
    got = churn.bucket_balance(adapter)
    if engine == "hnswlib":
        assert got == {"n_lists": None, "bucket_max": None, "bucket_max_over_mean": None}
        return
    sizes = adapter.bucket_sizes()
    assert got["n_lists"] == 16 and sizes.sum() == 2000
    assert got["bucket_max_over_mean"] == pytest.approx(sizes.max() / 125) and sizes.max() > 375


def test_pick_setting_takes_smallest_first_key_then_closest_to_target():
    grid = {"n_probe": [4, 8, 16], "n_rerank": [50, 100]}
    rows = [{"query_params": {"n_probe": p, "n_rerank": r}, "recall@10": rec, "qps": qps}
            for p, r, rec, qps in [(4, 50, 0.90, 900), (8, 50, 0.96, 500), (16, 50, 0.97, 300),
                                   (4, 100, 0.93, 800), (8, 100, 0.955, 450)]]
    assert churn.pick_setting(rows, grid, 0.95)["query_params"] == {"n_probe": 8, "n_rerank": 100}
    assert churn.pick_setting(rows, grid, 0.96)["query_params"] == {"n_probe": 8, "n_rerank": 50}
    assert churn.pick_setting(rows, grid, 0.99) is None
    groups = churn._settings(grid)
    assert [fixed for fixed, _ in groups] == [{"n_rerank": 50}, {"n_rerank": 100}]
    assert [s["n_probe"] for s in groups[0][1]] == [4, 8, 16]


def test_tune_command_writes_the_chosen_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("BINIDX_BENCH_CACHE", str(tmp_path / "cache"))
    spec = "synthetic:n=2000,nq=30,dim=16,seed=1"
    assert churn.main(["tune", "--dataset", spec, "--engines", "faiss-ivf",
                       "--out", str(tmp_path), "--threads", "1"]) == 0
    with open(tmp_path / "churn-tune.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["recall@10"] >= 0.95
    probes = [r["query_params"]["nprobe"] for r in rows]
    assert probes == sorted(probes) and probes[-1] == chosen[0]["query_params"]["nprobe"]
    assert all(r["recall@10"] < 0.95 for r in rows[:-1])  # it stops once 0.95 is reached
    # The tuner starts from the runbook's initial half: half the base, same split.
    ds = load_dataset(spec, cache_dir=str(tmp_path / "cache"))
    _, live, pool = churn.initial_split(ds, "random", 0)
    assert len(live) == 1000 and len(pool) == 1000 and not set(live) & set(pool)
    assert "**nprobe=" in (tmp_path / "churn-tune.md").read_text()
    # Tuning another engine keeps the first one's rows.
    pytest.importorskip("hnswlib")
    assert churn.main(["tune", "--dataset", spec, "--engines", "hnswlib",
                       "--out", str(tmp_path), "--threads", "1"]) == 0
    with open(tmp_path / "churn-tune.jsonl", encoding="utf-8") as f:
        again = [json.loads(line) for line in f]
    assert again[:len(rows)] == rows and {r["engine"] for r in again} == {"faiss-ivf", "hnswlib"}
    assert "**nprobe=" in (tmp_path / "churn-tune.md").read_text()


def test_unknown_order_is_refused():
    ds = load_dataset("synthetic:n=100,nq=2,dim=4")
    with pytest.raises(ValueError, match="order must be 'random' or 'cluster', got 'drift'"):
        churn.initial_split(ds, "drift", 0)


def test_rebuild_each_round_records_a_fresh_build_per_round(tmp_path):
    import io

    ds = load_dataset("synthetic:n=2000,nq=30,dim=16,seed=2", cache_dir=str(tmp_path))
    params = {"build": {"n_lists": 16}, "query": {"nprobe": 4}, "rebuild_each_round": True}
    lines = churn.churn_engine(ds, "faiss-ivf", params, io.StringIO(), order="cluster",
                               rounds=2, fraction=0.1, threads=1, seed=0)
    assert [ln["round"] for ln in lines] == [0, 1, 2, "rebuild"]
    assert all(0 < ln["fresh_recall@10"] <= 1 and ln["fresh_build_s"] > 0 for ln in lines[1:3])
    # The last round's fresh index is the final rebuild: same live set, same index.
    assert lines[3]["recall@10"] == lines[2]["fresh_recall@10"]
    assert all(ln["n_lists"] == 16 and ln["bucket_max_over_mean"] >= 1 for ln in lines)
    (s,) = churn.summarize(lines)
    assert s["recall_reference"] == "same live set"


def test_a_rerun_is_summarized_apart_from_the_first_run():
    first = [_line(0, 0.95, timestamp="2026-11-21T10:00:00+00:00"),
             _line(1, 0.94, insert_per_s=1.0, delete_per_s=1.0,
                   timestamp="2026-11-21T10:00:00+00:00")]
    rerun = [{**ln, "timestamp": "2026-11-21T11:30:00+00:00", "recall@10": 0.90}
             for ln in first]
    summaries = churn.summarize(first + rerun)
    assert [s["mean_recall@10"] for s in summaries] == pytest.approx([0.945, 0.90])
    text = churn.summary_markdown(summaries)
    assert "| e (run 10:00 UTC) |" in text and "| e (run 11:30 UTC) |" in text


def test_single_deletes_are_timed_one_call_each_and_pooled_in_the_summary(tmp_path):
    import io

    ds = load_dataset("synthetic:n=2000,nq=30,dim=16,seed=3", cache_dir=str(tmp_path))
    params = {"build": {"n_lists": 16}, "query": {"nprobe": 16}}
    removed = []
    adapter_cls = get_adapter_class("faiss-ivf")
    original = adapter_cls.remove

    def spy(self, ids):
        removed.append(len(ids))
        return original(self, ids)

    adapter_cls.remove = spy
    try:
        lines = churn.churn_engine(ds, "faiss-ivf", params, io.StringIO(), order="random",
                                   rounds=2, fraction=0.1, threads=1, seed=0, single_deletes=7)
    finally:
        adapter_cls.remove = original
    # Per round: one batched call of 100 - 7 ids, then 7 calls of one id each.
    assert removed == [93] + [1] * 7 + [93] + [1] * 7
    rounds = lines[1:3]
    assert all(ln["n_batch_deleted"] == 93 and ln["single_deletes"] == 7 for ln in rounds)
    assert all(len(ln["single_delete_us"]) == 7 for ln in rounds)
    assert all(0 < ln["single_delete_us_p50"] <= ln["single_delete_us_p99"] for ln in rounds)
    # Every deleted id is gone: a full probe finds exactly the live set's neighbours.
    assert all(ln["stale_results"] == 0 and ln["recall@10"] == 1.0 for ln in lines)
    (s,) = churn.summarize(lines)
    pooled = rounds[0]["single_delete_us"] + rounds[1]["single_delete_us"]
    assert s["single_deletes"] == 14
    assert s["single_delete_us_p50"] == pytest.approx(np.median(pooled))
    assert f"| {s['single_delete_us_p50']:,.0f} / {s['single_delete_us_p99']:,.0f} |" in (
        churn.summary_markdown([s]))


def test_summary_of_runs_without_single_deletes_says_so():
    lines = [_line(0, 0.95), _line(1, 0.95, insert_per_s=1.0, delete_per_s=1.0),
             _line("rebuild", 0.95)]
    (s,) = churn.summarize(lines)
    assert s["single_deletes"] == 0 and s["single_delete_us_p50"] is None
    lines[1].update(single_delete_us=[10.0, 20.0, 30.0, 1000.0])
    (s,) = churn.summarize(lines)
    assert s["single_delete_us_p50"] == 25.0
    assert s["single_delete_us_p99"] == pytest.approx(np.percentile([10, 20, 30, 1000], 99))
