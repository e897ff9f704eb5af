"""Block sizes and reusable buffers: the one place memory bounds are set.

Every streaming loop (reading, comparing, copying) holds at most a few blocks
of :data:`BLOCK_BYTES` per tensor in memory, so a checkpoint of any size is
processed in bounded memory. Buffers are reused across blocks through
:class:`tietool.io.blockread.BufferPool` (no fresh allocation, and no page
faults, per block).
"""

from __future__ import annotations

MiB = 1024 * 1024

#: One block of tensor data held in memory while streaming (read, compare, copy).
BLOCK_BYTES = 16 * MiB
#: ``diff`` reads a block of A and one of B at once: half a block each.
DIFF_BLOCK_BYTES = BLOCK_BYTES // 2
#: Window of an HDF5 file scanned at once for global heap collections.
SCAN_WINDOW_BYTES = BLOCK_BYTES
