"""Machine bounds for the kernel micro-benchmarks, measured once per session.

Each micro-benchmark stores what it achieved in ``benchmark.extra_info`` next to the
bound it is compared with; the table printed at the end of the run puts them side by
side.  Bounds are measured here, on the same machine and in the same process:

* ``copy_gbs``: single-thread memory bandwidth, 2 x bytes / time of ``np.copyto`` on
  256 MiB arrays (read + write), best of 5;
* ``popcount_words_s``: 64-bit words per second through ``np.bitwise_count`` on 8 MiB
  (cache-resident), best of 5 - NumPy's popcount loop, a reference rate rather than the
  hardware peak (a vectorised AVX-512 kernel can beat it several times over);
* ``sgemm_flops``: float32 FLOP/s of a 1024 x 1024 x 1024 ``np.matmul`` (NumPy's BLAS,
  its own thread count), best of 5: the bound of the matrix-product parts of encoding.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

_RESULTS: list[tuple[str, str, float, str, float]] = []


def _best_of(fn, repeats: int = 5) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.fixture(scope="session")
def bounds() -> dict[str, float]:
    src = np.ones(32 * 2**20, dtype=np.float64)  # 256 MiB
    dst = np.empty_like(src)
    copy_s = _best_of(lambda: np.copyto(dst, src))
    words = np.random.default_rng(0).integers(0, 2**63, size=2**20, dtype=np.uint64)
    out = np.empty(words.shape, dtype=np.uint8)
    pop_s = _best_of(lambda: np.bitwise_count(words, out=out))
    a = np.random.default_rng(1).random((1024, 1024), dtype=np.float32)
    mm_s = _best_of(lambda: a @ a)
    return {"copy_gbs": 2 * src.nbytes / copy_s / 1e9, "popcount_words_s": words.size / pop_s,
            "sgemm_flops": 2 * 1024**3 / mm_s}


@pytest.fixture
def report(request):
    """``report(achieved, unit, bound)``: keep one row for the closing table."""

    def add(achieved: float, unit: str, bound: float) -> None:
        _RESULTS.append((request.node.name, unit, achieved, f"{bound:,.3g}", achieved / bound))

    return add


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("kernel throughput against machine bounds (median round)")
    tr.write_line(f"{'benchmark':<44} {'unit':<18} {'achieved':>12} {'bound':>12} {'ratio':>7}")
    for name, unit, achieved, bound, ratio in _RESULTS:
        tr.write_line(f"{name:<44} {unit:<18} {achieved:>12,.3g} {bound:>12} {ratio:>7.2f}")
