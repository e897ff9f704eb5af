"""What transformers 5 itself decides about the tie, for many config folders, in ONE interpreter.

    python tests/interop/pt_tie_oracle.py FOLDERS.json

FOLDERS.json: a list of folders with a config.json. For each: the config as transformers 5 reads it
(``AutoConfig.from_pretrained``), the model class named by ``architectures`` built from it on the meta
device (no memory, no weights), and whether ``get_expanded_tied_weights_keys(all_submodels=True)`` (the
mapping ``from_pretrained`` ties with) ties the output embedding: true / false, or null with the reason
when the class cannot be built. Prints one JSON object {folder: {"tied", "class", "error"}}.
Needs torch + transformers 5 only; nothing downloaded.
"""

import json
import os
import sys
import warnings


def _name(model, module):
    if module is None or getattr(module, "weight", None) is None:
        return None
    return next((f"{n}.weight" if n else "weight" for n, m in model.named_modules(remove_duplicate=False)
                 if m is module), None)


def decide(folder: str) -> dict:
    import torch
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(folder)
    arch = (getattr(cfg, "architectures", None) or [None])[0]
    cls = getattr(transformers, str(arch), None)
    if cls is None:
        return {"tied": None, "class": arch, "error": "class unknown to transformers"}
    with torch.device("meta"):
        model = cls(cfg)
    tied = model.get_expanded_tied_weights_keys(all_submodels=True)
    names = {*tied, *tied.values()}
    out = _name(model, model.get_output_embeddings())
    if out is None:
        return {"tied": None, "class": arch, "error": "no output embedding"}
    return {"tied": out in names, "class": arch, "error": None}


def main() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    with open(sys.argv[1]) as fh:
        folders = json.load(fh)
    out = {}
    for folder in folders:
        try:
            out[folder] = decide(folder)
        except Exception as exc:  # a config the class cannot be built from: said, not hidden
            out[folder] = {"tied": None, "class": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
