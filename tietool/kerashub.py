"""keras-hub checkpoints: configs read as data, token embeddings found where keras-hub nests them.

No TensorFlow, no class instantiated from a config. What a keras-hub file says:

* Config (``.keras`` ``config.json``, preset ``config.json``, a task's nested
  ``backbone``): the backbone's constructor arguments. Read here:
  ``tie_word_embeddings`` / ``tie_embedding_weights`` / ``tie_weights``,
  ``final_logit_soft_cap``, and the dtype policy (``DTypePolicy`` name, or a
  ``DTypePolicyMap`` whose entry for the embedding layer's name is a
  ``QuantizedDTypePolicy`` / ``Int4DTypePolicy`` with a quantisation mode).
* Weights (Keras 3 layout ``layers/<snake_case class>/vars/<i>``):

  - ``reversible_embedding[_N]/vars/0`` and
    ``token_and_position_embedding[_N]/token_embedding/vars/0`` are a
    ``ReversibleEmbedding`` (keras-hub's ``TokenAndPositionEmbedding`` keeps
    one as ``token_embedding``). With no reverse matrix stored beside it, its
    ``tie_weights`` is true: the layer is its own output layer.
  - ``embedding[_N]/vars/0`` is a plain Keras ``Embedding``: it looks tokens
    up and has no reverse pass. Beside a ReversibleEmbedding of the same shape
    (T5Gemma: the encoder's ``Embedding``, the decoder's tied
    ``ReversibleEmbedding``) it is another matrix, not a copy of the output
    layer, whatever its values: it is left out of the tie group.
  - Quantised (``int8``: ``vars/0`` int8 ``[V, H]``, ``vars/1`` scale ``[V]``;
    ``int4``: ``vars/0`` packed ``[V, ceil(H/2)]``, scale, zero, ``g_idx``;
    an untied layer adds the reverse matrix and its scale(s)): the reverse
    matrix is the first 2-D integer variable after ``vars/0`` whose last
    dimension is ``V``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .jsontree import walk

TIE_KEYS = ("tie_word_embeddings", "tie_embedding_weights", "tie_weights")
KERAS_HUB_PREFIXES = ("keras_hub", "keras_nlp")

_REVERSIBLE_RE = re.compile(
    r"(^|/)(reversible_embedding(_\d+)?|token_and_position_embedding(_\d+)?/token_embedding)/vars/0$")
_PLAIN_RE = re.compile(r"(^|/)embedding(_\d+)?/vars/0$")
_VARS_RE = re.compile(r"^(.*\bvars)/(\d+)$")
_TOP_DENSE_RE = re.compile(r"^layers/dense(_\d+)?/vars/0$")


def is_kerashub_config(cfg: Any) -> bool:
    """A config keras-hub wrote: its module or registered name is keras-hub's."""
    if not isinstance(cfg, dict):
        return False
    module, reg = cfg.get("module"), cfg.get("registered_name")
    return (isinstance(module, str) and module.startswith(KERAS_HUB_PREFIXES)) or (
        isinstance(reg, str) and reg.startswith(tuple(p + ">" for p in KERAS_HUB_PREFIXES)))


def backbone_config(cfg: Any) -> tuple[str | None, dict] | None:
    """(class name, constructor arguments) of the backbone in a keras-hub
    config: the top-level object, or a task's nested ``backbone``."""
    if not is_kerashub_config(cfg):
        return None
    for _p, node in walk(cfg):
        if (isinstance(node, dict) and isinstance(node.get("config"), dict)
                and str(node.get("class_name", "")).endswith("Backbone")):
            return str(node["class_name"]), node["config"]
    inner = cfg.get("config")
    return (str(cfg.get("class_name")) if cfg.get("class_name") else None), (inner if isinstance(inner, dict) else {})


@dataclass(frozen=True)
class KerasHubConfig:
    """What a keras-hub config says about the output layer."""

    backbone_class: str | None
    task_class: str | None
    tie_key: str | None  # which constructor argument declares the tie
    tie: bool | None
    soft_cap: float | None  # final_logit_soft_cap
    dtype: str | None  # the backbone's DTypePolicy name ("float32", "bfloat16"), when one policy
    policy_map: dict  # layer name -> {"class_name", "mode", "source_name"} of quantised layers

    def quantization_of(self, layer_name: str | None) -> dict | None:
        """The quantised policy of the layer called ``layer_name``, if any."""
        if not layer_name:
            return None
        if layer_name in self.policy_map:
            return self.policy_map[layer_name]
        for k, v in self.policy_map.items():
            if k.endswith("/" + layer_name):
                return v
        return None

    def to_json(self) -> dict:
        return {"backbone_class": self.backbone_class, "task_class": self.task_class, "tie_key": self.tie_key,
                "tie": self.tie, "final_logit_soft_cap": self.soft_cap, "dtype": self.dtype,
                "quantized_layers": self.policy_map}


def read_config(cfg: Any) -> KerasHubConfig | None:
    """Read a keras-hub config as data; None when it is not one."""
    found = backbone_config(cfg)
    if found is None:
        return None
    cls, bcfg = found
    task = str(cfg.get("class_name")) if isinstance(cfg, dict) and cfg.get("class_name") != cls else None
    tie_key = next((k for k in TIE_KEYS if isinstance(bcfg.get(k), bool)), None)
    cap = bcfg.get("final_logit_soft_cap")
    cap = float(cap) if isinstance(cap, (int, float)) and not isinstance(cap, bool) else None
    dtype, pmap = None, {}
    pol = bcfg.get("dtype")
    if isinstance(pol, str):
        dtype = pol
    elif isinstance(pol, dict):
        raw = pol.get("config")
        pcfg: dict = raw if isinstance(raw, dict) else {}
        if pol.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(pcfg.get("name"), str):
            dtype = pcfg["name"]
        elif pol.get("class_name") == "DTypePolicyMap":
            default = pcfg.get("default_policy")
            if isinstance(default, str):
                dtype = default
            elif isinstance(default, dict) and isinstance((default.get("config") or {}).get("name"), str):
                dtype = default["config"]["name"]
            for layer, p in (pcfg.get("policy_map") or {}).items():
                pc = p.get("config") if isinstance(p, dict) else None
                mode = pc.get("mode") if isinstance(pc, dict) else None
                if isinstance(mode, str):
                    src = p["config"].get("source_name")
                    pmap[str(layer)] = {"class_name": str(p.get("class_name")), "mode": p["config"]["mode"],
                                        "source_name": src if isinstance(src, str) else None}
    return KerasHubConfig(cls, task, tie_key, bcfg.get(tie_key) if tie_key else None, cap, dtype, pmap)


def declared_tie(cfg: Any) -> dict | None:
    """``declared_tie`` fields for a keras-hub config (None: not keras-hub).
    ``value`` is None when the backbone has no tie argument: its layers decide."""
    kh = read_config(cfg)
    if kh is None:
        return None
    out: dict[str, Any] = {"value": None, "source": None, "key": None, "kerashub": kh.to_json()}
    if kh.tie_key is not None:
        out.update(value=bool(kh.tie), source="declared", key=kh.tie_key)
    return out


# -- weights -------------------------------------------------------------------------------

def is_reversible(name: str) -> bool:
    """The ``vars/0`` of a Keras ``ReversibleEmbedding`` (incl. keras-hub's
    ``TokenAndPositionEmbedding.token_embedding``)."""
    return bool(_REVERSIBLE_RE.search(name))


def is_plain_embedding(name: str) -> bool:
    """The ``vars/0`` of a plain Keras ``Embedding`` layer (no reverse pass)."""
    return bool(_PLAIN_RE.search(name))


def structural_tie(name: str) -> str | None:
    """The tie a lone reversible embedding's layout declares."""
    if re.search(r"(^|/)token_and_position_embedding(_\d+)?/token_embedding/vars/0$", name):
        return ("keras-hub TokenAndPositionEmbedding: its token_embedding is a ReversibleEmbedding that stores no "
                "reverse_embeddings (tie_weights=True)")
    return None


def vars_group(name: str) -> tuple[str, int] | None:
    m = _VARS_RE.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def group_vars(ckpt, name: str) -> list[str]:
    """The stored ``vars/<i>`` of the layer whose variable ``name`` is, in index order."""
    vg = vars_group(name)
    if vg is None:
        return [name]
    prefix = vg[0] + "/"
    found = {}
    for t in ckpt.tensors:
        if t.startswith(prefix) and t[len(prefix):].isdigit():
            found[int(t[len(prefix):])] = t
    return [found[i] for i in sorted(found)]


def is_integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def quantized_reverse(ckpt, name: str, vocab: int) -> str | None:
    """The reverse (decoder) matrix of a quantised ReversibleEmbedding whose
    ``vars/0`` is ``name``; None when tied (or not quantised)."""
    info = ckpt.tensors.get(name)
    if info is None or not is_integer(info.dtype):
        return None
    return _reverse_among(ckpt, group_vars(ckpt, name), vocab)


def quantization_aux(ckpt) -> set[str]:
    """Scales, zero points and ``g_idx`` of quantised Keras 3 layers: never
    tie candidates (the integer matrices are). One pass over the names."""
    groups: dict[str, dict[int, str]] = {}
    for name in ckpt.tensors:
        vg = vars_group(name)
        if vg is not None:
            groups.setdefault(vg[0], {})[vg[1]] = name
    out: set[str] = set()
    for members in groups.values():
        first = ckpt.tensors.get(members.get(0, ""))
        if first is None or len(first.shape) != 2 or not is_integer(first.dtype):
            continue
        ordered = [members[i] for i in sorted(members)]
        rev = _reverse_among(ckpt, ordered, first.shape[0])
        out.update(n for n in ordered[1:] if n != rev)
    return out


def _reverse_among(ckpt, ordered: list[str], vocab: int) -> str | None:
    for other in ordered[1:]:
        t = ckpt.tensors[other]
        if len(t.shape) == 2 and is_integer(t.dtype) and t.shape[-1] == vocab and t.shape[0] != vocab:
            return other
    return None


def prune_plain(members: list) -> tuple[list, list[str]]:
    """Drop plain ``Embedding`` members when a ReversibleEmbedding is present:
    the output layer is the reversible one (names say which; values do not)."""
    if not any(is_reversible(m.name) for m in members if m.role == "embedding"):
        return members, []
    dropped = [m.name for m in members if m.role == "embedding" and is_plain_embedding(m.name)]
    return [m for m in members if m.name not in dropped], dropped


def plain_beside(ckpt, members: list, vocab: int, hidden: int) -> list[str]:
    """Plain ``Embedding`` matrices ``[vocab, hidden]`` left out of a group
    whose embedding is a ReversibleEmbedding (for the report)."""
    names = {m.name for m in members}
    if not any(is_reversible(n) for n in names):
        return []
    return [n for n, t in ckpt.tensors.items()
            if n not in names and is_plain_embedding(n) and tuple(t.shape) == (vocab, hidden)]


def head_of_another_width(ckpt, members: list, vocab: int, hidden: int) -> str | None:
    """The model's own output Dense whose width is not the vocabulary (PARSeq's
    ``head`` [H, V-2]: it predicts neither <bos> nor <pad>), beside a plain
    ``Embedding`` with no reverse pass: a Keras 3 top-level ``dense`` kernel
    ``[hidden, W]``, W neither the vocabulary nor the hidden size, the only
    one. None otherwise."""
    if any(is_reversible(m.name) or m.role == "decoder" for m in members):
        return None
    found = [n for n, t in ckpt.tensors.items()
             if _TOP_DENSE_RE.match(n) and len(t.shape) == 2 and t.shape[0] == hidden
             and t.shape[1] not in (vocab, hidden) and t.shape[1] > 1]
    return found[0] if len(found) == 1 else None
