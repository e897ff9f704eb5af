"""Reading tensor data in bounded blocks, into reused buffers.

:class:`BufferPool` is the one pool of reused buffers (block reads, byte
copies, comparison temporaries); :class:`BlockReader` reads ``rows x cols``
blocks of 2-D tensors, whatever the store: ``pread`` for tensors stored raw,
an HDF5 hyperslab, or whole rows cut to columns.
"""

from __future__ import annotations

import numpy as np

from tietool import dtypes
from tietool.blocks import BLOCK_BYTES
from tietool.io import rawio
from tietool.model import BlockStore, Checkpoint, TensorInfo


class BufferPool:
    """Reused byte buffers, one per ``slot`` (e.g. 0 for the reference, 1 for
    the copy): a buffer grows to the largest request and is then reused. What
    a buffer holds is valid until the next request for the same slot."""

    def __init__(self) -> None:
        self._buffers: dict[int, np.ndarray] = {}

    def get(self, slot: int, nbytes: int) -> np.ndarray:
        """``nbytes`` bytes (``uint8``) of slot ``slot``, contents undefined."""
        buf = self._buffers.get(slot)
        if buf is None or buf.size < nbytes:
            buf = self._buffers[slot] = np.empty(nbytes, dtype=np.uint8)
        return buf[:nbytes]

    def array(self, slot: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A reused array of ``shape`` and ``dtype`` in slot ``slot`` (contents undefined)."""
        dtype = np.dtype(dtype)
        n = 1
        for d in shape:
            n *= d
        return self.get(slot, n * dtype.itemsize).view(dtype).reshape(shape)

    def clear(self) -> None:
        self._buffers.clear()


class BlockReader:
    """Bounded reads of ``rows x cols`` blocks of 2-D tensors: a store's own
    ``read_block`` when it has one; per-row ``pread`` for contiguous raw data
    (safetensors, contiguous HDF5, stored .keras members); an HDF5
    hyperslab otherwise."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.handles = rawio.FileHandles()
        self._pool = BufferPool()

    def close(self) -> None:
        self.handles.close()
        self._pool.clear()

    def __enter__(self) -> "BlockReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _buffer(self, slot: int, nbytes: int) -> np.ndarray:
        return self._pool.get(slot, nbytes)

    def scratch(self, slot: int, dtype: np.dtype, shape: tuple[int, int]) -> np.ndarray:
        """A reused array of ``shape`` (contents undefined)."""
        return self._pool.array(slot, dtype, shape)

    def _raw(self, info: TensorInfo) -> bool:
        return info.offset is not None and info.computable and len(info.shape) == 2

    def _pread(self, info: TensorInfo, out: np.ndarray, offset: int) -> None:
        rawio.read_into(self.handles.fd(info.file), out.data.cast("B"), offset, info.file)

    def _as_array(self, info: TensorInfo, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        np_dtype = dtypes.stored_dtype(info.dtype).newbyteorder("<")
        arr = raw.view(np_dtype).reshape(shape)
        return arr.astype(np_dtype.newbyteorder("="), copy=False)

    def rows(self, info: TensorInfo, start: int, stop: int, slot: int = 0) -> np.ndarray:
        if not self._raw(info):
            return self.ckpt.data.read_rows(info, start, stop)
        item = dtypes.DTYPES[info.dtype].itemsize
        cols = info.shape[1]
        out = self._buffer(slot, (stop - start) * cols * item)
        self._pread(info, out, _offset(info) + start * cols * item)
        return self._as_array(info, out, (stop - start, cols))

    def block(self, info: TensorInfo, r0: int, r1: int, c0: int, c1: int, slot: int = 0) -> np.ndarray:
        store = self.ckpt.data
        rows, cols = info.shape
        if c0 == 0 and c1 == cols:
            return self.rows(info, r0, r1, slot)
        if self._raw(info):
            item = dtypes.DTYPES[info.dtype].itemsize
            width = (c1 - c0) * item
            out = self._buffer(slot, (r1 - r0) * width).reshape(r1 - r0, width)
            for i, r in enumerate(range(r0, r1)):
                self._pread(info, out[i], _offset(info) + (r * cols + c0) * item)
            return self._as_array(info, out, (r1 - r0, c1 - c0))
        if isinstance(store, BlockStore):  # HDF5: a hyperslab
            return store.read_block(info, slice(r0, r1), slice(c0, c1))
        # Any other store: whole rows in bounded steps, columns cut out.
        step = max(1, BLOCK_BYTES // max(1, info.nbytes // max(1, rows)))
        parts = [store.read_rows(info, s, min(r1, s + step))[:, c0:c1] for s in range(r0, r1, step)]
        return np.concatenate(parts, axis=0)


def _offset(info: TensorInfo) -> int:
    """The raw byte offset of a tensor read by ``pread`` (``_raw`` said it has one)."""
    if info.offset is None:
        raise ValueError(f"{info.name}: not stored raw")
    return info.offset


TILE = 256


def transpose_into(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``dst[...] = src.T`` tile by tile: a cache-friendly transpose, several
    times faster than comparing against a strided view."""
    rows, cols = src.shape
    for j in range(0, cols, TILE):
        for i in range(0, rows, TILE):
            dst[j:j + TILE, i:i + TILE] = src[i:i + TILE, j:j + TILE].T
    return dst
