"""Binary encoder: random orthogonal projection + sign bits + per-vector correction factors.

For a vector x in the bucket of centroid c the encoder stores

* the sign bits of ``z = P (x - c)``, packed little-endian into ``n_bits // 64`` uint64 words
  (bit i of the code is coordinate i of z);
* two float32 factors: ``a = scale * ||z||^2 / ||z||_1`` and ``rn2 = ||x - c||^2``.

With ``s = 2 b - 1`` (the ±1 code) the RaBitQ-style estimator of an inner product with the
residual is ``<x - c, y> ≈ a * <s, P y>``: the code is the unit vector ``s / sqrt(n_bits)``
closest in angle to ``z``, and ``a`` corrects for the angle between them, which makes the
estimator unbiased.  ``P`` has orthonormal columns when ``n_bits >= dim`` (inner products
are preserved, ``scale = 1``) and orthonormal rows when ``n_bits < dim`` (a Johnson-
Lindenstrauss projection, ``scale = dim / n_bits`` restores the expected value).  The query
side (5-bit symmetric quantisation of ``P y``, look-up tables or bit planes) lives in the
compiled kernels.
"""
from __future__ import annotations

import numpy as np

N_BITS_MIN = 64
N_BITS_MAX = 1024


def default_n_bits(dim: int) -> int:
    """One bit per dimension, rounded up to whole 64-bit words, within [64, 1024]."""
    return int(min(N_BITS_MAX, max(N_BITS_MIN, -(-dim // 64) * 64)))


def make_projection(dim: int, n_bits: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Random matrix P of shape (n_bits, dim) with orthonormal rows or columns, and its scale.

    The QR factorisation is sign-normalised (``diag(R) > 0``) so the same seed gives the
    same matrix on every run.
    """
    rows, cols = max(dim, n_bits), min(dim, n_bits)
    gaussian = rng.standard_normal((rows, cols))
    q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diag(r))[None, :]
    if n_bits >= dim:
        projection, scale = q, 1.0             # (n_bits, dim), orthonormal columns
    else:
        projection, scale = q.T, dim / n_bits  # (n_bits, dim), orthonormal rows
    return np.ascontiguousarray(projection, dtype=np.float32), float(scale)


def pack_signs(z: np.ndarray) -> np.ndarray:
    """Pack ``z > 0`` row-wise into uint64 words, bit i of the code = column i of z."""
    n, n_bits = z.shape
    packed = np.packbits(z > 0, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").reshape(n, n_bits // 64).astype(np.uint64, copy=False)


def encode(residuals: np.ndarray, projection: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Encode residuals (n, dim) float32 into codes (n, n_words) uint64 and factors (n, 2) float32."""
    z = residuals @ projection.T
    codes = pack_signs(z)
    l1 = np.abs(z).sum(axis=1, dtype=np.float64)
    l2sq = np.einsum("ij,ij->i", z, z, dtype=np.float64)
    factors = np.empty((residuals.shape[0], 2), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A residual of zero (the vector is its centroid) has no direction: factor 0.
        factors[:, 0] = np.where(l1 > 0, scale * l2sq / np.where(l1 > 0, l1, 1.0), 0.0)
    factors[:, 1] = np.einsum("ij,ij->i", residuals, residuals, dtype=np.float64)
    return codes, factors
