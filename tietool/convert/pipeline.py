"""One conversion, start to end: open -> plan -> check the output path ->
write each file -> copy the side files -> verify -> rename into place.

:func:`convert` is ``tietool convert``; :func:`convert_to_pt` its ``--names
pt`` half. Both build a :class:`~tietool.convert.plan.Plan` (keras naming:
:mod:`.keras_plan`, pt naming: :mod:`.pt_plan`) and hand it to
:func:`execute`, the one place that writes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Sequence

from tietool.io.safe_output import atomic_output, check_output, copy_side_file
from tietool.io.sourceguard import SourceGuard
from tietool.io.tensorcopy import (
    Progress,
    SourceFiles,
    phase_ticker,
    run_each,
)

from ..config import is_hf_config
from ..errors import UsageError
from ..formats import format_of, open_checkpoint
from ..model import Checkpoint
from ..textsafe import bounded
from . import keras_plan
from .plan import OutputFile, Plan, ProgressFn, parse_size, stem
from .pt_plan import INDEX, plan_pt
from .result import ConversionResult
from .sidefiles import SideFiles, side_files
from .verify import verify_output
from .write import write_output

NAMES = ("keras", "pt", "keras-hub")
NO_SIDE_FILES = SideFiles((), ())


def execute(ckpt: Checkpoint, plan: Plan, src: str, out: str, *, folder: bool, side: SideFiles, force: bool,
            verify: bool, progress: ProgressFn | None, guard: SourceGuard,
            reserve: tuple[str, ...] = (), fsync: bool = True) -> tuple[list[str], list[str]]:
    """Write ``plan`` to ``out`` (a folder when ``folder``) atomically, copy
    ``side``, verify; return the written and the copied paths (under
    ``out``). ``reserve``: names this kind of output may hold besides the
    plan's (an existing output folder holding them may be replaced).
    ``fsync=False``: see :func:`tietool.io.safe_output.atomic_output`."""
    sources = [src, *ckpt.files, *side.paths]
    writes = [o.name for o in plan.outputs] + list(reserve) + side.names
    check_output(out, sources, folder=folder, force=force, writes=writes)  # before the work
    tick = phase_ticker(progress, plan.nbytes)
    written: list[str] = []
    copied: list[str] = []
    with atomic_output(out, folder=folder, force=force, sources=sources, writes=writes, fsync=fsync,
                       guard=guard) as tmp:
        def place(o: OutputFile) -> str:
            return os.path.join(tmp, o.name) if folder else tmp

        def shown(o: OutputFile) -> str:  # errors name the output as the user named it
            return os.path.join(out, o.name) if folder else out

        checked: dict[str, dict[str, int]] = {}  # compared while written (verify.EarlyCheck)
        _each_output(plan.outputs, lambda o, count: write_output(o, place(o), ckpt, count, fsync,
                                                                 checked if verify else None, shown(o)), tick("write"))
        written += [os.path.join(out, o.name) if folder else out for o in plan.outputs]
        for path, name in side.files:
            copy_side_file(path, os.path.join(tmp, name))
            copied.append(os.path.join(out, name))
        if verify:
            _each_output(plan.outputs, lambda o, count: verify_output(o, place(o), ckpt, count, checked.get(o.name),
                                                                      shown(o)), tick("verify"))
    return written, copied


def _each_output(outputs: Sequence[OutputFile], one: Callable[[OutputFile, Progress | None], None],
                 tick: Progress | None) -> None:
    """``one(output, tick)`` for every output: the safetensors files (shards)
    concurrently on up to ``os.cpu_count()`` threads (:func:`run_each`: each
    call opens its own descriptors, the first failure or an interrupt stops
    the others), the others (H5 through h5py, texts) in order in this thread.
    Each file is written by the same code either way, so the bytes are the
    same as a sequential run's."""
    for o in outputs:
        if o.kind != "safetensors":
            one(o, tick)
    shards = [o for o in outputs if o.kind == "safetensors"]
    files = SourceFiles()
    try:
        run_each(shards, lambda o, _files, count: one(o, count), files, tick)
    finally:
        files.close()


def names_folder(out) -> bool:
    """``-o`` ending in a path separator (``out/``) names a folder: the
    output file(s) go inside it under their usual names, as for a sharded
    output."""
    if out is None:
        return False
    seps = tuple(s for s in (os.sep, os.altsep, "/") if s)
    return os.fspath(out).endswith(seps)


def _link_notes(side: SideFiles) -> list[str]:
    if not side.skipped_links:
        return []
    return [f"not copied (symbolic links out of the source folder): {bounded(side.skipped_links)}"]


def _check_options(to: str | None, ties: str, names: str, head: str | None) -> None:
    if names not in NAMES:
        raise UsageError(f"--names must be one of {', '.join(NAMES)} (got {names!r})")
    if head is not None and (names != "pt" or head not in ("explicit", "implicit")):
        raise UsageError("--head explicit|implicit goes with --names pt")
    if names == "keras-hub":
        if to not in (None, "h5") or ties != "dedupe" or head is not None:
            raise UsageError("--names keras-hub writes a keras-hub preset folder (no --to, --ties or --head)")
        return
    if names == "pt":
        if to not in (None, "safetensors"):
            raise UsageError("--names pt writes safetensors: use --to safetensors")
        if ties != "dedupe":
            raise UsageError("--names pt always writes each stored matrix once (no --ties keep)")
        return
    if to is not None and to not in keras_plan.TARGETS:
        raise UsageError(f"--to must be one of {', '.join(keras_plan.TARGETS)} (got {to!r})")
    if ties not in keras_plan.TIES:
        raise UsageError(f"--ties must be one of {', '.join(keras_plan.TIES)} (got {ties!r})")


def convert(src, to: str | None = None, out=None, ties: str = "dedupe", shard_size=None, force: bool = False,
            verify: bool = True, progress: ProgressFn | None = None, names: str = "keras",
            head: str | None = None, fsync: bool = True) -> ConversionResult:
    """Convert ``src`` (anything :func:`tietool.formats.open_checkpoint`
    reads) to ``to`` (``"safetensors"``, ``"h5"`` or ``"keras"``; None: see
    :func:`tietool.convert.keras_plan.infer_target`). ``to_inferred`` says why
    the target was chosen when ``to`` was None. Paths in the result are as
    given (``out``, or beside ``src``).

    ``names="pt"``: a transformers TF checkpoint to a folder PyTorch
    transformers loads (:func:`convert_to_pt`). ``fsync=False``: do not wait
    for the output to reach the disk (see
    :func:`tietool.io.safe_output.atomic_output`)."""
    _check_options(to, ties, names, head)
    if names == "keras-hub":
        return _import_kerashub(os.fspath(src), out, force, verify, progress, fsync)
    if names == "pt":
        result = convert_to_pt(src, out=out, shard_size=shard_size, force=force, verify=verify, progress=progress,
                               head=head, fsync=fsync)
        return dataclasses.replace(result, to_inferred="--names pt writes safetensors" if to is None else None)
    t0 = time.monotonic()
    shard_bytes = parse_size(shard_size)
    if shard_bytes is not None and to not in (None, "safetensors"):
        raise UsageError("--shard-size is only supported for safetensors output")
    src = os.fspath(src)
    src_is_dir = os.path.isdir(src)
    with open_checkpoint(src) as ckpt:
        guard = SourceGuard(ckpt.files)
        inferred = None
        if to is None:
            to, inferred = keras_plan.infer_target(ckpt, names, out)
            if shard_bytes is not None and to != "safetensors":
                raise UsageError(f"--shard-size is only supported for safetensors output (this converts to {to})")
        keras_plan.check_target(ckpt, to, src)
        src_file = ckpt.path if os.path.isfile(ckpt.path) else ckpt.files[0]  # index, archive or weights file
        src_name = os.path.basename(src_file)
        plan, notes = _keras_plan(ckpt, to, ties, shard_bytes, src_name)
        as_folder = src_is_dir or plan.multi or names_folder(out)
        if src_is_dir and out is not None and _names_one_file(out, to):
            as_folder = _one_file_from_folder(os.fspath(out), to, plan, notes)
        if out is None:  # beside the source, in the user's own spelling of its path
            if src_is_dir:
                out = src.rstrip(os.sep) + f"-{to}"
            elif plan.multi:
                out = os.path.join(os.path.dirname(src_file), f"{stem(src_name)}-{to}")
            else:
                out = os.path.join(os.path.dirname(src_file), plan.outputs[0].name)
        out = os.fspath(out)
        side = side_files(ckpt, src, {o.name for o in plan.outputs}) if as_folder and src_is_dir else NO_SIDE_FILES
        notes += _link_notes(side)
        written, copied = execute(ckpt, plan, src, out, folder=as_folder, side=side, force=force, verify=verify,
                                  progress=progress, guard=guard, fsync=fsync)
    return ConversionResult(
        source=src, source_format=ckpt.format, names="keras", to=to, to_inferred=inferred, output=out,
        files=tuple(written), copied_files=tuple(copied), tensors=len(plan.tensors), bytes=plan.nbytes,
        file_bytes=sum(os.path.getsize(p) for p in written), aliases=dict(plan.aliases), verified=bool(verify),
        seconds=round(time.monotonic() - t0, 3), notes=tuple(notes), fsynced=fsync)


#: What an output file of each format is called: -o NAME ending so names one file, not a folder.
FILE_SUFFIXES = {"safetensors": (".safetensors",), "h5": (".h5", ".hdf5"), "keras": (".keras",)}


def _names_one_file(out, to: str) -> bool:
    out = os.fspath(out)
    return out.endswith(FILE_SUFFIXES[to]) and not os.path.isdir(out)


def _one_file_from_folder(out: str, to: str, plan: Plan, notes: list[str]) -> bool:
    """A folder source with ``-o NAME.safetensors`` (``.h5``, ``.keras``): one
    file, as the name says, or refused when the output is several files."""
    if plan.multi:
        n = sum(1 for o in plan.outputs if o.kind != "text")
        raise UsageError(f"-o names one {to} file, but this output is {n} shards and their index: "
                         "give -o a folder name", out)
    notes.append("one file, as -o names it: the source folder's other files (tokenizer ...) are not copied; "
                 "its config is carried in the file (tietool.config)")
    return False


def _keras_plan(ckpt: Checkpoint, to: str, ties: str, shard_bytes: int | None, src_name: str) -> tuple[Plan, list[str]]:
    notes = []
    if to == "safetensors":
        files = SourceFiles()  # for comparing candidate copies
        try:
            plan = keras_plan.plan_to_safetensors(ckpt, ties, shard_bytes, files, src_name)
        finally:
            files.close()
        if plan.tf_names:
            notes.append("names as transformers' TF save_pretrained(safe_serialization=True) writes them: "
                         "transformers TF loads this folder; PyTorch transformers 5 needs --names pt")
        elif is_hf_config(ckpt.config):
            # Names no transformers loader expects: say so rather than
            # leave a folder that would load at random.
            notes.append("tensor names are the HDF5 dataset paths (lossless, for converting back with --to h5); "
                         "for PyTorch transformers 5 use --names pt")
    elif to == "keras":
        plan = keras_plan.plan_to_keras(ckpt, src_name)
    else:
        plan = keras_plan.plan_to_h5(ckpt, src_name)
    if format_of(ckpt).is_archive:
        carried = {"config.json", "metadata.json", "model.weights.h5"}
        left = sorted(set((ckpt.archive.members if ckpt.archive else ())) - carried)
        if left:
            notes.append(f"archive member(s) not carried: {bounded(left)}")
    return plan, notes


def convert_to_pt(src, out=None, shard_size=None, force: bool = False, verify: bool = True,
                  progress: ProgressFn | None = None, head: str | None = None, fsync: bool = True) -> ConversionResult:
    """Convert the transformers TF checkpoint ``src`` to a PyTorch transformers
    folder ``out`` (default: ``SRC-pt``); see :mod:`tietool.convert.pt_plan`.
    ``head="explicit"`` writes a tied head as a real tensor under the
    architecture's PyTorch name; default and ``"implicit"`` leave it out, as
    transformers 5 saves."""
    from .kerashub_hf import export as kerashub_export

    preset = kerashub_export.preset_of(os.fspath(src))  # a preset's weights file: the preset
    if kerashub_export.is_preset(preset):  # a keras-hub preset: its own tables
        if head == "explicit":
            raise UsageError("--head explicit is for transformers TF sources (a keras-hub export writes the head "
                             "the preset stores)")
        return _export_kerashub(preset, out, parse_size(shard_size), force, verify, progress, fsync)
    t0 = time.monotonic()
    shard_bytes = parse_size(shard_size)
    src = os.fspath(src)
    if out is not None and _names_one_file(out, "safetensors"):
        raise UsageError("--names pt writes a folder (model.safetensors with config.json and the tokenizer files "
                         "beside it, as transformers loads it): give -o a folder name", os.fspath(out))
    with open_checkpoint(src) as ckpt:
        guard = SourceGuard(ckpt.files)
        files = SourceFiles()  # for comparing copies
        try:
            plan = plan_pt(ckpt, shard_bytes, files, head)
        finally:
            files.close()
        if out is None:
            out = (src.rstrip(os.sep) if os.path.isdir(src)
                   else os.path.join(os.path.dirname(src), stem(os.path.basename(src)))) + "-pt"
        out = os.fspath(out)  # printed as given
        folder = ckpt.folder or (src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src)))
        side = side_files(ckpt, folder, {o.name for o in plan.outputs} | {INDEX})
        written, copied = execute(ckpt, plan, src, out, folder=True, side=side, force=force, verify=verify,
                                  progress=progress, guard=guard, reserve=(INDEX,) if len(plan.outputs) == 1 else (),
                                  fsync=fsync)
    return ConversionResult(
        source=src, source_format=ckpt.format, names="pt", to="safetensors", to_inferred=None, output=out,
        files=tuple(written), copied_files=tuple(copied), tensors=len(plan.tensors), bytes=plan.nbytes,
        file_bytes=sum(os.path.getsize(p) for p in written), aliases={}, verified=bool(verify),
        seconds=round(time.monotonic() - t0, 3), notes=tuple(_link_notes(side)), pt=plan.pt,
        fsynced=fsync)


def _export_kerashub(src: str, out, shard_bytes: int | None, force: bool, verify: bool,
                     progress: ProgressFn | None, fsync: bool) -> ConversionResult:
    """A keras-hub preset to a transformers 5 folder (:mod:`.kerashub_hf.export`): its config,
    tokenizer and weights are written; none of the preset's files is copied as it is."""
    from .kerashub_hf import export as kerashub_export

    t0 = time.monotonic()
    with open_checkpoint(src) as ckpt:
        guard = SourceGuard(ckpt.files)
        job = kerashub_export.plan_export(ckpt, src, shard_bytes)
        out = os.fspath(out) if out is not None else src.rstrip(os.sep) + "-pt"
        written, _ = execute(ckpt, job.plan, src, out, folder=True, side=NO_SIDE_FILES, force=force, verify=verify,
                             progress=progress, guard=guard, reserve=(INDEX,), fsync=fsync)
    return ConversionResult(
        source=src, source_format="keras-hub-preset", names="pt", to="safetensors", to_inferred=None, output=out,
        files=tuple(written), copied_files=(), tensors=job.tensors, bytes=job.plan.nbytes,
        file_bytes=sum(os.path.getsize(p) for p in written), aliases={}, verified=bool(verify),
        seconds=round(time.monotonic() - t0, 3), notes=job.notes, pt=job.plan.pt, fsynced=fsync)


def _import_kerashub(src: str, out, force: bool, verify: bool, progress: ProgressFn | None,
                     fsync: bool) -> ConversionResult:
    """A transformers 5 folder to a keras-hub preset folder (:mod:`.kerashub_hf.reverse`)."""
    from .kerashub_hf import reverse

    t0 = time.monotonic()
    with open_checkpoint(src) as ckpt:
        guard = SourceGuard(ckpt.files)
        plan, notes = reverse.plan_preset(ckpt, src)
        out = os.fspath(out) if out is not None else src.rstrip(os.sep) + "-keras-hub"
        written, _ = execute(ckpt, plan, src, out, folder=True, side=NO_SIDE_FILES, force=force, verify=verify,
                             progress=progress, guard=guard, reserve=("assets",), fsync=fsync)
    return ConversionResult(
        source=src, source_format=ckpt.format, names="keras-hub", to="h5", to_inferred=None, output=out,
        files=tuple(written), copied_files=(), tensors=len(plan.tensors), bytes=plan.nbytes,
        file_bytes=sum(os.path.getsize(p) for p in written), aliases={}, verified=bool(verify),
        seconds=round(time.monotonic() - t0, 3), notes=tuple(notes), fsynced=fsync)
