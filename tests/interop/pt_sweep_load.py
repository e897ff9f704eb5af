"""Load sweep checkpoints with transformers 5 in ONE interpreter and take their logits the way the sweep took
the originals' (fixtures/make_pt_sweep.py ``logits_of``: the forward on the reference ids, or the head on the
embedded ids).

    python tests/interop/pt_sweep_load.py JOBS.json

JOBS.json: a list of ``{"folder", "ref", "kind"}`` (``ref``: the folder with the original's ref_logits.npy).
Prints one JSON list: class, missing keys, whether the head shares the embedding's storage, ``equal`` (the
logits equal the reference bit for bit), ``max_abs_diff``, ``error``. Needs torch + transformers 5 only.
"""

import json
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "fixtures"))


def load_one(folder: str, ref: str, kind: str) -> dict:
    import numpy as np
    import transformers
    from make_pt_sweep import logits_of, truth_of

    arch = transformers.AutoConfig.from_pretrained(folder).architectures[0]
    model, info = getattr(transformers, arch).from_pretrained(folder, output_loading_info=True)
    model.eval()
    logits, _ = logits_of(model, kind)
    want = np.load(os.path.join(ref, "ref_logits.npy"))
    same_shape = logits.shape == want.shape
    return {"folder": folder, "class": type(model).__name__, "missing_keys": sorted(info.get("missing_keys", [])),
            "shared": truth_of(model)["shared"], "equal": bool(same_shape and (logits == want).all()),
            "max_abs_diff": float(np.max(np.abs(logits - want))) if same_shape else None}


def main() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    out = []
    for job in jobs:
        try:
            out.append(load_one(job["folder"], job["ref"], job["kind"]))
        except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
            out.append({"folder": job["folder"], "error": f"{type(exc).__name__}: {exc}"[:1000]})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
