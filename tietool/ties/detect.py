"""Tie groups from names, shapes, storage and the config (:mod:`tietool.ties.rules`):
which tensors are the embedding and decoder copies, and how the tie is stored. Reads no
tensor data; :mod:`tietool.ties.verify` proves the groups with the values."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tietool import config as configlib
from tietool import kerashub
from tietool.errors import UsageError
from tietool.formats import origin_of
from tietool.jsontree import walk
from tietool.model import Checkpoint, Role, TensorInfo, TieRole
from tietool.textsafe import bounded
from tietool.ties.classrules import ClassPair, class_pair
from tietool.ties.group import Member, TieGroup
from tietool.ties.rules import (
    DUPLICATE,
    IMPLICIT,
    NO_DECODER,
    NO_OUTPUT,
    NOT_TIED,
    SEPARATE,
    SHARED,
    TIED,
    UNVERIFIED,
    classify,
    declared_tie,
    has_output_layer,
    name_parts,
)


def _candidates(ckpt: Checkpoint) -> list[TensorInfo]:
    aux = kerashub.quantization_aux(ckpt)
    return [t for t in ckpt.tensors.values()
            if t.role == Role.WEIGHT and len(t.shape) == 2 and 0 not in t.shape and t.name not in aux]


def _vocab_hidden(ckpt: Checkpoint, mats: list[TensorInfo], classes: dict[str, str | None]) -> tuple[int, int] | None:
    """``(V, H)``. V from the config, else the embeddings' rows. H from the
    candidates' shapes: the width of the ``[V, ·]`` embeddings, and among
    several, the one a decoder pairs with; a config hidden size only breaks a
    remaining tie (configs name it ``hidden_size``, ``d_model``, ``emb_dim``...).
    When no name says embedding, a ``[V, H]`` weight outside repeated blocks
    that no name classifies is taken as the embedding (CTRL's
    ``transformer.w.weight`` in PyTorch names): ``classes`` is updated."""
    embeds = [t for t in mats if classes[t.name] == TieRole.EMBEDDING]
    hl = configlib.highlights(ckpt.config) if isinstance(ckpt.config, dict) else {}
    V: int | None = hl.get("vocab_size")
    pool = [t for t in embeds if t.shape[0] == V] if V else []
    if not pool and V:
        unnamed = [t for t in mats if classes[t.name] is None and t.shape[0] == V and t.shape[1] != V
                   and not _in_repeated_block(t.name)]
        if len(unnamed) == 1:
            classes[unnamed[0].name] = TieRole.EMBEDDING
            pool = unnamed
    if not pool:
        if not embeds:
            return None
        V = max(t.shape[0] for t in embeds)
        pool = [t for t in embeds if t.shape[0] == V]
    assert V is not None  # from the config, else from the embeddings
    widths = Counter(t.shape[1] for t in pool)
    if len(widths) == 1:
        return V, next(iter(widths))
    paired = {h for h in widths for t in mats
              if classes[t.name] == TieRole.DECODER and tuple(t.shape) in ((V, h), (h, V))}
    hints = set()
    if isinstance(ckpt.config, dict):
        for _p, node in walk(ckpt.config):
            if isinstance(node, int) and not isinstance(node, bool):
                hints.add(node)
    for choice in (sorted(paired & hints), sorted(paired), sorted(set(widths) & hints)):
        if len(choice) >= 1:
            return V, choice[0]
    return V, widths.most_common(1)[0][0]


def _aliases(ckpt: Checkpoint) -> dict[str, str]:
    """safetensors dedup metadata: removed name -> kept (stored) name."""
    out = {}
    for t in ckpt.tensors.values():
        if t.alias_of and t.alias_of in ckpt.tensors:
            out[t.name] = t.alias_of
    out.update(ckpt.records.aliases)
    return out


def _in_repeated_block(name: str) -> bool:
    """Inside a numbered block: ``h_._0`` (transformers TF), ``layers.0`` /
    ``/0/`` (PyTorch, Keras lists); a Keras 3 ``vars/<i>`` index does not count."""
    name = re.sub(r"/vars/\d+$", "", name)
    return bool(re.search(r"_\._\d+(/|$)", name)) or any(p.isdigit() for p in re.split(r"[/.]", name))


def _top_level_dense(name: str) -> bool:
    """A Keras ``Dense`` kernel that is a layer of the model itself (``dense_1/dense_1/kernel:0``,
    ``layers/dense/vars/0``), not a dense inside a head or block (MobileBERT's
    ``predictions/dense/weight`` [E, V] is an extra projection, not a transposed decoder)."""
    if re.search(r"(^|/)layers/[^/]+/vars/0$", name):
        return True
    parts = name_parts(name)
    if not parts or parts[-1] != "kernel":
        return False
    modules = [p for p in parts[:-1] if p not in ("model_weights",)]
    return len(set(modules)) == 1


def _vars_sibling(name: str, index: int) -> str | None:
    m = re.match(r"^(.*\bvars)/(\d+)$", name)
    return f"{m.group(1)}/{index}" if m else None


def _is_transposed(info: TensorInfo, V: int, H: int) -> bool:
    if V != H:
        return tuple(info.shape) == (H, V)
    leaf = name_parts(info.name)[-1] if name_parts(info.name) else ""
    return leaf in ("kernel",) or leaf.startswith("reverse_emb") or bool(re.search(r"vars/[1-9]\d*$", info.name))


def build_members(ckpt: Checkpoint, embedding: str | None = None,
                  decoder: str | None = None) -> tuple[list[Member], int, int] | None:
    """The candidate members (embeddings first), and ``(V, H)``; None when the
    checkpoint has no embedding matrix. Explicit names override detection."""
    aliases = _aliases(ckpt)
    mats = _candidates(ckpt)
    classes = {t.name: classify(t.name) for t in mats}
    if embedding is None and decoder is None:
        pair = class_pair(ckpt)
        if pair is not None:
            return _class_members(ckpt, pair, aliases, mats, classes)
    emb_info, dec_info = _named_infos(ckpt, embedding, decoder, aliases)
    dims = _pair_dims(ckpt, mats, classes, emb_info, dec_info)
    if dims is None:
        return None
    V, H = dims
    if dec_info is not None and tuple(dec_info.shape) not in ((V, H), (H, V)):
        raise UsageError(
            f"--decoder {decoder!r} has shape {list(dec_info.shape)}, which cannot pair with an embedding [{V}, {H}] "
            f"(expected [{V}, {H}] or [{H}, {V}])", ckpt.path)
    found = _Members()
    _add_embeddings(found, mats, classes, V, H, emb_info, decoder)
    if not found.members:
        if dec_info is None:
            return None
        raise UsageError(f"no embedding matrix [{V}, {H}] to pair with --decoder {decoder!r}; "
                         "name one with --embedding", ckpt.path)
    if dec_info is not None:
        found.add(dec_info, TieRole.DECODER, _is_transposed(dec_info, V, H))
    elif decoder is None:
        _add_detected_decoders(ckpt, found, mats, classes, V, H)
    members = found.members
    if embedding is None and decoder is None:
        # keras-hub: a plain Embedding beside the ReversibleEmbedding is another layer's matrix
        members, _dropped = kerashub.prune_plain(members)
    _link_shared_storage(members, found.seen)
    _add_alias_members(ckpt, members, aliases, embedding, decoder)
    if decoder is not None and decoder not in {m.name for m in members}:
        raise UsageError(f"--decoder {decoder!r} is an alias of a tensor other than the embedding", ckpt.path)
    # Order: embeddings, then decoders; the reference (first) is a stored embedding.
    members.sort(key=lambda m: (m.role != TieRole.EMBEDDING, not m.stored))
    return members, V, H


def _class_members(ckpt: Checkpoint, pair: ClassPair, aliases: dict[str, str], mats: list[TensorInfo],
                   classes: dict[str, str | None]) -> tuple[list[Member], int, int]:
    """The members by the class's own names (:mod:`tietool.ties.classrules`): its embedding and its stored
    head, whatever the head's shape or name; other matrices of the embedding's shape are never members.
    A head the class names but the file stores under another name is found by the name and shape rules."""
    emb = ckpt.tensors[pair.embedding]
    V, H = emb.shape
    found = _Members()
    found.add(emb, TieRole.EMBEDDING)
    if pair.head is not None:
        head = ckpt.tensors[pair.head]
        found.add(head, TieRole.DECODER, V != H and head.shape[0] == H and head.shape[1] != H)
    elif not pair.lone and pair.head_name not in aliases:
        rest = [t for t in mats if classes[t.name] != TieRole.EMBEDDING]
        _add_detected_decoders(ckpt, found, rest, classes, V, H)
    members = found.members
    _link_shared_storage(members, found.seen)
    _add_alias_members(ckpt, members, aliases, None, None)
    members.sort(key=lambda m: (m.role != TieRole.EMBEDDING, not m.stored))
    return members, V, H


class _Members:
    """Members in the order found, each tensor once."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.seen: set[str] = set()

    def add(self, info: TensorInfo, role: TieRole, transposed: bool = False) -> None:
        if info.name in self.seen:
            return
        self.seen.add(info.name)
        self.members.append(Member(info.name, role, tuple(info.shape), info.dtype, transposed, info=info))

    def has_decoder(self) -> bool:
        return any(m.role == TieRole.DECODER for m in self.members)


def _named_infos(ckpt: Checkpoint, embedding: str | None, decoder: str | None,
                 aliases: dict[str, str]) -> tuple[TensorInfo | None, TensorInfo | None]:
    """The tensors named by ``--embedding`` / ``--decoder`` (a decoder that is
    only an alias name has none), checked to be matrices."""
    emb_info = dec_info = None
    if embedding is not None:
        emb_info = ckpt.info(embedding)
        if len(emb_info.shape) != 2:
            raise UsageError(f"--embedding {embedding!r} has shape {list(emb_info.shape)}, expected [vocab, hidden]",
                             ckpt.path)
    if decoder is not None and not (decoder in aliases and decoder not in ckpt.tensors):
        dec_info = ckpt.info(decoder)
        if len(dec_info.shape) != 2:
            raise UsageError(f"--decoder {decoder!r} has shape {list(dec_info.shape)}, expected 2-D", ckpt.path)
    return emb_info, dec_info


def _pair_dims(ckpt: Checkpoint, mats: list[TensorInfo], classes: dict[str, str | None],
               emb_info: TensorInfo | None, dec_info: TensorInfo | None) -> tuple[int, int] | None:
    """``(V, H)``: from a named embedding, else detected (a named decoder's
    shape when detection does not fit it); None: no embedding matrix."""
    if emb_info is not None:
        return emb_info.shape[0], emb_info.shape[1]
    vh = _vocab_hidden(ckpt, mats, classes)
    if dec_info is None:
        return vh
    if vh and tuple(dec_info.shape) in ((vh[0], vh[1]), (vh[1], vh[0])):
        return vh
    r, c = dec_info.shape
    return (r, c) if classify(dec_info.name) != TieRole.DECODER or r > c else (c, r)


def _add_embeddings(found: _Members, mats: list[TensorInfo], classes: dict[str, str | None], V: int, H: int,
                    emb_info: TensorInfo | None, decoder: str | None) -> None:
    if emb_info is not None:
        found.add(emb_info, TieRole.EMBEDDING)
        if decoder is not None:
            return  # an explicit pair: just those two
    for t in mats:
        if classes[t.name] == TieRole.EMBEDDING and tuple(t.shape) == (V, H) and t.name != decoder:
            found.add(t, TieRole.EMBEDDING)


def _add_detected_decoders(ckpt: Checkpoint, found: _Members, mats: list[TensorInfo],
                           classes: dict[str, str | None], V: int, H: int) -> None:
    """Decoders by name, else by shape, else of another width; then Keras 3's
    unnamed reverse embeddings."""
    for t in mats:
        if classes[t.name] == TieRole.DECODER and tuple(t.shape) in ((V, H), (H, V)) and t.name not in found.seen:
            found.add(t, TieRole.DECODER, _is_transposed(t, V, H))
    if not found.has_decoder():
        _add_decoder_by_shape(found, mats, classes, V, H)
    if not found.has_decoder():
        _add_decoder_of_other_width(found, mats, classes, V)
    # keras-hub PARSeq: the output Dense predicts another number of classes than the embedding has rows
    head = kerashub.head_of_another_width(ckpt, found.members, V, H)
    if head is not None and head not in found.seen:
        found.add(ckpt.tensors[head], TieRole.DECODER, True)
    _add_keras3_reverse(ckpt, found, V, H)


def _add_decoder_by_shape(found: _Members, mats: list[TensorInfo], classes: dict[str, str | None],
                          V: int, H: int) -> None:
    """An output layer named like nothing in particular (Keras "dense",
    "dense_1") is still recognisable by its shape: [hidden, vocab]. Only
    outside repeated blocks (an MLP kernel [H, 4H] may happen to be [H, V]),
    and only when the shape points at a single tensor. Not beside a Keras
    ReversibleEmbedding: that layer is its own output layer."""
    if V == H or any(kerashub.is_reversible(m.name) for m in found.members):
        return
    by_shape = [t for t in mats if classes[t.name] is None and tuple(t.shape) == (H, V)
                and t.name not in found.seen and not _in_repeated_block(t.name) and _top_level_dense(t.name)]
    if len(by_shape) == 1:
        found.add(by_shape[0], TieRole.DECODER, True)


def _add_decoder_of_other_width(found: _Members, mats: list[TensorInfo], classes: dict[str, str | None],
                                V: int) -> None:
    """An output embedding of another width (RemBERT's decoder [V,
    output_embedding_size]): a head of its own, never a copy."""
    for t in mats:
        parts = name_parts(t.name)
        if (classes[t.name] == TieRole.DECODER and t.name not in found.seen and V in t.shape and min(t.shape) > 1
                and parts and "bias" not in parts[-1] and not _in_repeated_block(t.name)):
            found.add(t, TieRole.DECODER, t.shape[0] != V)


def _add_keras3_reverse(ckpt: Checkpoint, found: _Members, V: int, H: int) -> None:
    """Keras 3: the unnamed reverse_embeddings is vars/1 of the embedding's
    layer (a quantised layer: the reverse matrix after the scales)."""
    for m in list(found.members):
        if m.role != TieRole.EMBEDDING:
            continue
        qrev = kerashub.quantized_reverse(ckpt, m.name, V)
        if qrev is not None and qrev not in found.seen:
            found.add(ckpt.tensors[qrev], TieRole.DECODER, True)
            continue
        sib = _vars_sibling(m.name, 1) if m.name.endswith("/0") else None
        t = ckpt.tensors.get(sib) if sib else None
        if t is not None and t.role == Role.WEIGHT and tuple(t.shape) == (H, V):
            found.add(t, TieRole.DECODER, True)


def _link_shared_storage(members: list[Member], seen: set[str]) -> None:
    """Storage sharing: HDF5 hard links (one storage key) and aliases."""
    by_key: dict[Any, str] = {}
    for m in members:
        key = m.info.storage_key if m.info is not None else None
        if key is not None:
            if key in by_key:
                m.same_storage_as = by_key[key]
            else:
                by_key[key] = m.name
        if m.info is not None and m.info.alias_of and m.info.alias_of in seen:
            m.same_storage_as = m.same_storage_as or m.info.alias_of


def _add_alias_members(ckpt: Checkpoint, members: list[Member], aliases: dict[str, str], embedding: str | None,
                       decoder: str | None) -> None:
    """Names a safetensors file records only as aliases of a member."""
    names = {m.name for m in members}
    for removed, kept in aliases.items():
        if kept in names and removed not in ckpt.tensors and removed not in names:
            if decoder is not None and removed != decoder and embedding is not None:
                continue
            kept_m = next(m for m in members if m.name == kept)
            role = TieRole.DECODER if classify(removed) == TieRole.DECODER else TieRole.EMBEDDING
            members.append(Member(removed, role, kept_m.shape, kept_m.dtype, False, stored=False, same_storage_as=kept))


def _structural_tie(ckpt: Checkpoint, member: Member) -> str | None:
    """A tie that the layout itself declares, for one lone matrix."""
    name = member.name
    if re.search(r"(^|/)reversible_embedding(_\d+)?/vars/0$", name):
        return "Keras 3 ReversibleEmbedding layer stores no reverse_embeddings (tie_weights=True)"
    hub = kerashub.structural_tie(name)
    if hub:
        return hub
    parts = name_parts(name)
    if ckpt.config is None and origin_of(ckpt).tf_model_h5 and parts and parts[-1] == "weight":
        return ("transformers TFSharedEmbeddings layout (config-less Keras 2 H5, one variable 'weight' used as "
                "embedding and output)")
    return None


def _group_from_members(ckpt: Checkpoint, members: list[Member], V: int, H: int, declared: dict) -> TieGroup:
    distinct = [m for m in members if m.stored and m.same_storage_as is None]
    has_decoder = any(m.role == TieRole.DECODER for m in members)
    g = TieGroup(members, NO_DECODER, UNVERIFIED, V, H)
    if len(distinct) == 1:
        if len(members) > 1:
            g.kind, g.verdict = SHARED, TIED
            g.reason = "one stored matrix under several names (" + bounded(
                "HDF5 hard link" if m.stored else "safetensors alias" for m in members if m.same_storage_as) + ")"
            if declared["value"] is False:
                g.consistency = consistency(False, "config", (
                    f"config declares {declared['key']}=false but the weights share one matrix between embedding "
                    "and decoder"))
            return g
        output = has_output_layer(declared, ckpt, V)
        structural = _structural_tie(ckpt, members[0])
        if output is False:
            g.verdict = NO_OUTPUT
            archs = bounded(map(str, declared.get("architectures", [])))
            g.reason = f"no decoder tensor, and the config's architectures ({archs}) have no LM head: no output layer"
        elif declared["value"] is True:
            g.kind, g.verdict = IMPLICIT, TIED
            decl = declared.get("declaration")
            src = decl.source if decl is not None else declared["source"]
            key = str(declared["key"])
            g.tie_source = {"tie_weights": "Keras ReversibleEmbedding tie_weights=true",
                            "graph": f"Keras graph calls layer {declared.get('layer')!r} as embedding and "
                                     "as output"}.get(key, f"config {key}=true ({src})")
            g.reason = "one stored matrix, no decoder tensor; the tie is declared by " + g.tie_source
        elif declared["value"] is False:
            g.verdict = NOT_TIED
            g.reason = f"config declares {declared['key']}=false but no decoder is stored"
            g.consistency = consistency(False, "config", (
                f"config declares {declared['key']}=false but only the embedding is stored: "
                + ("transformers 5 reports the output layer's weight as missing and initialises it randomly. "
                   if str(declared["key"]).endswith("tie_word_embeddings") else
                   "a loader that follows the flag creates an output layer with no stored weights. ")
                + "The weights look tied: the config is wrong (or the decoder was dropped when saving)"))
        elif structural:
            g.kind, g.verdict = IMPLICIT, TIED
            g.tie_source = structural
            g.reason = "one stored matrix, no decoder tensor; the tie is implied by the " + structural
        else:
            g.verdict = NO_OUTPUT
            g.reason = "no decoder tensor and nothing declares a tie: no output layer"
        return g
    g.kind = SEPARATE if any(m.role == TieRole.DECODER and m in distinct for m in members) else DUPLICATE
    g.verdict = UNVERIFIED
    n = len(distinct)
    g.reason = (f"{n} stored matrices" + (" incl. a decoder" if has_decoder else "") + ": values decide (verify-tie)")
    return g


def _note_class_rules(ckpt: Checkpoint, group: TieGroup) -> None:
    """Say where the members came from: the class's own names, and the matrices of the embedding's shape
    that are not copies of it (an encoder's embedding, another vocabulary, per-layer tables)."""
    pair = class_pair(ckpt)
    if pair is None:
        return
    names = {m.name for m in group.members}
    shape = group.members[0].shape
    others = sorted(t.name for t in _candidates(ckpt) if tuple(t.shape) == shape and t.name not in names)
    group.reason += f"; members by transformers 5's {pair.architecture} (it ties {pair.head_name})"
    if others:
        group.reason += "; not copies: " + bounded(others, 5) + " (other matrices of that shape)"


def consistency(consistent: bool, wrong_side: str | None, message: str) -> dict:
    return {"consistent": consistent, "wrong_side": wrong_side, "message": message}


def find_ties(ckpt: Checkpoint, embedding: str | None = None, decoder: str | None = None) -> list[TieGroup]:
    """Tie groups of ``ckpt`` from names, shapes, storage and the config. Reads
    no tensor data: groups whose proof needs the values say ``unverified``."""
    built = build_members(ckpt, embedding, decoder)
    if built is None:
        return []
    members, V, H = built
    group = _group_from_members(ckpt, members, V, H, declared_tie(ckpt))
    if embedding is None and decoder is None:
        _note_class_rules(ckpt, group)
    plain = kerashub.plain_beside(ckpt, members, V, H)
    if plain:
        group.reason += ("; not a member: " + bounded(plain) + " (a plain Keras Embedding, another layer's "
                         "matrix with no reverse pass: the output layer is the ReversibleEmbedding)")
    return [group]

