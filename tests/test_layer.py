"""SharedEmbeddings against the real transformers 4.57.6 TFSharedEmbeddings
outputs stored with the fixture (made by fixtures/make_fixtures.py), and
`tietool run` end to end (in-process). Needs the `tf` extra; skipped without it."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

pytestmark = [pytest.mark.interop, pytest.mark.tf_kernels]  # TensorFlow

from tietool.layer.shared import SharedEmbeddings  # noqa: E402

from helpers import assert_kernel_close, fixture, invoke  # noqa: E402

SEED = fixture("keras2/seed_shared")
SEED_H5 = SEED / "seed_shared_weights.h5"
SEED_CFG = json.loads((SEED / "layer_config.json").read_text())


@pytest.fixture(scope="module")
def seed_layer():
    return SharedEmbeddings.from_checkpoint(SEED_H5)


def test_from_checkpoint_weights_bit_identical(seed_layer):
    import h5py

    with h5py.File(SEED_H5, "r") as f:
        stored = f[SEED_CFG["weight_dataset_path"]][()]
    got = np.asarray(seed_layer.weight)
    assert got.tobytes() == stored.tobytes()
    assert seed_layer.tie_weights is True
    assert (seed_layer.vocab_size, seed_layer.hidden_size) == (SEED_CFG["vocab_size"], SEED_CFG["hidden_size"])


def test_embedding_mode_bit_exact_vs_tfsharedembeddings(seed_layer):
    ids = np.load(SEED / "ids.npy")
    want = np.load(SEED / "embedding_out.npy")
    got = np.asarray(seed_layer(ids, mode="embedding"))
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


def test_linear_mode_matches_tfsharedembeddings(seed_layer):
    hidden = np.load(SEED / "hidden.npy")
    want = np.load(SEED / "linear_out.npy")
    got = np.asarray(seed_layer(hidden, mode="linear"))
    assert got.shape == want.shape
    # TFSharedEmbeddings' logits were computed when the fixture was made, on another CPU: the matmul's
    # float32 sums may be added in another order here (helpers.assert_kernel_close states the bound)
    assert_kernel_close(got, want, depth=SEED_CFG["hidden_size"])


def test_other_mode_raises_value_error(seed_layer):
    with pytest.raises(ValueError, match="mode"):
        seed_layer(np.zeros((1, 2), "int32"), mode="logits")


def test_default_initializer_range_and_config_round_trip():
    layer = SharedEmbeddings(100, 64)
    assert layer.initializer_range == pytest.approx(64**-0.5)
    layer.build()
    std = float(np.std(np.asarray(layer.weight)))
    assert 0.5 * 64**-0.5 < std < 1.1 * 64**-0.5  # truncated normal with that stddev
    cfg = layer.get_config()
    again = SharedEmbeddings.from_config(cfg)
    assert (again.vocab_size, again.hidden_size, again.initializer_range) == (100, 64, layer.initializer_range)
    assert SharedEmbeddings(10, 4, initializer_range=0.02).initializer_range == 0.02


def test_model_with_layer_saves_to_keras_and_loads_back(tmp_path):
    shared = SharedEmbeddings(50, 8, initializer_range=0.02, name="shared")
    ids = keras.Input((None,), dtype="int32")
    h = shared(ids, mode="embedding")
    h = keras.layers.Dense(8, activation="tanh")(h)
    logits = shared(h, mode="linear")
    model = keras.Model(ids, logits)
    x = np.array([[1, 2, 3, 49]], dtype="int32")
    before = np.asarray(model(x))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # our own file, made in this test
    assert isinstance(loaded.get_layer("shared"), SharedEmbeddings)
    np.testing.assert_array_equal(np.asarray(loaded(x)), before)


def test_keras3_tied_reversible_embedding_archive():
    layer = SharedEmbeddings.from_checkpoint(fixture("keras3/tied_revemb.keras"))
    assert layer.tie_weights is True and tuple(layer.weight.shape) == (64, 16)


def test_untied_checkpoint_rebuilds_untied():
    layer = SharedEmbeddings.from_checkpoint(fixture("keras3/untied_revemb.weights.h5"))
    assert layer.tie_weights is False
    assert tuple(layer.reverse_embeddings.shape) == (16, 64)
    h = np.random.default_rng(0).standard_normal((1, 3, 16)).astype("f4")
    want = h @ np.asarray(layer.reverse_embeddings)  # numpy's own kernels against TensorFlow's
    assert_kernel_close(np.asarray(layer(h, mode="linear")), want, depth=16)


def test_untied_pytorch_head_is_transposed_into_reverse_embeddings():
    from safetensors.numpy import load_file

    stored = load_file(str(fixture("pt/llama_untied/model.safetensors")))
    layer = SharedEmbeddings.from_checkpoint(fixture("pt/llama_untied"))
    assert layer.tie_weights is False
    assert np.asarray(layer.reverse_embeddings).tobytes() == np.ascontiguousarray(stored["lm_head.weight"].T).tobytes()


# -- the command ----------------------------------------------------------------------

def test_run_embedding_ids_and_output_file(tmp_path):
    out = tmp_path / "emb.npy"
    r = invoke("run", SEED_H5, "--mode", "embedding", "--ids", "1,2,3", "--output", out)
    assert r.exit_code == 0, r.stderr
    got = np.load(out)
    with __import__("h5py").File(SEED_H5, "r") as f:
        w = f[SEED_CFG["weight_dataset_path"]][()]
    assert got.tobytes() == w[[1, 2, 3]][None].tobytes()
    assert "[1, 3, 16]" in r.stdout


def test_run_linear_top_k_json(tmp_path):
    hidden = np.load(SEED / "hidden.npy")
    want = np.load(SEED / "linear_out.npy")
    r = invoke("run", SEED_H5, "--mode", "linear", "--input", SEED / "hidden.npy", "--top-k", "3", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["shape"] == list(want.shape) and doc["tied"] is True
    first = doc["top_k"][0]
    assert first["tokens"] == [int(i) for i in np.argsort(-want[0, 0])[:3]]
    assert len(doc["top_k"]) == hidden.shape[0] * hidden.shape[1]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mode", "embedding", "--ids", "1,64"], "token id 64"),
        (["--mode", "embedding", "--ids", "1,x"], "not an integer"),
        (["--mode", "linear", "--input", "ids.npy"], "floating point"),
        (["--mode", "linear", "--input", "wrong_hidden.npy"], "hidden size 12"),
        (["--mode", "linear", "--input", "not_npy.npy"], "not a .npy file"),
        (["--mode", "embedding"], "needs token ids"),
    ],
)
def test_run_bad_input_clear_error(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "ids.npy", np.array([[1, 2]], dtype="int32"))
    np.save(tmp_path / "wrong_hidden.npy", np.zeros((1, 2, 12), dtype="float32"))
    (tmp_path / "not_npy.npy").write_bytes(b"hello")
    r = invoke("run", SEED_H5, *args)
    assert r.exit_code == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_top_level_name():
    import tietool

    assert tietool.SharedEmbeddings is SharedEmbeddings


@pytest.mark.parametrize("rel, tied", [("keras3/tied_revemb.keras", True), ("keras3/untied_revemb.weights.h5", False)])
def test_matches_keras_own_reversible_embedding(rel, tied):
    """On a Keras 3 checkpoint, both passes equal Keras' own
    ReversibleEmbedding holding the same stored weights (read with h5py)."""
    import io
    import zipfile

    import h5py

    path = fixture(rel)
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            raw = io.BytesIO(z.read("model.weights.h5"))
        f = h5py.File(raw, "r")
    else:
        f = h5py.File(path, "r")
    with f:
        stored = [f["layers/reversible_embedding/vars"][k][()] for k in sorted(f["layers/reversible_embedding/vars"])]
    ref = keras.layers.ReversibleEmbedding(64, 16, tie_weights=tied)
    ref.build()
    ref.set_weights(stored)
    ours = SharedEmbeddings.from_checkpoint(path)
    assert ours.tie_weights is tied
    ids = np.array([[0, 5, 63, 17]], dtype="int32")
    hidden = np.random.default_rng(3).standard_normal((2, 3, 16)).astype("float32")
    assert np.asarray(ours(ids, mode="embedding")).tobytes() == np.asarray(ref(ids)).tobytes()
    assert np.asarray(ours(hidden, mode="linear")).tobytes() == np.asarray(ref(hidden, reverse=True)).tobytes()
