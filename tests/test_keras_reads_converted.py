"""Keras 3 reads what `convert` gives back from a .keras archive.

tietool never loads a model from a file; this test does, in a subprocess, on
tietool's own output: a model built by the fixture generator's code
(fixtures/make_fixtures.py, stage keras3) loads the .keras that came back
through safetensors and the .weights.h5 extracted from the archive with
`load_weights`, and `keras.saving.load_model` opens the .keras. Every weight
and optimizer variable equals what Keras reads from the original archive, bit
for bit, and the logits are the same.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tietool.convert import convert

from helpers import FIXTURES

pytestmark = [pytest.mark.interop, pytest.mark.tf_kernels, pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "keras")),
    reason="needs TensorFlow with Keras 3",
)]

SCRIPT = textwrap.dedent(r"""
    import json, os, sys, warnings
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.simplefilter("ignore")
    import numpy as np
    import keras

    VOCAB, HIDDEN, SEQ = 64, 16, 8   # fixtures/make_fixtures.py, stage keras3

    def build(tie):                   # the generator's build(), verbatim but for the seed
        ids_in = keras.Input(shape=(SEQ,), dtype="int32", name="input_ids")
        emb = keras.layers.ReversibleEmbedding(VOCAB, HIDDEN, tie_weights=tie, name="revemb")
        x = emb(ids_in)
        x = keras.layers.Dense(HIDDEN, activation="tanh", name="mid")(x)
        logits = emb(x, reverse=True)
        return keras.Model(ids_in, logits, name="revemb_model")

    original, converted, extracted, ids_path, logits_path = sys.argv[1:6]
    ids = np.load(ids_path)

    def weights_of(path):
        m = build(True)
        m.load_weights(path)
        return [w.tobytes() for w in m.get_weights()], keras.ops.convert_to_numpy(m(ids, training=False))

    ref_w, ref_out = weights_of(original)
    report = {}
    for label, path in (("keras", converted), ("weights.h5", extracted)):
        w, out = weights_of(path)
        report[label + " load_weights"] = w == ref_w and np.array_equal(out, ref_out)
    a = keras.saving.load_model(original)
    b = keras.saving.load_model(converted)
    same = lambda xs, ys: [x.numpy().tobytes() for x in xs] == [y.numpy().tobytes() for y in ys]
    report["keras load_model weights"] = same(a.weights, b.weights) and len(b.weights) == 3
    report["keras load_model optimizer"] = same(a.optimizer.variables, b.optimizer.variables) \
        and len(b.optimizer.variables) == 8
    out = keras.ops.convert_to_numpy(b(ids, training=False))
    report["logits"] = np.array_equal(out, ref_out) and float(np.abs(out - np.load(logits_path)).max()) < 1e-6
    print(json.dumps(report))
""")


def test_keras_loads_the_converted_archive_and_the_extracted_weights(tmp_path):
    src = FIXTURES / "keras3" / "tied_revemb.keras"
    convert(src, None, out=tmp_path / "m.safetensors")
    r = convert(tmp_path / "m.safetensors", None)
    assert r.to_json()["to"] == "keras" and r.to_json()["output"] == str(tmp_path / "m.keras")
    convert(src, "h5", out=tmp_path / "x.weights.h5")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(src), str(tmp_path / "m.keras"),
                        str(tmp_path / "x.weights.h5"),
                        str(FIXTURES / "keras3" / "tied_revemb_ids.npy"),
                        str(FIXTURES / "keras3" / "tied_revemb_logits.npy")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {
        "keras load_weights": True,
        "weights.h5 load_weights": True,
        "keras load_model weights": True,
        "keras load_model optimizer": True,
        "logits": True,
    }
