"""Writing one output file of a plan: :func:`write_output`.

Each call opens its own source descriptors and buffers and shares no mutable
state with another (only ``tick``, the progress counter, which would need a
lock), so the files of one plan (shards) could be written concurrently. The
source :class:`~tietool.model.Checkpoint` is shared read-only; tensors not
stored contiguous and raw (chunked or compressed HDF5) are read through h5py,
which serialises its calls with its own lock.

* safetensors: the header first (every offset is known from the plan), then
  each tensor at its place: stored bytes by byte range
  (:func:`tietool.io.tensorcopy.copy_tensor`), a transpose in bounded column
  blocks, a permutation in memory (:mod:`tietool.convert.transpose`).
* HDF5: :func:`tietool.formats.h5_writer.write_h5`; ``.keras``:
  :func:`tietool.formats.keras_writer.write_keras`; text: as UTF-8.
"""

from __future__ import annotations

import os
from typing import Callable

from tietool.formats.safetensors_writer import build_header
from tietool.io import fastio
from tietool.io import tensorcopy as writers
from tietool.io.blockread import BlockReader
from tietool.io.tensorcopy import SourceFiles, le_bytes

from ..model import Checkpoint
from .plan import Assembled, OutputFile
from .transpose import permuted, write_transposed
from .verify import EarlyCheck

Tick = Callable[[int], None]


def write_output(out: OutputFile, path: str, ckpt: Checkpoint, tick: Tick | None, writeback: bool = True,
                 checked: dict[str, dict[str, int]] | None = None, label: str | None = None) -> None:
    """Write ``out`` (one file of a plan) to ``path`` from ``ckpt``.
    ``writeback``: the output will be fsynced, so start writing copied bytes
    to disk while copying (no effect on the bytes). ``checked``: compare a
    safetensors output's raw copies as they are written
    (:class:`~tietool.convert.verify.EarlyCheck`) and record them in
    ``checked[out.name]`` for :func:`~tietool.convert.verify.verify_output`;
    ``label``: the file as the user knows it, for the comparison's errors."""
    if out.kind in ("text", "bytes"):
        if "/" in out.name:  # a file of a sub-folder of the output (a keras-hub preset's assets/tokenizer/)
            os.makedirs(os.path.dirname(path), exist_ok=True)
        if out.kind == "bytes":
            with open(path, "wb") as fb:
                fb.write(out.content)
            return
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(out.text)
        return
    files = SourceFiles()
    try:
        if out.kind == "safetensors":
            early = _write_safetensors(out, path, ckpt, files, tick, writeback, checked is not None, label)
            if checked is not None:
                checked[out.name] = early
        elif out.kind == "h5":
            from tietool.formats.h5_writer import write_h5

            assert out.tree is not None
            builders = {t.name: _builder(t.transform, ckpt, tick) for t in out.tensors
                        if isinstance(t.transform, Assembled)}
            write_h5(path, ckpt, out.tree, out.data(), files, tick, writeback, builders)
        else:
            from tietool.formats.keras_writer import write_keras

            assert out.tree is not None
            write_keras(path, ckpt, out.tree, out.data(), out.texts, out.members, files, tick)
    finally:
        files.close()


def _write_safetensors(out: OutputFile, path: str, ckpt: Checkpoint, files: SourceFiles, tick: Tick | None,
                       writeback: bool, check: bool, label: str | None = None) -> dict[str, int]:
    """Write the file; with ``check``, return what :class:`EarlyCheck` compared."""
    head = build_header([(t.name, t.info) for t in out.tensors], out.metadata)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
    wb = fastio.Writeback(fd) if writeback else None
    early = EarlyCheck(out, path, label) if check and any(EarlyCheck.wants(t) for t in out.tensors) else None
    reader: BlockReader | None = None
    try:
        fastio.write_all(fd, memoryview(head), 0)
        pos = len(head)
        for t in out.tensors:
            if t.same_bytes:
                writers.copy_tensor(ckpt, t.source, files, fd, pos, tick, wb)
            elif t.transform == "transpose":
                reader = reader or BlockReader(ckpt)
                write_transposed(t.source, reader, fd, pos, tick)
            elif isinstance(t.transform, Assembled):  # built from parts (kerashub_hf.assemble)
                t.transform.write_into(ckpt, fd, pos, tick)
            else:
                data = le_bytes(permuted(ckpt, t))
                fastio.write_all(fd, data, pos)
                if tick:
                    tick(len(data))
            if wb and not t.same_bytes:
                wb.wrote(t.source.nbytes)
            if early is not None and EarlyCheck.wants(t):
                early.written(t, pos)
            pos += t.source.nbytes
        os.ftruncate(fd, pos)  # no fsync here: atomic_output syncs the finished output once
        if wb:
            wb.finish()
        # tick(0): where outputs are written concurrently, raises once another failed or the user interrupted
        return early.finish(lambda: tick(0) if tick else None) if early is not None else {}
    except BaseException:
        if early is not None:
            early.abort()
        raise
    finally:
        os.close(fd)
        if reader is not None:
            reader.close()


def _builder(transform: Assembled, ckpt: Checkpoint, tick: Tick | None) -> Callable[[int, int], None]:
    """``(fd, offset) -> None`` writing a tensor built from parts (into an HDF5 dataset)."""
    return lambda fd, off: transform.write_into(ckpt, fd, off, tick)
