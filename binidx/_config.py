"""``binidx.show_config()``: what this build of binidx runs with."""
from __future__ import annotations

import os
import platform
import sys


def _cpu_flags() -> list[str]:
    wanted = {"popcnt", "avx2", "bmi2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq",
              "avx512_vpopcntdq", "avx512vbmi"}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def config() -> dict:
    """The configuration as a dict (see :func:`show_config`)."""
    import numpy as np

    from ._kernels import _search
    from ._version import __version__
    from .index import _default_threads

    return {
        "binidx": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "kernel_path": _search.active_path(),
        "kernel_name": _search.kernel_name(),
        "best_kernel_path": _search.best_path(),
        "openmp": _search.has_openmp(),
        "default_threads": _default_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
    }


def show_config(file=None) -> dict:
    """Print and return the version, the compiled CPU path picked at run time and threads.

    Returns
    -------
    dict
        ``binidx``, ``python``, ``numpy`` versions, ``kernel_path`` (``"generic"``,
        ``"avx2"`` or ``"avx512"``: the kernels in use), ``best_kernel_path``,
        ``openmp``, ``default_threads`` and the CPU flags that matter.

    Examples
    --------
    >>> import binidx
    >>> cfg = binidx.show_config()  # doctest: +SKIP
    """
    cfg = config()
    out = file or sys.stdout
    width = max(len(k) for k in cfg)
    for key, value in cfg.items():
        if isinstance(value, list):
            value = " ".join(value) or "-"
        print(f"{key:<{width}}  {value}", file=out)
    return cfg
