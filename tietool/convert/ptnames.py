"""transformers TF -> PyTorch weight names and layouts (``convert --names pt``).

The rules are transformers' own, from ``convert_tf_weight_name_to_pt_weight_name``
and ``apply_transpose`` in ``modeling_tf_pytorch_utils.py`` (4.57), applied to
the TF *variable name* (``w.name``), without a PyTorch model at hand:

1. Recover the variable name from the stored name.

   * Keras 2 ``tf_model.h5``: the dataset path is ``<layer group>/<w.name>``;
     the group is dropped (``bert/tf_bert_for_masked_lm/bert/...`` ->
     ``tf_bert_for_masked_lm/bert/...``; ``shared/shared/shared/embeddings:0``
     -> ``shared/shared/embeddings:0``).
   * HF sharded TF H5 and TF safetensors store
     ``strip_model_name_and_prefix(w.name)``: the first component (the model
     scope) was dropped unless the name contains ``model.`` or has one level.
     Inverted exactly: such names get a placeholder scope back.

2. Name (transformers' rule, unchanged): ``:0`` dropped; ``/X___Y/`` -> ``/Y/``;
   ``_._`` -> ``/``; empty levels removed; level zero (the model scope)
   dropped when there is more than one level; last component ``kernel``,
   ``embeddings``, ``gamma`` -> ``weight``, ``beta`` -> ``bias``,
   ``pointwise_kernel``/``depthwise_kernel`` -> ``pointwise.weight``/
   ``depthwise.weight``; ``/`` -> ``.``.

3. Layout (transformers' rule): a ``kernel`` of rank 2 is transposed; rank 3
   (Conv1D) permuted ``(2, 1, 0)``; rank 4 (Conv2D) permuted ``(3, 2, 0, 1)``;
   ``pointwise_kernel``/``depthwise_kernel`` and tensors under ``emb_projs``/
   ``out_projs`` have all axes reversed. Everything else keeps its layout -
   GPT-2's Conv1D ``weight`` [in, out] is what PyTorch's Conv1D stores.

4. Shape. transformers squeezes/expands to the PyTorch parameter's shape;
   without the model the rule used is: a parameter whose PyTorch name ends in
   ``.bias`` is a layer bias (``nn.Linear``, ``Conv1D``, ``LayerNorm``,
   convolutions), which is 1-D in PyTorch, so a ``[1, n]`` bias (GPT-2's
   Conv1D) becomes ``[n]`` (``squeeze0``: same bytes). Every other tensor keeps
   its shape: ``final_logits_bias`` [1, vocab] is a bare parameter, 2-D in
   PyTorch as in TF.

5. What the PyTorch class expects (``tietool/data/pt_layouts.json``, generated from
   transformers 5 itself by ``fixtures/make_pt_keys.py``: every state_dict key
   of each PyTorch class whose TF class has an LM head, and the keys it ties).
   For a checkpoint whose ``architectures`` names such a class:

   * a size-1 axis is moved where PyTorch has it (transformers' ``apply_transpose``
     squeezes/expands/reshapes to the PyTorch shape; only moves of size-1
     axes are done here, which keep the bytes): ConvBERT's depthwise kernel
     ``[1, 16, 3]`` -> ``[16, 1, 3]``, its conv bias ``[8]`` -> ``[8, 1]``;
   * a weight the TF class builds and the PyTorch class does not have (the
     table's ``tf_only``, from transformers' own TF->PT name rule on the TF
     class's weights: MPNet's ``mpnet.pooler`` under ``MPNetForMaskedLM``) is
     dropped and listed (transformers 5 would report it as unexpected);
   * a name the class does not know under a module it has (a key that only
     another config creates: T5 v1.1's gated ``wi_0``/``wi_1``) gets rules 1-4.

   Other architectures get rules 1-4 alone.

Where these rules cannot decide, :func:`pt_entries` names the tensors and raises
:class:`~tietool.errors.UsageError` (exit 2) instead of guessing: a ``.bias``
that is not 1-D or ``[1, n]``; a ``kernel`` of rank 5+; Keras BatchNorm
moving statistics (PyTorch buffers transformers never mapped); names that
collapse to nothing; two different tensors that map to one name.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from typing import Union

from tietool.errors import UsageError
from tietool.formats import format_of, origin_of
from tietool.model import Checkpoint, Role, TensorInfo
from tietool.textsafe import bounded

PT_LAYOUTS_JSON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "pt_layouts.json")

#: transform: None (bytes as stored), "squeeze0" (drop a leading 1: same bytes),
#: "transpose" (2-D, [a, b] -> [b, a]) or a tuple axis permutation (conv kernels).
Transform = Union[None, str, tuple]

CONV1D = (2, 1, 0)
CONV2D = (3, 2, 0, 1)
_PLACEHOLDER_SCOPE = "tietool_scope"
#: Keras variables with no transformers TF->PT rule (PyTorch buffers of another name).
_NO_RULE_LEAVES = {"moving_mean", "moving_variance"}


@dataclass(frozen=True)
class PtPlan:
    entries: list  # PtEntry, in source order (copies not yet merged)
    dropped: dict  # source name -> why (a module the PyTorch class does not have)
    pt_class: str | None  # the PyTorch class whose expected keys were used, if known
    tied: dict | None  # key patterns transformers 5 ties (target -> source); None when the class is unknown

    def to_json(self) -> dict:
        return {"pt_class": self.pt_class, "dropped": dict(self.dropped), "tensors": len(self.entries)}


@dataclass(frozen=True)
class PtEntry:
    pt_name: str
    source: TensorInfo
    transform: Transform
    shape: tuple[int, ...]  # the PyTorch shape


#: transforms that keep the bytes as stored (only the shape changes)
SAME_BYTES = (None, "squeeze0", "reshape")


def key_pattern(pt_name: str) -> str:
    """A state_dict key with layer indices as ``N`` (the form of ``tietool/data/pt_layouts.json``)."""
    return re.sub(r"\.\d+(?=\.|$)", ".N", pt_name)


def pt_layout(ckpt: Checkpoint) -> tuple[str | None, dict | None]:
    """The PyTorch class the config's ``architectures`` names and what
    transformers 5 expects of it (None when tietool has no record of it)."""
    cfg = ckpt.config if isinstance(ckpt.config, dict) else {}
    archs = cfg.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        return None, None
    name = archs[0][2:] if archs[0].startswith("TF") else archs[0]
    return name, pt_layouts().get(name)


@functools.lru_cache(maxsize=1)
def pt_layouts() -> dict[str, dict]:
    """What each PyTorch class of transformers 5 expects (``tietool/data/pt_layouts.json``,
    generated by ``fixtures/make_pt_keys.py`` from transformers itself): per class ``keys``
    (key pattern -> shape pattern), ``tied`` (target -> source) and ``tf_only``."""
    with open(PT_LAYOUTS_JSON, encoding="utf-8") as fh:
        return json.load(fh)["layouts"]


def fit_shape(shape: tuple[int, ...], mask: str) -> tuple[int, ...] | None:
    """``shape`` with its size-1 axes moved to where ``mask`` (``*`` any size,
    ``1`` a size-1 axis) has them; None when that cannot give the mask."""
    if len(shape) == len(mask) and all(m == "*" or d == 1 for d, m in zip(shape, mask, strict=True)):
        return tuple(shape)
    core = [d for d in shape if d != 1]
    if len(core) > mask.count("*"):
        return None
    if len(core) < mask.count("*"):  # a real size-1 axis where PyTorch has any size: keep what is there
        return None
    it = iter(core)
    return tuple(next(it) if m == "*" else 1 for m in mask)


def convert_tf_weight_name(tf_name: str, shape: tuple[int, ...]) -> tuple[str, Transform]:
    """transformers' ``convert_tf_weight_name_to_pt_weight_name`` (4.57) on a
    full TF variable name (model scope included), and the transform
    ``apply_transpose`` would do. No ``start_prefix_to_remove``: transformers 5
    loads base-model prefixes (``bert.``) into base and head models alike."""
    name = tf_name.replace(":0", "")
    if (len(name) > 2048 and "___" in name) or name.count("___") > 10:
        raise UsageError(f"TF variable name is too long or has too many ___ separators: {tf_name!r}")
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)
    name = name.replace("_._", "/")
    name = re.sub(r"//+", "/", name)
    parts = name.split("/")
    if len(parts) > 1:
        parts = parts[1:]
    leaf = parts[-1]
    rank = len(shape)
    if leaf == "kernel" and rank == 4:
        transform: Transform = CONV2D
    elif leaf == "kernel" and rank == 3:
        transform = CONV1D
    elif leaf in ("kernel", "pointwise_kernel", "depthwise_kernel") or "emb_projs" in parts or "out_projs" in parts:
        # transformers' SIMPLE transpose: numpy transpose, all axes reversed
        transform = "transpose" if rank == 2 else (tuple(range(rank))[::-1] if rank > 2 else None)
    else:
        transform = None
    if leaf in ("kernel", "embeddings", "gamma"):
        parts[-1] = "weight"
    elif leaf == "beta":
        parts[-1] = "bias"
    elif leaf in ("pointwise_kernel", "depthwise_kernel"):
        parts[-1] = leaf.replace("_kernel", ".weight")
    return ".".join(parts), transform


def tf_variable_name(ckpt: Checkpoint, info: TensorInfo) -> str:
    """The TF variable name (``w.name``, model scope included, or a placeholder
    scope where the writer dropped it) behind a stored tensor."""
    name = info.name
    if format_of(ckpt).tf_model_h5:
        if info.layer and name.startswith(info.layer + "/"):
            return name[len(info.layer) + 1:]
        raise UsageError(f"{name!r}: not under a Keras layer group; cannot recover its TF variable name", ckpt.path)
    if origin_of(ckpt).tf_model_h5 and ckpt.records.names is None:
        # tietool's own H5 -> safetensors output with full dataset paths (with
        # ``tietool.names`` it carries transformers' TF names: handled below)
        head, sep, rest = name.partition("/")
        if not sep:
            raise UsageError(f"{name!r}: not under a Keras layer group; cannot recover its TF variable name", ckpt.path)
        return rest
    # HF sharded TF H5 / TF safetensors: strip_model_name_and_prefix(w.name)
    if "model." in name or "/" not in name:
        return name
    return f"{_PLACEHOLDER_SCOPE}/{name}"


def check_source(ckpt: Checkpoint) -> None:
    """Refuse sources that are not transformers TF checkpoints."""
    fmt = format_of(ckpt)
    if not (fmt.transformers_tf or fmt.is_safetensors):
        raise UsageError(f"--names pt needs a transformers TF checkpoint (tf_model.h5, its shard index or TF "
                         f"safetensors); this is {fmt.name}", ckpt.path)
    if fmt.is_safetensors:
        flavour = ckpt.metadata.get("format")
        if flavour != "tf":
            what = f'{{"format": "{flavour}"}}' if flavour else "no format in __metadata__"
            raise UsageError(f"--names pt needs TF-flavoured safetensors ({{\"format\": \"tf\"}}); this has {what}",
                             ckpt.path)


def pt_entries(ckpt: Checkpoint) -> list[PtEntry]:
    """One entry per stored weight that PyTorch gets, in source order (copies not yet merged)."""
    return make_plan(ckpt).entries


def make_plan(ckpt: Checkpoint) -> PtPlan:
    """The PyTorch names, layouts and shapes, and the weights dropped (see the module doc)."""
    check_source(ckpt)
    pt_class, layout = pt_layout(ckpt)
    keys = layout["keys"] if layout else None
    tf_only = set(layout.get("tf_only", ())) if layout else set()
    entries: list[PtEntry] = []
    dropped: dict[str, str] = {}
    problems: list[str] = []
    for info in ckpt:
        if info.role != Role.WEIGHT:
            continue
        tf_name = tf_variable_name(ckpt, info)
        pt_name, transform = convert_tf_weight_name(tf_name, info.shape)
        leaf = pt_name.rsplit(".", 1)[-1]
        shape = tuple(info.shape)
        if not pt_name or any(p == "" for p in pt_name.split(".")):
            problems.append(f"{info.name} (maps to the empty or malformed name {pt_name!r})")
            continue
        if layout is not None and key_pattern(pt_name) in tf_only:
            dropped[info.name] = (f"{pt_name}: the TF class builds it, {pt_class} in transformers 5 has no such "
                                  "weight (transformers would ignore it as unexpected)")
            continue
        if leaf in _NO_RULE_LEAVES:
            problems.append(f"{info.name} (Keras BatchNorm statistic {leaf}: a PyTorch buffer transformers' "
                            f"TF->PT rules do not map)")
            continue
        if isinstance(transform, tuple) and len(transform) > 4:
            problems.append(f"{info.name} (kernel of rank {len(shape)}: no PyTorch layout rule)")
            continue
        mask = keys.get(key_pattern(pt_name)) if keys is not None else None
        if leaf == "bias" and len(shape) != 1 and mask is None:
            if len(shape) == 2 and shape[0] == 1 and transform is None:
                transform, shape = "squeeze0", shape[1:]
            else:
                problems.append(f"{info.name} (bias of shape {list(shape)}: PyTorch layer biases are 1-D; "
                                f"cannot tell how to reshape it)")
                continue
        if transform == "transpose":
            shape = shape[::-1]
        elif isinstance(transform, tuple):
            shape = tuple(shape[i] for i in transform)
        if mask is not None:
            fitted = fit_shape(shape, mask)
            if fitted is None:
                problems.append(f"{info.name} (shape {list(shape)} after transformers' transpose cannot become the "
                                f"{pt_class} shape pattern {mask!r} by moving size-1 axes)")
                continue
            if fitted != shape:
                if transform is None:
                    transform = "squeeze0" if (len(shape) == 2 and shape[0] == 1 and fitted == shape[1:]) else "reshape"
                elif transform == "squeeze0":
                    transform = "reshape"
                shape = fitted
        entries.append(PtEntry(pt_name, info, transform, shape))
    if problems:
        raise UsageError("no PyTorch name/layout rule decides for: " + bounded(problems, sep="; "), ckpt.path)
    return PtPlan(entries, dropped, pt_class if layout else None, dict(layout["tied"]) if layout else None)
