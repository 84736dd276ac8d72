"""Machine and library facts written into every result line."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from functools import lru_cache

# The SIMD features that decide which kernels the engines can use.
_FLAGS = ("sse4_2", "popcnt", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
          "avx512_vpopcntdq", "avx512vbmi", "avx512_vnni", "avx512_bitalg", "amx_tile", "asimd", "sve")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model, logical CPU count and the relevant SIMD flags (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "logical_cpus": os.cpu_count(),
            "flags": [f for f in _FLAGS if f in flags]}


@lru_cache(maxsize=1)
def library_versions() -> dict:
    """Versions of Python, NumPy and every engine library that imports."""
    from importlib import metadata

    import numpy

    out = {"python": platform.python_version(), "numpy": numpy.__version__}
    # Distribution metadata, not module attributes: hnswlib has no __version__.
    for name, dist in (("faiss", "faiss-cpu"), ("hnswlib", "hnswlib"), ("binidx", "binidx")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import faiss

        out["faiss_compile_options"] = faiss.get_compile_options().strip()
    except (ImportError, AttributeError):
        pass
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The binidx checkout's commit (``+dirty`` when it has uncommitted changes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                             capture_output=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, text=True, capture_output=True, timeout=10,
                               check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty.strip() else "")) or None


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: on a shared machine they say how noisy timings are."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict:
    """Everything above plus host name, load average and a UTC timestamp."""
    return {"versions": library_versions(), "cpu": cpu_info(), "host": platform.node(),
            "loadavg": load_average(),
            "git": git_commit(),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
