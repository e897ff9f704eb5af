"""A SentencePiece model (``vocabulary.spm``) -> a Hugging Face ``tokenizer.json``, read as bytes.

The model is a protobuf ``ModelProto``; the few fields used are parsed here from the wire format
(no ``sentencepiece``, no ``protobuf``): ``pieces`` (1: piece 1, score 2, type 3),
``trainer_spec`` (2: model_type 3, byte_fallback 35) and ``normalizer_spec`` (3: name 1,
precompiled_charsmap 2, add_dummy_prefix 3, remove_extra_whitespaces 4).

A BPE model becomes transformers' BPE form of it (as its Llama/Gemma converters do): ``▁`` for
spaces (and one prepended with ``add_dummy_prefix``), merges ordered by the score of the merged
piece, control and user-defined pieces as added tokens, ``<unk>`` fused, byte fallback as the
model says. A unigram model becomes a ``Unigram`` model with its scores. A normaliser other than
identity (a precompiled charsmap) is refused: transformers would need the charsmap's rules.
"""

from __future__ import annotations

import json
import struct

from tietool.errors import ConversionError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
MAX_BYTES = 256 * 1024 * 1024


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, object]]:
    """``(field number, wire type, value)`` of one protobuf message (value: int or bytes)."""
    out: list[tuple[int, int, object]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        value: object
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated field")
        out.append((num, wire, value))
    return out


def _one(msg: bytes, num: int, default: object) -> object:
    found = [v for n, _w, v in fields(msg) if n == num]
    return found[-1] if found else default


def read_model(path: str) -> dict:
    """``{"pieces": [(piece, score, type)], "model_type", "byte_fallback", "add_dummy_prefix",
    "normalizer", "charsmap", "remove_extra_whitespaces"}``."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConversionError(f"larger than {MAX_BYTES} bytes", path)
    try:
        top = fields(data)
        pieces = []
        for n, w, v in top:
            if n == 1 and w == 2:
                assert isinstance(v, bytes)
                piece = _one(v, 1, b"")
                score = _one(v, 2, b"\0\0\0\0")
                ptype = _one(v, 3, NORMAL)
                assert isinstance(piece, bytes) and isinstance(score, bytes) and isinstance(ptype, int)
                pieces.append((piece.decode("utf-8"), struct.unpack("<f", score)[0], ptype))
        trainer = next((v for n, w, v in top if n == 2 and w == 2), b"")
        norm = next((v for n, w, v in top if n == 3 and w == 2), b"")
        assert isinstance(trainer, bytes) and isinstance(norm, bytes)
        name = _one(norm, 1, b"")
        charsmap = _one(norm, 2, b"")
        assert isinstance(name, bytes) and isinstance(charsmap, bytes)
        return {"pieces": pieces, "model_type": _one(trainer, 3, 1), "byte_fallback": bool(_one(trainer, 35, 0)),
                "add_dummy_prefix": bool(_one(norm, 3, 1)), "remove_extra_whitespaces": bool(_one(norm, 4, 1)),
                "normalizer": name.decode("utf-8", "replace"), "charsmap": len(charsmap)}
    except (ValueError, AssertionError, UnicodeDecodeError, struct.error) as exc:
        raise ConversionError(f"not a SentencePiece model ({exc})", path) from None


def _merges(pieces: list[tuple[str, float, int]], vocab: dict[str, int]) -> list[list[str]]:
    """transformers' SentencePieceExtractor: every split of a piece into two pieces, ordered by
    the merged piece's score (then by the parts' ids)."""
    found = []
    for piece, score, ptype in pieces:
        if ptype != NORMAL:
            continue
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        found += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
    found.sort(key=lambda m: m[2], reverse=True)
    return [[a, b] for a, b, _s in found]


def spm_tokenizer(path: str) -> tuple[dict, dict[str, int]]:
    """``(tokenizer.json as a dict, vocabulary)`` of the SentencePiece model at ``path``."""
    m = read_model(path)
    if m["charsmap"] or m["normalizer"] not in ("identity", ""):
        raise ConversionError(f"SentencePiece normaliser {m['normalizer']!r} (a precompiled charsmap) is not "
                              "converted: only identity normalisation is", path)
    if m["remove_extra_whitespaces"]:
        raise ConversionError("SentencePiece remove_extra_whitespaces=true is not converted", path)
    pieces = m["pieces"]
    vocab = {p: i for i, (p, _s, _t) in enumerate(pieces)}
    unk = next((p for p, _s, t in pieces if t == UNKNOWN), None)
    special = [p for p, _s, t in pieces if t in (CONTROL, UNKNOWN)]
    user = [p for p, _s, t in pieces if t == USER_DEFINED]
    added = [{"id": vocab[p], "content": p, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": p in special} for p in sorted(special + user, key=vocab.__getitem__)]
    norm = [{"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]
    decode = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
              {"type": "Fuse"}]
    if m["add_dummy_prefix"]:
        norm.insert(0, {"type": "Prepend", "prepend": "\u2581"})
        decode.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    if m["model_type"] == 2:  # BPE
        model = {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": m["byte_fallback"],
                 "ignore_merges": False, "vocab": vocab, "merges": _merges(pieces, vocab)}
    elif m["model_type"] == 1:  # unigram
        model = {"type": "Unigram", "unk_id": vocab.get(unk) if unk else None,
                 "vocab": [[p, s] for p, s, _t in pieces], "byte_fallback": m["byte_fallback"]}
    else:
        raise ConversionError(f"SentencePiece model type {m['model_type']} (word/char) is not converted", path)
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": {"type": "Sequence", "normalizers": norm}, "pre_tokenizer": None, "post_processor": None,
           "decoder": {"type": "Sequence", "decoders": decode}, "model": model}
    return tok, vocab


# -- the way back: a tokenizer.json BPE model -> a SentencePiece model --------------------------

def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value: bytes | int | float | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return _varint_bytes(num << 3 | 2) + _varint_bytes(len(value)) + value
    if isinstance(value, float):
        return _varint_bytes(num << 3 | 5) + struct.pack("<f", value)
    return _varint_bytes(num << 3) + _varint_bytes(int(value))


def spm_model(tok: dict) -> bytes | None:
    """The SentencePiece ``ModelProto`` of a ``tokenizer.json`` in transformers' SentencePiece-BPE
    form (``▁`` for spaces, merges ranked by score; :func:`spm_tokenizer` read backwards), or None
    for any other tokenizer. Scores: the piece made by the k-th merge scores ``-k`` (SentencePiece
    merges the best-scored piece first); other pieces score below every merge."""
    model = tok.get("model") or {}
    norm = json.dumps(tok.get("normalizer"), ensure_ascii=False)
    if model.get("type") != "BPE" or "\u2581" not in norm:
        return None
    vocab: dict[str, int] = model.get("vocab") or {}
    merges = [m.split(" ") if isinstance(m, str) else m for m in model.get("merges") or []]
    rank: dict[str, int] = {}
    for k, (a, b) in enumerate(merges):
        rank.setdefault(a + b, k)
    added = {t["content"]: t for t in tok.get("added_tokens") or []}
    unk = model.get("unk_token")
    pieces = b""
    for piece, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        if piece == unk:
            ptype, score = UNKNOWN, 0.0
        elif piece in added:
            ptype, score = (CONTROL if added[piece].get("special") else USER_DEFINED), 0.0
        elif model.get("byte_fallback") and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            ptype, score = BYTE, 0.0
        else:
            ptype = NORMAL
            score = -float(rank[piece]) if piece in rank else -float(len(merges) + i)
        pieces += _field(1, _field(1, piece) + _field(2, score) + _field(3, ptype))
    trainer = _field(3, 2) + _field(35, 1 if model.get("byte_fallback") else 0)
    normalizer = (_field(1, "identity") + _field(3, 1 if '"Prepend"' in norm else 0) + _field(4, 0)
                  + _field(5, 1))
    return pieces + _field(2, trainer) + _field(3, normalizer)
