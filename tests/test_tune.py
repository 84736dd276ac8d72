"""Index.tune: the chosen setting meets the target on held-out queries and becomes the default."""
import numpy as np
import pytest

import binidx
from binidx.errors import InvalidInputError, NotTrainedError


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((40, 24)).astype(np.float32) * 4
    x = centers[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 24)).astype(np.float32)
    q = centers[rng.integers(0, 40, 400)] + rng.standard_normal((400, 24)).astype(np.float32)
    return x, q


def recall(index, x, q, k=10):
    truth = binidx.exact_search(x, q, k)
    found = index.search(q, k)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(found.ids, truth.ids)])


def test_tune_meets_target_on_held_out_queries_and_sets_defaults(clustered):
    x, q = clustered
    index = binidx.build(x, seed=3)
    result = index.tune(q[:200], target_recall=0.9, k=10)
    assert result.met_target
    assert result.recall >= 0.9
    assert (index.n_probe, index.n_rerank) == (result.n_probe, result.n_rerank)
    assert result.queries_per_second > 0
    assert {"n_probe", "n_rerank", "recall", "queries_per_second"} <= set(result.trials[0])
    # Held-out queries: the tuned defaults generalise (a little slack for sampling noise).
    assert recall(index, x, q[200:]) >= 0.85


def test_tune_prefers_cheaper_settings_for_lower_targets(clustered):
    x, q = clustered
    index = binidx.build(x, seed=3)
    low = index.tune(q[:200], target_recall=0.5)
    high = index.tune(q[:200], target_recall=0.99)
    assert (low.n_probe, low.n_rerank) <= (high.n_probe, high.n_rerank) or low.n_probe < high.n_probe
    assert low.recall <= high.recall + 1e-9


def test_tuned_defaults_survive_save_and_load(clustered, tmp_path):
    x, q = clustered
    index = binidx.build(x, seed=3)
    result = index.tune(q[:100], target_recall=0.9)
    index.save(tmp_path / "i.binidx")
    loaded = binidx.load(tmp_path / "i.binidx")
    assert (loaded.n_probe, loaded.n_rerank) == (result.n_probe, result.n_rerank)


def test_tune_bad_input(clustered):
    x, q = clustered
    with pytest.raises(NotTrainedError, match="not trained"):
        binidx.Index(24).tune(q)
    empty = binidx.Index(24).train(x)
    with pytest.raises(InvalidInputError, match="empty index"):
        empty.tune(q)
    index = binidx.build(x[:2000])
    with pytest.raises(InvalidInputError, match="target_recall"):
        index.tune(q, target_recall=1.5)
    with pytest.raises(InvalidInputError, match="dimension 3"):
        index.tune(q[:, :3])
