"""The plan of a keras-hub preset -> transformers 5 export: which stored tensor becomes which
transformers tensor, and how (:mod:`.families` rows turned into plan transforms).

Every stored tensor is used exactly once; one the family's table does not name (a LoRA adapter,
a quantisation scale, a layer keras-hub added in a later release) is an error naming it, never
left out silently. The tie is read from the weights: a ``ReversibleEmbedding`` storing
``reverse_embeddings`` is untied (``lm_head.weight`` written from it, transposed); one storing
none is tied (no head tensor: transformers ties ``lm_head`` on load).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from tietool import dtypes
from tietool.errors import ConversionError
from tietool.model import Checkpoint, Role, TensorInfo
from tietool.textsafe import bounded

from ..plan import TensorOut
from .assemble import Assembly, Piece, as_2d
from .families import Family

LAYERS = "layers/"


@dataclass(frozen=True)
class WeightPlan:
    tensors: tuple[TensorOut, ...]
    tied: bool
    pairs: tuple[tuple[str, tuple[str, ...]], ...]  # (transformers name, keras-hub names)


def block_group(family: Family, i: int) -> str:
    return f"{LAYERS}{family.block}" + (f"_{i}" if i else "")


def keras_name(family: Family, rel: str, i: int | None, prefix: str = "") -> str:
    return prefix + (LAYERS + rel[1:] if rel.startswith("/") else f"{block_group(family, i or 0)}/{rel}")


def rows_of(family: Family, num_layers: int, with_head: bool, prefix: str = ""):
    """``(transformers name, op, keras-hub dataset paths)`` for every tensor the family writes;
    ``prefix``: where the backbone's weights are (``layers/<backbone>/`` inside a task's ``.keras``)."""
    rows = list(family.weights) + ([family.head] if with_head and family.head else [])
    for hf, op, kh in rows:
        if "{i}" in hf:
            for i in range(num_layers):
                yield hf.format(i=i), op, tuple(keras_name(family, k, i, prefix) for k in kh)
        else:
            yield hf, op, tuple(keras_name(family, k, None, prefix) for k in kh)


def backbone_prefix(ckpt: Checkpoint) -> str:
    """Where the backbone's weights are stored: ``""`` in a preset or a backbone's file,
    ``layers/<backbone>/`` in a task's ``.keras`` (found by the one token embedding path)."""
    emb = LAYERS + "reversible_embedding/vars/0"
    found = [n[:-len(emb)] for n in ckpt.tensors if n == emb or n.endswith("/" + emb)]
    return found[0] if len(found) == 1 else ""


def _transposed(name: str, src: TensorInfo, split: int) -> TensorOut:
    """``src`` viewed 2-D (:func:`as_2d`) and transposed: the bounded column-block transpose of
    ``--names pt`` when stored raw, else one transposed part."""
    r, c = as_2d(src.shape, split)
    if src.offset is not None and src.computable:
        return TensorOut(name, dataclasses.replace(src, shape=(r, c)), (c, r), "transpose")
    return assembled(name, (c, r), [Piece(src, r, c, (0, 0), transpose=True)], (c, r))


def assembled(name: str, shape: tuple[int, ...], pieces: list[Piece], shape2d: tuple[int, int]) -> TensorOut:
    srcs = list(dict.fromkeys(p.source.name for p in pieces))
    first = pieces[0].source
    if any(p.source.dtype != first.dtype for p in pieces):
        raise ConversionError(f"{name}: its parts {srcs} are stored in different dtypes")
    total = math.prod(shape) * dtypes.DTYPES[first.dtype].itemsize
    synthetic = TensorInfo(name="+".join(srcs), shape=tuple(shape), dtype=first.dtype, nbytes=total, file=first.file)
    return TensorOut(name, synthetic, tuple(shape), Assembly(shape2d, tuple(pieces)))


def tensor_out(name: str, op: str, srcs: list[TensorInfo]) -> TensorOut:
    """One transformers tensor from its keras-hub source(s) by ``op`` (see :mod:`.families`)."""
    src = srcs[0]
    op = op.split(":")[0]
    if op == "same":
        return TensorOut(name, src, tuple(src.shape), None)
    if op == "flat":
        return TensorOut(name, src, (src.numel,), "reshape")
    if op == "rows":
        return TensorOut(name, src, as_2d(src.shape, -1), "reshape")
    if op in ("T", "Tl"):
        return _transposed(name, src, 1 if op == "T" else -1)
    if op == "heads_T":  # [heads, hidden, head_dim] -> per head [head_dim, hidden]
        b, r, c = src.shape
        pieces = [Piece(src, r, c, (k * c, 0), transpose=True, start=k * r * c) for k in range(b)]
        return assembled(name, (b * c, r), pieces, (b * c, r))
    if op == "cat_cols":  # kernels [in, ...] side by side: [in, sum(out)]
        views = [as_2d(s.shape, 1) for s in srcs]
        if len({v[0] for v in views}) != 1:
            raise ConversionError(f"{name}: parts of different heights {views}")
        pieces, col = [], 0
        for s, (r, c) in zip(srcs, views, strict=True):
            pieces.append(Piece(s, r, c, (0, col)))
            col += c
        return assembled(name, (views[0][0], col), pieces, (views[0][0], col))
    if op == "cat":  # flattened, one after the other
        pieces, col = [], 0
        for s in srcs:
            pieces.append(Piece(s, 1, s.numel, (0, col)))
            col += s.numel
        return assembled(name, (col,), pieces, (1, col))
    raise ValueError(f"unknown op {op!r}")


def plan_weights(ckpt: Checkpoint, family: Family, num_layers: int) -> WeightPlan:
    """The transformers tensors of the preset ``ckpt`` (see the module notes)."""
    prefix = backbone_prefix(ckpt)
    head_src = keras_name(family, family.head[2][0], None, prefix) if family.head else None
    tied = head_src is None or head_src not in ckpt.tensors
    outs: list[TensorOut] = []
    pairs = []
    # a task's .keras may carry its optimizer's state: not the model's weights
    used: set[str] = {n for n, t in ckpt.tensors.items() if t.role == Role.OPTIMIZER}
    missing: list[str] = []
    for hf, op, kh in rows_of(family, num_layers, with_head=not tied, prefix=prefix):
        found = [ckpt.tensors.get(k) for k in kh]
        if any(f is None for f in found):
            missing += [k for k, f in zip(kh, found, strict=True) if f is None]
            continue
        outs.append(tensor_out(hf, op, [f for f in found if f is not None]))
        pairs.append((hf, kh))
        used.update(kh)
    if missing:
        raise ConversionError(f"not a {family.backbone} preset tietool knows: no {bounded(missing)}", ckpt.path)
    left = sorted(set(ckpt.tensors) - used)
    if left:
        raise ConversionError(f"stored weights {family.architecture} has no place for: {bounded(left)}", ckpt.path)
    return WeightPlan(tuple(outs), tied, tuple(pairs))
