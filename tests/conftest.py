"""Shared fixtures of the binidx test suite.

* ``sift`` / ``text``: the embedded real datasets (``binidx.datasets``), loaded once.
* ``sift_index`` / ``text_index``: default-parameter indexes over them, built once per
  session (about 3 s and 1 s); tests must not modify them.
* ``kernel_path``: parametrises a test over the kernel paths this CPU can run and
  restores the active path afterwards.
* ``--run-slow``: tests marked ``slow`` (the full ``../shared/data`` sets, over 30 s) are
  skipped unless it is given; they also skip when the data is absent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import binidx
from binidx.datasets import load_embedded

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (full ../shared/data sets)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: give --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sift() -> binidx.datasets.Dataset:
    return load_embedded("sift-20k")


@pytest.fixture(scope="session")
def text() -> binidx.datasets.Dataset:
    return load_embedded("text-5k")


@pytest.fixture(scope="session")
def sift_index(sift) -> binidx.Index:
    return binidx.build(sift.base, metric=sift.metric, seed=0)


@pytest.fixture(scope="session")
def text_index(text) -> binidx.Index:
    return binidx.build(text.base, metric=text.metric, seed=0)


def _kernels():
    from binidx._kernels import _search

    return _search


def supported_paths() -> list[str]:
    """Kernel paths this CPU can run, slowest first."""
    k = _kernels()
    return list(k.PATH_NAMES[:k.PATH_NAMES.index(k.best_path()) + 1])


@pytest.fixture(params=["generic", "avx2", "avx512"])
def kernel_path(request) -> str:
    """Activate one kernel path for the test (skip it when the CPU lacks it); restore after."""
    k = _kernels()
    if request.param not in supported_paths():
        pytest.skip(f"this CPU cannot run the {request.param} kernels (best: {k.best_path()})")
    before = k.active_path()
    k.set_path(request.param)
    yield request.param
    k.set_path(before)

