"""Configs are JSON data, never code.

Parsing is size-capped and depth-safe. Nothing here instantiates a class or
decodes a serialized function: a Keras config that carries code (a ``Lambda``
layer's marshalled bytecode, ``__lambda__``, custom objects from modules
outside Keras) is *reported*, by :func:`find_code`, and left alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import CorruptCheckpointError, UnsafeCheckpointError
from .jsontree import walk

MAX_CONFIG_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 200

# Keys that name the vocabulary and hidden sizes across HF and Keras configs.
VOCAB_KEYS = ("vocab_size", "vocabulary_size", "n_vocab", "input_dim", "num_embeddings", "padded_vocab_size")
EMBEDDING_CLASSES = ("Embedding", "ReversibleEmbedding", "TokenAndPositionEmbedding", "SharedEmbeddings",
                     "TFSharedEmbeddings")
HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd", "dim", "embedding_dim", "output_dim", "hidden_dim", "embed_dim",
               "emb_size", "embedding_size")
# Modules whose classes a Keras config may name without that being "custom code".
KERAS_MODULES = ("keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras", "tensorflow")


def parse_json_text(text: str | bytes, label: str) -> Any:
    if isinstance(text, bytes):
        if len(text) > MAX_CONFIG_BYTES:
            raise UnsafeCheckpointError(f"JSON is {len(text)} bytes (limit {MAX_CONFIG_BYTES})", label)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptCheckpointError("not valid UTF-8 JSON", label) from None
    if len(text) > MAX_CONFIG_BYTES:
        raise UnsafeCheckpointError(f"JSON is {len(text)} characters (limit {MAX_CONFIG_BYTES})", label)
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnsafeCheckpointError("JSON nested too deeply", label) from None
    except ValueError as exc:
        raise CorruptCheckpointError(f"invalid JSON ({exc})", label) from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise UnsafeCheckpointError(f"JSON nested deeper than {MAX_DEPTH} levels", label)
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return False


def load_json_file(path: str) -> Any:
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise UnsafeCheckpointError(f"JSON is {size} bytes (limit {MAX_CONFIG_BYTES})", path)
        with open(path, "rb") as fh:
            raw = fh.read(size + 1)  # the size checked above, not the cap: no 64 MB buffer per config
    except IsADirectoryError:
        raise CorruptCheckpointError("is a folder, expected a JSON file", path) from None
    except OSError as exc:
        raise CorruptCheckpointError(f"cannot read ({(exc.strerror or str(exc)).lower()})", path) from None
    return parse_json_text(raw, path)


def load_config_object(path: str) -> dict:
    value = load_json_file(path)
    if not isinstance(value, dict):
        raise CorruptCheckpointError("config is not a JSON object", path)
    return value


# -- reading configs as data ------------------------------------------------------

def find_code(config: Any) -> list[dict]:
    """Places where a Keras config carries code or names custom objects.
    Each: ``{"path": json-path, "what": description}``. Never decoded."""
    found = []
    for p, node in walk(config):
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        if cls == "Lambda":
            found.append({"path": p, "what": "Lambda layer (serialized Python function)"})
        elif cls == "__lambda__":
            found.append({"path": p, "what": "serialized Python function (__lambda__)"})
        elif cls == "function" and isinstance(node.get("config"), str) and node.get("module") not in (None, "builtins"):
            module = node.get("module")
            if not _keras_module(module):
                found.append({"path": p, "what": f"function {node.get('config')!r} from module {module!r}"})
        if isinstance(cls, str) and "module" in node:
            module = node.get("module")
            if isinstance(module, str) and not _keras_module(module) and cls not in ("function", "__lambda__"):
                found.append({"path": p, "what": f"custom object {cls!r} from module {module!r}"})
        reg = node.get("registered_name")
        if isinstance(reg, str) and ">" in reg and not reg.startswith(("keras", "keras_hub", "keras_nlp")):
            found.append({"path": p, "what": f"custom registered object {reg!r}"})
    # A Keras 2 Lambda keeps its bytecode as a list under "function".
    return _dedupe(found)


def _keras_module(module: Any) -> bool:
    return isinstance(module, str) and (module.split(".")[0] in KERAS_MODULES)


def _dedupe(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for it in items:
        key = (it["path"], it["what"])
        if key not in seen:
            seen.add(key)
            out.append(it)
    return out


def is_hf_config(config: Any) -> bool:
    return isinstance(config, dict) and (
        "model_type" in config or "architectures" in config or "transformers_version" in config)


def _first_int(config: dict, keys: tuple[str, ...]) -> int | None:
    for k in keys:
        v = config.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def highlights(config: Any) -> dict:
    """The few things people look for first, from any config kind."""
    out: dict[str, Any] = {}
    if not isinstance(config, dict):
        return out
    if is_hf_config(config):
        out["kind"] = "transformers"
        if "model_type" in config:
            out["model_type"] = config.get("model_type")
        if isinstance(config.get("architectures"), list):
            out["architectures"] = config["architectures"]
        cfg = config
        # Encoder-decoder / multimodal configs keep the sizes in a text sub-config.
        for sub in ("text_config", "decoder"):
            if _first_int(cfg, VOCAB_KEYS) is None and isinstance(config.get(sub), dict):
                cfg = config[sub]
        out["vocab_size"] = _first_int(cfg, VOCAB_KEYS)
        out["hidden_size"] = _first_int(cfg, HIDDEN_KEYS)
        return out  # the tie flag: tietool.ties.declaration, its one reader
    out["kind"] = "keras"
    cls = config.get("class_name")
    if cls:
        out["class_name"] = cls
    if config.get("module"):
        out["module"] = config.get("module")
    embeds = keras_embeddings(config)
    if embeds:
        out["embeddings"] = embeds
        first = embeds[0]
        out["vocab_size"] = first.get("vocab_size")
        out["hidden_size"] = first.get("hidden_size")
    # keras-hub backbones serialize their constructor arguments, not their
    # layers: the sizes are plain keys somewhere in the tree; the tie, soft
    # cap and dtype policy are read by tietool.kerashub.
    from . import kerashub

    hub = kerashub.read_config(config)
    if hub is not None:
        out["kerashub"] = hub.to_json()
    if out.get("vocab_size") is None:
        out["vocab_size"] = _find_int_anywhere(config, VOCAB_KEYS)
    if out.get("hidden_size") is None:
        out["hidden_size"] = _find_int_anywhere(config, HIDDEN_KEYS)
    return out


def _find_int_anywhere(config: Any, keys: tuple[str, ...]) -> int | None:
    for _, node in walk(config):
        if isinstance(node, dict):
            found = _first_int(node, keys)
            if found is not None:
                return found
    return None


def keras_embeddings(config: Any) -> list[dict]:
    """Embedding-like layers in a Keras config: name, class, sizes, tie_weights."""
    out = []
    for p, node in walk(config):
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        cfg = node.get("config")
        if not isinstance(cls, str) or not isinstance(cfg, dict):
            continue
        if cls in EMBEDDING_CLASSES or (
            "input_dim" in cfg and "output_dim" in cfg
        ):
            vocab = cfg.get("input_dim", cfg.get("vocabulary_size", cfg.get("vocab_size")))
            hidden = cfg.get("output_dim", cfg.get("embedding_dim", cfg.get("hidden_size")))
            out.append(
                {
                    "path": p,
                    "class_name": cls,
                    "name": cfg.get("name") or node.get("name"),
                    "vocab_size": vocab if isinstance(vocab, int) else None,
                    "hidden_size": hidden if isinstance(hidden, int) else None,
                    "tie_weights": cfg.get("tie_weights") if isinstance(cfg.get("tie_weights"), bool) else None,
                }
            )
    return out
