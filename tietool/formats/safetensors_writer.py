"""Write one safetensors file from tensors of any :class:`Checkpoint`.

The header is written first (every offset is known from the ``TensorInfo``
sizes), padded with spaces to a multiple of 8 bytes as the safetensors
library does; then each tensor's bytes are streamed to its place
(:func:`tietool.io.tensorcopy.copy_tensor`). Data follows the order given.
"""

from __future__ import annotations

import json
import os
import struct

from tietool import dtypes
from tietool.io import fastio
from tietool.io.tensorcopy import Progress, SourceFiles, copy_tensor
from tietool.model import Checkpoint, TensorInfo


def build_header(entries: list[tuple[str, TensorInfo]], metadata: dict[str, str]) -> bytes:
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    pos = 0
    for name, info in entries:
        header[name] = {
            "dtype": dtypes.DTYPES[info.dtype].safetensors,
            "shape": list(info.shape),
            "data_offsets": [pos, pos + info.nbytes],
        }
        pos += info.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: str, ckpt: Checkpoint, entries: list[tuple[str, TensorInfo]], metadata: dict[str, str],
                      files: SourceFiles, progress: Progress | None = None, writeback: bool = True) -> int:
    """Write ``entries`` (output name, source tensor) to ``path``; return the
    file size. ``writeback``: the caller will fsync the file, so start
    writing it to disk while copying (:class:`tietool.io.fastio.Writeback`)."""
    head = build_header(entries, metadata)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
    wb = fastio.Writeback(fd) if writeback else None
    try:
        fastio.write_all(fd, memoryview(head), 0)
        pos = len(head)
        for _, info in entries:
            copy_tensor(ckpt, info, files, fd, pos, progress, wb)
            pos += info.nbytes
        os.ftruncate(fd, pos)  # the fsync is the caller's (atomic_output), once for the finished output
        if wb:
            wb.finish()
    finally:
        os.close(fd)
    return pos
