"""A Hugging Face byte-level BPE ``tokenizer.json`` -> a keras-hub preset's tokenizer (the way back).

Written: ``assets/tokenizer/vocabulary.json`` (``{token: id}``, the added tokens included) and
``merges.txt`` (one ``a b`` per line), which keras-hub's ``BytePairTokenizer`` reads, and
``tokenizer.json``, keras-hub's serialization of its tokenizer class (the family's
:attr:`~.families.Family.tokenizer`, its special tokens as ``unsplittable_tokens``).
``CausalLM.from_preset`` builds the family's default preprocessor from it. Gemma's and Mistral's
(transformers' SentencePiece-BPE form) become ``assets/tokenizer/vocabulary.spm``, a SentencePiece
model written from the vocabulary and the merges' order (:func:`.spm.spm_model`). Any other kind is
left out, with a note.
"""

from __future__ import annotations

import json
import os

from tietool.errors import ConversionError

from .families import Family
from .spm import spm_model
from .tokenizer import MAX_ASSET_BYTES

ASSETS = "assets/tokenizer"
SENTENCEPIECE = ("GemmaTokenizer", "Gemma3Tokenizer", "MistralTokenizer")


def _hf_tokenizer(folder: str) -> dict | None:
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    if os.path.getsize(path) > MAX_ASSET_BYTES:
        raise ConversionError(f"tokenizer.json is larger than {MAX_ASSET_BYTES} bytes", path)
    try:
        with open(path, encoding="utf-8") as fh:
            tok = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"tokenizer.json is not JSON ({exc})", path) from None
    return tok if isinstance(tok, dict) else None


def _byte_level(tok: dict) -> bool:
    pre = tok.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if isinstance(pre, dict) else []
    return any(isinstance(p, dict) and p.get("type") == "ByteLevel" for p in parts)


def _policy(name: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def _keras_config(fam: Family, extra: dict) -> dict[str, str]:
    """keras-hub's ``tokenizer.json`` and ``preprocessor.json`` (the family's CausalLM preprocessor
    with keras-hub's defaults: sequence length 1024, start and end tokens) for the tokenizer class."""
    assert fam.tokenizer is not None
    package, backbone_module = fam.module.rsplit(".", 1)
    stem = backbone_module[:-len("_backbone")]
    base = fam.tokenizer[:-len("Tokenizer")]
    tokenizer = {"module": f"{package}.{stem}_tokenizer", "class_name": fam.tokenizer,
                 "config": {"name": f"{stem}_tokenizer", "trainable": True, "dtype": _policy("int32"),
                            "config_file": "tokenizer.json", **extra},
                 "registered_name": f"keras_hub>{fam.tokenizer}"}
    pre = {"module": f"{package}.{stem}_causal_lm_preprocessor", "class_name": f"{base}CausalLMPreprocessor",
           "config": {"name": f"{stem}_causal_lm_preprocessor", "trainable": True, "dtype": _policy("float32"),
                      "tokenizer": tokenizer, "config_file": "preprocessor.json", "sequence_length": 1024,
                      "add_start_token": True, "add_end_token": True},
           "registered_name": f"keras_hub>{base}CausalLMPreprocessor"}
    return {"tokenizer.json": json.dumps(tokenizer, indent=4) + "\n",
            "preprocessor.json": json.dumps(pre, indent=4) + "\n"}


def kerashub_tokenizer(folder: str, fam: Family) -> tuple[dict[str, str | bytes], str | None]:
    """``({relative path: text or bytes}, note)`` of the preset's tokenizer files for the
    transformers ``folder``; no files (and a note saying why) when it cannot be written."""
    tok = _hf_tokenizer(folder)
    if tok is None:
        return {}, "no tokenizer.json in the source folder: no tokenizer in the preset"
    model = tok.get("model") or {}
    if fam.tokenizer is None or model.get("type") != "BPE":
        return {}, f"tokenizer not written: keras-hub {fam.backbone} has no tokenizer of this kind"
    if fam.tokenizer in SENTENCEPIECE:
        proto = spm_model(tok)
        if proto is None:
            return {}, f"tokenizer not written: keras-hub {fam.tokenizer} needs a SentencePiece-style BPE"
        extra: dict = {"proto": None, "sequence_length": None, "add_bos": False, "add_eos": False}
        if fam.tokenizer == "Gemma3Tokenizer":
            vision = ("<img>", "<start_of_image>", "<end_of_image>")
            extra["has_vision_tokens"] = all(t in (model.get("vocab") or {}) for t in vision)
        return {f"{ASSETS}/vocabulary.spm": proto, **_keras_config(fam, extra)}, None
    if not _byte_level(tok):
        return {}, f"tokenizer not written: keras-hub {fam.tokenizer} needs a byte-level BPE"
    vocab = dict(model.get("vocab") or {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    specials = []
    for t in tok.get("added_tokens") or []:
        vocab.setdefault(t["content"], t["id"])
        if t.get("special"):
            specials.append(t["content"])
    pre = tok.get("pre_tokenizer") or {}
    prefix = any(isinstance(p, dict) and p.get("add_prefix_space") for p in pre.get("pretokenizers", [pre]))
    extra = {"sequence_length": None, "add_prefix_space": prefix, "unsplittable_tokens": specials}
    return {f"{ASSETS}/vocabulary.json": json.dumps(vocab, ensure_ascii=False) + "\n",
            f"{ASSETS}/merges.txt": "\n".join(merges) + "\n", **_keras_config(fam, extra)}, None
