"""Markdown summary and recall-vs-QPS Pareto plots from JSON-lines results.

Sweep lines (``"phase": "sweep"``, or no ``phase`` in files written before the confirm
phase existed) make the per-mode tables and the plots; confirm lines make the
"Confirmed at equal recall" section and :func:`confirmed_ratios`.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable

from .config import MODES

THRESHOLDS = (0.90, 0.95, 0.99)
_MODE_TITLES = {"batch-1t": "Batched queries, 1 thread",
                "batch-all": "Batched queries, all threads",
                "single": "One query per call, 1 thread"}


def confirm_key(mode: str) -> str:
    """The QPS field that ranks points of ``mode`` in the confirm phase and section.

    ``"cpu_qps"`` (from the search thread's CPU time, insensitive to other jobs taking the
    core) in the one-thread modes, ``"qps"`` (wall time) with all threads.

    Examples
    --------
    >>> confirm_key("batch-1t"), confirm_key("batch-all")
    ('cpu_qps', 'qps')
    """
    return "qps" if mode == "batch-all" else "cpu_qps"


def is_sweep(line: dict) -> bool:
    """True for a sweep line; lines without ``phase`` come from older runs: sweeps."""
    return line.get("phase", "sweep") == "sweep"


def read_results(paths: Iterable[str]) -> list[dict]:
    """Read every JSON line of the given files (blank lines ignored)."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (recall, qps) points no other point beats on both, by increasing recall."""
    front: list[tuple[float, float]] = []
    for recall, qps in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or qps > front[-1][1]:
            front.append((recall, qps))
    return front[::-1]


def best_at(lines: list[dict], threshold: float, key: str = "qps") -> dict | None:
    """The fastest line (by ``key``: "qps" from wall time, or "cpu_qps" from the
    thread's CPU time) whose recall@10 reaches ``threshold``, or None."""
    ok = [ln for ln in lines if (ln.get("recall@10") or 0.0) >= threshold and key in ln]
    return max(ok, key=lambda ln: ln[key]) if ok else None


def _fmt_qps(line: dict | None, key: str = "qps") -> str:
    return "not reached" if line is None else f"{line[key]:,.0f}"


def _params(line: dict) -> str:
    parts = [f"{k}={v}" for k, v in {**line.get("build_params", {}),
                                      **line.get("query_params", {})}.items()]
    return ", ".join(parts) or "-"


def _group(results: list[dict]) -> dict:
    groups: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for ln in results:
        if "skipped" not in ln and is_sweep(ln):
            groups[ln["dataset"]][ln["mode"]][ln["engine"]].append(ln)
    return groups


def _mode_table(engines: dict, mode: str, key: str) -> list[str]:
    """One markdown table: per engine, the best ``key`` at each recall threshold."""
    ref = best_at(engines.get("binidx", []), 0.95, key)
    threads = {ln["threads"] for lines in engines.values() for ln in lines}
    title = f"{_MODE_TITLES[mode]} ({', '.join(map(str, sorted(threads)))} threads)"
    if key == "cpu_qps":
        title += (", QPS from the search thread's CPU time (insensitive to other jobs "
                  "taking the core; same runs as above)")
    out = [f"## {title}", ""]
    head = ["engine"] + [f"QPS @ R10>={t:.2f}" for t in THRESHOLDS] + [
        "max R10", "build s", "B/vec resident", "B/vec total"]
    if mode == "single":
        head += ["p50 ms", "p99 ms"]
    head += ["params (at 0.95)"]
    if ref is not None:
        head.append("binidx / engine @0.95")
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    for engine, lines in engines.items():
        lines = [ln for ln in lines if key in ln]
        if not lines:
            continue
        best = {t: best_at(lines, t, key) for t in THRESHOLDS}
        top = max(lines, key=lambda ln: (ln.get("recall@10") or 0, ln[key]))
        pick = best[0.95] or top
        row = [engine] + [_fmt_qps(best[t], key) for t in THRESHOLDS] + [
            f"{top.get('recall@10') or 0:.4f}", f"{pick['build_s']:.1f}",
            f"{pick['bytes_per_vector_resident']:.1f}",
            f"{pick['bytes_per_vector_total']:.1f}"]
        if mode == "single":
            row += [f"{pick['latency_ms_p50']:.3f}", f"{pick['latency_ms_p99']:.3f}"]
        row.append(_params(pick) if best[0.95] else f"(max recall) {_params(pick)}")
        if ref is not None:
            row.append(f"{ref[key] / best[0.95][key]:.2f}x" if best[0.95] else "-")
        rows.append((-(best[0.95] or {key: 0})[key], row))
    out += ["| " + " | ".join(r) + " |" for _, r in sorted(rows, key=lambda r: r[0])]
    out.append("")
    return out


def _point_id(line: dict) -> tuple:
    return (line.get("run_id"), json.dumps(line.get("build_params", {}), sort_keys=True),
            json.dumps(line.get("query_params", {}), sort_keys=True))


def confirmed_ratios(lines: list[dict], mode: str, target: float,
                     reference: str = "binidx") -> dict[str, dict]:
    """Per engine, its confirmed point at ``target`` and its ratio to ``reference``.

    Reads the confirm lines of one dataset (others are ignored).  Per engine, among its
    candidates for ``mode`` and ``target`` whose median recall@10 over rounds reaches the
    target, the one with the highest median QPS over rounds is chosen (QPS is
    :func:`confirm_key` of the mode).  The ratio is the median over rounds of
    reference QPS / engine QPS, both of the chosen candidates in the same round of the
    same run: a per-round pairing, so drift of the host between rounds cancels out.

    Parameters
    ----------
    lines : list of dict
        Result lines of one dataset, e.g. :func:`read_results` of one results.jsonl.
    mode : {"batch-1t", "batch-all", "single"}
    target : float
        Recall@10 target, one of the run's ``confirm.targets``.
    reference : str, default "binidx"
        The engine whose QPS is the numerator.

    Returns
    -------
    dict of str to dict
        Per engine with a confirmed candidate: ``build_params``, ``query_params``,
        ``factory``, ``key`` (the QPS field), ``rounds`` (measurements), ``recall@10``
        (median; ``recall@10_min`` / ``_max``), ``qps`` (median; ``qps_min`` /
        ``qps_max``), and ``ratio`` (median of the per-round ratios; ``ratio_min`` /
        ``ratio_max``, ``ratio_rounds``).  ``ratio`` is None for the reference itself,
        when the reference has no confirmed candidate, or when the two never ran in the
        same round of the same run (e.g. engines appended from separate runs).

    Raises
    ------
    ValueError
        When the confirm lines come from more than one dataset.

    Examples
    --------
    >>> def ln(engine, r, qps):
    ...     return {"phase": "confirm", "dataset": "d", "mode": "batch-1t", "target": 0.95,
    ...             "engine": engine, "round": r, "cpu_qps": qps, "recall@10": 0.96,
    ...             "query_params": {}}
    >>> lines = [ln("binidx", 0, 100), ln("binidx", 1, 300), ln("ivf", 0, 50), ln("ivf", 1, 300)]
    >>> confirmed_ratios(lines, "batch-1t", 0.95)["ivf"]["ratio"]
    1.5
    """
    key = confirm_key(mode)
    conf = [ln for ln in lines if ln.get("phase") == "confirm" and ln.get("mode") == mode
            and math.isclose(ln["target"], target) and key in ln]
    datasets = sorted({ln["dataset"] for ln in conf})
    if len(datasets) > 1:
        raise ValueError(f"confirm lines of several datasets ({', '.join(datasets)}): pass "
                         f"the lines of one dataset, e.g. one results.jsonl")
    by_point: dict = defaultdict(lambda: defaultdict(list))
    for ln in conf:
        by_point[ln["engine"]][_point_id(ln)].append(ln)
    out: dict[str, dict] = {}
    per_round: dict[str, dict] = {}
    for engine, points in by_point.items():
        eligible = [pls for pls in points.values()
                    if statistics.median(ln["recall@10"] or 0.0 for ln in pls) >= target]
        if not eligible:
            continue
        chosen = max(eligible, key=lambda pls: statistics.median(ln[key] for ln in pls))
        qps = [ln[key] for ln in chosen]
        recall = [ln["recall@10"] for ln in chosen]
        out[engine] = {"build_params": chosen[0].get("build_params", {}),
                       "query_params": chosen[0].get("query_params", {}),
                       "factory": chosen[0].get("factory"), "key": key, "rounds": len(chosen),
                       "recall@10": statistics.median(recall), "recall@10_min": min(recall),
                       "recall@10_max": max(recall), "qps": statistics.median(qps),
                       "qps_min": min(qps), "qps_max": max(qps),
                       "ratio": None, "ratio_min": None, "ratio_max": None, "ratio_rounds": 0}
        per_round[engine] = {(ln.get("run_id"), ln["round"]): ln[key] for ln in chosen}
    ref = per_round.get(reference)
    for engine, entry in out.items():
        if engine == reference or ref is None:
            continue
        mine = per_round[engine]
        ratios = [ref[r] / mine[r] for r in set(ref) & set(mine)]
        if ratios:
            entry.update(ratio=statistics.median(ratios), ratio_min=min(ratios),
                         ratio_max=max(ratios), ratio_rounds=len(ratios))
    return out


def _confirm_section(results: list[dict], reference: str = "binidx") -> list[str]:
    """The "Confirmed at equal recall" section of one dataset's summary (or nothing)."""
    conf = [ln for ln in results if ln.get("phase") == "confirm"]
    if not conf:
        return []
    n_rounds = max(len({ln["round"] for ln in conf if ln.get("run_id") == run})
                   for run in {ln.get("run_id") for ln in conf})
    n_cand = max(ln["candidate_rank"] for ln in conf) + 1
    how = (f"After all sweeps, each engine's {n_cand} fastest sweep points per mode and "
           f"recall target were measured again once per round, engines in rotating order; "
           f"each row is the engine's candidate with the highest median QPS over rounds "
           f"(min-max), and {reference} / engine is the median over rounds of the ratio of "
           f"the two QPS measured in the same round (min-max).")
    out = [f"## Confirmed at equal recall ({n_rounds} interleaved rounds)", "", how, ""]
    head = f"| engine | params | R10 | QPS median (min-max) | {reference} / engine (min-max) |"
    for mode in [m for m in MODES if any(ln["mode"] == m for ln in conf)]:
        engines = list(dict.fromkeys(ln["engine"] for ln in conf if ln["mode"] == mode))
        key = confirm_key(mode)
        clock = "CPU-time QPS" if key == "cpu_qps" else "wall-clock QPS"
        for target in sorted({ln["target"] for ln in conf if ln["mode"] == mode}):
            got = confirmed_ratios(conf, mode, target, reference)
            out += [f"### {_MODE_TITLES[mode]}, recall@10 >= {target:g} ({clock})", "",
                    head, "|---|---|---|---|---|"]
            for engine in sorted(engines, key=lambda e: -got[e]["qps"] if e in got else 0):
                e = got.get(engine)
                if e is None:
                    out.append(f"| {engine} | not reached | | | |")
                    continue
                recall = (f"{e['recall@10']:.4f}" if e["recall@10_min"] == e["recall@10_max"]
                          else f"{e['recall@10_min']:.4f}-{e['recall@10_max']:.4f}")
                if engine == reference:
                    ratio = "reference"
                elif e["ratio"] is None:
                    ratio = "-"
                else:
                    ratio = f"{e['ratio']:.2f}x ({e['ratio_min']:.2f}-{e['ratio_max']:.2f})"
                out.append(f"| {engine} | {_params(e)} | {recall} | {e['qps']:,.0f} "
                           f"({e['qps_min']:,.0f}-{e['qps_max']:,.0f}) | {ratio} |")
            out.append("")
    return out


def summary_markdown(results: list[dict], command: str | None = None) -> str:
    """Per dataset and mode: best QPS at recall@10 >= 0.90 / 0.95 / 0.99 for each engine.

    Build time and bytes per vector are those of the index behind the 0.95 entry (or the
    most accurate one when 0.95 was not reached).  When binidx ran, the last column gives
    binidx's QPS divided by the engine's at 0.95, both measured in the same run.  These
    tables read sweep lines only; when the run had a confirm phase, a section
    "Confirmed at equal recall" follows them (see :func:`confirmed_ratios`).
    """
    out: list[str] = []
    groups = _group(results)
    for dataset, by_mode in groups.items():
        any_line = next(ln for ln in results if ln.get("dataset") == dataset)
        cpu, ver = any_line.get("cpu", {}), any_line.get("versions", {})
        out += [(f"# {dataset}: {any_line['n_base']:,} x {any_line['dim']} "
                 f"({any_line['metric']}), {any_line['n_queries']:,} queries, k={any_line['k']}"),
                ""]
        out.append(f"- machine: {cpu.get('model')}, {cpu.get('logical_cpus')} logical CPUs, "
                   f"flags {' '.join(cpu.get('flags', []))}")
        out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()
                                             if k != "faiss_compile_options" and v))
        out.append(f"- binidx commit: {any_line.get('git')}, run at {any_line.get('timestamp')}, "
                   f"load average at start {any_line.get('loadavg')}")
        if command:
            out.append(f"- command: `{command}`")
        out.append("- recall@10 is tie-aware (a returned id counts when its exact distance is "
                   "<= the 10th true distance); QPS of batched modes is the median of repeats")
        out.append("")
        for mode in [m for m in MODES if m in by_mode]:
            out += _mode_table(by_mode[mode], mode, "qps")
            if any("cpu_qps" in ln for lines in by_mode[mode].values() for ln in lines):
                out += _mode_table(by_mode[mode], mode, "cpu_qps")
        out += _confirm_section([ln for ln in results if ln.get("dataset") == dataset])
        factories = {}
        for lines in by_mode.values():
            for engine, ls in lines.items():
                for ln in ls:
                    factories.setdefault(engine, set()).add(ln["factory"])
        out += ["### Indexes built (exact factory strings)", ""]
        for engine in sorted(factories):
            for fac in sorted(factories[engine]):
                out.append(f"- {engine}: `{fac}`")
        skipped = [ln for ln in results if ln.get("dataset") == dataset and "skipped" in ln]
        if skipped:
            out += ["", "### Engines that did not run", ""]
            out += [f"- {ln['engine']}: {ln['skipped']}" for ln in skipped]
        out.append("")
    return "\n".join(out)


def plot_pareto(results: list[dict], out_dir: str) -> list[str]:
    """Write ``pareto-<dataset>-<mode>.png`` (recall@10 vs log QPS) for each mode.

    Returns the paths written.  Needs matplotlib (the Agg backend, no display).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    os.makedirs(out_dir, exist_ok=True)
    for dataset, by_mode in _group(results).items():
        for mode, engines in by_mode.items():
            fig, ax = plt.subplots(figsize=(8, 5.5))
            for i, engine in enumerate(sorted(engines)):
                front = pareto_front([(ln["recall@10"], ln["qps"]) for ln in engines[engine]
                                      if ln.get("recall@10") is not None])
                style = {"marker": "os^vD<>ph"[i % 9], "markersize": 4}
                if engine == "binidx":
                    style.update(linewidth=2.5, color="black")
                elif engine == "faiss-exact":  # one point at recall 1: make it visible
                    style.update(marker="*", markersize=12)
                ax.plot([p[0] for p in front], [p[1] for p in front], label=engine, **style)
            ax.set_yscale("log")
            ax.set_xlabel("recall@10 (tie-aware)")
            ax.set_ylabel("queries per second (log scale)")
            line = next(iter(engines.values()))[0]
            ax.set_title(f"{dataset} ({line['n_base']:,} x {line['dim']}, {line['metric']}): "
                         f"{_MODE_TITLES[mode].lower()}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, loc="lower left")
            path = os.path.join(out_dir, f"pareto-{dataset}-{mode}.png")
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths
