"""What transformers 5 itself says about tied weights, as committed data.

``tietool/data/tied_weights_keys.json`` is generated from transformers 5's own
classes by ``tools/gen_tied_weights_keys.py`` (run in the PyTorch environment;
its docstring describes every field): for each model class its
``_tied_weights_keys`` (``{target: source}``), the config level its head's tie
reads, its input and output embedding names and the head's shape rule; for
each config class the default of ``tie_word_embeddings``, a forced value, and
the nested flags that change it. :mod:`tietool.ties.declaration` applies it.
"""

from __future__ import annotations

import functools
import json
import os
import re

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "tied_weights_keys.json")


@functools.lru_cache(maxsize=1)
def table() -> dict:
    with open(DATA, encoding="utf-8") as fh:
        return json.load(fh)


def default_tie(model_type: object) -> bool | None:
    """What an absent ``tie_word_embeddings`` means for ``model_type`` in
    transformers 5 (None: unknown model type or no such flag)."""
    if not isinstance(model_type, str):
        return None
    value = table()["model_types"].get(model_type, {}).get("default")
    return value if isinstance(value, bool) else None


def architecture_entry(architectures: object) -> tuple[str | None, dict | None]:
    """The first of ``architectures`` (a config's list) that transformers 5
    knows, and its entry: ``(name, entry)``, or ``(None, None)``."""
    if not isinstance(architectures, list):
        return None, None
    known = table()["architectures"]
    for arch in architectures:
        if isinstance(arch, str):
            name = arch[2:] if arch.startswith("TF") and arch[2:] in known else arch
            if name in known:
                return name, known[name]
    return None, None


@functools.lru_cache(maxsize=None)
def _by_config_class() -> dict[str, dict]:
    return {e["config_class"]: e for e in table()["model_types"].values() if e.get("config_class")}


def config_class_entry(name: object) -> dict | None:
    """The ``model_types`` entry of the config class called ``name``."""
    return _by_config_class().get(name) if isinstance(name, str) else None


def tied_weights_keys(architecture: object) -> dict[str, str]:
    """``{target: source}`` of the transformers 5 class named ``architecture``."""
    if not isinstance(architecture, str):
        return {}
    name = architecture[2:] if architecture.startswith("TF") else architecture
    entry = table()["architectures"].get(name)
    return dict(entry["tied_weights_keys"]) if entry else {}


def head_name(architecture: object) -> tuple[str, str] | None:
    """``(head, embedding)`` PyTorch names of the output matrix the class ties
    (``("lm_head.weight", "model.embed_tokens.weight")``), or None: the
    class's ``get_output_embeddings()`` when it is a tied target, else the
    tied target that is not another embedding (T5 also ties
    ``encoder.embed_tokens.weight``)."""
    keys = tied_weights_keys(architecture)
    name = architecture[2:] if isinstance(architecture, str) and architecture.startswith("TF") else architecture
    entry = table()["architectures"].get(name) if isinstance(name, str) else None
    for tie in (entry or {}).get("ties") or []:  # the sub-models' ties too (an encoder-decoder's decoder)
        keys = {**tie.get("keys", {}), **keys}
    output = ((entry or {}).get("output") or {}).get("name")
    if output in keys:
        return output, keys[output]
    for target, source in keys.items():
        if target.endswith(".weight") and "embed" not in target and re.search(r"embed|shared|wte|word|tok", source):
            return target, source
    return None


def with_explicit_head(config: object, entries: list) -> list:
    """``convert --names pt --head explicit``: ``entries`` (objects with a
    ``pt_name``, dataclasses) plus the architecture's tied head as a copy of its
    embedding entry, when the head is not already there."""
    import dataclasses

    archs = config.get("architectures") if isinstance(config, dict) else None
    pair = head_name(archs[0]) if isinstance(archs, list) and archs else None
    if pair is None:
        return entries
    head, emb = pair
    names = {e.pt_name for e in entries}
    source = next((e for e in entries if e.pt_name == emb), None)
    if head in names or source is None:
        return entries
    return [*entries, dataclasses.replace(source, pt_name=head)]
