"""Verifying one written output file against its plan: :func:`verify_output`.

Two independent readings of every weights file, before it replaces anything:

1. End to end: the file is re-opened with tietool's own reader and every
   tensor is compared with its source, byte for byte (streamed; a transpose
   in bounded blocks), after checking names, dtypes, shapes, the
   safetensors ``__metadata__`` and a ``.keras`` archive's member texts.
2. Every safetensors file is also opened with the reference parser,
   ``safetensors.safe_open(path, "np")``: its keys, dtypes, shapes and
   metadata must be those of the plan (a file only tietool could read would
   be no use).

Like :func:`tietool.convert.write.write_output`, each call opens its own
descriptors and shares no state but ``tick``.

Overlapped with writing
-----------------------
For a safetensors output, the byte comparison of each raw copy (a tensor
whose bytes are a byte range of the source, the bulk of any conversion) does
not wait for the whole file: :class:`EarlyCheck` re-reads it on a helper
thread as soon as it is written, while the next tensor is copied (the
comparison reads page cache and runs on the second core; the copy waits on
the kernel). Each output tensor is written once, by one writer, from the
start of its range to its end, into the range the header gives it; the
final step re-opens the finished file (tietool's reader and
``safetensors.safe_open``) and checks that each early-compared tensor lies at
the offset it was compared at, so what was compared is what the file holds.
Transposed and permuted tensors, HDF5 and ``.keras`` outputs are compared
after writing.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable

import numpy as np

from tietool.io import fastio, signals
from tietool.io.blockread import BlockReader
from tietool.io.tensorcopy import SourceFiles, same_tensor_bytes

from .. import dtypes
from ..errors import CorruptCheckpointError
from ..model import Checkpoint
from . import transpose
from .plan import Assembled, OutputFile, TensorOut
from .transpose import permuted, same_transposed

Tick = Callable[[int], None]
#: Block per side of :class:`EarlyCheck`'s comparison: one checker runs beside each output being written
#: (two shards at once: two checkers), so a smaller block than fastio.BLOCK keeps memory under 100 MB.
EARLY_BLOCK = 4 * 1024 * 1024
#: How long :meth:`EarlyCheck.abort` waits for the comparison to reach its next block.
ABORT_WAIT = 1.0


def _fail(what: str, label: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"verification failed: {what}", label)


class EarlyCheck:
    """Compares raw tensor copies of one output file with their source as
    they are written (see the module notes). :meth:`written` after each
    tensor; :meth:`finish` returns ``{output name: offset compared}`` or
    raises the first mismatch; :meth:`abort` when the write fails."""

    def __init__(self, out: OutputFile, path: str, label: str | None = None) -> None:
        self.label, self.path = label or out.name, path
        self.jobs: queue.Queue = queue.Queue()
        self.checked: dict[str, int] = {}
        self.failed: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tietool-check", daemon=True)
        self.thread.start()

    @staticmethod
    def wants(t: TensorOut) -> bool:
        return t.same_bytes and t.source.offset is not None and t.source.nbytes > 0

    def written(self, t: TensorOut, offset: int) -> None:
        if self.failed is not None:
            raise self.failed
        self.jobs.put((t, offset))

    def _run(self) -> None:
        signals.block_in_this_thread()
        files = SourceFiles()
        fd = -1
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            while not self.stop.is_set():
                job = self.jobs.get()
                if job is None:
                    break
                t, offset = job
                src = t.source
                if not fastio.same_range(files.fd(src.file), src.offset, fd, offset, src.nbytes,
                                         files.pair(min(EARLY_BLOCK, transpose.BLOCK_BYTES // 2, src.nbytes)),
                                         src.file, self.label,
                                         self._stopped):
                    raise _fail(f"bytes of {t.name!r} differ from the source {src.name!r}", self.label)
                self.checked[t.name] = offset
        except BaseException as exc:  # handed to the writing thread
            self.failed = exc
        finally:
            if fd >= 0:
                os.close(fd)
            files.close()

    def _stopped(self, _n: int) -> None:
        if self.stop.is_set():  # the write failed or was interrupted: end within a block
            raise fastio.Stopped()

    def finish(self, stopping: Callable[[], None] | None = None) -> dict[str, int]:
        """Wait for the comparisons; ``stopping()`` is called between waits
        and may raise (another output failed, or the user interrupted): the
        caller then calls :meth:`abort`."""
        self.jobs.put(None)
        while self.thread.is_alive():
            signals.join(self.thread, signals.POLL_SECONDS)
            if stopping is not None:
                stopping()
        if self.failed is not None:
            raise self.failed
        return self.checked

    def abort(self) -> None:
        """Stop the comparison (it ends within one block) and wait for it, boundedly:
        the thread is a daemon, and reads only."""
        self.stop.set()
        self.jobs.put(None)
        signals.join(self.thread, ABORT_WAIT)


def verify_output(out: OutputFile, path: str, ckpt: Checkpoint, tick: Tick | None,
                  checked: dict[str, int] | None = None, label: str | None = None) -> None:
    """Raise :class:`~tietool.errors.CorruptCheckpointError` (naming
    ``label``, the file as the user knows it; default ``out.name``) unless
    ``path`` holds exactly what ``out`` plans.
    ``checked``: tensors :class:`EarlyCheck` already compared, at these
    offsets (their bytes are not read again if the file puts them there)."""
    label = label or out.name
    if out.kind == "bytes":
        with open(path, "rb") as fb:
            if fb.read() != out.content:
                raise _fail("the bytes differ from what was written", label)
        return
    if out.kind == "text":
        with open(path, encoding="utf-8") as fh:
            if fh.read() != out.text:
                raise _fail("the text differs from what was written", label)
        return
    if out.kind == "safetensors":
        _reference_parser(out, path, label)
    got = _reopen(out, path, label)
    files = SourceFiles()
    try:
        with got:
            _compare(out, got, ckpt, files, label, tick, checked or {})
    finally:
        files.close()


def _reopen(out: OutputFile, path: str, label: str) -> Checkpoint:
    from ..formats import format_of, open_as_stored

    got = open_as_stored(path)
    if format_of(got).container != out.kind:
        got.close()
        raise _fail(f"written as {out.kind} but reads as {format_of(got).description}", label)
    if out.kind == "safetensors" and got.metadata != out.metadata:
        got.close()
        raise _fail("__metadata__ differs from what was written", label)
    if out.kind == "keras" and (got.archive.member_texts if got.archive else {}) != out.texts:
        got.close()
        raise _fail("config.json or metadata.json differs from the recorded text", label)
    return got


def _compare(out: OutputFile, got: Checkpoint, ckpt: Checkpoint, files: SourceFiles, label: str,
             tick: Tick | None, checked: dict[str, int]) -> None:
    want = {t.name: t for t in out.tensors}
    if set(got.tensors) != set(want):
        missing = sorted(set(want) - set(got.tensors))[:3]
        extra = sorted(set(got.tensors) - set(want))[:3]
        raise _fail(f"tensors differ (missing {missing}, unexpected {extra})", label)
    reader: BlockReader | None = None
    try:
        for name, t in want.items():
            g = got.tensors[name]
            src = t.source
            if tuple(g.shape) != tuple(t.shape) or g.dtype != src.dtype:
                raise _fail(f"{name!r} is {g.dtype}{list(g.shape)}, expected {src.dtype}{list(t.shape)}", label)
            if name in checked and g.offset == checked[name]:
                ok = True  # compared as it was written, where the file has it
                if tick:
                    tick(src.nbytes)
            elif t.same_bytes:
                ok = same_tensor_bytes(ckpt, src, got, g, files, tick, max_bytes=transpose.BLOCK_BYTES // 2)
            elif t.transform == "transpose":
                reader = reader or BlockReader(ckpt)
                ok = same_transposed(src, reader, got, g)
                if ok and tick:
                    tick(src.nbytes)
            elif isinstance(t.transform, Assembled):  # built from parts (kerashub_hf.assemble)
                ok = t.transform.same_as(ckpt, got, g, tick)
            else:
                ok = _same_permuted(ckpt, t, got)
                if ok and tick:
                    tick(src.nbytes)
            if not ok:
                raise _fail(f"bytes of {name!r} differ from the source {src.name!r}", label)
    finally:
        if reader is not None:
            reader.close()


def _same_permuted(ckpt: Checkpoint, t: TensorOut, got: Checkpoint) -> bool:
    return np.array_equal(permuted(ckpt, t).reshape(-1).view(np.uint8),
                          np.ascontiguousarray(got.read_stored(t.name)).reshape(-1).view(np.uint8))


def _reference_parser(out: OutputFile, path: str, label: str) -> None:
    """Keys, dtypes, shapes and metadata as ``safetensors.safe_open`` reads them."""
    from safetensors import safe_open

    try:
        with safe_open(path, "np") as f:
            metadata = f.metadata() or {}
            found = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # the reference parser's own errors have no common base
        raise _fail(f"safetensors.safe_open cannot read it ({str(exc).splitlines()[0][:200]})", label) from None
    want = {t.name: (dtypes.DTYPES[t.source.dtype].safetensors, tuple(t.shape)) for t in out.tensors}
    if found != want:
        bad = sorted(n for n in set(found) | set(want) if found.get(n) != want.get(n))[:3]
        raise _fail(f"safetensors.safe_open reads other tensors than were planned ({bad})", label)
    if metadata != out.metadata:
        raise _fail("safetensors.safe_open reads another __metadata__ than was written", label)
