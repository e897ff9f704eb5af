"""Round-tripped checkpoints load in the real libraries and give the stored logits.

Run with the TensorFlow venv (tietool installed there editable, --no-deps):

    /work/venvs/tf/bin/python -m pytest tests/interop -m interop

The loads run in two fresh interpreters, one for all transformers TF loads
(tf_keras) and one for all Keras 3 loads: they never share a process. Skipped when
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

pytestmark = [pytest.mark.interop, pytest.mark.tf_kernels]

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
                         timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


ROUND_TRIP = ["gpt2", "bert_mlm", "t5"]
DIRECT = ["gpt2", "bert_mlm", "t5", "bart", "mistral_untied"]

HF_LOAD = """
    import json, os, sys, numpy as np, transformers
    results = []
    for folder in json.loads(sys.argv[1]):
        cfg = json.load(open(folder + "/config.json"))
        cls = getattr(transformers, "TF" + cfg["architectures"][0])
        model, info = cls.from_pretrained(folder, output_loading_info=True)
        ids = np.load(folder + "/ref_input_ids.npy")
        kw = {}
        if os.path.exists(folder + "/ref_decoder_input_ids.npy"):
            kw["decoder_input_ids"] = np.load(folder + "/ref_decoder_input_ids.npy")
        logits = model(ids, training=False, **kw).logits.numpy()
        ref = np.load(folder + "/ref_logits.npy")
        results.append({"maxdiff": float(np.abs(logits - ref).max()),
                        "info": {k: [str(x) for x in v] for k, v in info.items()}})
    print("RESULTS", json.dumps(results))
"""


@pytest.fixture(scope="module")
def hf_loaded(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every transformers TF load below in ONE interpreter (tf_keras)."""
    import json
    import os

    tmp = tmp_path_factory.mktemp("tf_load")
    folders = {}
    for name in ROUND_TRIP:
        convert(FIXTURES / "tf" / name, "safetensors", out=tmp / f"{name}-st-rt")
        convert(tmp / f"{name}-st-rt", "h5", out=tmp / f"{name}-back")
        assert not (tmp / f"{name}-back" / "model.safetensors").exists()
        folders[("round-trip", name)] = str(tmp / f"{name}-back")
    for name in DIRECT:
        convert(FIXTURES / "tf" / name, "safetensors", out=tmp / f"{name}-st")
        assert not (tmp / f"{name}-st" / "tf_model.h5").exists()
        folders[("direct", name)] = str(tmp / f"{name}-st")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", TF_USE_LEGACY_KERAS="1")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(HF_LOAD), json.dumps(list(folders.values()))],
                         capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads(res.stdout.split("RESULTS", 1)[1])
    return dict(zip(folders, results, strict=True))


@needs_tf
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_hf_tf_round_trip_loads(hf_loaded, name):
    diff = hf_loaded[("round-trip", name)]["maxdiff"]
    assert diff <= 1e-5, diff


@needs_tf
@pytest.mark.parametrize("name", DIRECT)
def test_hf_tf_safetensors_output_loads_directly(hf_loaded, name):
    """The safetensors folder itself (transformers' TF names) loads in
    transformers 4.57 TF with every weight, giving the stored logits."""
    got = hf_loaded[("direct", name)]
    info = got["info"]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert got["maxdiff"] <= 1e-5, got["maxdiff"]


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
KERAS3_CASES = [
    ("tied_revemb", True, None, 1e-6),
    ("untied_revemb", False, None, 1e-6),
    ("bf16_revemb", True, "bfloat16", 1e-4),  # loading the original fixture gives 6.1e-5 too
]


@pytest.fixture(scope="module")
def keras3_loaded(tmp_path_factory) -> str:
    """Every Keras 3 load below in ONE interpreter."""
    tmp = tmp_path_factory.mktemp("keras3_load")
    code = KERAS3_BUILD
    for stem, tie, dtype, _ in KERAS3_CASES:
        src = FIXTURES / "keras3" / f"{stem}.weights.h5"
        convert(src, "safetensors", out=tmp / f"{stem}.safetensors")
        back = tmp / f"{stem}.weights.h5"
        convert(tmp / f"{stem}.safetensors", "h5", out=back)
        code += f"""
    m = build({tie!r}, {dtype!r})
    m.load_weights({str(back)!r})
    ids = np.load({str(FIXTURES / 'keras3' / 'tied_revemb_ids.npy')!r})
    logits = keras.ops.convert_to_numpy(m(ids, training=False)).astype(np.float32)
    ref = np.load({str(FIXTURES / 'keras3' / (stem + '_logits.npy'))!r})
    m0 = build({tie!r}, {dtype!r})
    m0.load_weights({str(src)!r})
    orig = keras.ops.convert_to_numpy(m0(ids, training=False)).astype(np.float32)
    print({stem!r}, "MAXDIFF", float(np.abs(logits - ref).max()), "SAME", bool((logits == orig).all()))
    """
    return run_py(code)


@needs_keras3
@pytest.mark.parametrize("stem,tie,dtype,tol", KERAS3_CASES)
def test_keras3_round_trip_loads(keras3_loaded, stem, tie, dtype, tol):
    [line] = [ln for ln in keras3_loaded.splitlines() if ln.startswith(stem + " MAXDIFF")]
    diff = float(line.split("MAXDIFF")[1].split()[0])
    assert diff <= tol, diff
    assert "SAME True" in line  # bit-identical to loading the original file
