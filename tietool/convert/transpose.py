"""Moving bytes between layouts (``--names pt``): a 2-D transpose in bounded
column blocks, written and verified; small axis permutations in memory.

A transpose reads columns ``c0:c1`` of the source (about
:data:`BLOCK_BYTES`, plus one scratch copy) and writes them as one contiguous
run of output rows. Conv kernels (small) are permuted in memory, up to
:data:`MAX_PERMUTE_BYTES`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tietool import dtypes
from tietool.io import fastio
from tietool.io.blockread import BlockReader, transpose_into
from tietool.io.fastio import write_all
from tietool.io.tensorcopy import le_bytes

from ..errors import UsageError
from ..model import Checkpoint, TensorInfo
from .plan import TensorOut

#: Bytes of one transposed block held in memory (plus one scratch copy).
BLOCK_BYTES = 16 * 1024 * 1024
#: Largest tensor permuted in memory (conv kernels).
MAX_PERMUTE_BYTES = 1 << 30


def _width(info: TensorInfo) -> int:
    R, C = info.shape
    item = dtypes.DTYPES[info.dtype].itemsize
    return max(1, min(C, BLOCK_BYTES // max(1, R * item)))


def write_transposed(info: TensorInfo, reader: BlockReader, fd: int, pos: int,
                     tick: Callable[[int], None] | None) -> None:
    """``info`` [R, C] written as [C, R] at ``pos`` of ``fd``."""
    R, C = info.shape
    item = dtypes.DTYPES[info.dtype].itemsize
    if R == 0 or C == 0:
        return
    width = _width(info)
    for c0 in range(0, C, width):
        c1 = min(C, c0 + width)
        raw = reader.block(info, 0, R, c0, c1, slot=1)
        t = transpose_into(raw, reader.scratch(2, raw.dtype, (c1 - c0, R)))
        data = le_bytes(t)
        write_all(fd, data, pos + c0 * R * item)
        if tick:
            tick(len(data))


def same_transposed(src: TensorInfo, reader: BlockReader, got: Checkpoint, g: TensorInfo) -> bool:
    """Whether ``g`` (of the written ``got``) holds ``src`` transposed."""
    R, C = src.shape
    if R == 0 or C == 0:
        return True
    width = _width(src)
    with BlockReader(got) as out_reader:
        for c0 in range(0, C, width):
            c1 = min(C, c0 + width)
            raw = reader.block(src, 0, R, c0, c1, slot=1)
            rows = out_reader.rows(g, c0, c1, slot=0)
            # tiled transpose into a reused scratch, then memcmp
            t = transpose_into(raw, reader.scratch(2, raw.dtype, (c1 - c0, R)))
            if not fastio.equal(t.data, np.ascontiguousarray(rows).data):
                return False
    return True


def permuted(ckpt: Checkpoint, t: TensorOut) -> np.ndarray:
    """The source of ``t`` with its axes permuted (``t.transform``), in memory."""
    if t.source.nbytes > MAX_PERMUTE_BYTES:
        raise UsageError(f"{t.source.name}: {t.source.nbytes:,} bytes is too large to permute in memory", ckpt.path)
    assert isinstance(t.transform, tuple)
    return np.ascontiguousarray(np.transpose(ckpt.read_stored(t.source.name), t.transform))
