"""binidx: approximate nearest-neighbour search with IVF buckets of binary codes."""
from ._config import show_config
from ._durable import DurableIndex, open
from ._exact import SearchResult, exact_search
from ._persist import load, read_metadata
from ._version import __version__
from .errors import (
    BinidxError,
    ConcurrencyError,
    IndexFormatError,
    InvalidDtypeError,
    InvalidInputError,
    NotTrainedError,
    ReadOnlyIndexError,
    VectorFileError,
)
from .index import Index, build

__all__ = [
    "BinidxError",
    "ConcurrencyError",
    "DurableIndex",
    "Index",
    "IndexFormatError",
    "InvalidDtypeError",
    "InvalidInputError",
    "NotTrainedError",
    "ReadOnlyIndexError",
    "SearchResult",
    "VectorFileError",
    "__version__",
    "build",
    "exact_search",
    "load",
    "open",
    "read_metadata",
    "show_config",
]
