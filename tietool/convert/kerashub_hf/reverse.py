"""``tietool convert HF_DIR --names keras-hub -o PRESET``: a transformers 5 folder -> a keras-hub
preset folder ``Backbone.from_preset`` / ``CausalLM.from_preset`` loads.

The family's table read backwards: each keras-hub variable (a dataset ``layers/.../vars/<i>`` of
``model.weights.h5``) gets its bytes from the transformers tensor(s) by the inverse of the row's op
(a transpose back, per-head transposes back, GPT-2's ``c_attn`` cut into its three kernels), in
bounded row blocks, compared after writing; ``config.json`` is the keras-hub backbone config
(:mod:`.khconfig`) with ``tie_word_embeddings`` where the backbone takes it (keras-hub's Llama 3 does
not save it, and a tied preset it wrote does not reload, keras-hub issue 3098); ``metadata.json``
as ``save_to_preset`` writes it. A tied folder's head is the embedding (no ``reverse_embeddings``);
an untied one's ``lm_head.weight`` becomes ``reverse_embeddings`` ``[hidden, vocab]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from tietool import dtypes
from tietool.errors import ConversionError
from tietool.model import Checkpoint, TensorInfo
from tietool.textsafe import bounded

from ..plan import OutputFile, Plan, TensorOut
from . import families, khconfig
from .assemble import Piece, as_2d
from .families import Family
from .khtokenizer import kerashub_tokenizer
from .plan import assembled, rows_of

KERAS_VERSION = "3.15.1"
KERAS_HUB_VERSION = "0.32.0"


def _dims(fam: Family, kh: dict) -> dict[str, int]:
    q = kh.get("num_query_heads", kh.get("num_heads"))
    h = kh["hidden_dim"]
    return {"h": h, "q": q, "k": kh.get("num_key_value_heads", q), "d": kh.get("head_dim") or h // q}


def _view(src: TensorInfo, shape: tuple[int, ...], start: int = 0) -> TensorOut | None:
    """``src``'s elements ``start..`` as ``shape``, same bytes: a raw copy when stored raw."""
    if src.offset is None:
        return None
    item = dtypes.DTYPES[src.dtype].itemsize
    n = math.prod(shape)
    return TensorOut("", dataclasses.replace(src, shape=shape, nbytes=n * item, offset=src.offset + start * item),
                     shape, None)


def _out(name: str, op: str, src: TensorInfo, shape: tuple[int, ...], part: int, parts: int) -> TensorOut:
    """The keras-hub variable ``name`` of ``shape`` from the transformers ``src`` (the ``part``-th of
    ``parts`` for the ``cat`` ops): the inverse of :func:`.plan.tensor_out`."""
    if op in ("same", "flat", "rows", "cat"):
        n = math.prod(shape)
        start = part * n if op == "cat" else 0
        raw = _view(src, shape, start)
        if raw is not None:
            return dataclasses.replace(raw, name=name)
        return assembled(name, shape, [Piece(src, 1, src.numel, (0, 0), start=start)] if n == src.numel else
                          [Piece(src, 1, n, (0, 0), start=start)], (1, n))
    if op == "T":  # transformers [out, in] -> keras-hub [in, ...]
        r, c = as_2d(shape, 1)
        return assembled(name, shape, [Piece(src, c, r, (0, 0), transpose=True)], (r, c))
    if op == "Tl":  # transformers [out, heads*head_dim] -> keras-hub [heads, head_dim, out]
        r, c = as_2d(shape, -1)
        return assembled(name, shape, [Piece(src, c, r, (0, 0), transpose=True)], (r, c))
    if op == "heads_T":  # [heads*head_dim, hidden] -> [heads, hidden, head_dim]
        b, r, c = shape
        pieces = [Piece(src, c, r, (k * r, 0), transpose=True, start=k * c * r) for k in range(b)]
        return assembled(name, shape, pieces, (b * r, c))
    if op == "cat_cols":  # GPT-2 c_attn [in, parts*out]: this part's columns
        r, c = as_2d(shape, 1)
        return assembled(name, shape, [Piece(src, r, parts * c, (0, 0), col_range=(part * c, (part + 1) * c))],
                          (r, c))
    raise ValueError(f"unknown op {op!r}")


def _shape(op: str, dims: dict[str, int], src: TensorInfo) -> tuple[int, ...]:
    """The keras-hub shape of a row's variable: its ``op:dims`` spec, else the transformers shape
    (transposed for ``T``)."""
    base, _, spec = op.partition(":")
    if spec:
        return tuple(dims[x] for x in spec.split(","))
    if base == "T":
        return tuple(reversed(src.shape))
    return tuple(src.shape)


def plan_weights_back(ckpt: Checkpoint, fam: Family, kh: dict) -> tuple[list[TensorOut], bool]:
    head = fam.head[0] if fam.head else None
    tied = head is None or head not in ckpt.tensors
    dims = _dims(fam, kh)
    outs: list[TensorOut] = []
    used: set[str] = set()
    missing: list[str] = []
    for hf, op, khs in rows_of(fam, int(kh["num_layers"]), with_head=not tied):
        src = ckpt.tensors.get(hf)
        if src is None:
            missing.append(hf)
            continue
        used.add(hf)
        base = op.split(":")[0]
        for part, name in enumerate(khs):
            outs.append(_out(name, base, src, _shape(op, dims, src), part, len(khs)))
    if missing:
        raise ConversionError(f"not a {fam.architecture} folder tietool knows: no {bounded(missing)}", ckpt.path)
    left = sorted(set(ckpt.tensors) - used)
    if left:
        raise ConversionError(f"tensors keras-hub {fam.backbone} has no place for: {bounded(left)}", ckpt.path)
    return outs, tied


def _dtype_policy(name: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def plan_preset(ckpt: Checkpoint, src: str) -> tuple[Plan, list[str]]:
    """The preset folder's files for the transformers folder ``ckpt``."""
    hf = ckpt.config if isinstance(ckpt.config, dict) else None
    if hf is None or not isinstance(hf.get("model_type"), str):
        raise ConversionError("no transformers config.json with a model_type", src)
    found = families.by_model_type(hf["model_type"])
    if not found:
        raise ConversionError(f"model_type {hf['model_type']!r} has no keras-hub export in tietool yet (supported: "
                              f"{', '.join(sorted({f.model_type for f in families.FAMILIES}))})", src)
    fam = found[0]
    try:
        kh = khconfig.to_kerashub(fam, hf)
    except khconfig.Unrepresentable as exc:
        raise khconfig.Unrepresentable(exc.message, src) from None
    tensors, tied = plan_weights_back(ckpt, fam, kh)
    dtype = {t.source.dtype for t in tensors}
    policy = dtype.pop() if len(dtype) == 1 else "float32"
    if fam.tie == "arg":
        kh["tie_word_embeddings"] = tied
    elif tied != (fam.tie == "tied"):
        raise ConversionError(f"{'a tied' if tied else 'an untied'} head: keras-hub {fam.backbone} is always "
                              f"{fam.tie}", src)
    config = {"module": fam.module, "class_name": fam.backbone,
              "config": {"name": fam.backbone[:-len("Backbone")].lower() + "_backbone", "trainable": True,
                         "dtype": _dtype_policy(policy), **kh},
              "registered_name": f"keras_hub>{fam.backbone}"}
    params = sum(t.source.numel if t.transform is None else math.prod(t.shape) for t in tensors)
    metadata = {"keras_version": KERAS_VERSION, "keras_hub_version": KERAS_HUB_VERSION, "parameter_count": params,
                "date_saved": "", "tasks": ["CausalLM"]}
    tree = {"groups": {"": {}}, "datasets": {t.name: {"attrs": {}, "opaque": False} for t in tensors}}
    tok_files, tok_note = kerashub_tokenizer(src, fam) if os.path.isdir(src) else ({}, None)
    outputs = (OutputFile("model.weights.h5", "h5", tuple(tensors), tree=tree),
               OutputFile("config.json", "text", text=json.dumps(config, indent=4) + "\n"),
               OutputFile("metadata.json", "text", text=json.dumps(metadata, indent=4) + "\n"),
               *(OutputFile(name, "bytes", content=v) if isinstance(v, bytes) else OutputFile(name, "text", text=v)
                 for name, v in tok_files.items()))
    notes = [f"keras-hub {fam.backbone} from {fam.architecture} ({fam.model_type}), "
             + ("tied" if tied else "untied: reverse_embeddings from lm_head.weight, transposed")]
    return Plan(outputs, multi=True), notes + ([tok_note] if tok_note else [])
