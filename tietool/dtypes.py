"""One table of the tensor dtypes tietool knows, across formats.

The canonical name is numpy's (``float32``, ``bfloat16`` ...). safetensors
codes (``F32``, ``BF16`` ...) map onto it.

Two numpy views of a tensor: its *stored* form, for the work done on bytes
(copying, bitwise comparison, transposition, byte order), and its *values*,
for arithmetic (a tolerance, a printed number, running the layer). numpy knows
most dtypes itself, and then the two are the same. bfloat16 and float8 it does
not know: they are stored as unsigned integers of their width (numpy describes
those without help), and only their values need ``ml_dtypes``, imported in
:func:`value_dtype` on first use (``ml_dtypes`` 0.7 takes half a second to
import: no command pays that to copy or compare bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # canonical, numpy-style
    safetensors: str  # safetensors header code
    bits: int  # storage bits per element
    native: bool  # numpy has the dtype itself; otherwise its values come from ml_dtypes

    @property
    def itemsize(self) -> int:
        return self.bits // 8

    @property
    def stored(self) -> np.dtype:
        """The numpy dtype the bytes are handled as: the dtype itself, or
        unsigned integers of its width (bfloat16 -> uint16, float8 -> uint8)."""
        return np.dtype(self.name) if self.native else np.dtype(f"u{self.itemsize}")


# name, safetensors code, bits, numpy knows it
_TABLE = [
    ("bool", "BOOL", 8, True),
    ("uint8", "U8", 8, True),
    ("int8", "I8", 8, True),
    ("uint16", "U16", 16, True),
    ("int16", "I16", 16, True),
    ("uint32", "U32", 32, True),
    ("int32", "I32", 32, True),
    ("uint64", "U64", 64, True),
    ("int64", "I64", 64, True),
    ("float16", "F16", 16, True),
    ("bfloat16", "BF16", 16, False),
    ("float32", "F32", 32, True),
    ("float64", "F64", 64, True),
    ("float8_e4m3fn", "F8_E4M3", 8, False),
    ("float8_e5m2", "F8_E5M2", 8, False),
    ("float8_e8m0fnu", "F8_E8M0", 8, False),
]

DTYPES: dict[str, DType] = {}
BY_SAFETENSORS: dict[str, DType] = {}
for _name, _code, _bits, _native in _TABLE:
    _dt = DType(_name, _code, _bits, _native)
    DTYPES[_name] = _dt
    BY_SAFETENSORS[_code] = _dt


def from_numpy(dtype: np.dtype) -> DType | None:
    """The DType of a (native or byte-swapped) numpy dtype, or None."""
    dtype = np.dtype(dtype)
    if dtype.kind == "V":
        return None
    return DTYPES.get(dtype.newbyteorder("=").name if dtype.byteorder not in "=|" else dtype.name)


def stored_dtype(name: str) -> np.dtype:
    """The numpy dtype a tensor of canonical dtype ``name`` is read and
    written as (:attr:`DType.stored`; raises KeyError for an unknown name)."""
    return DTYPES[name].stored


def value_dtype(name: str) -> np.dtype:
    """The numpy dtype whose elements are the values of ``name``: imports
    ``ml_dtypes`` for bfloat16 and float8 (only here)."""
    dt = DTYPES[name]
    if dt.native:
        return np.dtype(name)
    import ml_dtypes

    value = getattr(ml_dtypes, name, None)
    if value is None:  # an ml_dtypes older than pyproject.toml asks for
        raise KeyError(f"{name} (needs a newer ml_dtypes)")
    return np.dtype(value)


def as_values(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` (a tensor of canonical dtype ``name``, stored form or already
    values) as values: a view, no copy. Native dtypes are returned as they are."""
    dt = DTYPES[name]
    if dt.native or arr.dtype != dt.stored:
        return arr
    return arr.view(value_dtype(name))


def nbytes_for(shape: tuple[int, ...], dtype: str) -> int:
    n = 1
    for d in shape:
        n *= d
    return (n * DTYPES[dtype].bits + 7) // 8
