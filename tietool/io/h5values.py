"""HDF5 attribute values as plain Python data: bytes decoded as UTF-8
(an error naming the attribute otherwise), numpy arrays as lists, numpy
scalars as Python numbers."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from tietool.errors import CorruptCheckpointError


def is_vlen_string(tid) -> bool:
    try:
        return tid.get_class() == h5py.h5t.STRING and tid.is_variable_str()
    except Exception:
        return False


def plain(value: Any, label: str, file_label: str) -> Any:
    if isinstance(value, bytes):
        return decode(value, label, file_label)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SOU":
            return [decode(v, label, file_label) if isinstance(v, bytes) else str(v) for v in value.ravel().tolist()]
        if value.size == 0:
            return []
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(raw: bytes, label: str, file_label: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptCheckpointError(f"{label} is not valid UTF-8", file_label) from None
