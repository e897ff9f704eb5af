#!/usr/bin/env python
"""Generate tietool/data/tied_weights_keys.json from transformers 5's own classes.

Run with the PyTorch environment (torch 2.13.0 CPU + transformers 5, see
fixtures/requirements-pt.txt); no network, nothing downloaded, about two minutes:

    nice /work/envs/pt/bin/python tools/gen_tied_weights_keys.py > tietool/data/tied_weights_keys.json

Everything in the table is what transformers 5 itself does, found by running it,
never a hand list:

``model_types`` (one per config class of ``CONFIG_MAPPING_NAMES``):
  ``config_class``; ``default``: ``tie_word_embeddings`` of a default-built config
  (what an absent key means; None: the class has no such attribute, and
  ``PreTrainedModel`` then reads it as false); ``forced``: the value the class
  sets whatever it is given (T5's true) or None; ``nested``: for each sub-config
  (``text_config``, ``decoder``, ...) whose flag changes the class's own flag
  (Llava's ``__post_init__`` takes ``text_config``'s true when its own is false),
  ``{"key", "model_type", "table"}``: the flag the class ends with for every
  combination of its own key and the nested one, ``table["<own><nested>"]`` with
  each of ``-`` (absent), ``t``, ``f``.

``architectures`` (every class of the auto mappings with ``_tied_weights_keys``,
plus every LM-head class: causal LM, masked LM, seq2seq LM, image-text-to-text,
multimodal LM, pretraining, speech seq2seq): ``model_type``, ``config_class``,
``tied_weights_keys`` (the class's own ``{target: source}``) and, for LM-head
classes built from their default config on the meta device (no memory, no
weights): ``ties``: every ``PreTrainedModel`` inside the model that ties
(``{"module": prefix, "config": the config path it reads the flag from, "keys":
{target: source} with the prefix}``; an encoder-decoder's decoder reads
``decoder``), ``reads_all``: the config paths of the ties that name the head
(``reads``: the first; None: the class never ties its head), ``input`` and
``output``: the parameter names of ``get_input_embeddings()`` /
``get_output_embeddings()`` and their shapes, ``head``: the shape rule of the
output embedding against the input one (``extra_rows``: rows beyond the
embedding's, ``same_width``), ``built``: false with ``error`` when the class
cannot be built from its default config (its entry then has the class
attributes only).
"""

import json
import sys
import warnings

FLAG = "tie_word_embeddings"
LM_MAPPINGS = ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
               "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
               "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", "MODEL_FOR_PRETRAINING_MAPPING_NAMES",
               "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES")
STATES = {"-": None, "t": True, "f": False}


def _names(mapping: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for model_type, names in mapping.items():
        for name in (names if isinstance(names, (list, tuple)) else [names]):
            out.setdefault(name, model_type)
    return out


def _flag(cfg) -> bool | None:
    value = getattr(cfg, FLAG, None)
    return value if isinstance(value, bool) else None


def _build_config(cls, own: bool | None, nested: str | None = None, nested_value: bool | None = None):
    kwargs: dict = {}
    if own is not None:
        kwargs[FLAG] = own
    if nested is not None and nested_value is not None:
        kwargs[nested] = {FLAG: nested_value}
    return cls(**kwargs)


def config_entry(cls) -> dict | None:
    """What the config class makes of the flag: default, forced value, nested flags that change it."""
    try:
        base = cls()
    except Exception:
        return None
    entry: dict = {"config_class": cls.__name__, "default": _flag(base), "forced": None, "nested": []}
    try:
        seen = {_flag(_build_config(cls, v)) for v in (True, False)}
        if len(seen) == 1 and None not in seen and entry["default"] is not None:
            entry["forced"] = seen.pop()
    except Exception:
        pass
    for key in sorted(getattr(cls, "sub_configs", None) or {}):
        sub = getattr(base, key, None)
        if sub is None or _flag(sub) is None:
            continue
        table = {}
        try:
            for own_s, own in STATES.items():
                for nest_s, nest in STATES.items():
                    table[own_s + nest_s] = _flag(_build_config(cls, own, key, nest))
        except Exception:
            continue
        plain = all(table[o + n] == (STATES[o] if STATES[o] is not None else table["--"])
                    for o in STATES for n in STATES)
        if not plain:
            entry["nested"].append({"key": key, "model_type": getattr(sub, "model_type", None), "table": table})
    return entry


def _config_path(root, target) -> str | None:
    """The path of ``target`` (a config object) inside ``root``: "" for the root itself."""
    if target is root:
        return ""
    stack = [("", root)]
    while stack:
        path, node = stack.pop()
        for key in sorted(getattr(type(node), "sub_configs", None) or {}):
            sub = getattr(node, key, None)
            if sub is None:
                continue
            sub_path = f"{path}.{key}" if path else key
            if sub is target:
                return sub_path
            if sub_path.count(".") < 3:
                stack.append((sub_path, sub))
    return None


def _param_name(model, module) -> tuple[str, list[int]] | None:
    if module is None or getattr(module, "weight", None) is None:
        return None
    for name, sub in model.named_modules(remove_duplicate=False):
        if sub is module:
            return (f"{name}.weight" if name else "weight"), list(module.weight.shape)
    return None


def model_entry(cls) -> dict:
    """Build ``cls`` from its default config on the meta device and read where it ties."""
    import torch
    from transformers import PreTrainedModel

    cfg = cls.config_class()
    with torch.device("meta"):
        model = cls(cfg)
    ties = []
    for prefix, sub in model.named_modules(remove_duplicate=False):
        keys = getattr(sub, "_tied_weights_keys", None) if isinstance(sub, PreTrainedModel) else None
        if isinstance(keys, dict) and keys:
            pre = f"{prefix}." if prefix else ""
            ties.append({"module": prefix, "config": _config_path(model.config, sub.config),
                         "config_class": type(sub.config).__name__,
                         "keys": {pre + k: pre + v for k, v in sorted(keys.items())}})
    entry: dict = {"built": True, "ties": ties, "input": None, "output": None, "head": None, "reads": None}
    found_in = _param_name(model, _call(model, "get_input_embeddings"))
    found_out = _param_name(model, _call(model, "get_output_embeddings"))
    if found_in:
        entry["input"] = {"name": found_in[0], "shape": found_in[1]}
    if found_out:
        entry["output"] = {"name": found_out[0], "shape": found_out[1]}
    if found_in and found_out and len(found_in[1]) == 2 and len(found_out[1]) == 2:
        entry["head"] = {"extra_rows": found_out[1][0] - found_in[1][0],
                         "same_width": found_out[1][1] == found_in[1][1]}
    # the ties of the head: those naming the output embedding (either side: BLT ties the embedding to the
    # head), else, for a head get_output_embeddings does not return, those naming the input embedding. Each
    # reads its own sub-model's config; the head is tied when any of them ties (Kosmos-2: the top level and
    # text_config). None: the class never ties its head (Pop2Piano ties only its encoder/decoder embeddings).
    found = found_out or found_in
    levels = [t["config"] for t in ties if found and found[0] in {*t["keys"], *t["keys"].values()}]
    entry["reads_all"] = list(dict.fromkeys(levels))
    entry["reads"] = levels[0] if levels else None
    return entry


def _call(model, method: str):
    try:
        return getattr(model, method)()
    except Exception:  # NotImplementedError: the class has no such embedding
        return None


def architectures_table(mod_auto, transformers) -> dict:
    every = {}
    for attr in dir(mod_auto):
        if attr.startswith("MODEL_") and attr.endswith("_MAPPING_NAMES"):
            for name, model_type in _names(getattr(mod_auto, attr)).items():
                every.setdefault(name, model_type)
    lm_heads = set()
    for attr in LM_MAPPINGS:
        lm_heads |= set(_names(getattr(mod_auto, attr)))
    out = {}
    for name in sorted(every):
        try:
            cls = getattr(transformers, name)
        except Exception:  # an optional dependency missing: skip the class
            continue
        keys = getattr(cls, "_tied_weights_keys", None)
        if not (isinstance(keys, dict) and keys) and name not in lm_heads:
            continue
        config_class = getattr(cls, "config_class", None)
        entry = {"model_type": getattr(config_class, "model_type", None) or every[name],
                 "config_class": getattr(config_class, "__name__", None),
                 "tied_weights_keys": dict(sorted(keys.items())) if isinstance(keys, dict) else {},
                 "lm_head_mapping": name in lm_heads}
        if name in lm_heads:
            try:
                entry.update(model_entry(cls))
            except Exception as exc:  # a default config that does not build: class attributes only
                entry.update(built=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        out[name] = entry
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    import transformers
    from transformers.models.auto import configuration_auto, modeling_auto
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    model_types = {}
    for model_type, cname in sorted(configuration_auto.CONFIG_MAPPING_NAMES.items()):
        try:
            entry = config_entry(getattr(transformers, cname))
        except Exception:
            entry = None
        if entry is not None:
            model_types[model_type] = entry
    architectures = architectures_table(modeling_auto, transformers)
    json.dump({"transformers": transformers.__version__, "generator": "tools/gen_tied_weights_keys.py",
               "architectures": architectures, "model_types": model_types}, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
