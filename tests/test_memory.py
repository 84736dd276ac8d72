"""Deleting vectors gives memory back (issue 4): buckets shrink, float vectors compact."""
import numpy as np

import binidx


def test_deleting_most_of_the_index_gives_memory_back_and_keeps_results_exact():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30000, 32)).astype(np.float32)
    labels = rng.integers(0, 20, 30000)
    # ~470 vectors per bucket, as at 1M vectors with the default n_lists (~250).
    index = binidx.Index(32, n_lists=64, seed=0).train(x)
    index.add(x, labels=labels)
    before = index.memory_usage()
    removed = rng.choice(30000, 24000, replace=False)
    index.remove(removed)
    after = index.memory_usage()
    # 80% of the vectors went: the float vectors and the lists must shrink accordingly.
    assert after["vectors"] < 0.45 * before["vectors"]
    assert after["codes"] < 0.5 * before["codes"]
    alive = np.setdiff1d(np.arange(30000), removed)
    assert set(index.ids().tolist()) == set(alive.tolist())
    np.testing.assert_array_equal(index.get(alive[::97]), x[alive[::97]])
    res = index.search(x[:50], 10, n_probe=index.n_lists, n_rerank=len(index))
    truth = binidx.exact_search(x[alive], x[:50], 10)
    np.testing.assert_array_equal(res.ids, alive[truth.ids])
    got = index.search(x[:20], 10, labels=[4]).ids
    assert np.isin(got[got >= 0], alive[labels[alive] == 4]).all()
    # And the index keeps working: re-adding reuses the freed room.
    index.add(x[removed[:500]], ids=removed[:500], labels=labels[removed[:500]])
    assert len(index) == alive.size + 500
