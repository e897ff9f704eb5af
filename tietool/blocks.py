"""Block sizes and reusable buffers: the one place memory bounds are set.

Every streaming loop (reading, comparing, copying) holds at most a few blocks
of :data:`BLOCK_BYTES` per tensor in memory, so a checkpoint of any size is
processed in bounded memory. Buffers are reused across blocks through a
:class:`BufferPool` (no fresh allocation, and no page faults, per block).
"""

from __future__ import annotations

import numpy as np

MiB = 1024 * 1024

#: One block of tensor data held in memory while streaming (read, compare, copy).
BLOCK_BYTES = 16 * MiB
#: ``diff`` reads a block of A and one of B at once: half a block each.
DIFF_BLOCK_BYTES = BLOCK_BYTES // 2
#: Window of an HDF5 file scanned at once for global heap collections.
SCAN_WINDOW_BYTES = BLOCK_BYTES


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

    def clear(self) -> None:
        self._buffers.clear()
