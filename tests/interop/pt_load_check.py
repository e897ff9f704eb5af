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
    import torch
    import transformers
    from transformers import AutoConfig

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
        cfg = AutoConfig.from_pretrained(folder)
        arch = (cfg.architectures or [None])[0]
        if arch and arch.startswith("TF"):
            arch = arch[2:]
        cls = getattr(transformers, arch)
        model, info = cls.from_pretrained(folder, output_loading_info=True)
        model.eval()
        ids = torch.from_numpy(np.load(os.path.join(ref, "ref_input_ids.npy")).astype("int64"))
        kwargs = {"input_ids": ids}
        dec = os.path.join(ref, "ref_decoder_input_ids.npy")
        if os.path.exists(dec):
            kwargs["decoder_input_ids"] = torch.from_numpy(np.load(dec).astype("int64"))
        with torch.no_grad():
            logits = model(**kwargs).logits.float().numpy()
        want = np.load(os.path.join(ref, "ref_logits.npy"))
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
