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
over the queries.  For the parameters of ``NONE_IS_LARGEST`` (binidx's ``probe_ratio``)
null means "no limit" and counts as larger than any number: list it last.

``confirm`` sets the confirm phase that follows the sweeps (see runner.py): ``rounds``
interleaved rounds (0 turns it off), recall@10 ``targets``, and ``candidates`` points
per engine, mode and target.  Missing keys take ``CONFIRM_DEFAULTS``.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from typing import Any

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
MODES = ("batch-1t", "batch-all", "single")
CONFIRM_DEFAULTS: dict[str, Any] = {"rounds": 7, "targets": [0.95, 0.99], "candidates": 2}
# Search parameters whose null means "no limit": the costliest, most accurate value.
# (binidx's probe_ratio: a larger ratio visits more of the n_probe buckets, null all.)
NONE_IS_LARGEST = frozenset({"probe_ratio"})
DEFAULTS: dict[str, Any] = {"k": 10, "repeats": 3, "single_queries": 500,
                            "stop_at_recall": None, "max_batch_s": None, "modes": list(MODES),
                            "confirm": CONFIRM_DEFAULTS}


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
        When a mode is unknown or the ``confirm`` settings are out of range.
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
    cfg["confirm"] = check_confirm({**CONFIRM_DEFAULTS, **(cfg.get("confirm") or {})}, path)
    return cfg


def check_confirm(confirm: dict, path: str = "config") -> dict:
    """Validate the ``confirm`` settings; return them with the targets as floats.

    Raises
    ------
    ValueError
        When a key is unknown, ``rounds`` is negative, ``candidates`` is below 1, or a
        target is outside (0, 1].

    Examples
    --------
    >>> check_confirm({"rounds": 3, "targets": [0.95], "candidates": 1})["rounds"]
    3
    """
    unknown = sorted(set(confirm) - set(CONFIRM_DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown confirm keys {unknown}; use some of "
                         f"{list(CONFIRM_DEFAULTS)}")
    rounds, candidates = confirm["rounds"], confirm["candidates"]
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"{path}: confirm rounds must be an integer >= 0 (0 turns the "
                         f"phase off), got {rounds!r}")
    if not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"{path}: confirm candidates must be an integer >= 1, "
                         f"got {candidates!r}")
    targets = confirm["targets"]
    if not isinstance(targets, list) or not targets or not all(
            isinstance(t, (int, float)) and 0 < t <= 1 for t in targets):
        raise ValueError(f"{path}: confirm targets must be a non-empty list of recall@10 "
                         f"levels in (0, 1], e.g. [0.95, 0.99]; got {targets!r}")
    return {"rounds": rounds, "targets": [float(t) for t in targets], "candidates": candidates}


def default_config_path(dataset_name: str) -> str:
    """``configs/<dataset>.json`` when it exists, else ``configs/default.json``."""
    for ext in (".json", ".yaml", ".yml"):
        path = os.path.join(CONFIG_DIR, dataset_name + ext)
        if os.path.exists(path):
            return path
    return os.path.join(CONFIG_DIR, "default.json")


def dominated(cheaper: dict, candidate: dict) -> bool:
    """True when every numeric parameter of ``candidate`` is >= the one in ``cheaper``.

    A null parameter of ``NONE_IS_LARGEST`` counts as +infinity; parameters that are not
    numbers must be equal.

    Examples
    --------
    >>> dominated({"n_probe": 8, "probe_ratio": 1.8}, {"n_probe": 16, "probe_ratio": None})
    True
    >>> dominated({"n_probe": 8, "probe_ratio": None}, {"n_probe": 16, "probe_ratio": 2.0})
    False
    """
    if set(cheaper) != set(candidate):
        return False
    for key, value in cheaper.items():
        other = candidate[key]
        if key in NONE_IS_LARGEST:
            value = math.inf if value is None else value
            other = math.inf if other is None else other
        if isinstance(value, (int, float)) and isinstance(other, (int, float)):
            if other < value:
                return False
        elif other != value:
            return False
    return True
