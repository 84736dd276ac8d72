"""binidx: approximate nearest-neighbour search with IVF buckets of binary codes."""
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

__all__ = [
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
