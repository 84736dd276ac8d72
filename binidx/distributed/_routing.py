"""Which shard owns an id: ``splitmix64(id) mod n_shards``.

The assignment must never change for a given ``(id, n_shards)``: it is how a shard is
found again after a restart, by another client, on another machine or with another
Python.  Python's ``hash()`` is salted per process for strings and is an implementation
detail for ints, so it is not used; splitmix64 (Steele, Lea and Flood, 2014) is a fixed,
well-mixed 64-bit bijection, so consecutive ids spread evenly over the shards.
"""
from __future__ import annotations

import numpy as np

HASH_NAME = "splitmix64-mod"
"""Name of the routing rule, recorded in a sharded index's manifest."""

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def splitmix64(ids: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of each int64 id, as uint64 (wrapping arithmetic).

    Parameters
    ----------
    ids : ndarray of int64
        Any shape.

    Returns
    -------
    ndarray of uint64, same shape

    Examples
    --------
    >>> import numpy as np
    >>> hex(int(splitmix64(np.array([0], dtype=np.int64))[0]))
    '0xe220a8397b1dcdaf'
    """
    z = np.asarray(ids, dtype=np.int64).view(np.uint64) + _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def shard_of(ids: np.ndarray, n_shards: int) -> np.ndarray:
    """The shard (0 .. n_shards - 1) that owns each id.

    Parameters
    ----------
    ids : ndarray of int64
    n_shards : int

    Returns
    -------
    ndarray of int64, same shape as ``ids``

    Examples
    --------
    >>> import numpy as np
    >>> shard_of(np.arange(6, dtype=np.int64), 3).tolist()
    [1, 2, 1, 0, 1, 2]
    """
    return (splitmix64(ids) % np.uint64(n_shards)).astype(np.int64)
