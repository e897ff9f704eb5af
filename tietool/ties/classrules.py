"""The head and the embedding of a known transformers 5 class, found by the class's own names.

Names and shapes alone mistake other matrices for the tied one: an encoder-decoder composition's
encoder and decoder embeddings, an untied Marian's encoder and decoder vocabularies, per-layer or
value embedding tables all have the embedding's exact shape, and a head may have a few more rows than
the embedding (extra special or image tokens) or a name no rule knows (XLM's ``pred_layer.proj``).
transformers 5 says which two parameters it ties, by class (``tietool/data/tied_weights_keys.json``,
generated from transformers 5 by ``tools/gen_tied_weights_keys.py``): ``ties`` (``{target: source}``
per tying sub-model, with its prefix) or the class's ``tied_weights_keys``, and ``output`` / ``input``
(the parameters of ``get_output_embeddings()`` / ``get_input_embeddings()``) where the table has them.

:func:`class_pair` finds that pair among the stored tensors. A stored name matches a table name when
they are equal, or, for names that transformers 5 saves under another (legacy) spelling (Llava's
``language_model.model.embed_tokens.weight`` for ``model.language_model.embed_tokens.weight``,
``language_model.lm_head.weight`` for ``lm_head.weight``), when their last two components are equal and
the components of one include the other's; a name that matches several stored tensors matches none.
None: the checkpoint's architecture is unknown, or its names are not the PyTorch ones (a TensorFlow
``tf_model.h5``): detection then falls back to the shape rules (:mod:`tietool.ties.detect`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tietool.model import Checkpoint, Role, TieRole
from tietool.ties import data


@dataclass(frozen=True)
class ClassPair:
    """What the class ties, as stored: ``embedding`` (a stored matrix), ``head`` (the stored output
    matrix, None when the class's name for it is not stored), ``head_name`` (the class's name for it),
    ``lone`` (the class saves the pair as one matrix under the head's name: BLT ties its embedding to its
    head, so the head is the one stored)."""

    architecture: str
    embedding: str
    head: str | None
    head_name: str
    lone: bool = False


def _entry(config: object) -> tuple[str, dict] | None:
    name, entry = data.architecture_entry(config.get("architectures") if isinstance(config, dict) else None)
    return (name, entry) if name is not None and entry is not None else None


def _pairs(entry: dict) -> list[tuple[str, str, bool]]:
    """``(head, embedding, the embedding is the tie's target)`` for every weight pair the class ties, the
    output embedding's first. The head is the side the table names as output, else the side named like one."""
    from tietool.ties.rules import classify

    ties = entry.get("ties")
    keys: dict = {}
    if isinstance(ties, list) and ties:
        for t in ties:
            if isinstance(t, dict) and isinstance(t.get("keys"), dict):
                keys.update(t["keys"])
    elif isinstance(entry.get("tied_weights_keys"), dict):
        keys = entry["tied_weights_keys"]
    out, inp = entry.get("output"), entry.get("input")
    head = out.get("name") if isinstance(out, dict) else None
    pairs = []
    for target, source in keys.items():
        target, source = str(target), str(source)
        if not (target.endswith(".weight") and source.endswith(".weight")):
            continue
        named_head = classify(source) == TieRole.DECODER and classify(target) != TieRole.DECODER
        swap = source == head or (head is None and named_head)
        pairs.append((source, target, True) if swap else (target, source, False))
    pairs.sort(key=lambda p: p[0] != head)
    if head and not any(p[0] == head for p in pairs) and isinstance(inp, dict) and isinstance(inp.get("name"), str):
        pairs.insert(0, (head, inp["name"], False))
    return pairs
def _parts(name: str) -> list[str]:
    return name.split(".")


def match(stored: Mapping[str, object], name: str) -> str | None:
    """The stored tensor the class's parameter ``name`` is saved as (see the module docstring)."""
    if name in stored:
        return name
    want = _parts(name)
    found = [s for s in stored if _parts(s)[-2:] == want[-2:]
             and (set(_parts(s)) >= set(want) or set(_parts(s)) <= set(want))]
    return found[0] if len(found) == 1 else None


def class_pair(ckpt: Checkpoint) -> ClassPair | None:
    """The stored embedding and head the checkpoint's transformers 5 class ties (None: not known)."""
    found = _entry(ckpt.config)
    if found is None:
        return None
    arch, entry = found
    mats = {t.name: t for t in ckpt.tensors.values() if t.role == Role.WEIGHT and len(t.shape) == 2}
    for head_name, emb_name, emb_is_target in _pairs(entry):
        emb, head = match(mats, emb_name), match(mats, head_name)
        lone = emb is None and head is not None and emb_is_target
        if lone:
            emb, head = head, None
        if emb is None:
            continue
        if head is not None and mats[head].alias_of == emb:
            head = None
        return ClassPair(arch, emb, head, head_name, lone)
    return None
