"""Fixed point: a real x is the integer round(x · 2^bits); products carry the sum of the bits.

Integers travel as numpy object arrays of Python ints, because products and masked
values outgrow int64.
"""

from __future__ import annotations

import numpy as np


def encode(x: np.ndarray, bits: int, bound: float | None = None) -> np.ndarray:
    """round(x · 2^bits) as Python ints; with `bound`, values are first clipped to ±bound."""
    values = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot encode NaN or infinite values")
    if bound is not None:
        values = np.clip(values, -bound, bound)
    scaled = np.rint(np.ldexp(values, bits))
    return np.array([int(s) for s in scaled.ravel()], dtype=object).reshape(scaled.shape)


def decode(v: np.ndarray, bits: int) -> np.ndarray:
    """The reals behind fixed-point integers at scale 2^bits (correctly rounded)."""
    arr = np.asarray(v, dtype=object)
    scale = 1 << bits
    return np.array([int(x) / scale for x in arr.ravel()], dtype=np.float64).reshape(arr.shape)

