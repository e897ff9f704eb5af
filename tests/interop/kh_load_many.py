"""Load keras-hub presets with keras-hub itself, in ONE interpreter.

    python tests/interop/kh_load_many.py JOBS.json

JOBS.json: a list of ``{"preset": folder, "fixture": folder, "text": str | None}``. Prints one JSON list:
the ids the preset's own tokenizer (``CausalLM.from_preset(preset)``'s preprocessor) gives ``text``; the task class
``keras_hub.models.CausalLM.from_preset(preset, preprocessor=None)`` built, whether its embedding
is tied, and the max abs difference of its logits on FIXTURE/ref_input_ids.npy (every position
attended) against FIXTURE/ref_logits.npy, or ``error``. Needs keras-hub (no tietool).
"""

import json
import os
import sys
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import keras_hub
    import numpy as np

    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    out = []
    for job in jobs:
        try:
            task = keras_hub.models.CausalLM.from_preset(job["preset"], preprocessor=None)
            ids = np.load(os.path.join(job["fixture"], "ref_input_ids.npy"))
            want = np.load(os.path.join(job["fixture"], "ref_logits.npy"))
            got = keras.ops.convert_to_numpy(task({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}))
            ids_of_text = None
            if job.get("text") is not None and os.path.exists(os.path.join(job["preset"], "tokenizer.json")):
                tokenizer = keras_hub.models.CausalLM.from_preset(job["preset"]).preprocessor.tokenizer
                ids_of_text = [int(i) for i in np.asarray(tokenizer(job["text"]))]
            out.append({"class": type(task).__name__, "tied": bool(task.backbone.token_embedding.tie_weights),
                        "max_abs_diff": float(np.max(np.abs(got.astype("float32") - want)))
                        if got.shape == want.shape else None, "scale": float(np.max(np.abs(want))),
                        "ids": ids_of_text})
        except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
            out.append({"error": f"{type(exc).__name__}: {exc}"[:2000]})
        keras.backend.clear_session()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
