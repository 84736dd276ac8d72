"""Markdown summary and recall-vs-QPS Pareto plots from JSON-lines results."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable

from .config import MODES

THRESHOLDS = (0.90, 0.95, 0.99)
_MODE_TITLES = {"batch-1t": "Batched queries, 1 thread",
                "batch-all": "Batched queries, all threads",
                "single": "One query per call, 1 thread"}


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
        if "skipped" not in ln:
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


def summary_markdown(results: list[dict], command: str | None = None) -> str:
    """Per dataset and mode: best QPS at recall@10 >= 0.90 / 0.95 / 0.99 for each engine.

    Build time and bytes per vector are those of the index behind the 0.95 entry (or the
    most accurate one when 0.95 was not reached).  When binidx ran, the last column gives
    binidx's QPS divided by the engine's at 0.95, both measured in the same run.
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
