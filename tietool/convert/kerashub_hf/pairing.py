"""``tietool diff PRESET HF_DIR``: a keras-hub preset and a transformers folder, paired by the
family table (:mod:`.families`) across the reshapes.

Each transformers tensor is paired with the keras-hub variable(s) it is made of (``match``
``kerashub-table``; ``a`` names them, joined by ``+`` for GPT-2's fused ``c_attn``); the preset's
side is moved into the transformers layout block by block (:class:`.assemble.Assembly`, as the
export writes it) and compared with the other side's rows in the same blocks. Statuses and figures
are those of every other ``diff`` pair; tensors of the folder the table does not make are ``only-b``.
"""

from __future__ import annotations

import dataclasses
import os

from tietool.io.blockread import BlockReader
from tietool.io.compare import Tally
from tietool.model import Checkpoint

from ..plan import TensorOut
from .assemble import Assembly, PartReader, Piece, as_2d
from .export import is_preset, plan_export

MATCH = "kerashub-table"


def applies(a: str, ca: Checkpoint, b: str, cb: Checkpoint) -> bool:
    """One side a keras-hub preset folder, the other a transformers folder."""
    def hf(c: Checkpoint) -> bool:
        return isinstance(c.config, dict) and isinstance(c.config.get("model_type"), str)
    return (is_preset(a) and hf(cb)) or (is_preset(b) and hf(ca))


def as_assembly(t: TensorOut) -> Assembly:
    """Every plan tensor as an :class:`Assembly` (its output viewed 2-D)."""
    if isinstance(t.transform, Assembly):
        return t.transform
    src = t.source
    if t.transform == "transpose":  # a 2-D view of the stored tensor, transposed
        r, c = src.shape
        return Assembly((c, r), (Piece(src, r, c, (0, 0), transpose=True),))
    r, c = as_2d(tuple(t.shape), 1) if len(t.shape) > 1 else (1, max(1, src.numel))
    return Assembly((r, c), (Piece(src, r, c, (0, 0)),))


def compare(preset: Checkpoint, t: TensorOut, other: Checkpoint, atol, rtol) -> Tally:
    """The preset's side of ``t`` (in the transformers layout) against ``other``'s tensor ``t.name``."""
    asm = as_assembly(t)
    g = other.tensors[t.name]
    acc = Tally(asm.shape2d, atol, rtol, dtype_names=(t.source.dtype, g.dtype))
    flat = dataclasses.replace(g, shape=asm.shape2d)
    m = asm.shape2d[1]
    with PartReader(preset) as reader, BlockReader(other) as out:
        for r0, block in asm.blocks(reader):
            acc.fold(block, out.rows(flat, r0, r0 + block.shape[0], slot=0), r0 * m)
        if acc.bits_differ and acc.clean_until:
            acc.finish_norm(block for _, block in asm.blocks(reader))
    acc.release()
    return acc


def pairs(a: str, ca: Checkpoint, b: str, cb: Checkpoint) -> list[tuple[str | None, str | None, TensorOut | None]]:
    """``(a name, b name, plan tensor)`` for every tensor of both sides (names ``+``-joined for
    several keras-hub variables); the plan tensor is None for an unpaired one."""
    preset_is_a = is_preset(a)
    preset, ckpt_p = (a, ca) if preset_is_a else (b, cb)
    other = cb if preset_is_a else ca
    plan = plan_export(ckpt_p, os.fspath(preset), None).plan
    out: list[tuple[str | None, str | None, TensorOut | None]] = []
    seen: set[str] = set()
    for t in plan.tensors:
        kh = "+".join(t.transform.names) if isinstance(t.transform, Assembly) else t.source.name
        hf = t.name if t.name in other.tensors else None
        seen.add(t.name)
        out.append((kh, hf, t if hf else None) if preset_is_a else (hf, kh, t if hf else None))
    for name in other.tensors:
        if name not in seen:
            out.append((None, name, None) if preset_is_a else (name, None, None))
    return out
