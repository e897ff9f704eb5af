"""keras-hub checkpoints (fixtures/kerashub, written by fixtures/make_kerashub.py
with keras-hub 0.32.0): for every generated family and file, the verdict
verify-tie gives, the keras-hub config read as data, `run` against the
model's own ``token_embedding(hidden, reverse=True)`` logits, and the round
trip through safetensors. keras-hub itself is not needed: the fixtures and
their reference outputs are committed. TensorFlow is loaded once, in process."""

import importlib.util
import json
import zipfile

import numpy as np
import pytest

from tietool import kerashub
from tietool.errors import UsageError
from tietool.formats import open_checkpoint
from tietool.ties.verify import verify_tie

from helpers import FIXTURES, assert_kernel_close, run_cli

ROOT = FIXTURES / "kerashub"
MANIFEST = json.loads((ROOT / "MANIFEST.json").read_text())
ENTRIES = MANIFEST["fixtures"]
KIND = {"tied": "implicit", "not tied": "separate", "no output layer": "no-decoder"}


def _table_module():
    spec = importlib.util.spec_from_file_location("kerashub_table", FIXTURES / "kerashub_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TABLE = _table_module()
RUN = {k: TABLE.expected_run(e) for k, e in ENTRIES.items()}
WITH_LOGITS = sorted(k for k in ENTRIES if RUN[k] == "bit-exact")
NO_OUTPUT = sorted(k for k in ENTRIES if RUN[k] == "refused: no output layer")
HEADS = sorted(k for k in ENTRIES if RUN[k].startswith("refused: head"))


def test_manifest_covers_every_family():
    fams = {e["family"] for e in ENTRIES.values()}
    assert len(fams) >= 40
    assert set(MANIFEST["excluded"]).isdisjoint({e["class"] for e in ENTRIES.values()})
    variants = {e["variant"] for e in ENTRIES.values()}
    for v in ("base", "weights", "int8", "int4", "float8", "bf16", "soft-cap", "preset", "preset_sharded",
              "other tie setting", "head of another width", "head with a bias"):
        assert v in variants, v
    assert {e["variant"] for e in ENTRIES.values() if e["variant"].startswith("task ")} >= {
        "task GemmaCausalLM", "task FNetMaskedLM"}
    # int8/int4/bf16 for a tied and an untied embedding
    for v in ("int8", "int4", "bf16"):
        assert {e["truth"] for e in ENTRIES.values() if e["variant"] == v} == {"tied", "not tied"}, v
    # every run result is one the table names, and the heads are real refusals
    assert set(RUN.values()) == {"bit-exact", "refused: no output layer", "refused: head of another width",
                                 "refused: head with a bias"}


def test_fixture_sizes():
    """Every file under 150 KB; the keras-hub folder within its share of the 10 MB of fixtures/."""
    files = [f for f in ROOT.rglob("*") if f.is_file()]
    big = [(str(f.relative_to(ROOT)), f.stat().st_size) for f in files if f.stat().st_size >= 150 * 1024]
    assert not big, big
    assert MANIFEST["limit_bytes"] == 150 * 1024
    assert sum(f.stat().st_size for f in files) < 4 * 1024 * 1024


def test_per_family_table_in_readme():
    """fixtures/README.md holds the table fixtures/kerashub_table.py prints from the manifest."""
    readme = (FIXTURES / "README.md").read_text()
    block = readme.split(TABLE.BEGIN, 1)[1].split(TABLE.END, 1)[0]
    assert block.strip() == TABLE.table(MANIFEST).strip()
    assert len(TABLE.rows(MANIFEST)) == len({e["family"] for e in ENTRIES.values()})


@pytest.mark.parametrize("rel", sorted(ENTRIES))
def test_verdict(rel):
    e = ENTRIES[rel]
    report = verify_tie(ROOT / rel)
    g = report.to_json()["groups"][0]
    assert g["verdict"] == e["truth"], g["reason"]
    assert g["kind"] == KIND[e["truth"]]
    assert report.to_json()["tied"] is (e["truth"] == "tied")
    # the config, read as data, says what the model says
    cfg = report.to_json()["config"]
    if rel.endswith((".keras", "preset", "preset_sharded")):
        if e["class"] == "Functional":  # a plain Keras model: no keras-hub config
            assert "kerashub" not in cfg
            return
        assert cfg["kerashub"]["backbone_class"] == e["class"]
        if e["config_tie"] is not None:
            assert (cfg["key"], cfg["value"]) == (e["tie_arg"], e["config_tie"])
            assert g.get("consistency", {"consistent": True})["consistent"] is True
        else:  # keras-hub left the argument out of get_config (Llama): the weights decide
            assert cfg["key"] is None
        assert cfg["kerashub"]["final_logit_soft_cap"] == e["logit_soft_cap"]
    # a plain Embedding beside the reversible one is never a member
    if e["truth"] == "tied" and e["embedding_class"] == "ReversibleEmbedding":
        assert all(kerashub.is_reversible(m["name"]) for m in g["members"] if m["role"] == "embedding")


def test_t5gemma_encoder_embedding_is_not_a_copy():
    """T5Gemma: the encoder's plain Embedding and the decoder's tied
    ReversibleEmbedding have the same shape and different values."""
    r = verify_tie(ROOT / "t5gemma/backbone.keras")
    names = [m["name"] for m in r.to_json()["groups"][0]["members"]]
    assert names == ["layers/reversible_embedding/vars/0"]
    assert r.to_json()["tied"] and r.to_json()["config"]["key"] == "tie_word_embeddings"
    assert "not a member: layers/embedding/vars/0 (a plain Keras Embedding" in r.to_json()["groups"][0]["reason"]


@pytest.fixture(scope="module")
def tf_run():
    pytest.importorskip("keras")
    from tietool.layer.run import run_layer

    return run_layer


@pytest.mark.tf_kernels
@pytest.mark.parametrize("rel", WITH_LOGITS)
def test_run_equals_model_logits(tf_run, rel):
    """The rebuilt layer computes what keras-hub's layer computed (soft cap,
    int8/int4 with their scales, bfloat16 compute; bf16 logits compared after
    the exact upcast to float32): within the kernels' reordering bound of
    helpers.assert_kernel_close, since the reference logits were computed on
    another CPU (bit-exact on the one that made them; one bf16 ulp apart with
    oneDNN on elsewhere)."""
    from tietool.layer.run import npy_array

    e = ENTRIES[rel]
    folder = ROOT / e["family"]
    hidden, logits = folder / e["hidden"], folder / e["logits"]
    want = np.load(logits)
    res = tf_run(str(ROOT / rel), "linear", str(hidden))
    got = npy_array(res.output)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert_kernel_close(got, want, depth=e["hidden_size"], compute_dtype=e["dtype_policy"] or "float32")
    assert res.tied is (e["truth"] == "tied")
    assert res.layer["soft_cap"] == e["logit_soft_cap"]
    assert (res.layer["quantization"] or None) == e["quantization_mode"]
    if e["dtype_policy"] == "bfloat16":
        assert res.output.dtype.name == "bfloat16"
        bits = npy_array(res.output, exact_bytes=True)
        assert bits.dtype == np.uint16 and bits.tobytes() == res.output.tobytes()


@pytest.mark.tf_kernels
@pytest.mark.parametrize("rel", NO_OUTPUT)
def test_run_refuses_without_output_layer(tf_run, rel):
    e = ENTRIES[rel]
    with pytest.raises(UsageError, match="no output layer"):
        tf_run(str(ROOT / rel), "linear", str(ROOT / e["family"] / "unused.npy"))
    # looking tokens up is what the layer does: embedding mode still runs, rows bit for bit
    res = tf_run(str(ROOT / rel), "embedding", np.array([[0, 5, e["vocab_size"] - 1]]))
    with open_checkpoint(ROOT / rel) as ck:
        table = ck.read(res.embedding)
    assert res.output.tobytes() == table[[0, 5, e["vocab_size"] - 1]][None].tobytes()


@pytest.mark.parametrize("rel", HEADS)
def test_run_refuses_a_head_it_cannot_rebuild(rel):
    """PARSeq's head [H, V-2] (another width) and a Dense head [H, V] with a
    bias: verify-tie calls them heads of their own (not tied), and run
    refuses them (exit 2, one line) before TensorFlow is loaded, instead of
    computing the embedding's reverse pass, which is not the model's output."""
    e = ENTRIES[rel]
    report = verify_tie(ROOT / rel)
    g = report.to_json()["groups"][0]
    head = next(m for m in g["members"] if m["role"] == "decoder")
    assert head["shape"] == e["head"]["kernel"] and g["verdict"] == "not tied" and not report.to_json()["tied"]
    r = run_cli("run", ROOT / rel, "--mode", "linear", "--input", ROOT / e["family"] / e["hidden"])
    assert r.returncode == 2 and r.stdout == ""
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"Error: {ROOT / rel}: ")
    if RUN[rel] == "refused: head of another width":
        assert "head of another width" in line and "cannot be rebuilt as the tied layer" in line
        assert "head of another width" in g["reason"]
    else:
        assert "adds a bias" in line and head["name"] in line
    # the model's own output really is not the embedding's reverse pass
    logits = np.load(ROOT / e["family"] / e["logits"])
    assert logits.shape[-1] == e["head"]["kernel"][1]


@pytest.mark.tf_kernels
def test_run_cli_refusal_and_bf16_output(tf_run, tmp_path):
    rel = NO_OUTPUT[0]
    hidden = np.zeros((1, ENTRIES[rel]["hidden_size"]), np.float32)
    np.save(tmp_path / "h.npy", hidden)
    r = run_cli("run", ROOT / rel, "--mode", "linear", "--input", tmp_path / "h.npy")
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and "no output layer" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    # TensorFlow is already loaded in this process: the successful runs go through Click in process.
    pytest.importorskip("keras")
    from click.testing import CliRunner

    from tietool.cli.commands import cli

    bf = next(k for k, e in ENTRIES.items() if e["dtype_policy"] == "bfloat16" and e["logits"])
    e = ENTRIES[bf]
    h = (ROOT / bf).parent / e["hidden"]
    args = ["run", str(ROOT / bf), "--mode", "linear", "--input", str(h), "--output"]
    r = CliRunner().invoke(cli, args + [str(tmp_path / "o.npy")])
    assert r.exit_code == 0, r.output
    out = np.load(tmp_path / "o.npy")
    assert out.dtype == np.float32
    assert_kernel_close(out, np.load((ROOT / bf).parent / e["logits"]), depth=e["hidden_size"],
                        compute_dtype="bfloat16")
    r = CliRunner().invoke(cli, args + [str(tmp_path / "b.npy"), "--exact-bytes"])
    assert r.exit_code == 0, r.output
    bits = np.load(tmp_path / "b.npy")
    assert bits.dtype == np.uint16
    assert ((bits.astype(np.uint32) << 16).view(np.float32)).tobytes() == out.tobytes()


ROUND_TRIP = sorted(k for k in ENTRIES if not k.endswith(("preset", "preset_sharded"))) + [
    k for k in ENTRIES if k.endswith(("preset", "preset_sharded"))]


@pytest.mark.parametrize("rel", ROUND_TRIP)
def test_round_trip_bit_exact(tmp_path, rel):
    from tietool.convert import convert

    st = tmp_path / ("st" if (ROOT / rel).is_dir() else "x.safetensors")
    back = tmp_path / ("back" if (ROOT / rel).is_dir() else "x.weights.h5")
    convert(ROOT / rel, "safetensors", out=st)
    convert(st, "h5", out=back)
    with open_checkpoint(ROOT / rel) as a, open_checkpoint(back) as b:
        assert sorted(a.tensors) == sorted(b.tensors)
        for name, t in a.tensors.items():
            u = b.tensors[name]
            assert (t.shape, t.dtype) == (u.shape, u.dtype), name
            assert a.read(name).tobytes() == b.read(name).tobytes(), name


def test_folder_with_several_weight_files_is_an_error(tmp_path):
    """Never a silent pick: the error lists every weights file."""
    fam = next(e["family"] for e in ENTRIES.values() if e["variant"] == "other tie setting")
    r = run_cli("verify-tie", ROOT / fam)
    assert r.returncode == 2 and r.stdout == ""
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("Error: ")
    assert "several weight files" in line and "backbone.keras" in line and "other_tie.keras" in line
    # one weights file (a preset folder): read as before
    preset = next(k for k, e in ENTRIES.items() if e["variant"] == "preset")
    assert verify_tie(ROOT / preset).to_json()["tied"] is True


@pytest.mark.parametrize("rel", sorted(k for k in ENTRIES if k.endswith(".keras")))
def test_config_less_weights_same_verdict(tmp_path, rel):
    """The ``model.weights.h5`` inside each ``.keras`` (what ``save_weights``
    writes, without the config): the same verdict from the layout alone,
    except where only the config tells (a tie argument that says untied
    beside a lone matrix does not occur: keras-hub then stores the reverse
    matrix)."""
    out = tmp_path / "x.weights.h5"
    with zipfile.ZipFile(ROOT / rel) as z:
        out.write_bytes(z.read("model.weights.h5"))
    g = verify_tie(out).to_json()["groups"][0]
    assert g["verdict"] == ENTRIES[rel]["truth"], g["reason"]


def test_inspect_and_verify_tie_show_the_kerashub_config():
    soft = next(k for k, e in ENTRIES.items() if e["variant"] == "soft-cap")
    r = run_cli("inspect", ROOT / soft)
    assert r.returncode == 0, r.stderr
    assert "soft cap" in r.stdout and str(ENTRIES[soft]["logit_soft_cap"]) in r.stdout
    q = next(k for k, e in ENTRIES.items() if e["variant"] == "int8")
    r = run_cli("verify-tie", ROOT / q)
    assert "keras-hub" in r.stdout and "quantized int8" in r.stdout


def test_kerashub_config_checked_against_the_weights(tmp_path):
    """A keras-hub config that says untied beside a lone tied matrix: the
    config-versus-weights check runs on keras-hub files too."""
    src = ROOT / "qwen/backbone.keras"
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                cfg = json.loads(data)
                assert cfg["config"]["tie_word_embeddings"] is True
                cfg["config"]["tie_word_embeddings"] = False
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    r = verify_tie(bad)
    g = r.to_json()["groups"][0]
    assert r.to_json()["tied"] is False and g["verdict"] == "not tied"
    assert g["consistency"] == {"consistent": False, "wrong_side": "config", "message": g["consistency"]["message"]}
    assert "tie_word_embeddings=false" in g["consistency"]["message"]


@pytest.mark.tf_kernels
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantised_weights_without_config(tf_run, tmp_path, mode):
    """The .keras's model.weights.h5 alone: int8 is recognised from the
    stored dtypes (int8 matrix + per-row scale) and runs bit-exact; int4
    needs the config (its block size), so run says so (exit 2)."""

    rel = next(k for k, e in ENTRIES.items() if e["variant"] == mode)
    e = ENTRIES[rel]
    out = tmp_path / "q.weights.h5"
    with zipfile.ZipFile(ROOT / rel) as z:
        out.write_bytes(z.read("model.weights.h5"))
    assert verify_tie(out).to_json()["groups"][0]["verdict"] == e["truth"]
    folder = ROOT / e["family"]
    if mode == "int8":
        res = tf_run(str(out), "linear", str(folder / e["hidden"]))
        assert_kernel_close(res.output, np.load(folder / e["logits"]), depth=e["hidden_size"])
    else:
        with pytest.raises(UsageError, match="without the model's config"):
            tf_run(str(out), "linear", str(folder / e["hidden"]))


@pytest.mark.tf_kernels
def test_float8_model_runs_bit_exact_and_a_float8_embedding_is_refused(tf_run, tmp_path):
    """``backbone.quantize("float8")``: Keras 3.15 quantises the Dense and
    EinsumDense layers (QuantizedFloat8DTypePolicy in the config's policy map)
    and leaves the embedding float, so run is bit-exact (the test above) and
    reports no quantisation. A config that put the embedding itself under a
    float8 policy would need the layer's scales run does not rebuild: refused
    (exit 2), never a plain matmul."""
    rel = next(k for k, e in ENTRIES.items() if e["variant"] == "float8")
    e = ENTRIES[rel]
    cfg = verify_tie(ROOT / rel).to_json()["config"]["kerashub"]
    modes = {v["mode"] for v in cfg["quantized_layers"].values()}
    assert modes == {"float8"} and "token_embedding" not in cfg["quantized_layers"]
    folder = ROOT / e["family"]
    res = tf_run(str(ROOT / rel), "linear", str(folder / e["hidden"]))
    assert res.layer["quantization"] is None
    assert_kernel_close(res.output, np.load(folder / e["logits"]), depth=e["hidden_size"])

    bad = tmp_path / "f8.keras"
    with zipfile.ZipFile(ROOT / rel) as zin, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                c = json.loads(data)
                pmap = c["config"]["dtype"]["config"]["policy_map"]
                pmap["token_embedding"] = next(iter(pmap.values()))
                data = json.dumps(c).encode()
            zout.writestr(item, data)
    r = run_cli("run", bad, "--mode", "linear", "--input", folder / e["hidden"])
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert "'float8'" in r.stderr and "run rebuilds int8 and int4 layers only" in r.stderr
