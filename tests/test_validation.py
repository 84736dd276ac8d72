"""Bad input gives clear exceptions (messages checked); good input in any common form works."""
from __future__ import annotations

import numpy as np
import pytest

import binidx
from binidx import Index
from binidx.errors import BinidxError, InvalidDtypeError, InvalidInputError, NotTrainedError

DIM = 8


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).standard_normal((300, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def index(data):
    """A trained index with 300 vectors; tests must leave it unchanged."""
    return binidx.build(data, n_lists=4, n_bits=64)


# ----------------------------------------------------------------------- values
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["train", "add", "search"])
def test_nan_and_inf_are_refused(data, bad, where):
    x = data[:50].copy()
    x[7, 3] = bad
    name = "q" if where == "search" else "x"
    match = rf"{name} contains NaN or infinite values \(first bad row: 7, 1 bad rows in all\)"
    target = binidx.build(data, n_lists=4, n_bits=64) if where != "train" else Index(DIM, n_lists=4)
    with pytest.raises(InvalidInputError, match=match):
        getattr(target, where)(x)
    if where == "add":
        assert len(target) == 300  # nothing was added


def test_float64_beyond_float32_range_is_refused(index):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow of the cast must not leak a warning
        with pytest.raises(InvalidInputError, match=r"q contains values beyond the float32 range"):
            index.search(np.full((1, DIM), 1e300))


@pytest.mark.parametrize("shape", [(3, DIM + 1), (3, DIM - 1), (DIM - 3,)])
def test_wrong_dimension(index, shape):
    with pytest.raises(InvalidInputError,
                       match=rf"q has dimension {shape[-1]}, but the index was built with dim={DIM}"):
        index.search(np.ones(shape, np.float32))
    with pytest.raises(InvalidInputError,
                       match=rf"x has dimension {shape[-1]}, but the index was built with dim={DIM}"):
        index.add(np.ones(shape, np.float32))


def test_three_dimensional_input(index):
    with pytest.raises(InvalidInputError, match=r"q must be a 2-D array of shape \(n, dim\), got an "
                                                r"array with shape \(2, 1, 8\)"):
        index.search(np.ones((2, 1, DIM), np.float32))


@pytest.mark.parametrize("value,dtype", [
    (np.full((2, DIM), "a"), "<U1"),
    ([["x"] * DIM], "<U1"),
    (np.ones((2, DIM), np.complex64), "complex64"),
    (np.ones((2, DIM), dtype=object), "object"),
    (np.ones((2, DIM), dtype=bool), "bool"),
])
def test_wrong_dtype(index, value, dtype):
    with pytest.raises(InvalidDtypeError, match=rf"q has dtype {dtype}, expected a float .* or "
                                                r"integer .*convert it with np.asarray\(q, dtype=np.float32\)"):
        index.search(value)
    with pytest.raises(TypeError):      # InvalidDtypeError is also a TypeError
        index.add(value)


def test_ragged_lists(index):
    with pytest.raises(InvalidInputError, match="q could not be read as a 2-D array of numbers"):
        index.search([[1.0] * DIM, [1.0] * 3])


@pytest.mark.parametrize("empty", [np.zeros((0, DIM), np.float32), np.array([]), []])
def test_empty_input(index, empty):
    with pytest.raises(InvalidInputError, match=r"q is empty \(shape \(0, 8\)\); pass at least one vector"):
        index.search(empty)
    with pytest.raises(InvalidInputError, match=r"x is empty \(shape \(0, 8\)\)"):
        index.add(empty)
    with pytest.raises(InvalidInputError, match=r"x is empty"):
        Index(DIM).train(empty)


# ----------------------------------------------------------------- parameters
@pytest.mark.parametrize("k,match", [
    (0, "k must be >= 1, got 0"),
    (-3, "k must be >= 1, got -3"),
    (2.5, r"k must be an integer, got 2.5 \(float\)"),
    ("3", r"k must be an integer, got '3' \(str\)"),
    (True, r"k must be an integer, got True \(bool\)"),
    (None, r"k must be an integer, got None"),
])
def test_bad_k(index, data, k, match):
    with pytest.raises(InvalidInputError, match=match):
        index.search(data[:2], k=k)


def test_numpy_integer_k_is_accepted(index, data):
    assert index.search(data[:2], k=np.int32(3)).ids.shape == (2, 3)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_probe": 0}, "n_probe must be >= 1, got 0"),
    ({"n_rerank": 0}, "n_rerank must be >= 1, got 0"),
    ({"n_threads": 0}, "n_threads must be >= 1, got 0"),
    ({"n_probe": 1.5}, r"n_probe must be an integer, got 1.5"),
])
def test_bad_search_parameters(index, data, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        index.search(data[:1], **kwargs)


@pytest.mark.parametrize("action,args,match", [
    ("search", lambda x: (x[:1],), "cannot search: the index is not trained; call index.train"),
    ("add", lambda x: (x[:1],), "cannot add vectors: the index is not trained"),
    ("remove", lambda x: ([1],), "cannot remove vectors: the index is not trained"),
])
def test_before_training(data, action, args, match):
    index = Index(DIM)
    with pytest.raises(NotTrainedError, match=match):
        getattr(index, action)(*args(data))
    assert not index.is_trained


@pytest.mark.parametrize("metric", ["hamming", "", None, 2])
def test_bad_metric(metric):
    with pytest.raises(InvalidInputError, match=r"metric must be one of 'l2', 'ip', 'cosine', got "):
        Index(DIM, metric=metric)


def test_metric_is_case_insensitive():
    assert Index(DIM, metric="COSINE").metric == "cosine"


@pytest.mark.parametrize("n_bits,match", [
    (100, r"n_bits must be a multiple of 64 \(codes are stored as 64-bit words\), got 100; try n_bits=128"),
    (65, "n_bits must be a multiple of 64.*try n_bits=128"),
    (0, "n_bits must be >= 64, got 0"),
    (32, "n_bits must be >= 64, got 32"),
    (1088, "n_bits must be <= 1024, got 1088"),
    (2048, "n_bits must be <= 1024, got 2048"),
    (64.0, r"n_bits must be an integer, got 64.0 \(float\)"),
])
def test_bad_n_bits(n_bits, match):
    with pytest.raises(InvalidInputError, match=match):
        Index(DIM, n_bits=n_bits)


@pytest.mark.parametrize("kwargs,match", [
    ({"dim": 0}, "dim must be >= 1, got 0"),
    ({"dim": "8"}, r"dim must be an integer, got '8' \(str\)"),
    ({"dim": DIM, "n_lists": 0}, "n_lists must be >= 1, got 0"),
    ({"dim": DIM, "seed": 1.5}, "seed must be an integer, got 1.5"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        Index(**kwargs)


def test_more_lists_than_training_vectors(data):
    with pytest.raises(InvalidInputError, match="n_lists=301 needs at least 301 training vectors, "
                                                "got 300; train on more vectors or choose a smaller n_lists"):
        Index(DIM, n_lists=301).train(data)


def test_training_twice_is_refused(index, data):
    with pytest.raises(InvalidInputError, match="the index already holds 300 vectors; training again"):
        index.train(data)


# ------------------------------------------------------------------------ ids
def test_duplicate_ids_in_a_batch(index, data):
    with pytest.raises(InvalidInputError, match="ids contains 500 more than once; ids must be distinct"):
        index.add(data[:3], ids=[500, 501, 500])
    assert len(index) == 300 and 501 not in index


def test_adding_an_existing_id_names_it(index, data):
    with pytest.raises(KeyError, match=r"id 5 is already in the index \(1 of the given ids are\); "
                                       "remove them first or use distinct ids"):
        index.add(data[:2], ids=[900, 5])
    assert len(index) == 300 and 900 not in index


@pytest.mark.parametrize("ids,error,match", [
    ([900], InvalidInputError, "ids has 1 entries but there are 2 vectors"),
    ([900.0, 901.0], InvalidDtypeError, r"ids must be integers \(int64\), got dtype float64"),
    (["a", "b"], InvalidDtypeError, r"ids must be integers \(int64\), got dtype <U1"),
    ([[900, 901]], InvalidInputError, r"ids must be 1-D, got shape \(1, 2\)"),
])
def test_bad_ids(index, data, ids, error, match):
    with pytest.raises(error, match=match):
        index.add(data[:2], ids=ids)


def test_cosine_zero_vector(data):
    x = data.copy()
    x[42] = 0.0
    with pytest.raises(InvalidInputError, match="x row 42 is a zero vector, which has no cosine "
                                                "similarity; remove zero vectors or use metric='l2' / 'ip'"):
        binidx.build(x, metric="cosine", n_lists=4)
    index = binidx.build(data, metric="cosine", n_lists=4)
    with pytest.raises(InvalidInputError, match="q row 1 is a zero vector"):
        index.search(np.stack([data[0], np.zeros(DIM, np.float32)]))


def test_every_error_is_a_binidx_error(index):
    for call in (lambda: index.search(np.ones((1, 3))), lambda: Index(0),
                 lambda: index.search(np.ones((1, DIM), complex)), lambda: Index(DIM).add(np.ones((1, DIM)))):
        with pytest.raises(BinidxError):
            call()


# ----------------------------------------------------------- accepted inputs
def test_one_dimensional_query_is_one_row(index, data):
    d, i = index.search(data[3], k=4)
    assert d.shape == i.shape == (1, 4)
    assert i[0, 0] == 3


@pytest.mark.parametrize("convert", [
    lambda q: np.asfortranarray(q),
    lambda q: q.astype(np.float64),
    lambda q: np.asfortranarray(q.astype(np.float64)),
    lambda q: q.tolist(),
    lambda q: q.astype(np.float16),
    lambda q: q[:, ::-1][:, ::-1],                        # negative strides
], ids=["fortran", "float64", "fortran-float64", "list", "float16", "strided"])
def test_query_forms_give_the_same_results(index, data, convert):
    q = np.ascontiguousarray(data[10:20])
    converted = convert(q)
    base = np.asarray(converted, dtype=np.float32)
    want = index.search(np.ascontiguousarray(base), k=5)
    got = index.search(converted, k=5)
    assert np.array_equal(got.ids, want.ids) and np.array_equal(got.distances, want.distances)


def test_uint8_data_is_accepted_exactly(sift):
    x8 = sift.base[:1500].astype(np.uint8)
    a = binidx.build(x8, n_lists=8, seed=1)
    b = binidx.build(sift.base[:1500], n_lists=8, seed=1)
    q8 = sift.queries[:10].astype(np.uint8)
    ra, rb = a.search(q8, k=5), b.search(sift.queries[:10], k=5)
    assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.distances, rb.distances)
    assert np.array_equal(a._get_state()[1]["codes"], b._get_state()[1]["codes"])


def test_list_of_lists_and_fortran_data_build_the_same_index(data):
    a = binidx.build(data[:200], n_lists=4, seed=5)
    b = binidx.build(data[:200].tolist(), n_lists=4, seed=5)
    c = binidx.build(np.asfortranarray(data[:200].astype(np.float64)), n_lists=4, seed=5)
    for other in (b, c):
        for name, arr in a._get_state()[1].items():
            assert np.array_equal(arr, other._get_state()[1][name]), name


def test_negative_ids_are_refused_on_insert(index):
    with pytest.raises(InvalidInputError, match=r"ids must be >= 0, got -1"):
        index.add(np.ones((1, DIM), np.float32), ids=[-1])
    with pytest.raises(InvalidInputError, match=r"ids must be >= 0, got -5"):
        index.upsert(np.ones((2, DIM), np.float32), ids=[3, -5])
