"""Tie detection rules as data: what names, shapes and configs say (no tensor data).

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
  declared (:mod:`tietool.ties.declaration`): transformers ``tie_word_embeddings``, Keras
  ``tie_weights``, an embedding layer called in reverse/linear mode in a Keras
  graph, a Keras 3 ``reversible_embedding`` layer without ``reverse_embeddings``,
  a config-less Keras 2 H5 whose matrix is transformers' TFSharedEmbeddings
  variable ``weight``); ``shared-storage`` (HDF5 hard links, safetensors
  aliases); ``duplicate-copies`` and ``transposed-copy`` (proved by data);
  ``separate`` (a decoder of its own, values differ) and ``no-decoder``.
"""

from __future__ import annotations

import re
from typing import Any

from tietool import kerashub
from tietool.model import Checkpoint, Role
from tietool.ties import data
from tietool.ties.declaration import RULES_KERASHUB, tie_declaration

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


def name_parts(name: str) -> list[str]:
    out = []
    for p in re.split(r"[/.]", name.lower()):
        p = re.sub(r":\d+$", "", p)
        if p:
            out.append(p)
    return out


def classify(name: str) -> str | None:
    """``"embedding"``, ``"decoder"``, ``"position"`` or None, from the name."""
    parts = name_parts(name)
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
    """:func:`tietool.ties.declaration.tie_declaration` of the checkpoint's
    config as the dict the tie rules read: ``{"value": bool | None, "source":
    "declared" | "default" | "forced" | None, "key", "file", "declaration"}``
    (``key``: the flag the class reads; ``declaration``: the typed result)."""
    decl = tie_declaration(ckpt.config)
    kind = None if decl.value is None else "forced" if decl.forced else "declared" if decl.declared else "default"
    out: dict[str, Any] = {"value": decl.value, "source": kind, "key": decl.flag_key, "file": ckpt.config_source,
                           "declaration": decl}
    cfg = ckpt.config
    archs = cfg.get("architectures") if isinstance(cfg, dict) else None
    if isinstance(archs, list) and archs:
        out["architectures"] = [str(a) for a in archs]
    if decl.layer is not None:
        out["layer"] = decl.layer
    hub = kerashub.read_config(cfg) if isinstance(cfg, dict) and decl.rules == RULES_KERASHUB else None
    if hub is not None:
        out["kerashub"] = hub.to_json()
    return out


def has_output_layer(declared: dict, ckpt: Checkpoint | None = None, vocab: int | None = None) -> bool | None:
    """True when transformers 5's class (the generated table) has an output
    embedding, else when an architecture names an LM head or the weights hold an
    output layer's vocabulary-sized bias (Marian's ``final_logits_bias``);
    False only when every architecture names a model without one
    (``BertModel``, ``...ForSequenceClassification``) and the weights do not
    say otherwise; None when nothing tells."""
    archs = declared.get("architectures") or []
    _name, entry = data.architecture_entry(archs)
    if entry is not None and entry.get("built"):  # transformers 5 built it: its get_output_embeddings() decides
        return entry.get("output") is not None
    if any(_LM_ARCH_RE.search(a) for a in archs) or (entry is not None and entry.get("lm_head_mapping")):
        return True  # a class of transformers 5's LM-head mappings by its name or the table
    if ckpt is not None and vocab and _vocab_bias(ckpt, vocab):
        return True
    if archs and all(_HEADLESS_ARCH_RE.search(a) for a in archs):
        return False
    return None


def _vocab_bias(ckpt: Checkpoint, vocab: int) -> str | None:
    """Name of a stored ``[vocab]`` / ``[1, vocab]`` bias of an output layer."""
    for t in ckpt.tensors.values():
        if t.role != Role.WEIGHT or tuple(t.shape) not in ((vocab,), (1, vocab)):
            continue
        parts = name_parts(t.name)
        if parts and "bias" in parts[-1] and any(_HEAD_BIAS_RE.search(p) for p in parts):
            return t.name
    return None
