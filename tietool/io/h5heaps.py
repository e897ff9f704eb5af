"""Global heap collections checked before HDF5 reads from them.

Variable-length strings (Keras' attribute lists, configs) live in global heap
collections ("GCOL"). HDF5 loops forever, or reads past a collection, whose
object sizes are corrupt, so :func:`check_heaps` walks every collection the
way HDF5 will before the first variable-length value is read
(:meth:`tietool.io.h5safe.SafeH5.check_global_heaps`).

Only the file outside dataset storage is scanned (collections are metadata):
the cost stays that of the headers, not of the weights.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from typing import IO, Any, Iterable

import h5py

from tietool.blocks import SCAN_WINDOW_BYTES
from tietool.errors import CorruptCheckpointError, UnsafeCheckpointError


def zip_errors() -> tuple[type[BaseException], ...]:
    """``zipfile.BadZipFile`` once a ``.keras`` archive was opened (zipfile
    imported): none can be raised before. zipfile is not imported for this:
    with what it pulls in it costs 14 ms of every command's start-up."""
    module = sys.modules.get("zipfile")
    return (module.BadZipFile,) if module is not None else ()


def data_extents(datasets: Iterable[Any], label: str, max_chunks: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the stored data of ``datasets`` (h5py
    dataset ids), from their headers only (nothing is read from the data).
    A dataset of more than ``max_chunks`` chunks is refused before its
    chunks are listed."""
    extents: list[tuple[int, int]] = []
    for oid in datasets:
        layout = oid.get_create_plist().get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            offset = oid.get_offset()
            if offset is not None:
                extents.append((offset, offset + oid.get_storage_size()))
        elif layout == h5py.h5d.CHUNKED:
            n = oid.get_num_chunks()
            if n > max_chunks:
                name = (h5py.h5i.get_name(oid) or b"?").decode("utf-8", "replace")
                raise UnsafeCheckpointError(f"dataset {name} is stored in {n} chunks (limit {max_chunks}); refused",
                                            label)
            # one pass over the chunk index (get_chunk_info(i) walks it from the start: quadratic)
            oid.chunk_iter(lambda info: extents.append((info.byte_offset, info.byte_offset + info.size))
                           if info.byte_offset is not None else None)
    return extents


def check_heaps(source: str | IO[bytes], extents: list[tuple[int, int]], size: int, label: str) -> None:
    """Walk every global heap collection outside ``extents`` in ``source``
    (a path, or the file object HDF5 reads through) of ``size`` bytes."""
    regions = _complement(extents, size)
    if isinstance(source, str):
        with open(source, "rb") as fh:
            _scan_heaps(lambda off, n: os.pread(fh.fileno(), n, off), regions, label)
        return
    pos = source.tell()

    def read(off: int, n: int) -> bytes:
        source.seek(off)
        return source.read(n)

    errors = (OSError, EOFError, zlib.error) + zip_errors()
    try:
        _scan_heaps(read, regions, label)
    except errors as exc:
        raise CorruptCheckpointError(f"cannot read ({exc})", label) from None
    finally:
        with contextlib.suppress(Exception):
            source.seek(pos)


def _complement(extents: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The parts of ``[0, size)`` not covered by ``extents``."""
    out, pos = [], 0
    for lo, hi in sorted(extents):
        if lo > pos:
            out.append((pos, min(lo, size)))
        pos = max(pos, hi)
    if pos < size:
        out.append((pos, size))
    return [(lo, hi) for lo, hi in out if hi > lo]


#: Bytes of the file searched at once for heap collections, and the largest
#: collection walked (Keras' collections hold a few names: kilobytes).
GCOL_WINDOW = SCAN_WINDOW_BYTES
MAX_GCOL_BYTES = 64 * 1024 * 1024


def _scan_heaps(read, regions: list[tuple[int, int]], label: str) -> None:
    """Find each global heap collection ("GCOL") in ``regions`` and walk it as
    HDF5's H5HG deserializer does; refuse one it would loop on or overrun.
    ``read(offset, n)`` returns file bytes; memory stays within one window."""
    for lo, hi in regions:
        start = lo
        while start < hi:
            end = min(hi, start + GCOL_WINDOW)
            window = read(start, end - start + 3)  # a signature may straddle the window's end
            i = window.find(b"GCOL")
            while i >= 0 and start + i < end:
                pos = start + i
                head = read(pos, 16)
                # signature, version 1, 3 reserved zero bytes, collection size
                if len(head) == 16 and head[4] == 1 and head[5:8] == b"\0\0\0":
                    (csize,) = struct.unpack_from("<Q", head, 8)
                    if csize >= 4096:
                        if pos + csize > hi:
                            raise CorruptCheckpointError(
                                f"global heap at byte {pos} runs past the end of the file: truncated?", label)
                        if csize > MAX_GCOL_BYTES:
                            raise UnsafeCheckpointError(
                                f"global heap at byte {pos} declares {csize} bytes (limit {MAX_GCOL_BYTES})", label)
                        _walk_gcol(read(pos, csize), pos, label)
                i = window.find(b"GCOL", i + 4)
            start = end


def _walk_gcol(coll: bytes, start: int, label: str) -> None:
    end = len(coll)
    p = 16
    while p < end:
        if p + 16 > end:
            break  # trailing free space
        idx, _nrefs = struct.unpack_from("<HH", coll, p)
        (osize,) = struct.unpack_from("<Q", coll, p + 8)
        need = (16 + ((osize + 7) & ~7)) if idx > 0 else osize
        if need <= 0 or p + need > end:
            raise CorruptCheckpointError(
                f"global heap at byte {start} has a corrupt object (index {idx}, size {osize})", label)
        p += need


