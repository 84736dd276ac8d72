"""Every check on user input, done once at the public boundary.

The kernels trust what reaches them: C-contiguous float32 vectors of the right width,
int64 ids, positive sizes.  Messages say what was expected, what was given and how to
fix it (scikit-learn's ``check_array`` style).
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .errors import InvalidDtypeError, InvalidInputError

METRICS = ("l2", "ip", "cosine")

_ACCEPTED_KINDS = "fiu"  # float, signed int, unsigned int (uint8 SIFT-like data)


def check_metric(metric: Any) -> str:
    """Return the metric name in lower case or raise naming the accepted ones."""
    if not isinstance(metric, str) or metric.lower() not in METRICS:
        raise InvalidInputError(
            f"metric must be one of {', '.join(repr(m) for m in METRICS)}, got {metric!r}"
        )
    return metric.lower()


def check_positive_int(value: Any, name: str, *, allow_none: bool = False,
                       minimum: int = 1, maximum: int | None = None) -> int | None:
    """Validate an integer parameter such as ``k``, ``n_probe`` or ``dim``."""
    if value is None and allow_none:
        return None
    if type(value) is int and value >= minimum and (maximum is None or value <= maximum):
        return value  # the common case, without the slower abstract-class checks
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_probe_ratio(value: Any, name: str = "probe_ratio") -> float | None:
    """Validate an adaptive-probing ratio: None (the default), a number >= 1, or inf
    (every one of the n_probe buckets: fixed probing)."""
    if value is None:
        return None
    if type(value) is float and value >= 1.0:  # the common case, quickly (NaN fails >=)
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number >= 1 or None (fixed n_probe), "
                                f"got {value!r} ({type(value).__name__})")
    value = float(value)
    if np.isnan(value) or value < 1.0:
        raise InvalidInputError(
            f"{name} must be a number >= 1 (a ratio of squared distances to the nearest "
            f"centroid's; 1.5-2 is typical), or None / inf to scan all n_probe buckets, "
            f"got {value}")
    return value


def as_float32_matrix(x: Any, dim: int | None, name: str = "x", *,
                      allow_empty: bool = False) -> np.ndarray:
    """Convert ``x`` to a C-contiguous float32 array of shape (n, dim), checking values.

    Accepts float16/32/64 and integer arrays (uint8 SIFT descriptors), in C or Fortran
    order, or nested sequences.  A single vector of shape (dim,) becomes one row.
    Integer data is converted exactly when it fits float32's 24-bit mantissa.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"{name} could not be read as a 2-D array of numbers ({exc}); "
                "pass a numpy array of shape (n, dim)"
            ) from None
    if arr.dtype.kind not in _ACCEPTED_KINDS:
        raise InvalidDtypeError(
            f"{name} has dtype {arr.dtype}, expected a float (float32/float64) or integer "
            f"(e.g. uint8) array; convert it with np.asarray({name}, dtype=np.float32)"
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dim or 0)
    if arr.ndim != 2:
        raise InvalidInputError(
            f"{name} must be a 2-D array of shape (n, dim), got an array with shape {arr.shape}"
        )
    if dim is not None and arr.shape[1] != dim:
        raise InvalidInputError(
            f"{name} has dimension {arr.shape[1]}, but the index was built with dim={dim}"
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise InvalidInputError(f"{name} is empty (shape {arr.shape}); pass at least one vector")
    if arr.dtype == np.float32:
        out = np.ascontiguousarray(arr)
    else:
        with np.errstate(over="ignore"):  # float64 beyond float32 range: reported below
            out = np.ascontiguousarray(arr, dtype=np.float32)
    # One pass over the converted data; float64 values beyond float32 range become inf.
    if arr.dtype.kind == "f" and out.size and not np.isfinite(out).all():
        bad_rows = np.flatnonzero(~np.isfinite(out).all(axis=1))
        row = int(bad_rows[0])
        what = ("NaN or infinite values" if not np.isfinite(arr[row]).all()
                else "values beyond the float32 range (|x| > 3.4e38)")
        raise InvalidInputError(
            f"{name} contains {what} (first bad row: {row}, {bad_rows.size} bad rows in all); "
            "remove, rescale or impute them before indexing"
        )
    return out


def as_ids(ids: Any, n: int, name: str = "ids") -> np.ndarray:
    """Convert ``ids`` to a 1-D int64 array of length ``n`` without duplicates."""
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError):
        raise InvalidInputError(f"{name} must be a 1-D array of integers") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and arr.size == 0):
        raise InvalidDtypeError(
            f"{name} must be integers (int64), got dtype {arr.dtype}; "
            f"convert with np.asarray({name}, dtype=np.int64)"
        )
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidInputError(f"{name} has {arr.shape[0]} entries but there are {n} vectors")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{name} contains values above the int64 range")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    return out


def first_duplicate(ids: np.ndarray) -> int | None:
    """Return one id that occurs more than once in ``ids``, or None."""
    if ids.size < 2:
        return None
    s = np.sort(ids)
    dup = np.flatnonzero(s[1:] == s[:-1])
    return int(s[dup[0]]) if dup.size else None
