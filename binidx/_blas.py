"""BLAS products split over our own threads, each running a single-threaded BLAS.

A multi-threaded BLAS synchronises its threads inside every product.  On a shared 2-core
machine (load above the core count) a thread that is descheduled stalls the others while
they spin: the dev-text build took 26 s of wall time for 7 s of CPU time that way.  Rows
of a large product are independent, so the build instead splits them into blocks, runs
the blocks on a thread pool (NumPy releases the GIL inside BLAS calls and reductions) and
limits BLAS to one thread meanwhile.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_CONTROLLER = None  # threadpoolctl controller, made once: inspecting the libraries costs ~1 ms


def one_blas_thread():
    """Context manager limiting BLAS to one thread (no-op without threadpoolctl)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            return contextlib.nullcontext()
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_THREADS: int | None = None


def default_threads() -> int:
    """Cores this process may run on (looked up once: it costs a system call)."""
    global _THREADS
    if _THREADS is None:
        try:
            _THREADS = max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            _THREADS = max(1, os.cpu_count() or 1)
    return _THREADS


def run_blocks(work: Callable[[int], None], starts: range, n_threads: int | None = None) -> None:
    """Call ``work(start)`` for every start, on up to ``n_threads`` threads, with BLAS
    limited to one thread.  ``work`` must write disjoint outputs."""
    n_threads = min(n_threads or default_threads(), len(starts))
    with one_blas_thread():
        if n_threads <= 1:
            for start in starts:
                work(start)
            return
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            # list() re-raises the first exception a block raised.
            list(pool.map(work, starts))
