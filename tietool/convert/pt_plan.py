"""The plan of ``--names pt``: a transformers TF checkpoint -> a folder
PyTorch transformers 5 loads.

SRC is a transformers TF folder or file: ``tf_model.h5``, a sharded
``tf_model.h5.index.json``, or TF-flavoured safetensors (``{"format": "tf"}``,
single or sharded; tietool's own lossless H5 -> safetensors output too). OUT
is a folder: ``model.safetensors`` (or ``model-0000i-of-0000N.safetensors`` +
``model.safetensors.index.json`` past the shard size, 5 GB by default like
the Hub) with ``__metadata__`` ``{"format": "pt"}``, PyTorch names and layouts
(:mod:`tietool.convert.ptnames`), and the source folder's other files
(:mod:`tietool.convert.sidefiles`).

Ties
----
* Copies of one TF variable stored under several Keras layer groups (BERT's
  word embeddings under ``bert`` and ``mlm___cls``, T5's ``shared`` x3) map to
  one PyTorch name: written once, after checking bit for bit that they are
  identical (different bytes -> error naming them).
* A stored head that is a verified tied copy of the embedding (transposed or
  not) is left out when the config declares the tie, the way transformers 5
  saves (it keeps ``transformer.wte.weight`` / ``shared.weight`` and drops
  ``lm_head.weight``); transformers ties it back on load. ``head="explicit"``
  writes it as a real tensor under the architecture's PyTorch name instead
  (:func:`tietool.ties.data.with_explicit_head`).
* An untied head (``lm_head/kernel`` [hidden, vocab]) is written transposed as
  ``lm_head.weight`` [vocab, hidden], in bounded column blocks
  (:mod:`tietool.convert.transpose`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tietool.convert.ptnames import PtEntry, key_pattern, make_plan
from tietool.io.tensorcopy import SourceFiles, same_tensor_bytes

from ..errors import CopiesDifferError
from ..model import Checkpoint
from ..textsafe import bounded
from . import transpose
from .plan import Plan, TensorOut, safetensors_outputs
from .result import PtDetails

if TYPE_CHECKING:
    from tietool.ties.group import Member

#: Hub default shard size (transformers' max_shard_size="5GB").
DEFAULT_SHARD_SIZE = 5 * 10**9
PT_METADATA = {"format": "pt"}
INDEX = "model.safetensors.index.json"


def _merge_copies(ckpt: Checkpoint, entries: list[PtEntry], files: SourceFiles) -> tuple[list[PtEntry], dict[str, str]]:
    """One entry per PyTorch name; ``{removed source: the PyTorch name written once for it}``."""
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
            or same_tensor_bytes(ckpt, a, ckpt, b, files, max_bytes=transpose.BLOCK_BYTES // 2)))
        if same:
            removed.setdefault(a.name, e.pt_name)
            removed[b.name] = e.pt_name
        else:
            bad.append(f"{a.name} and {b.name}")
    if bad:
        raise CopiesDifferError("tensors that map to one PyTorch name differ (not copies of one variable): "
                         + bounded(bad, sep="; "), ckpt.path)
    return list(kept.values()), removed


def _tied_heads(ckpt: Checkpoint, entries: list[PtEntry], tied_keys: dict | None = None) -> dict[str, str]:
    """``{head pt_name: embedding pt_name}`` for stored decoder tensors that are
    bit-identical (tied) copies of the embedding, when the config declares the
    tie: transformers 5 leaves those out of what it saves. With ``tied_keys``
    (what the PyTorch class ties, from ``tietool/data/pt_layouts.json``) only heads
    transformers 5 ties back are left out (RemBERT ties nothing: its decoder is
    written even when it equals the embedding)."""
    from tietool.ties.compare import compare_copies
    from tietool.ties.heads import tied_heads
    from tietool.ties.verify import declared_tie

    if declared_tie(ckpt).get("value") is not True:
        return {}
    by_source = {e.source.name: e for e in entries}
    by_embedding: dict[str, list[Member]] = {}
    for emb, h in tied_heads(ckpt, by_source, by_source):  # names in by_source are stored tensors
        by_embedding.setdefault(emb.name, []).append(h)
    out: dict[str, str] = {}
    for emb_name, heads in by_embedding.items():
        ref = by_source[emb_name]
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
        for (e, _), d in zip(others, diffs, strict=True):
            if d.identical:
                out[e.pt_name] = ref.pt_name
    return out


def _reshaped(e: PtEntry) -> bool:
    return e.transform == "reshape" or (
        isinstance(e.transform, tuple) and e.shape != tuple(e.source.shape[i] for i in e.transform))


def plan_pt(ckpt: Checkpoint, shard_bytes: int | None, files: SourceFiles, head: str | None = None) -> Plan:
    """The output files of ``--names pt`` (always a folder), with
    :class:`~tietool.convert.result.PtDetails` for the summary."""
    names = make_plan(ckpt)
    entries, copies = _merge_copies(ckpt, names.entries, files)
    tied = _tied_heads(ckpt, entries, names.tied) if head != "explicit" else {}
    entries = [e for e in entries if e.pt_name not in tied]
    if head == "explicit":
        from tietool.ties.data import with_explicit_head

        entries = with_explicit_head(ckpt.config, entries)
    tensors = [TensorOut(e.pt_name, e.source, tuple(e.shape), e.transform) for e in entries]
    outputs = safetensors_outputs(tensors, dict(PT_METADATA), "model.safetensors",
                                  DEFAULT_SHARD_SIZE if shard_bytes is None else shard_bytes)
    details = PtDetails(
        transposed=tuple(e.pt_name for e in entries if e.transform == "transpose"),
        permuted=tuple(e.pt_name for e in entries if isinstance(e.transform, tuple)),
        squeezed=tuple(e.pt_name for e in entries if e.transform == "squeeze0"),
        reshaped=tuple(e.pt_name for e in entries if _reshaped(e)),
        pt_class=names.pt_class, dropped=dict(names.dropped), copies_merged=copies, tied_heads_left_out=tied)
    return Plan(tuple(outputs), multi=True, pt=details)
