"""Reading contiguous tensor bytes straight from a file by offset.

Both safetensors and contiguous HDF5 datasets keep a tensor as one run of
little-endian bytes at a known offset: reading rows is one ``pread``, with no
library in between, and nothing else of the file is touched.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np

from tietool import dtypes
from tietool.errors import CorruptCheckpointError


class FileHandles:
    """Lazily opened read-only descriptors, one per file."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except OSError as exc:
                raise CorruptCheckpointError(f"cannot open ({(exc.strerror or str(exc)).lower()})", path) from None
            self._fds[path] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def read_into(fd: int, view: memoryview, offset: int, label: str) -> None:
    """Fill ``view`` with the file's bytes from ``offset``, or raise: a short
    read means the file ends early."""
    got = 0
    while got < len(view):
        rest = view[got:]
        try:
            n = os.preadv(fd, [rest], offset + got) if hasattr(os, "preadv") else _pread_into(fd, rest, offset + got)
        except OSError as exc:  # EIO from a failing disk: the source's problem, named as such
            raise CorruptCheckpointError(f"cannot read ({(exc.strerror or str(exc)).lower()})", label) from None
        if n <= 0:
            raise CorruptCheckpointError(
                f"unexpected end of file reading {len(view)} bytes at offset {offset}: truncated?", label
            )
        got += n


def read_exact(fd: int, offset: int, length: int, label: str) -> bytearray:
    buf = bytearray(length)
    read_into(fd, memoryview(buf), offset, label)
    return buf


def _pread_into(fd: int, view: memoryview, offset: int) -> int:  # pragma: no cover - non-POSIX
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


def read_rows(fd: int, offset: int, shape: tuple[int, ...], dtype: str, start: int, stop: int,
              label: str) -> np.ndarray:
    """Rows ``start:stop`` of a C-ordered little-endian array at ``offset``,
    in stored form (:func:`tietool.dtypes.stored_dtype`), native byte order."""
    np_dtype = dtypes.stored_dtype(dtype).newbyteorder("<")
    if not shape:
        buf = read_exact(fd, offset, np_dtype.itemsize, label)
        return np.frombuffer(buf, dtype=np_dtype).reshape(()).astype(np_dtype.newbyteorder("="), copy=False)
    row_elems = math.prod(shape[1:])
    row_bytes = row_elems * np_dtype.itemsize
    count = max(0, stop - start)
    buf = read_exact(fd, offset + start * row_bytes, count * row_bytes, label)
    arr = np.frombuffer(buf, dtype=np_dtype).reshape((count,) + tuple(shape[1:]))
    return arr.astype(np_dtype.newbyteorder("="), copy=False)
