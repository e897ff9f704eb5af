#!/usr/bin/env python
"""Generate tietool/data/tied_weights_keys.json from transformers 5's own classes.

Run with the PyTorch environment (torch 2.13.0 + transformers 5.24.0, see
fixtures/requirements-pt.txt); no network, nothing downloaded:

    /work/venv-pt/bin/python tools/gen_tied_weights_keys.py > tietool/data/tied_weights_keys.json

For every model class in transformers' auto mappings: its ``_tied_weights_keys``
(``{target: source}``, e.g. ``{"lm_head.weight": "model.embed_tokens.weight"}``)
and its model_type; for every config class: the value of ``tie_word_embeddings``
a default-constructed config has (what an absent key means for that model type),
and whether a config built with ``tie_word_embeddings=False`` still says true
(the flag is forced, as T5's is in transformers 5).
"""

import json
import sys
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    import transformers
    from transformers.models.auto import configuration_auto, modeling_auto
    from transformers.utils import logging

    logging.set_verbosity_error()
    arch_types: dict[str, str] = {}
    for attr in dir(modeling_auto):
        if not (attr.startswith("MODEL_") and attr.endswith("_MAPPING_NAMES")):
            continue
        for model_type, names in getattr(modeling_auto, attr).items():
            for name in (names if isinstance(names, (list, tuple)) else [names]):
                arch_types.setdefault(name, model_type)
    architectures = {}
    for name in sorted(arch_types):
        try:
            cls = getattr(transformers, name)
        except Exception:  # an optional dependency missing: skip the class
            continue
        keys = getattr(cls, "_tied_weights_keys", None)
        if isinstance(keys, dict) and keys:
            model_type = getattr(getattr(cls, "config_class", None), "model_type", None) or arch_types[name]
            architectures[name] = {"model_type": model_type, "tied_weights_keys": dict(sorted(keys.items()))}
    model_types = {}
    for model_type, cname in sorted(configuration_auto.CONFIG_MAPPING_NAMES.items()):
        entry = {}
        try:
            cfg_cls = getattr(transformers, cname)
            default = getattr(cfg_cls(), "tie_word_embeddings", None)
            entry["default"] = default if isinstance(default, bool) else None
            try:
                forced = getattr(cfg_cls(tie_word_embeddings=False), "tie_word_embeddings", None)
                entry["forced_true"] = forced is True
            except Exception:
                entry["forced_true"] = False
        except Exception:
            continue
        model_types[model_type] = entry
    json.dump({"transformers": transformers.__version__, "generator": "tools/gen_tied_weights_keys.py",
               "architectures": architectures, "model_types": model_types}, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
