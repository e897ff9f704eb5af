"""A keras-hub preset's tokenizer -> Hugging Face ``tokenizer.json`` + ``tokenizer_config.json``.

keras-hub's own ``tokenizer.json`` is a Keras serialization (class name and constructor
arguments), not a Hugging Face tokenizer: it is read as data (which class, which special tokens)
and never copied under that name. The vocabulary is in the preset's assets:

* byte-level BPE (GPT-2, Llama 3, Qwen2, Qwen3): ``assets/tokenizer/vocabulary.json`` +
  ``merges.txt`` -> a ``BPE`` model with byte-level pre-tokenisation. The split pattern is the one
  keras-hub's ``BytePairTokenizer`` uses outside TensorFlow (Llama 3's) for Llama 3 and Qwen, and
  GPT-2's own for GPT-2 (what keras-hub's TensorFlow path reproduces);
* SentencePiece (Gemma, Mistral): ``assets/tokenizer/vocabulary.spm`` is read by
  :mod:`.spm` (its protobuf fields parsed here, no sentencepiece or protobuf needed).

Written as JSON by hand: neither ``tokenizers`` nor ``transformers`` is needed at run time; what
``AutoTokenizer`` makes of it is tested against keras-hub's ids in tests/interop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from tietool.errors import ConversionError

ASSETS = os.path.join("assets", "tokenizer")
MAX_ASSET_BYTES = 512 * 1024 * 1024

#: keras-hub's BytePairTokenizer split outside TensorFlow (byte_pair_tokenizer.SPLIT_PATTERN_TOKENIZERS).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class TokenizerKind:
    model: str  # "bpe" or "spm"
    split: str | None = None  # a Split regex before byte-level (None: GPT-2's byte-level regex)
    bos: str | None = None
    eos: str | None = None
    pad: str | None = None
    unk: str | None = None
    add_bos: bool = False  # what the family's transformers tokenizer does


#: keras-hub tokenizer class -> how transformers' tokenizer of the family behaves.
KINDS = {
    "GPT2Tokenizer": TokenizerKind("bpe", None, "<|endoftext|>", "<|endoftext|>", None, "<|endoftext|>"),
    "Llama3Tokenizer": TokenizerKind("bpe", LLAMA3_SPLIT, "<|begin_of_text|>", "<|end_of_text|>", add_bos=True),
    "QwenTokenizer": TokenizerKind("bpe", LLAMA3_SPLIT, None, "<|endoftext|>", "<|endoftext|>"),
    "Qwen3Tokenizer": TokenizerKind("bpe", LLAMA3_SPLIT, None, "<|im_end|>", "<|endoftext|>"),
    "GemmaTokenizer": TokenizerKind("spm", None, "<bos>", "<eos>", "<pad>", "<unk>", add_bos=True),
    "Gemma3Tokenizer": TokenizerKind("spm", None, "<bos>", "<eos>", "<pad>", "<unk>", add_bos=True),
    "MistralTokenizer": TokenizerKind("spm", None, "<s>", "</s>", None, "<unk>", add_bos=True),
}


@dataclass(frozen=True)
class HfTokenizer:
    files: dict[str, str]  # file name -> text
    special_ids: dict[str, int]  # bos_token_id / eos_token_id / pad_token_id


def _read_json(path: str, what: str) -> Any:
    if os.path.getsize(path) > MAX_ASSET_BYTES:
        raise ConversionError(f"{what} is larger than {MAX_ASSET_BYTES} bytes", path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{what} is not JSON ({exc})", path) from None


def keras_tokenizer(preset: str) -> tuple[str, dict] | None:
    """(class name, config) of the preset's keras-hub tokenizer; None when it has none."""
    path = os.path.join(preset, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    obj = _read_json(path, "tokenizer.json")
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict):
        raise ConversionError("tokenizer.json is not a keras-hub tokenizer config", path)
    return str(obj.get("class_name")), obj["config"]


def _added(tokens: list[str], vocab: dict[str, int]) -> list[dict]:
    return [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for t in sorted(tokens, key=lambda t: vocab[t])]


def _bpe(preset: str, kind: TokenizerKind, cfg: dict) -> tuple[dict, dict[str, int]]:
    folder = os.path.join(preset, ASSETS)
    vocab = _read_json(os.path.join(folder, "vocabulary.json"), "vocabulary.json")
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ConversionError("vocabulary.json is not {token: id}", folder)
    with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as fh:
        lines = [ln.rstrip("\n") for ln in fh]
    merges = [ln.split(" ") for ln in lines if ln and not ln.lstrip().startswith("#version")]
    if any(len(m) != 2 for m in merges):
        raise ConversionError("merges.txt: a line that is not two tokens", folder)
    specials = [t for t in cfg.get("unsplittable_tokens") or [] if t in vocab]
    byte_level = {"type": "ByteLevel", "add_prefix_space": bool(cfg.get("add_prefix_space", False)),
                  "trim_offsets": True, "use_regex": kind.split is None}
    pre: dict = byte_level if kind.split is None else {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": kind.split}, "behavior": "Isolated", "invert": False}, byte_level]}
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": _added(specials, vocab),
        "normalizer": None, "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    return tok, vocab


def _with_bos(tok: dict, bos: str, bos_id: int) -> dict:
    """Prepend ``bos`` as the family's transformers tokenizer does (``add_special_tokens=True``)."""
    template = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}
    post = tok.get("post_processor")
    tok["post_processor"] = template if post is None else {"type": "Sequence", "processors": [post, template]}
    return tok


def convert_tokenizer(preset: str) -> HfTokenizer | None:
    """The Hugging Face tokenizer files of ``preset``; None when the preset has no tokenizer."""
    found = keras_tokenizer(preset)
    if found is None:
        return None
    cls, cfg = found
    kind = KINDS.get(cls)
    if kind is None:
        raise ConversionError(f"keras-hub {cls} has no Hugging Face tokenizer conversion in tietool yet "
                              f"(supported: {', '.join(sorted(KINDS))})", os.path.join(preset, "tokenizer.json"))
    if kind.model == "bpe":
        tok, vocab = _bpe(preset, kind, cfg)
    else:
        from .spm import spm_tokenizer

        tok, vocab = spm_tokenizer(os.path.join(preset, ASSETS, "vocabulary.spm"))
    wanted = {"bos_token": kind.bos, "eos_token": kind.eos, "pad_token": kind.pad, "unk_token": kind.unk}
    roles: dict[str, str] = {k: v for k, v in wanted.items() if v is not None and v in vocab}
    if kind.add_bos and "bos_token" in roles:
        tok = _with_bos(tok, roles["bos_token"], vocab[roles["bos_token"]])
    extra = [t["content"] for t in tok["added_tokens"]]
    for t in roles.values():
        if t not in extra:
            tok["added_tokens"] = sorted(tok["added_tokens"] + _added([t], vocab), key=lambda d: d["id"])
            extra.append(t)
    config = {"backend": "tokenizers", "tokenizer_class": "TokenizersBackend", "model_max_length": 10**30,
              "add_bos_token": kind.add_bos, **roles}
    files = {"tokenizer.json": json.dumps(tok, ensure_ascii=False, indent=1) + "\n",
             "tokenizer_config.json": json.dumps(config, indent=2, sort_keys=True) + "\n"}
    ids = {k.replace("_token", "_token_id"): vocab[v] for k, v in roles.items() if k != "unk_token"}
    return HfTokenizer(files, ids)
