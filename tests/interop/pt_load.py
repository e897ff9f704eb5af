"""Load a converted folder with PyTorch transformers (5.x) and compare logits.

Run with a python that has torch + transformers 5 (no tietool needed):

    python tests/interop/pt_load.py OUT_FOLDER FIXTURE_FOLDER

Prints one JSON object: class, missing/unexpected/mismatched keys, the max
abs difference of the logits on FIXTURE/ref_input_ids.npy (plus
ref_decoder_input_ids.npy for encoder-decoder models) against
FIXTURE/ref_logits.npy, and the versions used.
"""

import json
import os
import sys
import warnings


def main() -> None:
    out, fixture = sys.argv[1], sys.argv[2]
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch
    import transformers
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(out)
    arch = (cfg.architectures or [None])[0]
    if arch and arch.startswith("TF"):
        arch = arch[2:]
    cls = getattr(transformers, arch)
    model, info = cls.from_pretrained(out, output_loading_info=True)
    model.eval()
    ids = torch.from_numpy(np.load(os.path.join(fixture, "ref_input_ids.npy")).astype("int64"))
    kwargs = {"input_ids": ids}
    dec = os.path.join(fixture, "ref_decoder_input_ids.npy")
    if os.path.exists(dec):
        kwargs["decoder_input_ids"] = torch.from_numpy(np.load(dec).astype("int64"))
    with torch.no_grad():
        logits = model(**kwargs).logits.float().numpy()
    ref = np.load(os.path.join(fixture, "ref_logits.npy"))
    result = {
        "class": type(model).__name__,
        "missing_keys": sorted(info.get("missing_keys", [])),
        "unexpected_keys": sorted(info.get("unexpected_keys", [])),
        "mismatched_keys": sorted(str(k) for k in info.get("mismatched_keys", [])),
        "error_msgs": [str(m) for m in info.get("error_msgs", [])],
        "shape": list(logits.shape),
        "ref_shape": list(ref.shape),
        "max_abs_diff": float(np.max(np.abs(logits - ref))) if logits.shape == ref.shape else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
