"""What the router gives back: merged search results, and the error for missing shards."""
from __future__ import annotations

import re

import numpy as np

from .._exact import SearchResult
from ..errors import ShardUnavailableError  # noqa: F401 - re-exported here

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ShardedSearchResult(SearchResult):
    """A :class:`~binidx.SearchResult` that also says which shards answered.

    It unpacks as ``D, I = result`` like any search result.

    Attributes
    ----------
    answered : tuple of int
        Shards whose results were merged.
    failed : dict of int to str
        Shards that did not answer, and why (empty unless ``allow_partial=True``).
    """

    def __new__(cls, distances: np.ndarray, ids: np.ndarray, answered: tuple[int, ...] = (),
                failed: dict[int, str] | None = None):
        self = super().__new__(cls, distances, ids)
        self.answered = tuple(answered)
        self.failed = dict(failed or {})
        return self

    @property
    def complete(self) -> bool:
        """True when every shard answered."""
        return not self.failed

    def __getnewargs__(self):
        return (self.distances, self.ids, self.answered, self.failed)


def reason(exc: BaseException) -> str:
    """A one-line reason from a Ray error (whose message may hold a whole traceback)."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {last}"[:400]


def merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int,
          metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(distances, ids)`` of shape (n_queries, k) into the global top k.

    Rows are ordered as one local index orders them: best distance first (smallest for
    l2, largest for ip / cosine), ties by the smaller id, padding (id -1) last.

    Examples
    --------
    >>> import numpy as np
    >>> a = (np.array([[1.0, 4.0]], np.float32), np.array([[7, 3]]))
    >>> b = (np.array([[1.0, np.inf]], np.float32), np.array([[5, -1]]))
    >>> merge([a, b], 3, "l2")[1].tolist()
    [[5, 7, 3]]
    """
    if len(parts) == 1:  # copies: arrays from Ray's object store are read-only
        return np.array(parts[0][0]), np.array(parts[0][1])
    d = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    key = d if metric == "l2" else -d
    order = np.lexsort((i, key, i < 0), axis=-1)[:, :k]
    return (np.ascontiguousarray(np.take_along_axis(d, order, axis=1)),
            np.ascontiguousarray(np.take_along_axis(i, order, axis=1)))
