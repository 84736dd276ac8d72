"""``python -m benchmarks {run,churn,summary,plot}``: one command per job.

See benchmarks/README.md for the commands used to produce the published numbers.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from .adapters import ENGINES

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _rounds(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 turns the confirm phase off), "
                                         f"got {value}")
    return value


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True,
                   help="folder (base/query/groundtruth), .hdf5 file, base vector file, "
                        "or synthetic[:n=..,nq=..,dim=..,metric=..,seed=..]")
    p.add_argument("--queries", help="query vector file when --dataset is a single base file")
    p.add_argument("--metric", choices=["l2", "ip", "cosine"],
                   help="override the metric found in meta.json / the HDF5 file")
    p.add_argument("--max-base", type=int, help="use only the first N base vectors")
    p.add_argument("--max-queries", type=int, help="use only the first N queries")
    p.add_argument("--cache-dir", help="where computed ground truth is cached (default "
                                       "$BINIDX_BENCH_CACHE or ~/.cache/binidx-benchmarks)")
    p.add_argument("--out", help="output folder (default benchmarks/results/<dataset>)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="build indexes and sweep search parameters")
    _add_dataset_args(run)
    run.add_argument("--config",
                     help="sweep config (default configs/<dataset>.json or default.json)")
    run.add_argument("--engines", type=_csv,
                     help=f"comma-separated subset of the config's engines ({', '.join(ENGINES)})")
    run.add_argument("--modes", type=_csv, help="subset of batch-1t,batch-all,single")
    run.add_argument("--k", type=int, help="neighbours per query (config default 10)")
    run.add_argument("--repeats", type=int, help="timed repeats of batched modes")
    run.add_argument("--single-queries", type=int, help="queries timed one by one")
    run.add_argument("--threads", type=int,
                     help="threads of the all-threads mode (default: all CPUs)")
    run.add_argument("--confirm-rounds", type=_rounds, metavar="N",
                     help="interleaved rounds re-measuring each engine's fastest points per "
                          "recall target after the sweeps (default: the config's "
                          "confirm.rounds; 0: no confirm phase)")
    run.add_argument("--append", action="store_true",
                     help="append to results.jsonl instead of starting it afresh")
    run.add_argument("--no-plot", action="store_true", help="skip the PNG plots")

    churn = sub.add_parser("churn", help="delete/insert rounds with recall after each")
    _add_dataset_args(churn)
    churn.add_argument("--engines", type=_csv, default=["binidx", "faiss-ivf", "hnswlib"])
    churn.add_argument("--order", choices=["random", "cluster"], default="random",
                       help="insert random vectors, or whole clusters in turn (drifting catalog)")
    churn.add_argument("--rounds", type=int, default=5)
    churn.add_argument("--fraction", type=float, default=0.10,
                       help="share of the live set deleted, and inserted, per round")
    churn.add_argument("--config", help="build/search parameters per engine "
                                        "(default configs/churn.json)")
    churn.add_argument("--threads", type=int, help="threads for every operation (default: all)")
    churn.add_argument("--seed", type=int, default=0)

    for name, helptext in (("summary", "markdown table from results.jsonl files"),
                           ("plot", "recall-vs-QPS Pareto PNGs from results.jsonl files")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("results", nargs="+", help="results.jsonl file(s)")
        p.add_argument("--out", help="output folder (default: beside the first results file)")
    return parser


def _command_line(argv: list[str]) -> str:
    return "python -m benchmarks " + shlex.join(argv)


def _write_reports(results_path: str, out_dir: str, plots: bool) -> str:
    from .report import plot_pareto, read_results, summary_markdown

    results = read_results([results_path])
    commands_path = os.path.join(out_dir, "commands.txt")
    command = None
    if os.path.exists(commands_path):
        with open(commands_path, encoding="utf-8") as f:
            command = " ; ".join(line.strip() for line in f if line.strip())
    text = summary_markdown(results, command)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    if plots:
        try:
            plot_pareto(results, out_dir)
        except ImportError:
            print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
    return text


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from .config import default_config_path, load_config
    from .datasets import load_dataset
    from .runner import log, run_sweeps

    ds = load_dataset(args.dataset, queries=args.queries, metric=args.metric,
                      max_base=args.max_base, max_queries=args.max_queries,
                      cache_dir=args.cache_dir)
    for note in ds.notes:
        log(note)
    cfg = load_config(args.config or default_config_path(ds.family))
    for key in ("k", "repeats", "single_queries"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.confirm_rounds is not None:
        cfg["confirm"] = {**cfg["confirm"], "rounds": args.confirm_rounds}
    engines = args.engines or list(cfg["engines"])
    out_dir = args.out or os.path.join(RESULTS_DIR, ds.name)
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, "results.jsonl")
    mode = "a" if args.append else "w"
    with open(os.path.join(out_dir, "commands.txt"), mode, encoding="utf-8") as f:
        f.write(_command_line(argv) + "\n")
    log(f"{ds.name}: {len(ds.base):,} x {ds.base.shape[1]} ({ds.metric}), "
        f"{len(ds.queries):,} queries; config {cfg['path']}; results -> {results_path}")
    started = time.perf_counter()
    with open(results_path, mode, encoding="utf-8") as sink:
        run_sweeps(ds, cfg, engines, sink, all_threads=args.threads, modes=args.modes)
    log(f"sweeps and confirm rounds finished in {time.perf_counter() - started:.0f}s")
    print(_write_reports(results_path, out_dir, plots=not args.no_plot))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import plot_pareto, read_results, summary_markdown

    results = read_results(args.results)
    out_dir = args.out or os.path.dirname(os.path.abspath(args.results[0]))
    os.makedirs(out_dir, exist_ok=True)
    if args.command == "summary":
        text = summary_markdown(results)
        with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
            f.write(text)
        print(text)
    else:
        for path in plot_pareto(results, out_dir):
            print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args, argv)
    if args.command == "churn":
        from .churn import run_churn_command

        return run_churn_command(args, argv)
    return _report(args)
