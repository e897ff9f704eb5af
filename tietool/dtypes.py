"""One table of the tensor dtypes tietool knows, across formats.

The canonical name is numpy's (``float32``, ``bfloat16`` ...). safetensors
codes (``F32``, ``BF16`` ...) map onto it. float8 types are listed even where
numpy cannot compute with them: ml_dtypes gives them a numpy dtype for
bit-level work (compare, copy), which is all tietool needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # canonical, numpy-style
    safetensors: str  # safetensors header code
    bits: int  # storage bits per element
    numpy: np.dtype | None  # None: known but not representable here

    @property
    def itemsize(self) -> int:
        return self.bits // 8


def _np(name: str) -> np.dtype | None:
    try:
        return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)
    except TypeError:
        return None


_TABLE = [
    ("bool", "BOOL", 8),
    ("uint8", "U8", 8),
    ("int8", "I8", 8),
    ("uint16", "U16", 16),
    ("int16", "I16", 16),
    ("uint32", "U32", 32),
    ("int32", "I32", 32),
    ("uint64", "U64", 64),
    ("int64", "I64", 64),
    ("float16", "F16", 16),
    ("bfloat16", "BF16", 16),
    ("float32", "F32", 32),
    ("float64", "F64", 64),
    ("float8_e4m3fn", "F8_E4M3", 8),
    ("float8_e5m2", "F8_E5M2", 8),
    ("float8_e8m0fnu", "F8_E8M0", 8),
]

DTYPES: dict[str, DType] = {}
BY_SAFETENSORS: dict[str, DType] = {}
for _name, _code, _bits in _TABLE:
    _dt = DType(_name, _code, _bits, _np(_name))
    DTYPES[_name] = _dt
    BY_SAFETENSORS[_code] = _dt


def from_numpy(dtype: np.dtype) -> DType | None:
    """The DType of a (native or byte-swapped) numpy dtype, or None."""
    dtype = np.dtype(dtype)
    if dtype.kind == "V":
        return None
    return DTYPES.get(dtype.newbyteorder("=").name if dtype.byteorder not in "=|" else dtype.name)


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype for a canonical name (raises KeyError if not representable)."""
    dt = DTYPES[name]
    if dt.numpy is None:
        raise KeyError(name)
    return dt.numpy


def nbytes_for(shape: tuple[int, ...], dtype: str) -> int:
    n = 1
    for d in shape:
        n *= d
    return (n * DTYPES[dtype].bits + 7) // 8
