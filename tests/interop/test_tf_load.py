"""Round-tripped checkpoints load in the real libraries and give the stored logits.

Run with the TensorFlow venv (tietool installed there editable, --no-deps):

    /work/venvs/tf/bin/python -m pytest tests/interop -m interop

Each load runs in a fresh interpreter (transformers' TF classes use tf_keras,
the Keras 3 fixtures need Keras 3: they never share a process). Skipped when
TensorFlow / transformers / Keras 3 are not importable.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tietool.convert import convert

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

pytestmark = pytest.mark.interop

needs_tf = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "transformers", "tf_keras")),
    reason="TensorFlow, transformers and tf_keras are needed (use /work/venvs/tf)",
)
needs_keras3 = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "keras")),
    reason="TensorFlow and Keras 3 are needed (use /work/venvs/tf)",
)


def run_py(code: str, env_extra: dict | None = None) -> str:
    import os

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.update(env_extra or {})
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


@needs_tf
@pytest.mark.parametrize("name", ["gpt2", "bert_mlm", "t5"])
def test_hf_tf_round_trip_loads(tmp_path, name):
    src = FIXTURES / "tf" / name
    convert(src, "safetensors", out=tmp_path / "st")
    convert(tmp_path / "st", "h5", out=tmp_path / "back")
    assert not (tmp_path / "back" / "model.safetensors").exists()
    out = run_py(f"""
        import json, numpy as np, transformers
        folder = {str(tmp_path / 'back')!r}
        cfg = json.load(open(folder + "/config.json"))
        cls = getattr(transformers, "TF" + cfg["architectures"][0])
        model = cls.from_pretrained(folder)
        ids = np.load(folder + "/ref_input_ids.npy")
        kw = {{}}
        import os
        if os.path.exists(folder + "/ref_decoder_input_ids.npy"):
            kw["decoder_input_ids"] = np.load(folder + "/ref_decoder_input_ids.npy")
        logits = model(ids, training=False, **kw).logits.numpy()
        ref = np.load(folder + "/ref_logits.npy")
        print("MAXDIFF", float(np.abs(logits - ref).max()))
    """, {"TF_USE_LEGACY_KERAS": "1"})
    diff = float(out.split("MAXDIFF")[1].split()[0])
    assert diff <= 1e-5, diff


@needs_tf
@pytest.mark.parametrize("name", ["gpt2", "bert_mlm", "t5", "bart", "mistral_untied"])
def test_hf_tf_safetensors_output_loads_directly(tmp_path, name):
    """The safetensors folder itself (transformers' TF names) loads in
    transformers 4.57 TF with every weight, giving the stored logits."""
    convert(FIXTURES / "tf" / name, "safetensors", out=tmp_path / "st")
    assert not (tmp_path / "st" / "tf_model.h5").exists()
    out = run_py(f"""
        import json, os, numpy as np, transformers
        folder = {str(tmp_path / 'st')!r}
        cfg = json.load(open(folder + "/config.json"))
        cls = getattr(transformers, "TF" + cfg["architectures"][0])
        model, info = cls.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        ids = np.load(folder + "/ref_input_ids.npy")
        kw = {{}}
        if os.path.exists(folder + "/ref_decoder_input_ids.npy"):
            kw["decoder_input_ids"] = np.load(folder + "/ref_decoder_input_ids.npy")
        logits = model(ids, training=False, **kw).logits.numpy()
        print("MAXDIFF", float(np.abs(logits - np.load(folder + "/ref_logits.npy")).max()))
    """, {"TF_USE_LEGACY_KERAS": "1"})
    diff = float(out.split("MAXDIFF")[1].split()[0])
    assert diff <= 1e-5, diff


KERAS3_BUILD = """
    import os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np, keras
    def build(tie, dtype=None, name="revemb_model"):
        keras.utils.set_random_seed(1234)
        ids_in = keras.Input(shape=(8,), dtype="int32", name="input_ids")
        emb = keras.layers.ReversibleEmbedding(64, 16, tie_weights=tie, dtype=dtype, name="revemb")
        x = emb(ids_in)
        x = keras.layers.Dense(16, activation="tanh", dtype=dtype, name="mid")(x)
        return keras.Model(ids_in, emb(x, reverse=True), name=name)
"""


@needs_keras3
@pytest.mark.parametrize("stem,tie,dtype,tol", [
    ("tied_revemb", True, None, 1e-6),
    ("untied_revemb", False, None, 1e-6),
    ("bf16_revemb", True, "bfloat16", 1e-4),  # loading the original fixture gives 6.1e-5 too
])
def test_keras3_round_trip_loads(tmp_path, stem, tie, dtype, tol):
    src = FIXTURES / "keras3" / f"{stem}.weights.h5"
    convert(src, "safetensors", out=tmp_path / f"{stem}.safetensors")
    back = tmp_path / f"{stem}.weights.h5"
    convert(tmp_path / f"{stem}.safetensors", "h5", out=back)
    out = run_py(KERAS3_BUILD + f"""
    m = build({tie!r}, {dtype!r})
    m.load_weights({str(back)!r})
    ids = np.load({str(FIXTURES / 'keras3' / 'tied_revemb_ids.npy')!r})
    logits = keras.ops.convert_to_numpy(m(ids, training=False)).astype(np.float32)
    ref = np.load({str(FIXTURES / 'keras3' / (stem + '_logits.npy'))!r})
    m0 = build({tie!r}, {dtype!r})
    m0.load_weights({str(src)!r})
    orig = keras.ops.convert_to_numpy(m0(ids, training=False)).astype(np.float32)
    print("MAXDIFF", float(np.abs(logits - ref).max()), "SAME", bool((logits == orig).all()))
    """)
    diff = float(out.split("MAXDIFF")[1].split()[0])
    assert diff <= tol, diff
    assert "SAME True" in out  # bit-identical to loading the original file
