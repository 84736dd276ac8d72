"""binidx on a Ray cluster: one index sharded over restartable actors.

Install with ``pip install "binidx[distributed]"`` (it adds Ray).  See docs/distributed.md
for deployment (shared storage, shard count, sizing) and failure behaviour.

>>> from binidx.distributed import ShardedIndex        # doctest: +SKIP
>>> index = ShardedIndex.create("/mnt/shared/catalog", n_shards=8, dim=128,
...                             train_x=sample)         # doctest: +SKIP
"""
try:
    import ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "binidx.distributed needs Ray, which is not installed: "
        "pip install 'binidx[distributed]' (or pip install 'ray>=2.9')") from exc

from ._results import ShardedSearchResult, ShardUnavailableError
from ._routing import shard_of, splitmix64
from ._shard import ShardServer
from ._sharded import NAMESPACE, ShardedIndex

__all__ = [
    "NAMESPACE",
    "ShardServer",
    "ShardUnavailableError",
    "ShardedIndex",
    "ShardedSearchResult",
    "shard_of",
    "splitmix64",
]
