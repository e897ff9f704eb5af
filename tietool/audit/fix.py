"""Repair a checkpoint whose config and weights disagree: ``tietool fix PATH -o OUT``.

The repaired copy has the source's own format and layout: the same file
names, the same shards and index, every other file of the folder copied
byte for byte. Only what a repair needs changes:

* a tie flag: ``config.json`` edited as text (:mod:`tietool.audit.jsonedit`), every
  other key, its order and the indentation kept;
* a stored copy that differs from the majority (or from the copy named by
  ``--prefer``): that weights file rewritten (safetensors or HDF5, same names,
  attributes and order) with the chosen copy's bytes;
* ``head="explicit"``: the head written as a real tensor under the name the
  architecture's PyTorch class ties (transformers 5 ``_tied_weights_keys``),
  into the embedding's file, and the index updated;
* ``head="implicit"``: a stored head bit-identical to the embedding dropped,
  and the tie recorded in the config (what transformers itself saves).

Written to a temporary file or folder beside OUT and renamed into place only
when complete and verified: every tensor of the output compared byte for byte
with the tensor it must hold, and the output checked again
(:func:`tietool.audit.check.analyse` must find no problem). The source is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

from tietool.audit.check import FLAG, IDENTICAL, NO_HEAD, SHARED_STORAGE, Analysis, Repair, analyse
from tietool.audit.jsonedit import delete_key, set_value
from tietool.errors import ConversionError, CopiesDifferError, CorruptCheckpointError, UsageError
from tietool.formats import format_of, open_checkpoint
from tietool.io.safe_output import TMP_MARK, atomic_output, check_output, copy_side_file
from tietool.io.sourceguard import SourceGuard
from tietool.io.tensorcopy import Progress, SourceFiles, phase_ticker, same_tensor_bytes
from tietool.model import Checkpoint, TensorInfo

HEADS = ("explicit", "implicit")
ProgressFn = Callable[[str, int, int], None]  # (phase, bytes done, bytes in all)


@dataclass(frozen=True)
class FixResult:
    source: str
    output: str | None  # None: nothing to fix, nothing written
    repairs: tuple[Repair, ...]
    written: tuple[str, ...] = ()
    copied: tuple[str, ...] = ()
    verified: bool = False
    seconds: float = 0.0

    @property
    def nothing_to_fix(self) -> bool:
        return not self.repairs

    def to_json(self) -> dict:
        return {"source": self.source, "output": self.output, "nothing_to_fix": self.nothing_to_fix,
                "repairs": [r.to_json() for r in self.repairs], "written": list(self.written),
                "copied": list(self.copied), "verified": self.verified, "seconds": round(self.seconds, 3)}


def head_repairs(a: Analysis, head: str | None) -> list[Repair]:
    """The repairs ``--head explicit|implicit`` adds (also used by
    ``convert --names pt``'s planning through :func:`wanted_head`)."""
    if head is None:
        return []
    if head not in HEADS:
        raise UsageError(f"--head must be one of {', '.join(HEADS)} (got {head!r})")
    ckpt = a.ckpt
    weights_tied = a.weights_tied if a.weights_tied is not None else a.tied
    if not format_of(ckpt).is_safetensors:
        raise UsageError(f"--head {head} rewrites safetensors with PyTorch names; this is {ckpt.format} "
                         "(convert it first: tietool convert SRC --to safetensors --names pt --head ...)", ckpt.path)
    out: list[Repair] = []
    emb = a.embedding
    if head == "explicit":
        if a.stored not in (NO_HEAD, SHARED_STORAGE) or not weights_tied:
            return []
        if a.head_pt is None:
            raise UsageError("--head explicit: transformers 5 names no tied head for this architecture", ckpt.path)
        if a.head_pt in ckpt.tensors:
            return []
        out.append(Repair("write-head", f"write {a.head_pt} as a real tensor (a copy of {emb})", tensor=a.head_pt,
                          source=emb))
    else:
        if a.stored != IDENTICAL or a.group is None:
            return []
        heads = [m for m in a.group.members if m.role == "decoder" and m.stored and not m.transposed
                 and m.same_storage_as is None]
        for m in heads:
            out.append(Repair("drop-head", f"drop {m.name} (bit-identical to {emb}; the config records the tie)",
                              tensor=m.name, source=emb))
        if out:
            keys = [f.key for f in a.flags if f.declared] or [FLAG]
            for k in keys:
                if any(f.key == k and f.value is True and f.declared for f in a.flags):
                    continue
                if not any(f.key == k for f in a.flags if f.declared) and a.tied is True:
                    continue  # absent and the default is true: already recorded
                out.append(Repair("set-flag", f"set {k} to true (the head is tied)", key=k, value=True))
    return out


def _plan(a: Analysis, head: str | None) -> list[Repair]:
    repairs = list(a.repairs)
    if a.needs_prefer:
        names = a.needs_prefer
        raise CopiesDifferError(
            f"the {len(names)} stored copies of the tied matrix differ and no copy is a strict majority: choose the "
            f"one to keep with --prefer embedding ({names[0]}), --prefer decoder ({names[-1]}) or --prefer NAME",
            a.ckpt.path)
    for r in repairs:
        if r.kind == "use-copy":
            t, src = a.ckpt.tensors[r.tensor_name], a.ckpt.tensors[r.source_name]
            if tuple(t.shape) != tuple(src.shape) or t.dtype != src.dtype:
                raise ConversionError(f"{r.tensor} ({t.dtype}{list(t.shape)}) cannot take the bytes of {r.source} "
                                 f"({src.dtype}{list(src.shape)}): a transposed or converted copy is not repaired",
                                 a.ckpt.path)
    for r in head_repairs(a, head):
        if r.kind == "set-flag":
            repairs = [x for x in repairs if not (x.kind == "set-flag" and x.key == r.key)]
        repairs.append(r)
    return repairs


# -- writing ----------------------------------------------------------------------------

def _config_text(a: Analysis, repairs: list[Repair]) -> str | None:
    flags = [r for r in repairs if r.kind == "set-flag"]
    if not flags:
        return None
    src = a.ckpt.config_source
    if not src or not os.path.isfile(src) or os.path.basename(src) != "config.json":
        raise UsageError("the repair changes the tie flag, but the config is stored inside the weights file; "
                         "tietool fix only edits a config.json", a.ckpt.path)
    with open(src, encoding="utf-8") as fh:
        text = fh.read()
    for r in flags:
        text = set_value(text, r.key_path, r.value, src)
    return text


def _st_entries(ckpt: Checkpoint, path: str, repairs: list[Repair]) -> tuple[list[tuple[str, TensorInfo]], dict]:
    from tietool.formats.safetensors_format import read_header

    header, metadata, _ = read_header(path)
    entries = [(n, ckpt.tensors[n]) for n in header]
    by_name = {r.tensor: r for r in repairs if r.kind in ("use-copy", "drop-head")}
    out = []
    for n, info in entries:
        r = by_name.get(n)
        if r is None:
            out.append((n, info))
        elif r.kind == "use-copy":
            out.append((n, ckpt.tensors[r.source_name]))
        # drop-head: left out
        for w in repairs:
            if w.kind == "write-head" and w.source == n:
                out.append((w.tensor_name, info))
    metadata = {k: v for k, v in metadata.items() if not any(w.kind == "write-head" and w.tensor == k for w in repairs)}
    return out, metadata


def _h5_plan(ckpt: Checkpoint, h5, repairs: list[Repair]) -> tuple[dict, dict]:
    from tietool.formats.h5_writer import describe_h5

    tree = describe_h5(h5)
    swap = {r.tensor_name: r.source_name for r in repairs if r.kind == "use-copy"}
    data = {}
    for dpath in tree["datasets"]:
        name = dpath if dpath in ckpt.tensors else next(
            (n for n, t in ckpt.tensors.items() if t.file == h5.label and n.endswith(dpath)), None)
        if name is None:
            raise CorruptCheckpointError(f"dataset {dpath!r} has no tensor", h5.label)
        data[dpath] = ckpt.tensors[swap.get(name, name)]
    return tree, data


def _index_text(path: str, repairs: list[Repair], ckpt: Checkpoint) -> str:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    index = json.loads(text)
    size = index.get("metadata", {}).get("total_size") if isinstance(index.get("metadata"), dict) else None
    params = index.get("metadata", {}).get("total_parameters") if isinstance(index.get("metadata"), dict) else None
    for r in repairs:
        info = ckpt.tensors[r.source_name]
        if r.kind == "write-head":
            text = set_value(text, ("weight_map", r.tensor_name), os.path.basename(info.file), path)
            sign = 1
        elif r.kind == "drop-head":
            text = delete_key(text, ("weight_map", r.tensor_name), path)
            sign = -1
        else:
            continue
        if isinstance(size, int):
            size += sign * info.nbytes
            text = set_value(text, ("metadata", "total_size"), size, path)
        if isinstance(params, int):
            params += sign * info.numel
            text = set_value(text, ("metadata", "total_parameters"), params, path)
    return text


def _expected(ckpt: Checkpoint, repairs: list[Repair]) -> dict[str, TensorInfo]:
    """Output tensor name -> the source tensor whose bytes it must hold."""
    out = {n: t for n, t in ckpt.tensors.items()}
    for r in repairs:
        if r.kind == "use-copy":
            out[r.tensor_name] = ckpt.tensors[r.source_name]
        elif r.kind == "drop-head":
            out.pop(r.tensor_name, None)
        elif r.kind == "write-head":
            out[r.tensor_name] = ckpt.tensors[r.source_name]
    return out


def _verify(ckpt: Checkpoint, out_path: str, repairs: list[Repair], files: SourceFiles, shown: str) -> None:
    """Compare the output at ``out_path`` (the temporary) with what it must
    hold; errors name ``shown`` (the output the user named)."""
    expected = _expected(ckpt, repairs)
    with open_checkpoint(out_path) as got:
        if set(got.tensors) != set(expected):
            missing = sorted(set(expected) - set(got.tensors))[:3]
            extra = sorted(set(got.tensors) - set(expected))[:3]
            raise CorruptCheckpointError(f"verification failed: tensors differ (missing {missing}, unexpected {extra})",
                                         shown)
        for n, info in expected.items():
            g = got.tensors[n]
            if tuple(g.shape) != tuple(info.shape) or g.dtype != info.dtype or not same_tensor_bytes(
                    ckpt, info, got, g, files):
                raise CorruptCheckpointError(f"verification failed: {n!r} differs from {info.name!r}", shown)
        after = analyse(got)
        if after.problems:
            raise CorruptCheckpointError("verification failed: the output still has a problem: "
                                         + after.problems[0].message, shown)


def fix(src, out=None, head: str | None = None, prefer: str | None = None, force: bool = False,
        verify: bool = True, progress: ProgressFn | None = None) -> FixResult:
    """Repair ``src`` into ``out`` (default: ``SRC-fixed``). Returns what was
    done; with nothing to fix, nothing is written. ``progress(phase, done,
    total)`` is called as tensor bytes are written (phase ``"write"``); a
    source that changes before the output is in place is an error
    (:class:`~tietool.io.sourceguard.SourceGuard`) and nothing is written."""
    from tietool.audit.check import suggest_output

    t0 = time.monotonic()
    src = os.fspath(src)
    is_dir = os.path.isdir(src)
    with open_checkpoint(src) as ckpt:
        # Everything read (the folder's files are copied) is a source the output must not touch.
        side = sorted(os.listdir(src)) if is_dir else []
        sources = [src, *ckpt.files, *(os.path.join(src, n) for n in side)]
        guard = SourceGuard(sources)
        with guard.watching():
            a = analyse(ckpt, prefer)
            repairs = _plan(a, head)
            if not repairs:
                return FixResult(src, None, (), seconds=time.monotonic() - t0)
            cfg_text = _config_text(a, repairs)
        if cfg_text is not None and not is_dir:
            raise UsageError(f"the repair edits {ckpt.config_source}: give the model folder", src)
        out = os.fspath(out) if out is not None else suggest_output(src)
        check_output(out, sources, folder=is_dir, force=force, writes=side)  # before the work
        files = SourceFiles()
        try:
            with atomic_output(out, folder=is_dir, force=force, sources=sources, writes=side, guard=guard) as tmp:
                job = _Job(ckpt, src, out, tmp, is_dir, repairs, files)
                job.write(cfg_text, progress)
                if verify:
                    tensor_kinds = {"use-copy", "drop-head", "write-head"}
                    _verify(ckpt, tmp, [r for r in repairs if r.kind in tensor_kinds], files, out)
        finally:
            files.close()
    return FixResult(src, out, tuple(repairs), tuple(job.written), tuple(job.copied), bool(verify),
                     time.monotonic() - t0)


@dataclass
class _Job:
    """One repaired copy being written into ``tmp`` (the temporary of ``out``)."""

    ckpt: Checkpoint
    src: str
    out: str
    tmp: str
    is_dir: bool
    repairs: list[Repair]
    files: SourceFiles
    written: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)

    def target(self, path: str) -> str:
        return os.path.join(self.tmp, os.path.basename(path)) if self.is_dir else self.tmp

    def shown(self, path: str) -> str:
        return os.path.join(self.out, os.path.basename(path)) if self.is_dir else self.out

    def write(self, cfg_text: str | None, progress: ProgressFn | None) -> None:
        ckpt, repairs = self.ckpt, self.repairs
        touched = {ckpt.tensors[r.tensor_name].file for r in repairs if r.kind in ("use-copy", "drop-head")}
        touched |= {ckpt.tensors[r.source_name].file for r in repairs if r.kind == "write-head"}
        total = sum(t.nbytes for t in ckpt.tensors.values() if t.file in touched)
        tick = phase_ticker(progress, total)("write") if progress else None
        for path in sorted(touched):
            self._weights_file(path, tick)
            self.written.append(self.shown(path))
        if self.is_dir:
            self._folder_files({os.path.basename(p) for p in touched}, cfg_text)
        elif not touched:
            shutil.copyfile(self.src, self.tmp)

    def _weights_file(self, path: str, tick: Progress | None) -> None:
        ckpt = self.ckpt
        h5_by_file = {h.label: h for h in getattr(ckpt.store, "files", []) or []}
        if format_of(ckpt).is_safetensors:
            from tietool.formats.safetensors_writer import write_safetensors

            entries, metadata = _st_entries(ckpt, path, self.repairs)
            write_safetensors(self.target(path), ckpt, entries, metadata, self.files, tick)
        elif path in h5_by_file and format_of(ckpt).is_hdf5:
            from tietool.formats.h5_writer import write_h5

            tree, data = _h5_plan(ckpt, h5_by_file[path], self.repairs)
            write_h5(self.target(path), ckpt, tree, data, self.files, tick)
        else:
            raise UsageError(f"cannot rewrite tensors of a {ckpt.format} checkpoint", self.src)

    def _folder_files(self, done: set[str], cfg_text: str | None) -> None:
        ckpt = self.ckpt
        fmt = format_of(ckpt)
        index_file = ckpt.files[0] if fmt.sharded and fmt.is_safetensors else None
        index_changes = [r for r in self.repairs if r.kind in ("drop-head", "write-head")]
        if index_file and index_changes:
            with open(self.target(index_file), "w", encoding="utf-8") as fh:
                fh.write(_index_text(index_file, index_changes, ckpt))
            done.add(os.path.basename(index_file))
            self.written.append(self.shown(index_file))
        if cfg_text is not None:
            with open(os.path.join(self.tmp, "config.json"), "w", encoding="utf-8") as fh:
                fh.write(cfg_text)
            done.add("config.json")
            self.written.append(os.path.join(self.out, "config.json"))
        for n in sorted(os.listdir(self.src)):
            p = os.path.join(self.src, n)
            if n in done or not os.path.isfile(p) or TMP_MARK in n:
                continue
            copy_side_file(p, os.path.join(self.tmp, n))
            self.copied.append(os.path.join(self.out, n))
