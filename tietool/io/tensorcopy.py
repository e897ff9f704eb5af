"""The core every writer shares: streaming tensor bytes (safe output paths are
:mod:`tietool.io.safe_output`'s).

* :func:`copy_tensor` puts a tensor's raw little-endian bytes at a position of
  an open output file: by byte range (:func:`tietool.io.fastio.copy_range`:
  ``os.copy_file_range``, else ``preadv``/``pwrite`` through one fixed buffer)
  when the source stores it contiguous and raw, else block by block through the reader
  (``Checkpoint.iter_stored``). Memory is bounded by :data:`BUFFER_BYTES`,
  whatever the tensor or file size.
* :func:`raw_chunks` yields the same bytes, for comparisons;
  :func:`same_tensor_bytes` compares two tensors' bytes (memcmp speed).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from tietool.io import fastio, rawio
from tietool.io.blockread import BufferPool
from tietool.model import Checkpoint, TensorInfo

#: Bytes of tensor data held in memory at once while copying or comparing.
BUFFER_BYTES = 16 * 1024 * 1024
#: Bytes per copy_file_range call (the kernel copies; this only paces progress).
RANGE_STEP = 64 * 1024 * 1024
PAGE = 4096
#: The read/write copy's buffer: 4 MB copies as fast as 16 MB here, in less memory.
COPY_BYTES = 4 * 1024 * 1024

Progress = Callable[[int], None]  # called with bytes just written
Item = TypeVar("Item")


def phase_ticker(progress: Callable[[str, int, int], None] | None, total: int) -> Callable[[str], Progress]:
    """``tick(phase)`` gives a per-phase byte counter that reports
    ``progress(phase, done, total)``."""
    done: dict[str, int] = {}

    def tick(phase: str) -> Progress:
        done.setdefault(phase, 0)

        def count(n: int) -> None:
            done[phase] += n
            if progress:
                progress(phase, done[phase], total)
        return count
    return tick


# -- bytes ----------------------------------------------------------------------

def le_bytes(arr: np.ndarray) -> memoryview:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.data.cast("B")


class SourceFiles(rawio.FileHandles):
    """Read-only descriptors of source files, opened once, and the reused
    read buffers (one per concurrent stream)."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = BufferPool()
        self._pair: fastio.Buffers | None = None

    def buffer(self, nbytes: int, slot: int = 0) -> memoryview:
        """A reused buffer of ``nbytes`` (no fresh allocation and page faults
        per tensor). Streams read side by side use different slots."""
        return self._pool.get(slot, nbytes).data

    def pair(self, nbytes: int) -> fastio.Buffers:
        """The two reused buffers of :func:`same_tensor_bytes`, at least
        ``nbytes`` each (grown on demand)."""
        if self._pair is None or len(self._pair.a) < nbytes:
            self._pair = fastio.Buffers(nbytes)
        return self._pair


def same_tensor_bytes(ckpt_a: Checkpoint, a: TensorInfo, ckpt_b: Checkpoint, b: TensorInfo, files: SourceFiles,
                      tick: Callable[[int], None] | None = None, max_bytes: int = BUFFER_BYTES) -> bool:
    """Whether the stored bytes of ``a`` and ``b`` are the same: two raw byte
    ranges compared by :func:`tietool.io.fastio.same_range` (re-read, memcmp,
    small first blocks), anything else through :func:`raw_chunks`."""
    if a.nbytes != b.nbytes:
        return False
    if a.offset is not None and b.offset is not None:
        return fastio.same_range(files.fd(a.file), a.offset, files.fd(b.file), b.offset, a.nbytes,
                                 files.pair(min(max_bytes, fastio.BLOCK, a.nbytes)), a.file, b.file, tick)
    return same_stream(raw_chunks(ckpt_a, a, files, max_bytes, slot=0), raw_chunks(ckpt_b, b, files, max_bytes, slot=1),
                       tick)


def raw_chunks(ckpt: Checkpoint, info: TensorInfo, files: SourceFiles, max_bytes: int = BUFFER_BYTES,
               slot: int = 0) -> Iterator[memoryview]:
    """The stored bytes of ``info`` (C order, little-endian), in blocks. A
    block is valid until the next one is produced: the buffer (``files``'
    ``slot``) is reused."""
    if info.nbytes == 0:
        return
    if info.offset is not None:
        fd = files.fd(info.file)
        buf = files.buffer(min(max_bytes, info.nbytes), slot)
        done = 0
        while done < info.nbytes:
            n = min(len(buf), info.nbytes - done)
            view = buf[:n]
            rawio.read_into(fd, view, info.offset + done, info.file)
            yield view
            done += n
        return
    for _, block in ckpt.iter_stored(info.name, max_bytes):
        yield le_bytes(block)


def same_stream(a_chunks: Iterator[memoryview], b_chunks: Iterator[memoryview],
                tick: Callable[[int], None] | None = None) -> bool:
    """Whether two streams of byte blocks (any block sizes) carry the same
    bytes. Compared with ``memcmp`` (:func:`tietool.io.fastio.equal`)."""
    ba: memoryview | None = memoryview(b"")
    bb: memoryview | None = memoryview(b"")
    while True:
        if ba is not None and not len(ba):
            ba = next(a_chunks, None)
        if bb is not None and not len(bb):
            bb = next(b_chunks, None)
        if ba is None or bb is None:
            return ba is None and bb is None
        n = min(len(ba), len(bb))
        if not fastio.equal(ba[:n], bb[:n]):  # memcmp
            return False
        if tick:
            tick(n)
        ba, bb = ba[n:], bb[n:]


def copy_tensor(ckpt: Checkpoint, info: TensorInfo, files: SourceFiles, out_fd: int, out_offset: int,
                progress: Progress | None = None, wb: fastio.Writeback | None = None) -> None:
    """Write the bytes of ``info`` at ``out_offset`` of ``out_fd``. ``wb``:
    the output file's early writeback (:class:`tietool.io.fastio.Writeback`),
    for an output that will be fsynced."""
    if info.nbytes == 0:
        return
    if info.offset is not None:  # a raw byte range: copied in the kernel
        fastio.copy_range(files.fd(info.file), info.offset, out_fd, out_offset, info.nbytes,
                          lambda: files.buffer(COPY_BYTES), info.file, progress, wb)
        return
    written = 0
    for chunk in raw_chunks(ckpt, info, files, max_bytes=COPY_BYTES):
        fastio.write_all(out_fd, chunk, out_offset + written)
        written += len(chunk)
        if wb:
            wb.wrote(len(chunk))
        if progress:
            progress(len(chunk))


def run_each(items: Sequence[Item], one: Callable[[Item, SourceFiles, Progress | None], None], files: SourceFiles,
             tick: Progress | None = None) -> None:
    """``one(item, files, tick)`` for every item (an output file to write
    or verify). One item runs in this thread with ``files``; several run
    concurrently on up to ``os.cpu_count()`` threads
    (:func:`tietool.io.fastio.run_concurrently`), each with its own descriptors
    and buffers (memory: a few fixed buffers per thread, not per item), the
    progress counted under a lock. Each item is handled by the same code as in
    a sequential run, so the files are the same. The first failure (or an
    interrupt) stops the others at their next block and is raised."""
    if len(items) < 2:
        for item in items:
            one(item, files, tick)
        return
    lock = threading.Lock()

    def job(item: Item) -> Callable[[Callable[[], None]], None]:
        def run(check: Callable[[], None]) -> None:
            def count(n: int) -> None:
                check()  # another item failed, or the user interrupted: stop here
                if tick:
                    with lock:
                        tick(n)
            own = SourceFiles()
            try:
                one(item, own, count)
            finally:
                own.close()
        return run
    fastio.run_concurrently([job(item) for item in items])
