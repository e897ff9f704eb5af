"""A transformers TF checkpoint -> a folder PyTorch transformers 5 loads:
``tietool convert SRC --to safetensors --names pt``.

SRC is a transformers TF folder or file: ``tf_model.h5``, a sharded
``tf_model.h5.index.json``, or TF-flavoured safetensors (``{"format": "tf"}``,
single or sharded; tietool's own lossless H5 -> safetensors output too). OUT
is a folder: ``model.safetensors`` (or ``model-0000i-of-0000N.safetensors`` +
``model.safetensors.index.json`` past ``shard_size``, 5 GB by default like the
Hub) with ``__metadata__`` ``{"format": "pt"}``, PyTorch names and layouts
(:mod:`tietool.ptnames`), and every non-weight file of the source folder
(config.json, generation_config.json, tokenizer files ...) copied unchanged.

Ties
----
* Copies of one TF variable stored under several Keras layer groups (BERT's
  word embeddings under ``bert`` and ``mlm___cls``, T5's ``shared`` x3) map to
  one PyTorch name: written once, after checking bit for bit that they are
  identical (different bytes -> error naming them).
* A stored head that is a verified tied copy of the embedding (transposed or
  not) is left out when the config declares the tie, the way transformers 5
  saves (it keeps ``transformer.wte.weight`` / ``shared.weight`` and drops
  ``lm_head.weight``); transformers ties it back on load.
* An untied head (``lm_head/kernel`` [hidden, vocab]) is written transposed as
  ``lm_head.weight`` [vocab, hidden], in bounded column blocks.

Memory and speed: tensors that keep their bytes (most of them; ``squeeze0``
only changes the shape) are byte-range copies (``copy_file_range``); a 2-D
transpose reads bounded column blocks (about :data:`BLOCK_BYTES`) and writes
each as one contiguous run of output rows; conv kernels (small) are permuted
in memory. Output is atomic (temporary folder renamed into place) and, unless
``verify=False``, re-read and compared with the source, element for element.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Callable

import numpy as np

from . import dtypes, fastio
from .compare import BlockReader, transpose_into
from .errors import CorruptCheckpointError, UsageError
from .formats import open_checkpoint
from .model import Checkpoint, TensorInfo
from .ptnames import SAME_BYTES, PtEntry, key_pattern, make_plan
from .writers import (SourceFiles, _le_bytes, _pwrite_all, SourceGuard, atomic_output, copy_side_file, copy_tensor,
                      phase_ticker, raw_chunks, run_each, same_tensor_bytes)
from .writers.safe_output import check_output
from .writers.safetensors_writer import build_header

ProgressFn = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)

#: Hub default shard size (transformers' max_shard_size="5GB").
DEFAULT_SHARD_SIZE = 5 * 10**9
#: Bytes of one transposed block held in memory (plus one scratch copy).
BLOCK_BYTES = 16 * 1024 * 1024
#: Largest tensor permuted in memory (conv kernels).
MAX_PERMUTE_BYTES = 1 << 30
_WEIGHT_SUFFIXES = (".h5", ".hdf5", ".safetensors", ".bin", ".msgpack", ".keras", ".pt", ".pth", ".ckpt",
                    ".h5.index.json", ".safetensors.index.json", ".bin.index.json", ".weights.json")


def _parse_size(value) -> int:
    if value is None:
        return DEFAULT_SHARD_SIZE
    from .convert import parse_size

    return parse_size(value)


# -- ties --------------------------------------------------------------------------------

def _chunks(ckpt: Checkpoint, info: TensorInfo, files: SourceFiles, slot: int = 0):
    return raw_chunks(ckpt, info, files, max_bytes=BLOCK_BYTES // 2, slot=slot)


def _merge_copies(ckpt: Checkpoint, entries: list[PtEntry], files: SourceFiles) -> tuple[list[PtEntry], dict[str, str]]:
    """One entry per PyTorch name; ``{removed source: kept source}``."""
    kept: dict[str, PtEntry] = {}
    removed: dict[str, str] = {}
    bad: list[str] = []
    for e in entries:
        first = kept.get(e.pt_name)
        if first is None:
            kept[e.pt_name] = e
            continue
        a, b = first.source, e.source
        same = (a.shape == b.shape and a.dtype == b.dtype and first.transform == e.transform and (
            (a.storage_key is not None and a.storage_key == b.storage_key)
            or same_tensor_bytes(ckpt, a, ckpt, b, files, max_bytes=BLOCK_BYTES // 2)))  # perf
        if same:
            removed[b.name] = a.name
        else:
            bad.append(f"{a.name} and {b.name}")
    if bad:
        raise UsageError("tensors that map to one PyTorch name differ (not copies of one variable): "
                         + "; ".join(bad), ckpt.path)
    return list(kept.values()), removed


def _tied_heads(ckpt: Checkpoint, entries: list[PtEntry], tied_keys: dict | None = None) -> dict[str, str]:
    """``{head pt_name: embedding pt_name}`` for stored decoder tensors that are
    bit-identical (tied) copies of the embedding, when the config declares the
    tie: transformers 5 leaves those out of what it saves. With ``tied_keys``
    (what the PyTorch class ties, from :mod:`tietool.pt_layouts`) only heads
    transformers 5 ties back are left out (RemBERT ties nothing: its decoder is
    written even when it equals the embedding)."""
    from .compare import compare_copies
    from .ties import declared_tie, find_ties

    if declared_tie(ckpt).get("value") is not True:
        return {}
    by_source = {e.source.name: e for e in entries}
    out: dict[str, str] = {}
    for g in find_ties(ckpt):
        emb = [m for m in g.members if m.role == "embedding" and m.stored and m.name in by_source]
        heads = [m for m in g.members if m.role == "decoder" and m.stored and m.name in by_source]
        if not emb or not heads:
            continue
        ref = by_source[emb[0].name]
        if ref.transform is not None or len(ref.source.shape) != 2:
            continue
        others = []
        for h in heads:
            e = by_source[h.name]
            if e.pt_name == ref.pt_name or h.info is None:
                continue
            if tied_keys is not None and key_pattern(e.pt_name) not in tied_keys:
                continue
            if e.shape != ref.shape or h.dtype != ref.source.dtype:
                continue
            others.append((e, tuple(h.info.shape) != tuple(ref.source.shape)))
        if not others:
            continue
        diffs = compare_copies(ckpt, ref.source, [(e.source, t) for e, t in others])
        for (e, _), d in zip(others, diffs):
            if d.identical:
                out[e.pt_name] = ref.pt_name
    return out


# -- writing -----------------------------------------------------------------------------

def _out_info(e: PtEntry) -> TensorInfo:
    s = e.source
    return TensorInfo(name=e.pt_name, shape=tuple(e.shape), dtype=s.dtype, nbytes=s.nbytes, file=s.file)


def _write_transposed(info: TensorInfo, reader: BlockReader, fd: int, pos: int, tick) -> None:
    """``info`` [R, C] written as [C, R] at ``pos``: columns ``c0:c1`` of the
    source (bounded) become one contiguous run of output rows."""
    R, C = info.shape
    item = dtypes.DTYPES[info.dtype].itemsize
    if R == 0 or C == 0:
        return
    width = max(1, min(C, BLOCK_BYTES // max(1, R * item)))
    for c0 in range(0, C, width):
        c1 = min(C, c0 + width)
        raw = reader.block(info, 0, R, c0, c1, slot=1)
        t = transpose_into(raw, reader.scratch(2, raw.dtype, (c1 - c0, R)))
        data = _le_bytes(t)
        _pwrite_all(fd, data, pos + c0 * R * item)
        if tick:
            tick(len(data))


def _permuted(ckpt: Checkpoint, e: PtEntry) -> np.ndarray:
    if e.source.nbytes > MAX_PERMUTE_BYTES:
        raise UsageError(f"{e.source.name}: {e.source.nbytes:,} bytes is too large to permute in memory", ckpt.path)
    return np.ascontiguousarray(np.transpose(ckpt.read(e.source.name), e.transform))


def _write_file(path: str, ckpt: Checkpoint, entries: list[PtEntry], files: SourceFiles, reader: BlockReader,
                tick) -> None:
    head = build_header([(e.pt_name, _out_info(e)) for e in entries], {"format": "pt"})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
    try:
        _pwrite_all(fd, memoryview(head), 0)
        pos = len(head)
        for e in entries:
            if e.transform in SAME_BYTES:
                copy_tensor(ckpt, e.source, files, fd, pos, tick)
            elif e.transform == "transpose":
                _write_transposed(e.source, reader, fd, pos, tick)
            else:
                data = _le_bytes(_permuted(ckpt, e))
                _pwrite_all(fd, data, pos)
                if tick:
                    tick(len(data))
            pos += e.source.nbytes
        os.ftruncate(fd, pos)
    finally:
        os.close(fd)


def _shards(entries: list[PtEntry], shard_bytes: int) -> list[list[PtEntry]]:
    shards: list[list[PtEntry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.source.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.source.nbytes
    return shards


# -- verification ------------------------------------------------------------------------

def _verify_file(path: str, label: str, ckpt: Checkpoint, entries: list[PtEntry], files: SourceFiles,
                 reader: BlockReader, tick) -> None:
    from .formats import safetensors_format

    with safetensors_format.open_file(path) as got:
        if got.metadata != {"format": "pt"}:
            raise CorruptCheckpointError("verification failed: __metadata__ is not {\"format\": \"pt\"}", label)
        want = {e.pt_name: e for e in entries}
        if set(got.tensors) != set(want):
            raise CorruptCheckpointError("verification failed: the tensors written differ from the plan", label)
        out_files = SourceFiles()
        try:
            for name, e in want.items():
                g = got.tensors[name]
                if tuple(g.shape) != tuple(e.shape) or g.dtype != e.source.dtype:
                    raise CorruptCheckpointError(
                        f"verification failed: {name!r} is {g.dtype}{list(g.shape)}, expected "
                        f"{e.source.dtype}{list(e.shape)}", label)
                if e.transform in SAME_BYTES:
                    ok = same_tensor_bytes(ckpt, e.source, got, g, out_files, max_bytes=BLOCK_BYTES // 2)  # perf
                elif e.transform == "transpose":
                    ok = _verify_transposed(e.source, reader, got, g)
                else:
                    ok = np.array_equal(_permuted(ckpt, e).reshape(-1).view(np.uint8),
                                        np.ascontiguousarray(got.read(name)).reshape(-1).view(np.uint8))
                if not ok:
                    raise CorruptCheckpointError(f"verification failed: {name!r} differs from {e.source.name!r}", label)
                if tick:
                    tick(e.source.nbytes)
        finally:
            out_files.close()


def _verify_transposed(src: TensorInfo, reader: BlockReader, got: Checkpoint, g: TensorInfo) -> bool:
    R, C = src.shape
    item = dtypes.DTYPES[src.dtype].itemsize
    if R == 0 or C == 0:
        return True
    width = max(1, min(C, BLOCK_BYTES // max(1, R * item)))
    with BlockReader(got) as out_reader:
        for c0 in range(0, C, width):
            c1 = min(C, c0 + width)
            raw = reader.block(src, 0, R, c0, c1, slot=1)
            rows = out_reader.rows(g, c0, c1, slot=0)
            # perf: tiled transpose into a reused scratch + memcmp (was a strided copy + memoryview ==)
            t = transpose_into(raw, reader.scratch(2, raw.dtype, (c1 - c0, R)))
            if not fastio.equal(t.data, np.ascontiguousarray(rows).data):
                return False
    return True


# -- the conversion ----------------------------------------------------------------------

def _default_out(src: str, ckpt: Checkpoint) -> str:
    if os.path.isdir(src):
        return src.rstrip(os.sep) + "-pt"
    base = os.path.basename(src)
    from .convert import _stem

    return os.path.join(os.path.dirname(src), f"{_stem(base)}-pt")


def _extra_files(src: str, ckpt: Checkpoint) -> list[tuple[str, str]]:
    """(source path, name) of the non-weight files to copy."""
    folder = ckpt.layout.get("folder") or (src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src)))
    names: list[str] = []
    cfg = ckpt.config_source
    if cfg and os.path.isfile(cfg) and os.path.dirname(os.path.abspath(cfg)) == os.path.abspath(folder):
        names.append(os.path.basename(cfg))
    names += [n for n in ckpt.layout.get("folder_files", []) if n not in names]
    skip = {os.path.basename(f) for f in ckpt.files if f != cfg} | set(ckpt.metadata.get("other_weight_files") or [])
    out = []
    for n in names:
        if n in skip or n.startswith(".") or n.endswith(_WEIGHT_SUFFIXES):
            continue
        p = os.path.join(folder, n)
        if os.path.isfile(p) and not os.path.islink(p):
            out.append((p, n))
    return out


def convert_to_pt(src, out=None, shard_size=None, force: bool = False, verify: bool = True,
                  progress: ProgressFn | None = None, head: str | None = None) -> dict:
    """Convert the transformers TF checkpoint ``src`` to a PyTorch transformers
    folder ``out`` (default: ``SRC-pt``). Returns a summary. ``head="explicit"``
    writes a tied head as a real tensor under the architecture's PyTorch name
    (:func:`tietool.tiedata.with_explicit_head`); default and ``"implicit"``
    leave it out, as transformers 5 saves."""
    t0 = time.monotonic()
    shard_bytes = _parse_size(shard_size)
    src = os.fspath(src)
    files = SourceFiles()
    with open_checkpoint(src) as ckpt:
        guard = SourceGuard(ckpt.files)
        try:
            plan = make_plan(ckpt)
            entries, copies = _merge_copies(ckpt, plan.entries, files)
            tied = _tied_heads(ckpt, entries, plan.tied) if head != "explicit" else {}
            entries = [e for e in entries if e.pt_name not in tied]
            if head == "explicit":
                from .tiedata import with_explicit_head

                entries = with_explicit_head(ckpt.config, entries)
            out = os.fspath(out) if out is not None else _default_out(src, ckpt)  # printed as given
            shards = _shards(entries, shard_bytes)
            total = sum(e.source.nbytes for e in entries)
            if len(shards) == 1:
                outputs = [("model.safetensors", entries)]
            else:
                n = len(shards)
                outputs = [(f"model-{i:05d}-of-{n:05d}.safetensors", s) for i, s in enumerate(shards, 1)]
            tick = phase_ticker(progress, total)
            extra = _extra_files(src, ckpt)
            sources = [src, *ckpt.files, *(p for p, _ in extra)]
            writes = [name for name, _ in outputs] + ["model.safetensors.index.json"] + [n for _, n in extra]
            check_output(out, sources, folder=True, force=force, writes=writes)  # before the work
            guard.add(sources)

            written, copied = [], []
            with atomic_output(out, folder=True, force=force, sources=sources, writes=writes) as tmp, \
                    guard.watching(), BlockReader(ckpt) as reader:
                def write_one(o: tuple, own: SourceFiles, count) -> None:  # perf: shards concurrently
                    with (BlockReader(ckpt) if len(outputs) > 1 else contextlib.nullcontext(reader)) as r:
                        _write_file(os.path.join(tmp, o[0]), ckpt, o[1], own, r, count)
                run_each(outputs, write_one, files, tick("write"))
                written += [os.path.join(out, name) for name, _ in outputs]
                if len(outputs) > 1:
                    index = {
                        "metadata": {"total_parameters": sum(int(np.prod(e.shape)) for e in entries),
                                     "total_size": total},
                        "weight_map": {e.pt_name: name for name, part in outputs for e in part},
                    }
                    with open(os.path.join(tmp, "model.safetensors.index.json"), "w", encoding="utf-8") as fh:
                        fh.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
                    written.append(os.path.join(out, "model.safetensors.index.json"))
                for path, name in extra:
                    copy_side_file(path, os.path.join(tmp, name))
                    copied.append(os.path.join(out, name))
                if verify:
                    def verify_one(o: tuple, own: SourceFiles, count) -> None:  # perf: shards concurrently
                        with (BlockReader(ckpt) if len(outputs) > 1 else contextlib.nullcontext(reader)) as r:
                            _verify_file(os.path.join(tmp, o[0]), o[0], ckpt, o[1], own, r, count)
                    run_each(outputs, verify_one, files, tick("verify"))
        finally:
            files.close()
    return {
        "source": src,
        "source_format": ckpt.format,
        "to": "safetensors",
        "names": "pt",
        "output": out,
        "files": written,
        "copied_files": copied,
        "tensors": len(entries),
        "bytes": total,
        "file_bytes": sum(os.path.getsize(p) for p in written),
        "transposed": [e.pt_name for e in entries if e.transform == "transpose"],
        "permuted": [e.pt_name for e in entries if isinstance(e.transform, tuple)],
        "squeezed": [e.pt_name for e in entries if e.transform == "squeeze0"],
        "reshaped": [e.pt_name for e in entries if e.transform == "reshape"
                     or (isinstance(e.transform, tuple) and e.shape != tuple(e.source.shape[i] for i in e.transform))],
        "pt_class": plan.pt_class,
        "dropped": dict(plan.dropped),
        "copies_merged": copies,
        "tied_heads_left_out": tied,
        "aliases": {},
        "aliases_recorded": 0,
        "verified": bool(verify),
        "seconds": round(time.monotonic() - t0, 3),
    }
