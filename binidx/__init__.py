"""binidx: approximate nearest-neighbour search with IVF buckets of binary codes."""
from ._version import __version__
from ._exact import SearchResult, exact_search
from .index import Index, build
from ._persist import load, read_metadata
from ._durable import open, DurableIndex
from ._config import show_config
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

__all__ = [
    "Index",
    "DurableIndex",
    "open",
    "SearchResult",
    "build",
    "exact_search",
    "load",
    "read_metadata",
    "show_config",
    "__version__",
    "BinidxError",
    "ConcurrencyError",
    "IndexFormatError",
    "InvalidDtypeError",
    "InvalidInputError",
    "NotTrainedError",
    "ReadOnlyIndexError",
    "VectorFileError",
]
