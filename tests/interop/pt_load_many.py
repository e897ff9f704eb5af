"""Load many converted folders in PyTorch transformers 5 in ONE interpreter.

    python tests/interop/pt_load_many.py JOBS.json

JOBS.json: a list of ``{"out": folder, "fixture": folder}``. Prints one JSON
list (one result per job, in order): the class loaded, missing/unexpected/
mismatched keys, the max abs difference of the logits on
FIXTURE/ref_input_ids.npy (plus ref_decoder_input_ids.npy for encoder-decoder
models) against FIXTURE/ref_logits.npy, whether the output layer is the
embedding's Parameter, the versions used, ``warnings`` (the transformers log
lines of that load) and ``error`` (a load that raised). No tietool needed.
"""

import json
import logging
import os
import sys
import warnings


def load_and_run(out: str, fixture: str):
    """The class ``config.json`` names (a TF class name without its prefix),
    loaded from ``out``, run on FIXTURE's reference inputs: ``(model,
    loading info, logits, reference logits)``. pt_load_check.py uses it too."""
    import numpy as np
    import torch
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(out)
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
        res = model(**kwargs)
    logits = (res.logits if hasattr(res, "logits") else res[0]).float().numpy()
    return model, info, logits, np.load(os.path.join(fixture, "ref_logits.npy"))


def load_one(out: str, fixture: str) -> dict:
    import numpy as np
    import torch
    import transformers

    model, info, logits, ref = load_and_run(out, fixture)
    emb = model.get_input_embeddings()
    outp = model.get_output_embeddings()
    return {
        "class": type(model).__name__,
        "missing_keys": sorted(info.get("missing_keys", [])),
        "unexpected_keys": sorted(info.get("unexpected_keys", [])),
        "mismatched_keys": sorted(str(k) for k in info.get("mismatched_keys", [])),
        "error_msgs": [str(m) for m in info.get("error_msgs", [])],
        "shape": list(logits.shape),
        "ref_shape": list(ref.shape),
        "max_abs_diff": float(np.max(np.abs(logits - ref))) if logits.shape == ref.shape else None,
        # is the output layer the embedding's own Parameter (tied) after loading?
        "output_is_embedding": bool(outp is not None and getattr(outp, "weight", None) is not None
                                    and outp.weight is emb.weight),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_warning()
    handler = _Collect()
    logging.getLogger("transformers").addHandler(handler)
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    results = []
    for job in jobs:
        handler.lines = []
        try:
            r = load_one(job["out"], job["fixture"])
        except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
            r = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        r["warnings"] = handler.lines
        results.append(r)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
