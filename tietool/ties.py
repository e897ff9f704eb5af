"""Finding and proving tied embedding / decoder (LM head) weights.

No model class and no TensorFlow: only names, shapes, storage and the config.

Detection rules (general, not a list of models):

* Vocabulary size ``V`` from the config (``vocab_size``, ``vocabulary_size``,
  ``input_dim``, ... of a transformers config or the Keras embedding layer);
  without one, the largest first dimension among embedding-named matrices.
* A tensor is classified by its *owner*, the last component of its name that
  is not a generic variable name (``weight``, ``kernel``, ``embeddings``,
  ``vars``, digits, ``:0``): ``lm_head``, ``head``, ``embed_out``,
  ``output*``, ``logits``, ``vocab_proj*``, ``decoder``, ``unembed``,
  ``classifier`` and ``reverse_embeddings`` make a *decoder*;
  ``emb*``, ``wte``, ``word*``, ``shared``, ``tok*``, ``vocab*`` or a leaf
  ``embeddings`` make an *embedding*; ``pos*``, ``wpe``, ``token_type``,
  ``segment`` make a position/type embedding (never a candidate).
  Optimizer tensors are never candidates.
* Embeddings are the weight matrices ``[V, H]``; decoders are
  ``[V, H]`` (PyTorch ``lm_head.weight``) or ``[H, V]`` (Keras kernels,
  ``reverse_embeddings``), plus the unnamed Keras 3 ``.../vars/1`` ``[H, V]``
  of the layer whose ``vars/0`` is the embedding. A safetensors
  ``__metadata__`` entry ``{removed: kept}`` whose kept name is a candidate
  adds the removed name as a member that shares the kept storage.
* How a tie is stored (``kind``): ``implicit`` (one matrix, no decoder, a tie
  declared: transformers ``tie_word_embeddings`` (default true), Keras
  ``tie_weights``, an embedding layer called in reverse/linear mode in a Keras
  graph, a Keras 3 ``reversible_embedding`` layer without ``reverse_embeddings``,
  a config-less Keras 2 H5 whose matrix is transformers' TFSharedEmbeddings
  variable ``weight``); ``shared-storage`` (HDF5 hard links, safetensors
  aliases); ``duplicate-copies`` and ``transposed-copy`` (proved by data);
  ``separate`` (a decoder of its own, values differ) and ``no-decoder``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from . import config as configlib
from . import kerashub
from .errors import TensorNotFoundError, UsageError
from .model import ROLE_WEIGHT, Checkpoint, TensorInfo
from .results import JsonResult

# kinds
IMPLICIT = "implicit"
SHARED = "shared-storage"
DUPLICATE = "duplicate-copies"
TRANSPOSED = "transposed-copy"
SEPARATE = "separate"
NO_DECODER = "no-decoder"

# verdicts
TIED = "tied"
NOT_TIED = "not tied"
NEAR = "near copy"
COPIES_DIFFER = "copies differ"
NO_OUTPUT = "no output layer"
UNVERIFIED = "unverified"

_GENERIC = {"weight", "weights", "kernel", "embeddings", "w", "vars", "bias", "table", "param", "params", "value"}
_DECODER_RE = re.compile(
    r"lm_head|lmhead|^head$|_head$|^head_|embed_out|out_embed|output|logit|vocab_proj|^decoder$|unembed|"
    r"lm_loss|classifier|^proj_out$|reverse_emb|^cls$"
)
_POSITION_RE = re.compile(r"(^|_)pos|position|wpe|token_type|segment|type_emb")
_EMBED_RE = re.compile(r"emb|wte|word|shared|tok|vocab")
# transformers architectures that carry an LM head.
_LM_ARCH_RE = re.compile(r"LMHead|ForCausalLM|ForMaskedLM|ForConditionalGeneration|ForPreTraining|WithLMHead|"
                         r"ForSeq2SeqLM|ForSpeechSeq2Seq|LM$|LMModel$|MTModel$|DoubleHeads")
# architectures that name a model without an LM head: a base model (``BertModel``) or a task head
_HEADLESS_ARCH_RE = re.compile(r"^[A-Za-z0-9]+Model$|For(Sequence|Token|Image|Audio)Classification$|"
                               r"ForQuestionAnswering$|ForMultipleChoice$|ForNextSentencePrediction$")
# a vocabulary-sized bias of an output layer (BART/Marian final_logits_bias, BERT predictions/bias, lm_head/bias)
_HEAD_BIAS_RE = re.compile(r"(logits?_bias|lm_head|lm_loss|predictions|vocab_proj|pred_layer|cls|proj_out)")


def _parts(name: str) -> list[str]:
    out = []
    for p in re.split(r"[/.]", name.lower()):
        p = re.sub(r":\d+$", "", p)
        if p:
            out.append(p)
    return out


def classify(name: str) -> str | None:
    """``"embedding"``, ``"decoder"``, ``"position"`` or None, from the name."""
    parts = _parts(name)
    if not parts:
        return None
    leaf = parts[-1]
    if _DECODER_RE.search(leaf) and leaf not in _GENERIC:
        return "decoder"
    if leaf.startswith("reverse_emb"):
        return "decoder"
    owner = next((p for p in reversed(parts) if p not in _GENERIC and not p.isdigit()), leaf)
    if _POSITION_RE.search(owner):
        return "position"
    if _DECODER_RE.search(owner):
        return "decoder"
    if _EMBED_RE.search(owner) or leaf == "embeddings" or (len(parts) > 1 and parts[-2] == "embeddings"):
        return "embedding"
    return None


# -- what the config declares ---------------------------------------------------------

def declared_tie(ckpt: Checkpoint) -> dict:
    """``{"value": bool | None, "source": "declared" | "default" | None, "key",
    "file"}``: what the config says about tying (None: it says nothing)."""
    cfg = ckpt.config
    out: dict[str, Any] = {"value": None, "source": None, "key": None, "file": ckpt.config_source}
    if not isinstance(cfg, dict):
        return out
    if configlib.is_hf_config(cfg):
        d = configlib.hf_tie_declaration(cfg)
        out.update(value=d["value"], source=d["source"], key="tie_word_embeddings")
        archs = cfg.get("architectures")
        if isinstance(archs, list) and archs:
            out["architectures"] = [str(a) for a in archs]
        return out
    kh = kerashub.declared_tie(cfg)
    if kh is not None:
        out.update(kh)
        return out
    embeds = configlib.keras_embeddings(cfg)
    ties = [e["tie_weights"] for e in embeds if e.get("tie_weights") is not None]
    if ties:
        out.update(value=all(ties), source="declared", key="tie_weights")
        out["layer"] = next((e["name"] for e in embeds if e.get("tie_weights") is not None), None)
        return out
    layer = keras_graph_reuse(cfg)
    if layer is not None:
        out.update(value=True, source="declared", key="graph", layer=layer)
    return out


def keras_graph_reuse(cfg: Any) -> str | None:
    """Name of an embedding layer that a Keras model_config graph calls both as
    embedding and as output projection (a second inbound node with
    ``reverse=True`` or ``mode="linear"``)."""
    for _p, node in configlib.walk(cfg):
        if not isinstance(node, dict) or not isinstance(node.get("inbound_nodes"), list):
            continue
        nodes = node["inbound_nodes"]
        if len(nodes) < 2:
            continue
        lcfg: dict = node["config"] if isinstance(node.get("config"), dict) else {}
        cls = str(node.get("class_name", ""))
        if not ("embed" in cls.lower() or ("input_dim" in lcfg and "output_dim" in lcfg)):
            continue
        for _q, sub in configlib.walk(nodes):
            if isinstance(sub, dict) and (sub.get("reverse") is True or sub.get("mode") == "linear"):
                return str(node.get("name") or lcfg.get("name") or cls)
    return None


def has_output_layer(declared: dict, ckpt: Checkpoint | None = None, vocab: int | None = None) -> bool | None:
    """True when an architecture names an LM head or the weights hold an
    output layer's vocabulary-sized bias (Marian's ``final_logits_bias``);
    False only when every architecture names a model without one
    (``BertModel``, ``...ForSequenceClassification``) and the weights do not
    say otherwise; None when nothing tells."""
    archs = declared.get("architectures") or []
    if any(_LM_ARCH_RE.search(a) for a in archs):
        return True
    if ckpt is not None and vocab and _vocab_bias(ckpt, vocab):
        return True
    if archs and all(_HEADLESS_ARCH_RE.search(a) for a in archs):
        return False
    return None


def _vocab_bias(ckpt: Checkpoint, vocab: int) -> str | None:
    """Name of a stored ``[vocab]`` / ``[1, vocab]`` bias of an output layer."""
    for t in ckpt.tensors.values():
        if t.role != ROLE_WEIGHT or tuple(t.shape) not in ((vocab,), (1, vocab)):
            continue
        parts = _parts(t.name)
        if parts and "bias" in parts[-1] and any(_HEAD_BIAS_RE.search(p) for p in parts):
            return t.name
    return None


# -- groups -----------------------------------------------------------------------------

@dataclass
class Member:
    name: str
    role: str  # "embedding" | "decoder"
    shape: tuple[int, ...]
    dtype: str
    transposed: bool = False
    stored: bool = True  # False: a name recorded only as an alias (safetensors metadata)
    same_storage_as: str | None = None  # hard link / alias of an earlier member
    info: TensorInfo | None = field(default=None, repr=False, compare=False)

    @property
    def stored_info(self) -> TensorInfo:
        """The stored tensor (every member but an alias-only name has one)."""
        if self.info is None:
            raise ValueError(f"{self.name!r} is an alias, not a stored tensor")
        return self.info

    def as_dict(self) -> dict:
        d = {"name": self.name, "role": self.role, "shape": list(self.shape), "dtype": self.dtype,
             "transposed": self.transposed, "stored": self.stored}
        if self.same_storage_as is not None:
            d["same_storage_as"] = self.same_storage_as
        return d


@dataclass
class TieGroup:
    members: list[Member]
    kind: str
    verdict: str
    vocab_size: int
    hidden_size: int
    reason: str = ""
    tie_source: str | None = None  # what establishes an implicit tie
    comparisons: list[dict] = field(default_factory=list)
    consistency: dict | None = None
    agreement: dict | None = None  # copies that differ: classes, strict majority, odd ones out (tietool.majority)

    @property
    def tied(self) -> bool:
        return self.verdict == TIED

    def distinct(self) -> list[Member]:
        """One member per stored object, the reference first."""
        return [m for m in self.members if m.stored and m.same_storage_as is None]

    def to_json(self) -> dict:
        return self.as_dict()

    def as_dict(self) -> dict:
        d: dict[str, Any] = {
            "members": [m.as_dict() for m in self.members],
            "kind": self.kind,
            "verdict": self.verdict,
            "tied": self.tied,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "reason": self.reason,
        }
        if self.tie_source:
            d["tie_source"] = self.tie_source
        if self.comparisons:
            d["comparisons"] = self.comparisons
            worst = [c for c in self.comparisons if not c["equal"] or not c["identical"]]
            if worst:
                d["max_abs_diff"] = max(c.get("max_abs_diff", 0.0) for c in worst)
                d["rows_differ"] = max(c.get("rows_differ", 0) for c in worst)
                rows = sorted({r for c in worst for r in c.get("first_rows", [])})
                d["first_rows"] = rows[:10]
        if self.consistency is not None:
            d["consistency"] = self.consistency
        if self.agreement is not None:
            d["agreement"] = self.agreement
        return d


def _candidates(ckpt: Checkpoint) -> list[TensorInfo]:
    aux = kerashub.quantization_aux(ckpt)
    return [t for t in ckpt.tensors.values()
            if t.role == ROLE_WEIGHT and len(t.shape) == 2 and 0 not in t.shape and t.name not in aux]


def _vocab_hidden(ckpt: Checkpoint, mats: list[TensorInfo], classes: dict[str, str | None]) -> tuple[int, int] | None:
    """``(V, H)``. V from the config, else the embeddings' rows. H from the
    candidates' shapes: the width of the ``[V, ·]`` embeddings, and among
    several, the one a decoder pairs with; a config hidden size only breaks a
    remaining tie (configs name it ``hidden_size``, ``d_model``, ``emb_dim``...).
    When no name says embedding, a ``[V, H]`` weight outside repeated blocks
    that no name classifies is taken as the embedding (CTRL's
    ``transformer.w.weight`` in PyTorch names): ``classes`` is updated."""
    embeds = [t for t in mats if classes[t.name] == "embedding"]
    hl = configlib.highlights(ckpt.config) if isinstance(ckpt.config, dict) else {}
    V: int | None = hl.get("vocab_size")
    pool = [t for t in embeds if t.shape[0] == V] if V else []
    if not pool and V:
        unnamed = [t for t in mats if classes[t.name] is None and t.shape[0] == V and t.shape[1] != V
                   and not _in_repeated_block(t.name)]
        if len(unnamed) == 1:
            classes[unnamed[0].name] = "embedding"
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
    paired = {h for h in widths for t in mats if classes[t.name] == "decoder" and tuple(t.shape) in ((V, h), (h, V))}
    hints = set()
    if isinstance(ckpt.config, dict):
        for _p, node in configlib.walk(ckpt.config):
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
    for k, v in (ckpt.metadata or {}).items():
        if isinstance(k, str) and isinstance(v, str) and k not in ckpt.tensors and v in ckpt.tensors and k != v:
            out[k] = v
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
    parts = _parts(name)
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
    leaf = _parts(info.name)[-1] if _parts(info.name) else ""
    return leaf in ("kernel",) or leaf.startswith("reverse_emb") or bool(re.search(r"vars/[1-9]\d*$", info.name))


def build_members(ckpt: Checkpoint, embedding: str | None = None,
                  decoder: str | None = None) -> tuple[list[Member], int, int] | None:
    """The candidate members (embeddings first), and ``(V, H)``; None when the
    checkpoint has no embedding matrix. Explicit names override detection."""
    mats = _candidates(ckpt)
    classes = {t.name: classify(t.name) for t in mats}
    aliases = _aliases(ckpt)
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
        found.add(dec_info, "decoder", _is_transposed(dec_info, V, H))
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
    members.sort(key=lambda m: (m.role != "embedding", not m.stored))
    return members, V, H


class _Members:
    """Members in the order found, each tensor once."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.seen: set[str] = set()

    def add(self, info: TensorInfo, role: str, transposed: bool = False) -> None:
        if info.name in self.seen:
            return
        self.seen.add(info.name)
        self.members.append(Member(info.name, role, tuple(info.shape), info.dtype, transposed, info=info))

    def has_decoder(self) -> bool:
        return any(m.role == "decoder" for m in self.members)


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
    return (r, c) if classify(dec_info.name) != "decoder" or r > c else (c, r)


def _add_embeddings(found: _Members, mats: list[TensorInfo], classes: dict[str, str | None], V: int, H: int,
                    emb_info: TensorInfo | None, decoder: str | None) -> None:
    if emb_info is not None:
        found.add(emb_info, "embedding")
        if decoder is not None:
            return  # an explicit pair: just those two
    for t in mats:
        if classes[t.name] == "embedding" and tuple(t.shape) == (V, H) and t.name != decoder:
            found.add(t, "embedding")


def _add_detected_decoders(ckpt: Checkpoint, found: _Members, mats: list[TensorInfo],
                           classes: dict[str, str | None], V: int, H: int) -> None:
    """Decoders by name, else by shape, else of another width; then Keras 3's
    unnamed reverse embeddings."""
    for t in mats:
        if classes[t.name] == "decoder" and tuple(t.shape) in ((V, H), (H, V)) and t.name not in found.seen:
            found.add(t, "decoder", _is_transposed(t, V, H))
    if not found.has_decoder():
        _add_decoder_by_shape(found, mats, classes, V, H)
    if not found.has_decoder():
        _add_decoder_of_other_width(found, mats, classes, V)
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
        found.add(by_shape[0], "decoder", True)


def _add_decoder_of_other_width(found: _Members, mats: list[TensorInfo], classes: dict[str, str | None],
                                V: int) -> None:
    """An output embedding of another width (RemBERT's decoder [V,
    output_embedding_size]): a head of its own, never a copy."""
    for t in mats:
        parts = _parts(t.name)
        if (classes[t.name] == "decoder" and t.name not in found.seen and V in t.shape and min(t.shape) > 1
                and parts and "bias" not in parts[-1] and not _in_repeated_block(t.name)):
            found.add(t, "decoder", t.shape[0] != V)


def _add_keras3_reverse(ckpt: Checkpoint, found: _Members, V: int, H: int) -> None:
    """Keras 3: the unnamed reverse_embeddings is vars/1 of the embedding's
    layer (a quantised layer: the reverse matrix after the scales)."""
    for m in list(found.members):
        if m.role != "embedding":
            continue
        qrev = kerashub.quantized_reverse(ckpt, m.name, V)
        if qrev is not None and qrev not in found.seen:
            found.add(ckpt.tensors[qrev], "decoder", True)
            continue
        sib = _vars_sibling(m.name, 1) if m.name.endswith("/0") else None
        t = ckpt.tensors.get(sib) if sib else None
        if t is not None and t.role == ROLE_WEIGHT and tuple(t.shape) == (H, V):
            found.add(t, "decoder", True)


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
            role = "decoder" if classify(removed) == "decoder" else "embedding"
            members.append(Member(removed, role, kept_m.shape, kept_m.dtype, False, stored=False, same_storage_as=kept))


def _structural_tie(ckpt: Checkpoint, member: Member) -> str | None:
    """A tie that the layout itself declares, for one lone matrix."""
    name = member.name
    if re.search(r"(^|/)reversible_embedding(_\d+)?/vars/0$", name):
        return "Keras 3 ReversibleEmbedding layer stores no reverse_embeddings (tie_weights=True)"
    hub = kerashub.structural_tie(name)
    if hub:
        return hub
    if ckpt.config is None and ckpt.origin_format == "keras2-h5" and _parts(name) and _parts(name)[-1] == "weight":
        return ("transformers TFSharedEmbeddings layout (config-less Keras 2 H5, one variable 'weight' used as "
                "embedding and output)")
    return None


def _group_from_members(ckpt: Checkpoint, members: list[Member], V: int, H: int, declared: dict) -> TieGroup:
    distinct = [m for m in members if m.stored and m.same_storage_as is None]
    has_decoder = any(m.role == "decoder" for m in members)
    g = TieGroup(members, NO_DECODER, UNVERIFIED, V, H)
    if len(distinct) == 1:
        if len(members) > 1:
            g.kind, g.verdict = SHARED, TIED
            g.reason = "one stored matrix under several names (" + ", ".join(
                "HDF5 hard link" if m.stored else "safetensors alias" for m in members if m.same_storage_as) + ")"
            if declared["value"] is False:
                g.consistency = _consistency(False, "config", (
                    f"config declares {declared['key']}=false but the weights share one matrix between embedding "
                    "and decoder"))
            return g
        output = has_output_layer(declared, ckpt, V)
        structural = _structural_tie(ckpt, members[0])
        if output is False:
            g.verdict = NO_OUTPUT
            archs = ", ".join(declared.get("architectures", []))
            g.reason = f"no decoder tensor, and the config's architectures ({archs}) have no LM head: no output layer"
        elif declared["value"] is True:
            g.kind, g.verdict = IMPLICIT, TIED
            src = "default, absent from config" if declared["source"] == "default" else "declared"
            g.tie_source = {"tie_word_embeddings": f"config tie_word_embeddings=true ({src})",
                            "tie_weights": "Keras ReversibleEmbedding tie_weights=true",
                            "graph": f"Keras graph calls layer {declared.get('layer')!r} as embedding and "
                                     "as output"}.get(
                declared["key"], str(declared["key"]))
            g.reason = "one stored matrix, no decoder tensor; the tie is declared by " + g.tie_source
        elif declared["value"] is False:
            g.verdict = NOT_TIED
            g.reason = f"config declares {declared['key']}=false but no decoder is stored"
            g.consistency = _consistency(False, "config", (
                f"config declares {declared['key']}=false but only the embedding is stored: "
                + ("transformers 5 reports the output layer's weight as missing and initialises it randomly. "
                   if declared["key"] == "tie_word_embeddings" else
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
    g.kind = SEPARATE if any(m.role == "decoder" and m in distinct for m in members) else DUPLICATE
    g.verdict = UNVERIFIED
    n = len(distinct)
    g.reason = (f"{n} stored matrices" + (" incl. a decoder" if has_decoder else "") + ": values decide (verify-tie)")
    return g


def _consistency(consistent: bool, wrong_side: str | None, message: str) -> dict:
    return {"consistent": consistent, "wrong_side": wrong_side, "message": message}


def find_ties(ckpt: Checkpoint, embedding: str | None = None, decoder: str | None = None) -> list[TieGroup]:
    """Tie groups of ``ckpt`` from names, shapes, storage and the config. Reads
    no tensor data: groups whose proof needs the values say ``unverified``."""
    built = build_members(ckpt, embedding, decoder)
    if built is None:
        return []
    members, V, H = built
    group = _group_from_members(ckpt, members, V, H, declared_tie(ckpt))
    plain = kerashub.plain_beside(ckpt, members, V, H)
    if plain:
        group.reason += ("; not a member: " + ", ".join(plain) + " (a plain Keras Embedding, another layer's "
                         "matrix with no reverse pass: the output layer is the ReversibleEmbedding)")
    return [group]


# -- verification ------------------------------------------------------------------------

def verify_group(ckpt: Checkpoint, g: TieGroup, declared: dict, atol: float | None = None,
                 rtol: float | None = None, tick: Callable[[int], None] | None = None) -> TieGroup:
    """Compare every distinct stored member with the reference (one pass) and
    set kind, verdict and evidence."""
    from .compare import compare_copies

    distinct = g.distinct()
    if len(distinct) < 2:
        return g
    ref = distinct[0]
    pair_shapes = ((g.vocab_size, g.hidden_size), (g.hidden_size, g.vocab_size))
    wide = [m for m in distinct[1:] if tuple(m.shape) not in pair_shapes]
    if wide:
        return _other_width(ckpt, g, declared, wide, atol, rtol)
    others = distinct[1:]
    diffs = compare_copies(ckpt, ref.stored_info, [(m.stored_info, m.transposed) for m in others], atol=atol, rtol=rtol,
                           tick=tick)
    g.comparisons = [d.as_dict() for d in diffs]
    emb_diffs = [d for m, d in zip(others, diffs, strict=True) if m.role == "embedding"]
    dec_pairs = [(m, d) for m, d in zip(others, diffs, strict=True) if m.role == "decoder"]
    dec_equal = all(d.equal for _m, d in dec_pairs)
    dec_near = all(d.equal or d.near for _m, d in dec_pairs)
    # A decoder that matches the embedding on most rows is a (damaged) copy,
    # not a head of its own.
    dec_copy = all(d.equal or d.near or 2 * d.rows_differ <= g.vocab_size for _m, d in dec_pairs)
    emb_equal = all(d.equal for d in emb_diffs)
    emb_near = all(d.equal or d.near for d in emb_diffs)
    n_copies = len(distinct)
    if dec_pairs and not dec_copy:
        g.kind = SEPARATE
        g.verdict = NOT_TIED
        d = next(d for _m, d in dec_pairs if not d.equal)
        g.reason = (f"separate decoder {d.name!r} differs from the embedding: max abs diff {d.max_abs_diff:.6g}, "
                    f"{d.rows_differ} of {g.vocab_size} rows differ")
    else:
        if dec_pairs and any(m.transposed for m, _d in dec_pairs):
            g.kind = TRANSPOSED
        else:
            g.kind = DUPLICATE
        if emb_equal and dec_equal:
            g.verdict = TIED
            how = "bitwise identical" if all(d.identical for d in diffs) else f"equal within atol={atol}, rtol={rtol}"
            g.reason = f"{n_copies} stored copies, {how}"
        else:
            worst = max((d for d in diffs if not d.equal), key=lambda d: d.max_abs_diff)
            g.verdict = NEAR if (emb_near and dec_near) else COPIES_DIFFER
            g.reason = (f"{worst.name!r} vs {worst.reference!r}: "
                        f"max abs diff {worst.max_abs_diff:.6g}, {worst.rows_differ} row(s) differ"
                        + (f", first {worst.first_rows}" if worst.first_rows else ""))
            from .majority import Copy, agreement

            g.agreement = agreement(ckpt, [Copy(m.name, m.stored_info, m.transposed) for m in distinct]).to_json()
    # what the config says against what is stored
    if declared.get("value") is True and g.verdict != TIED:
        if g.kind == SEPARATE:
            g.consistency = _consistency(False, "config", (
                f"config declares {declared['key']}=true ({declared['source']}) but a different decoder is stored: "
                + ("transformers 5 keeps the stored decoder (it warns that both are present with different values "
                   "and does not tie them); a loader that ties by the flag alone uses the embedding as the output "
                   "layer and ignores the stored decoder. "
                   if declared["key"] == "tie_word_embeddings" else
                   "a loader that ties by the flag alone uses the embedding as the output layer and ignores the "
                   "stored decoder. ")
                + "The weights were trained untied: the config is wrong"))
        else:
            g.consistency = _consistency(False, "weights", (
                f"config declares {declared['key']}=true ({declared['source']}) but the stored copies of the tied "
                "matrix differ: the weights are damaged or stale, and which copy a loader uses decides its output"))
    elif declared.get("value") is True:
        g.consistency = _consistency(True, None, "config declares the tie and the weights hold it")
    elif declared.get("value") is False:
        if g.verdict == TIED:
            g.consistency = _consistency(True, None, (
                f"config declares {declared['key']}=false; the decoder is stored separately but equals the embedding"))
        else:
            g.consistency = _consistency(True, None, f"config declares {declared['key']}=false: untied by design")
    return g


def _other_width(ckpt: Checkpoint, g: TieGroup, declared: dict, wide: list[Member], atol, rtol) -> TieGroup:
    """An output embedding whose width differs from the input embedding's
    (RemBERT): a head of its own, not tied by construction. Copies of the
    embedding in the group are still compared."""
    from .compare import compare_copies

    distinct = g.distinct()
    same = [m for m in distinct[1:] if m not in wide]
    if same:
        diffs = compare_copies(ckpt, distinct[0].stored_info, [(m.stored_info, m.transposed) for m in same],
                               atol=atol, rtol=rtol)
        g.comparisons = [d.as_dict() for d in diffs]
    w = wide[0]
    width = w.shape[1] if not w.transposed else w.shape[0]
    how = "wider" if width > g.hidden_size else "narrower"
    g.kind, g.verdict = SEPARATE, NOT_TIED
    g.reason = (f"output embedding {w.name!r} {list(w.shape)} is {how} than the input embedding "
                f"[{g.vocab_size}, {g.hidden_size}]: a head of its own")
    if declared.get("value") is True:
        g.consistency = _consistency(False, "config", (
            f"config declares {declared['key']}=true ({declared['source']}) but the output embedding has another "
            f"width ({width}) than the input embedding ({g.hidden_size}): the two cannot be one matrix, the config "
            "is wrong"))
    elif declared.get("value") is False:
        g.consistency = _consistency(True, None, f"config declares {declared['key']}=false: untied by design "
                                     f"(the output embedding is {how})")
    return g


@dataclass(frozen=True)
class TieReport(JsonResult):
    """What :func:`verify_tie` proved: ``tied`` only when a tie holds and
    every stored copy is identical (or equal within ``atol``/``rtol``);
    ``config`` is what the config declares (:func:`declared_tie`)."""

    path: str
    format: str
    tied: bool
    message: str
    config: dict
    atol: float | None
    rtol: float | None
    groups: tuple[TieGroup, ...]

    @property
    def exact(self) -> bool:
        return self.atol is None and self.rtol is None

    @classmethod
    def build(cls, ckpt: Checkpoint, declared: dict, groups: list[TieGroup], atol: float | None,
              rtol: float | None) -> TieReport:
        if not groups:
            message = "no embedding matrix found: no output layer to tie"
        else:
            message = "; ".join(f"{g.verdict} ({g.kind}): {g.reason}" for g in groups)
        return cls(ckpt.path, ckpt.format, bool(groups) and all(g.tied for g in groups), message, declared,
                   atol, rtol, tuple(groups))

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "tied": self.tied,
            "message": self.message,
            "config": self.config,
            "exact": self.exact,
            "atol": self.atol,
            "rtol": self.rtol,
            "groups": [g.to_json() for g in self.groups],
        }


def verify_checkpoint(ckpt: Checkpoint, embedding: str | None = None, decoder: str | None = None,
                      atol: float | None = None, rtol: float | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> TieReport:
    """The report of :func:`verify_tie` for an open checkpoint; ``progress``
    is called as ``progress("compare", bytes read, bytes to read)``."""
    for what, v in (("atol", atol), ("rtol", rtol)):
        if v is not None and (not isinstance(v, (int, float)) or v != v or v < 0):
            raise UsageError(f"--{what} must be a non-negative number, got {v!r}", ckpt.path)
    if embedding is not None and decoder is not None and embedding == decoder:
        raise UsageError("--embedding and --decoder name the same tensor", ckpt.path)
    declared = declared_tie(ckpt)
    groups = find_ties(ckpt, embedding, decoder)
    total = sum(m.stored_info.nbytes for g in groups if len(g.distinct()) > 1 for m in g.distinct())
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress("compare", done[0], total)

    for g in groups:
        verify_group(ckpt, g, declared, atol, rtol, tick if progress is not None else None)
    return TieReport.build(ckpt, declared, groups, atol, rtol)


def verify_tie(path: str | os.PathLike, embedding: str | None = None, decoder: str | None = None,
               atol: float | None = None, rtol: float | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> TieReport:
    """Find the tie groups of ``path`` and prove them with the stored values.

    Returns a :class:`TieReport` (``to_json()`` for the JSON document) with ``tied`` (True only when a tie holds and
    every stored copy is identical, or equal within ``atol``/``rtol`` when
    given), ``config`` (what the config declares) and ``groups``. Raises
    :class:`~tietool.errors.TensorNotFoundError` for an unknown name and
    :class:`~tietool.errors.UsageError` for shapes that cannot pair.
    """
    from .formats import open_checkpoint

    with open_checkpoint(path) as ckpt:
        return verify_checkpoint(ckpt, embedding, decoder, atol, rtol, progress)


__all__ = [
    "Member", "TieGroup", "TieReport", "classify", "declared_tie", "find_ties", "verify_tie", "verify_checkpoint",
    "build_members", "TensorNotFoundError",
]
