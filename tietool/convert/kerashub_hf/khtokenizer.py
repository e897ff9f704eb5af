"""A Hugging Face byte-level BPE ``tokenizer.json`` -> a keras-hub preset's tokenizer (the way back).

Written: ``assets/tokenizer/vocabulary.json`` (``{token: id}``, the added tokens included) and
``merges.txt`` (one ``a b`` per line), which keras-hub's ``BytePairTokenizer`` reads, and
``tokenizer.json``, keras-hub's serialization of its tokenizer class (the family's
:attr:`~.families.Family.tokenizer`, its special tokens as ``unsplittable_tokens``).
``CausalLM.from_preset`` builds the family's default preprocessor from it. A tokenizer that is not
byte-level BPE (SentencePiece-style, Gemma and Mistral) is left out, with a note: keras-hub would need
its ``vocabulary.spm``, which a ``tokenizer.json`` does not hold.
"""

from __future__ import annotations

import json
import os

from tietool.errors import ConversionError

from .families import Family
from .tokenizer import MAX_ASSET_BYTES

ASSETS = "assets/tokenizer"


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


def kerashub_tokenizer(folder: str, fam: Family) -> tuple[dict[str, str], str | None]:
    """``({relative path: text}, note)`` of the preset's tokenizer files for the transformers
    ``folder``; no files (and a note saying why) when it cannot be written."""
    tok = _hf_tokenizer(folder)
    if tok is None:
        return {}, "no tokenizer.json in the source folder: no tokenizer in the preset"
    model = tok.get("model") or {}
    if fam.tokenizer is None or model.get("type") != "BPE" or not _byte_level(tok):
        return {}, (f"tokenizer not written: keras-hub {fam.backbone}'s tokenizer needs a SentencePiece model "
                    "(vocabulary.spm), which tokenizer.json does not hold")
    vocab = dict(model.get("vocab") or {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    specials = []
    for t in tok.get("added_tokens") or []:
        vocab.setdefault(t["content"], t["id"])
        if t.get("special"):
            specials.append(t["content"])
    module = fam.module.rsplit(".", 1)[0] + "." + fam.module.rsplit(".", 1)[1].replace("_backbone", "_tokenizer")
    snake = fam.backbone[:-len("Backbone")].lower() + "_tokenizer"
    pre = tok.get("pre_tokenizer") or {}
    prefix = any(isinstance(p, dict) and p.get("add_prefix_space") for p in pre.get("pretokenizers", [pre]))
    config = {"module": module, "class_name": fam.tokenizer,
              "config": {"name": snake, "trainable": True,
                         "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int32"},
                                   "registered_name": None},
                         "config_file": "tokenizer.json", "sequence_length": None, "add_prefix_space": prefix,
                         "unsplittable_tokens": specials},
              "registered_name": f"keras_hub>{fam.tokenizer}"}
    files = {f"{ASSETS}/vocabulary.json": json.dumps(vocab, ensure_ascii=False) + "\n",
             f"{ASSETS}/merges.txt": "\n".join(merges) + "\n",
             "tokenizer.json": json.dumps(config, indent=4) + "\n"}
    return files, None
