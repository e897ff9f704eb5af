"""What transformers 5 itself says about tied weights, as committed data.

``tietool/data/tied_weights_keys.json`` is generated from transformers 5's own
classes by ``tools/gen_tied_weights_keys.py`` (run in the PyTorch environment):
for each model class its ``_tied_weights_keys`` (``{target: source}``), and for
each model type the value of ``tie_word_embeddings`` that an absent key means.
"""

from __future__ import annotations

import functools
import json
import os

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


def tied_weights_keys(architecture: object) -> dict[str, str]:
    """``{target: source}`` of the transformers 5 class named ``architecture``."""
    if not isinstance(architecture, str):
        return {}
    name = architecture[2:] if architecture.startswith("TF") else architecture
    entry = table()["architectures"].get(name)
    return dict(entry["tied_weights_keys"]) if entry else {}


def head_name(architecture: object) -> tuple[str, str] | None:
    """``(head, embedding)`` PyTorch names of the output matrix the class ties
    (``("lm_head.weight", "model.embed_tokens.weight")``), or None."""
    from tietool.ties.rules import classify

    for target, source in tied_weights_keys(architecture).items():
        if target.endswith(".weight") and classify(target) == "decoder":
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
