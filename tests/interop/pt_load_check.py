"""Load many folders with PyTorch transformers 5 in ONE interpreter.

    python tests/interop/pt_load_check.py JOBS.json

JOBS.json: a list of {"folder": ..., "ref": folder with ref_input_ids.npy /
ref_logits.npy (and ref_decoder_input_ids.npy)}. Prints one JSON list, one
result per job: class, missing/unexpected/mismatched keys, whether lm_head
and the input embedding share storage after loading, the warnings
transformers logged, and the max abs difference of the logits against the
reference (None when the shapes differ). Needs torch + transformers 5 only.
"""

import json
import logging
import os
import sys
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import transformers
    from pt_load_many import load_and_run  # this folder: the one way both scripts load and run a model

    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    tlog = logging.getLogger("transformers")
    tlog.addHandler(Grab())
    tlog.setLevel(logging.WARNING)
    tlog.propagate = False
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    results = []
    for job in jobs:
        records.clear()
        folder, ref = job["folder"], job["ref"]
        model, info, logits, want = load_and_run(folder, ref)
        out_emb = model.get_output_embeddings()
        in_emb = model.get_input_embeddings()
        shared = bool(out_emb is not None and out_emb.weight.data_ptr() == in_emb.weight.data_ptr())
        results.append({
            "folder": folder,
            "class": type(model).__name__,
            "missing_keys": sorted(info.get("missing_keys", [])),
            "unexpected_keys": sorted(info.get("unexpected_keys", [])),
            "mismatched_keys": sorted(str(k) for k in info.get("mismatched_keys", [])),
            "head_shares_embedding": shared,
            "warnings": list(records),
            "max_abs_diff": float(np.max(np.abs(logits - want))) if logits.shape == want.shape else None,
            "transformers": transformers.__version__,
        })
    print(json.dumps(results))


if __name__ == "__main__":
    main()
