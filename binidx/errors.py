"""Exceptions raised by binidx.

All of them derive from :class:`BinidxError`, so ``except binidx.BinidxError`` catches
everything binidx raises on purpose.  Plain value problems (a wrong dimension, NaN in the
input) are also ``ValueError`` / ``TypeError`` so that generic callers keep working.
"""


class BinidxError(Exception):
    """Base class of every exception raised by binidx."""


class InvalidInputError(BinidxError, ValueError):
    """The data passed in has the wrong shape, dimension, values or ids."""


class InvalidDtypeError(BinidxError, TypeError):
    """The data passed in has a dtype binidx cannot use."""


class NotTrainedError(BinidxError, RuntimeError):
    """The index must be trained (``index.train(x)``) before this operation."""


class ReadOnlyIndexError(BinidxError, RuntimeError):
    """The index is opened read-only (for example memory-mapped) and cannot be changed."""


class IndexFormatError(BinidxError, ValueError):
    """A file is not a binidx index, is damaged, truncated, or of an unsupported version."""


class ConcurrencyError(BinidxError, RuntimeError):
    """An operation conflicts with another one running at the same time."""


class VectorFileError(BinidxError, ValueError):
    """A vector file (fvecs/bvecs/ivecs, .npy, HDF5, CSV) is malformed or unreadable.

    The message names the file, the record (when one is at fault) and the problem.
    """


class ShardUnavailableError(BinidxError, RuntimeError):
    """One or more shards did not answer (dead, restarting, or slower than the timeout).

    Attributes
    ----------
    failed : dict of int to str
        Shard number -> why it did not answer.
    answered : tuple of int
        The shards that did answer.
    """

    def __init__(self, message: str, failed: dict[int, str], answered: tuple[int, ...] = ()):
        super().__init__(message)
        self.failed = dict(failed)
        self.answered = tuple(answered)

    def __reduce__(self):
        return (type(self), (self.args[0], self.failed, self.answered))
