"""Sweep configuration files: which engines, which build and search parameter grids.

A config is JSON (or YAML when PyYAML is installed)::

    {"k": 10, "repeats": 3, "single_queries": 500, "stop_at_recall": 0.999,
     "modes": ["batch-1t", "batch-all", "single"],
     "engines": {
       "faiss-ivf": {"build": {"n_lists": [1024]}, "query": {"nprobe": [1, 4, 16, 64]}},
       "hnswlib":   {"build": [{"M": 16, "ef_construction": 200}], "query": {"ef": [10, 40]}}}}

``build`` and ``query`` are either a mapping of lists (their Cartesian product is swept)
or an explicit list of parameter mappings.  An engine entry may also override ``"modes"``,
``"repeats"`` and ``"single_queries"`` for that engine alone.

Sweeps should go from cheap to expensive: with ``stop_at_recall`` set, a query setting is
skipped once a cheaper one (every parameter no larger) has reached that recall@10; with
``max_batch_s`` set, also once a cheaper one took longer than that for one batched pass
over the queries.
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Any

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
MODES = ("batch-1t", "batch-all", "single")
DEFAULTS: dict[str, Any] = {"k": 10, "repeats": 3, "single_queries": 500,
                            "stop_at_recall": None, "max_batch_s": None, "modes": list(MODES)}


def expand(grid: Any) -> list[dict]:
    """Turn ``{"a": [1, 2], "b": 3}`` or ``[{...}, ...]`` into a list of parameter dicts."""
    if grid is None:
        return [{}]
    if isinstance(grid, list):
        return [dict(g) for g in grid] or [{}]
    if not isinstance(grid, dict):
        raise TypeError(f"a parameter grid must be a mapping or a list of mappings, got {grid!r}")
    keys = list(grid)
    values = [v if isinstance(v, list) else [v] for v in grid.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def load_config(path: str) -> dict:
    """Read a JSON/YAML sweep config and fill in the defaults.

    Raises
    ------
    TypeError
        When the file has no ``engines`` mapping.
    ValueError
        When a mode is unknown.
    """
    with open(path, encoding="utf-8") as f:
        if path.endswith((".yaml", ".yml")):
            import yaml  # optional: only needed for YAML configs

            cfg = yaml.safe_load(f)
        else:
            cfg = json.load(f)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("engines"), dict):
        raise TypeError(f"{path}: a config needs an 'engines' mapping of engine -> sweeps")
    cfg = {**DEFAULTS, **cfg, "path": path}
    bad = [m for m in cfg["modes"] if m not in MODES]
    if bad:
        raise ValueError(f"{path}: unknown modes {bad}; use some of {list(MODES)}")
    return cfg


def default_config_path(dataset_name: str) -> str:
    """``configs/<dataset>.json`` when it exists, else ``configs/default.json``."""
    for ext in (".json", ".yaml", ".yml"):
        path = os.path.join(CONFIG_DIR, dataset_name + ext)
        if os.path.exists(path):
            return path
    return os.path.join(CONFIG_DIR, "default.json")


def dominated(cheaper: dict, candidate: dict) -> bool:
    """True when every numeric parameter of ``candidate`` is >= the one in ``cheaper``."""
    if set(cheaper) != set(candidate):
        return False
    for key, value in cheaper.items():
        other = candidate[key]
        if isinstance(value, (int, float)) and isinstance(other, (int, float)):
            if other < value:
                return False
        elif other != value:
            return False
    return True
