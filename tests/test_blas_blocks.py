"""Block-parallel BLAS work (binidx/_blas.py) and the k-means assignment built on it."""
import numpy as np
import pytest

from binidx import _blas, _kmeans


def test_assign_over_many_blocks_matches_a_brute_force_argmin(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 16)).astype(np.float32)
    c = rng.standard_normal((300, 16)).astype(np.float32)
    # Small blocks: the 5000 rows go to 20+ blocks on the thread pool.
    monkeypatch.setattr(_kmeans, "_BLOCK_FLOATS", 256 * 300 * _kmeans._BLOCK_SPLIT)
    got = _kmeans.assign(x, c)
    d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    want = d.argmin(1)
    # float32 products may flip exact near-ties only.
    differ = got != want
    assert differ.mean() < 1e-3
    rows = np.flatnonzero(differ)
    np.testing.assert_allclose(d[rows, got[rows]], d[rows, want[rows]], rtol=1e-5)


def test_run_blocks_covers_every_start_once_and_reraises():
    seen = np.zeros(40, dtype=np.int64)

    def work(start):
        seen[start] += 1

    _blas.run_blocks(work, range(40), n_threads=3)
    assert (seen == 1).all()

    def fail(start):
        if start == 7:
            raise ValueError("block 7 failed")

    with pytest.raises(ValueError, match="block 7 failed"):
        _blas.run_blocks(fail, range(10), n_threads=2)


@pytest.mark.parametrize("n,n_lists,want", [
    (1_000_000, 1024, 1024 * _kmeans.TRAIN_POINTS_PER_CENTROID),  # per-list bound
    (1_000_000, 6000, _kmeans.TRAIN_SAMPLE_MAX),                   # total cap
    (10_000_000, 16384, 16384 * _kmeans.TRAIN_POINTS_MIN),         # floor per list
    (5_000, 100, 5_000),                                           # all the data
])
def test_training_sample_size_bounds(n, n_lists, want):
    assert _kmeans.training_sample_size(n, n_lists) == want


def test_kmeans_trains_on_the_capped_sample(monkeypatch):
    """train_kmeans draws exactly training_sample_size points (the cap reaches it)."""
    monkeypatch.setattr(_kmeans, "TRAIN_SAMPLE_MAX", 600)
    monkeypatch.setattr(_kmeans, "TRAIN_POINTS_MIN", 10)
    seen = []
    real_assign = _kmeans.assign

    def spy(x, centers, *args):
        seen.append(x.shape[0])
        return real_assign(x, centers, *args)

    monkeypatch.setattr(_kmeans, "assign", spy)
    x = np.random.default_rng(1).standard_normal((5000, 8)).astype(np.float32)
    _kmeans.train_kmeans(x, 20, np.random.default_rng(2), n_iter=2)
    assert seen and set(seen) == {600}
