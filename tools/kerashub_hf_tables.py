"""Check tietool's keras-hub -> transformers tables against keras-hub's own importers; write
fixtures/kerashub_hf/VALIDATION.json.

Run with the keras-hub environment (fixtures/requirements-kerashub-hf.txt), from the repository root:

    python tools/kerashub_hf_tables.py

For every preset of fixtures/kerashub_hf, tietool exports it (``convert PRESET --names pt``); the
preset is loaded as keras-hub loads it (``Backbone.from_preset``), and keras-hub's importer for the
exported ``model_type`` (``keras_hub/src/utils/transformers/convert_*.py``, chosen by keras-hub's
``TransformersPresetLoader``) is run over the exported folder with keras-hub's own
``SafetensorLoader``, whose ``port_weight`` here compares instead of assigning: each tensor the
importer reads (through its hook: transposes, reshapes, GPT-2's ``c_attn`` slices) must equal, bit
for bit, the variable it would assign. The pairs (transformers name, preset dataset path) the
importer visits are recorded beside tietool's own; tests/test_kerashub_hf.py checks that they are
the same sets and that every comparison was equal, so a table row keras-hub's importer does not
confirm fails the tests.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import h5py  # noqa: E402
import keras_hub  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
from keras_hub.src.utils.transformers.preset_loader import TransformersPresetLoader  # noqa: E402
from keras_hub.src.utils.transformers.safetensor_utils import SafetensorLoader  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tietool.convert import convert_to_pt  # noqa: E402
from tietool.convert.kerashub_hf import export as kh_export  # noqa: E402
from tietool.formats import open_checkpoint  # noqa: E402

KHHF = os.path.join(ROOT, "fixtures", "kerashub_hf")


def as_values(arr) -> np.ndarray:
    """Values as float32 (bfloat16, stored by Keras as 2-byte opaque data, upcast exactly): keras-hub
    0.32's from_preset builds float32 variables even for a bfloat16 preset."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
        arr = arr.view(ml_dtypes.bfloat16)
    return np.ascontiguousarray(arr.astype(np.float32) if arr.dtype.kind in "fV" or "bfloat16" in str(arr.dtype)
                                else arr)


def dataset_paths(preset: str, backbone) -> dict[int, str]:
    """``{id(variable): dataset path}``: each variable found by its (random, unique) bytes."""
    stored: dict[bytes, list[str]] = {}
    with h5py.File(os.path.join(preset, "model.weights.h5"), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                stored.setdefault(as_values(obj[()]).tobytes(), []).append(name)
        f.visititems(visit)
    out = {}
    for v in backbone.weights:
        found = stored.get(as_values(v.numpy()).tobytes(), [])
        if len(found) != 1:
            raise SystemExit(f"{preset}: {v.path} matches {len(found)} datasets")
        out[id(v)] = found[0]
    return out


class Checking(SafetensorLoader):
    """keras-hub's loader, comparing what it would assign with what the variable holds."""

    def __init__(self, folder: str, paths: dict[int, str]):
        super().__init__(folder)
        self.paths = paths
        self.visits: list[dict] = []

    def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
        hf_tensor = self.get_tensor(hf_weight_key)
        if hook_fn:
            hf_tensor = hook_fn(hf_tensor, list(keras_variable.shape))
        want = np.asarray(keras_variable.numpy())
        got = np.asarray(hf_tensor)
        if got.dtype != want.dtype and "bfloat16" in str(got.dtype):  # a bfloat16 export: exact upcast
            got = got.astype(want.dtype)
        if got.shape != want.shape:
            verdict = "differs"
        elif got.dtype == want.dtype:
            verdict = "equal" if got.tobytes() == want.tobytes() else "differs"
        else:  # keras-hub's Mistral importer casts every tensor to float16 before assigning
            cast = want.astype(got.dtype)
            same = got.tobytes() == cast.tobytes()
            verdict = f"equal after the importer's cast to {got.dtype}" if same else "differs"
        full = self.get_prefixed_key(hf_weight_key, self.safetensor_files.get("model.safetensors") or {})
        self.visits.append({"transformers": full, "keras_hub": self.paths[id(keras_variable)], "verdict": verdict})


def tietool_pairs(preset: str) -> list[list[str]]:
    with open_checkpoint(preset) as ckpt:
        job = kh_export.plan_export(ckpt, preset, None)
        out = []
        for t in job.plan.tensors:
            parts = getattr(t.transform, "names", None) or (t.source.name,)
            out += [[t.name, p] for p in parts]
    return sorted(out)


def check(family: str, tmp: str) -> dict:
    preset = os.path.join(KHHF, family, "preset")
    out = os.path.join(tmp, family)
    convert_to_pt(preset, out)
    with open(os.path.join(out, "config.json")) as fh:
        hf_config = json.load(fh)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except ValueError:
        # keras-hub issue 3098: a tied Llama 3 preset's config.json has no tie_word_embeddings and the
        # backbone defaults to untied, so keras-hub cannot reload its own save; say the tie explicitly
        backbone = keras_hub.models.Backbone.from_preset(preset, tie_word_embeddings=True)
    paths = dataset_paths(preset, backbone)
    converter = TransformersPresetLoader(out, hf_config).converter
    with Checking(out, paths) as loader:
        converter.convert_weights(backbone, loader, hf_config)
    visited = {id(v) for v in backbone.weights if paths[id(v)] in {x["keras_hub"] for x in loader.visits}}
    return {
        "importer": converter.__name__,
        "pairs": sorted([x["transformers"], x["keras_hub"]] for x in loader.visits),
        "not_equal": sorted([x["transformers"], x["keras_hub"]] for x in loader.visits if x["verdict"] == "differs"),
        "verdicts": sorted({x["verdict"] for x in loader.visits}),
        "variables_not_ported": sorted(paths[id(v)] for v in backbone.weights if id(v) not in visited),
        "tietool_pairs": tietool_pairs(preset),
    }


def main() -> int:
    report = {"keras_hub": keras_hub.__version__, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for family in sorted(os.listdir(KHHF)):
            if os.path.isdir(os.path.join(KHHF, family)):
                r = check(family, tmp)
                report["families"][family] = r
                same = sorted(r["pairs"]) == r["tietool_pairs"]
                print(f"{family}: {len(r['pairs'])} pairs, {len(r['not_equal'])} not equal, "
                      f"{len(r['variables_not_ported'])} not ported, same pairs as tietool: {same}", file=sys.stderr)
    with open(os.path.join(KHHF, "VALIDATION.json"), "w") as fh:
        json.dump(report, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
