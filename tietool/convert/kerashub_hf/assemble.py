"""An output tensor assembled from parts of stored tensors, in bounded row blocks.

keras-hub and transformers lay out one weight differently: a query kernel ``[hidden, heads,
head_dim]`` is ``q_proj.weight [heads*head_dim, hidden]`` (a transpose of a 2-D view), Gemma's
``[heads, hidden, head_dim]`` is one transpose per head, GPT-2's ``c_attn.weight [hidden,
3*hidden]`` is three kernels side by side (and back: three column slices of it). One
description covers them all: the output viewed as 2-D ``[N, M]``, tiled by :class:`Piece` s, each
a ``[rows, cols]`` run of a stored tensor's elements (optionally a column range of it), placed
at ``(row, col)``, transposed or not.

:class:`Assembly` is a plan transform (:mod:`tietool.convert.plan`): the writer calls
:meth:`Assembly.write_into`, the verifier :meth:`Assembly.same_as` (the written file re-read in
the same row blocks and compared byte for byte with the parts). Memory: one output row block of
about :data:`BLOCK_BYTES` plus the part being read; parts are read with ``pread`` when the source
is stored raw, else the stored tensor is read once through its reader.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tietool import dtypes
from tietool.io.fastio import write_all
from tietool.io.tensorcopy import le_bytes
from tietool.model import Checkpoint, TensorInfo
from tietool.ties.compare import BlockReader, transpose_into

BLOCK_BYTES = 8 * 1024 * 1024

Tick = Callable[[int], None]


@dataclass(frozen=True)
class Piece:
    """Elements ``start .. start + rows*cols`` of ``source`` viewed as ``[rows, cols]``; of
    that, columns ``c0:c1`` (all when None); placed at ``at`` in the output, transposed when
    ``transpose``."""

    source: TensorInfo
    rows: int
    cols: int
    at: tuple[int, int]
    transpose: bool = False
    start: int = 0
    col_range: tuple[int, int] | None = None

    @property
    def width(self) -> int:
        c0, c1 = self.col_range or (0, self.cols)
        return c1 - c0

    @property
    def out_rows(self) -> int:
        return self.width if self.transpose else self.rows

    @property
    def out_cols(self) -> int:
        return self.rows if self.transpose else self.width


@dataclass(frozen=True)
class Assembly:
    """The output ``[N, M]`` (``shape2d``) tiled by ``pieces``."""

    shape2d: tuple[int, int]
    pieces: tuple[Piece, ...]

    def __post_init__(self) -> None:
        n, m = self.shape2d
        area = 0
        for p in self.pieces:
            r, c = p.at
            if r < 0 or c < 0 or r + p.out_rows > n or c + p.out_cols > m:
                raise ValueError(f"{p.source.name}: a part placed outside the output {list(self.shape2d)}")
            area += p.out_rows * p.out_cols
        if area != n * m:
            raise ValueError(f"parts cover {area} of {n * m} output elements")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.source.name for p in self.pieces))

    def describe(self) -> str:
        return "+".join(self.names)

    # -- the blocks -------------------------------------------------------------------

    def blocks(self, reader: "PartReader"):
        """``(first row, block [r1-r0, M])`` for every row block of the output, in order (a block
        is valid until the next one)."""
        n, m = self.shape2d
        dtype = self.pieces[0].source.dtype
        item = dtypes.DTYPES[dtype].itemsize
        step = max(1, BLOCK_BYTES // max(1, m * item))
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            buf = reader.scratch(3, dtypes.stored_dtype(dtype), (r1 - r0, m))
            for p in self.pieces:
                a, b = max(r0, p.at[0]), min(r1, p.at[0] + p.out_rows)
                if a >= b:
                    continue
                c0 = (p.col_range or (0, p.cols))[0]
                if p.transpose:
                    part = reader.part(p, 0, p.rows, c0 + a - p.at[0], c0 + b - p.at[0])
                    dst = buf[a - r0:b - r0, p.at[1]:p.at[1] + p.rows]
                    dst[...] = transpose_into(part, reader.scratch(2, part.dtype, (b - a, p.rows)))
                else:
                    part = reader.part(p, a - p.at[0], b - p.at[0], c0, c0 + p.width)
                    buf[a - r0:b - r0, p.at[1]:p.at[1] + p.width] = part
            yield r0, buf

    def write_into(self, ckpt: Checkpoint, fd: int, pos: int, tick: Tick | None) -> None:
        """Write the assembled tensor at ``pos`` of ``fd``."""
        m = self.shape2d[1]
        item = dtypes.DTYPES[self.pieces[0].source.dtype].itemsize
        with PartReader(ckpt) as reader:
            for r0, buf in self.blocks(reader):
                data = le_bytes(buf)
                write_all(fd, data, pos + r0 * m * item)
                if tick:
                    tick(len(data))

    def same_as(self, ckpt: Checkpoint, got: Checkpoint, g: TensorInfo, tick: Tick | None = None) -> bool:
        """Whether ``g`` (of the written ``got``) holds exactly the assembled bytes."""
        flat = dataclasses.replace(g, shape=self.shape2d)
        with PartReader(ckpt) as reader, BlockReader(got) as out:
            for r0, buf in self.blocks(reader):
                rows = out.rows(flat, r0, r0 + buf.shape[0], slot=0)
                if not np.array_equal(_bits(buf), _bits(rows)):
                    return False
                if tick:
                    tick(buf.nbytes)
        return True


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


class PartReader(BlockReader):
    """:class:`~tietool.ties.compare.BlockReader` over 2-D views of stored tensors: ``pread``
    when the tensor is stored raw (contiguous), else the stored tensor read once and kept
    (chunked or compressed HDF5)."""

    def __init__(self, ckpt: Checkpoint):
        super().__init__(ckpt)
        self._whole: dict[str, np.ndarray] = {}

    def __enter__(self) -> "PartReader":
        return self

    def part(self, p: Piece, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        src = p.source
        item = dtypes.DTYPES[src.dtype].itemsize
        if src.offset is not None and src.computable:
            view = dataclasses.replace(src, shape=(p.rows, p.cols), nbytes=p.rows * p.cols * item,
                                       offset=src.offset + p.start * item)
            return self.block(view, r0, r1, c0, c1, slot=1)
        whole = self._whole.get(src.name)
        if whole is None:
            whole = self._whole[src.name] = np.ascontiguousarray(self.ckpt.read(src.name)).reshape(-1)
        grid = whole[p.start:p.start + p.rows * p.cols].reshape(p.rows, p.cols)
        return grid[r0:r1, c0:c1]


def as_2d(shape: tuple[int, ...], split: int) -> tuple[int, int]:
    """``shape`` viewed as 2-D, the first ``split`` axes as rows (``split`` < 0: from the end)."""
    k = split if split >= 0 else len(shape) + split
    return math.prod(shape[:k]), math.prod(shape[k:])
