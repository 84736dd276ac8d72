"""binidx's benchmark suite: engine adapters, parameter sweeps, ground truth, reports.

Run ``python -m benchmarks --help``; benchmarks/README.md documents every job.
"""
