"""tietool diff / tietool.diff_checkpoints on real pairs: every fixture against
its lossless and --names pt outputs, one-ulp copies, different models, a
Keras 3 round trip, transformers 4.57 TF against transformers 5, tied heads,
tolerances, the plot, JSON and exit codes. In-process (library or CliRunner)."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

import tietool
from tietool.cli.commands import cli
from tietool.convert import convert, convert_to_pt
from tietool.diff.checkpoints import STATUSES, diff_checkpoints, layer_of

from helpers import FIXTURES, MANIFEST

FIX = str(FIXTURES)
ALL = sorted(MANIFEST)  # every checkpoint fixture, folders and files
TF = [k for k in ALL if k.startswith("tf/")]
DIFF = os.path.join(FIX, "diff")


def fx(rel: str) -> str:
    return os.path.join(FIX, rel)


def statuses(result) -> dict[str, int]:
    return {s: n for s, n in result.summary()["by_status"].items() if n}


def assert_identical(result, n_min: int = 1) -> None:
    bad = [(t.a, t.b, t.status) for t in result.tensors if t.status != "identical"]
    assert not bad, bad
    assert result.identical and len(result.tensors) >= n_min


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- identical pairs ------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", TF)
def test_tf_fixture_equals_its_pt_and_lossless_outputs(rel, tmp_path):
    src = fx(rel)
    pt = convert_to_pt(src, tmp_path / "pt", verify=False).to_json()["output"]
    with tietool.open_checkpoint(src) as ckpt:
        stored = set(ckpt.tensors)
        to = "h5" if ckpt.format.startswith("safetensors") else "safetensors"
    lossless = convert(src, to, out=tmp_path / "lossless", verify=False).to_json()["output"]
    for other, methods in ((pt, {"tf-pt-rules", "name"}), (lossless, {"name", "alias", "tietool.names"})):
        for a, b in ((src, other), (other, src)):
            r = diff_checkpoints(a, b)
            assert_identical(r, len(stored))
            assert {t.match for t in r.tensors} <= methods | {"tied-head"}
            side = {t.a for t in r.tensors} if a == src else {t.b for t in r.tensors}
            assert stored <= side  # every stored TF tensor is paired
    # the kernels transposed by --names pt are compared through the transpose
    r = diff_checkpoints(src, pt)
    transposed = sum(1 for t in r.tensors if t.transform == "transpose")
    if rel in ("tf/bert_mlm", "tf/t5", "tf/mistral_untied"):
        assert transposed > 0


@pytest.mark.parametrize("rel", [k for k in ALL if not k.startswith("tf/")])
def test_other_fixtures_equal_their_lossless_round_trips(rel, tmp_path):
    src = fx(rel)
    there, back_to = ("h5", "safetensors") if rel.startswith("pt/") else ("safetensors", "h5")
    out = convert(src, there, out=tmp_path / "out", verify=False).to_json()["output"]
    back = convert(out, back_to, out=tmp_path / "back", verify=False).to_json()["output"]
    for a, b in ((src, out), (out, back), (back, src)):
        assert_identical(diff_checkpoints(a, b))


def test_keras3_archive_against_its_safetensors_round_trip(tmp_path):
    src = fx("keras3/tied_revemb.keras")
    st = convert(src, "safetensors", out=tmp_path / "k.safetensors", verify=False).to_json()["output"]
    r = diff_checkpoints(src, st)
    assert_identical(r, 11)
    assert {t.match for t in r.tensors} == {"name"}
    assert any(t.a.startswith("optimizer/") for t in r.tensors)  # optimizer state compared too


def test_same_model_saved_by_transformers_4_tf_and_transformers_5():
    tf_dir, pt_dir = os.path.join(DIFF, "bert_tf"), os.path.join(DIFF, "bert_pt5")
    for a, b in ((tf_dir, pt_dir), (pt_dir, tf_dir)):
        r = diff_checkpoints(a, b)
        assert_identical(r, 42)
        assert {t.match for t in r.tensors} == {"tf-pt-rules"}
        assert sum(1 for t in r.tensors if t.transform == "transpose") == 13
    # the word embeddings, stored twice by TF and once by transformers 5, both pair with the one copy
    r = diff_checkpoints(tf_dir, pt_dir)
    emb = [t for t in r.tensors if t.b == "bert.embeddings.word_embeddings.weight"]
    assert sorted(t.a.split("/")[0] for t in emb) == ["bert", "mlm___cls"]
    assert [lay.layer for lay in r.layers] == ["bert.encoder.layer.0", "bert.encoder.layer.1", "(no layer)"]


def test_fine_tune_reported_by_layer_and_through_the_transpose():
    pt5, tuned, tf_dir = (os.path.join(DIFF, n) for n in ("bert_pt5", "bert_pt5_tuned", "bert_tf"))
    r = diff_checkpoints(pt5, tuned)
    layers = {g.layer: g for g in r.layers}
    assert layers["bert.encoder.layer.0"].differ == 0
    assert layers["bert.encoder.layer.1"].differ == 16
    differ = {t.a for t in r.tensors if t.status == "differs"}
    assert differ == {t.a for t in r.tensors if t.a.startswith(("bert.encoder.layer.1.", "cls.predictions.transform."))}
    # TF (kernel [in, out]) against the tuned PyTorch weights ([out, in]): same figures, index in A's layout
    from safetensors.numpy import load_file

    ref = load_file(os.path.join(pt5, "model.safetensors"))
    new = load_file(os.path.join(tuned, "model.safetensors"))
    name = "bert.encoder.layer.1.intermediate.dense.weight"  # [32, 16] in PyTorch
    a, b = ref[name].astype(np.float64), new[name].astype(np.float64)
    r2 = diff_checkpoints(tf_dir, tuned)
    t = next(t for t in r2.tensors if t.b == name)
    assert t.transform == "transpose" and t.shape_a == (16, 32)
    bad = np.argwhere((a != b).T)
    assert t.first_index == tuple(bad[0])
    assert t.elements_differ == len(bad) and t.rows_differ == len(set(bad[:, 0]))
    assert math.isclose(t.max_abs, float(np.abs(a - b).max()))
    assert math.isclose(t.rel_l2, float(np.linalg.norm(a - b) / np.linalg.norm(a)), rel_tol=1e-9)
    mask = b != 0
    assert math.isclose(t.max_rel, float((np.abs(a - b)[mask] / np.abs(b[mask])).max()), rel_tol=1e-12)


# -- one element moved by one ulp -------------------------------------------------------------------

def _copy(src: str, dst: str) -> str:
    if os.path.isdir(src):
        shutil.copytree(src, dst)
        return dst
    os.makedirs(dst)
    out = os.path.join(dst, os.path.basename(src))
    shutil.copyfile(src, out)
    return out


def _nudge(path: str) -> tuple[str, tuple[int, ...]]:
    """Move one element of the largest float tensor stored alone by one ulp,
    in place (raw bits + 1); returns its name and index."""
    with tietool.open_checkpoint(path) as ckpt:
        keys = [t.storage_key for t in ckpt if t.storage_key is not None]
        cands = [t for t in ckpt if t.offset is not None and t.dtype.startswith(("float", "bfloat")) and t.numel > 1
                 and keys.count(t.storage_key) <= 1 and not t.alias_of]
        t = max(cands, key=lambda t: (t.numel, t.name))
        item = t.nbytes // t.numel
        flat = t.numel // 2 + 1
        index = tuple(int(i) for i in np.unravel_index(flat, t.shape))
        where, fmt = t.file, {2: "<H", 4: "<I", 8: "<Q"}[item]
        pos = t.offset + flat * item
    with open(where, "r+b") as fh:
        fh.seek(pos)
        (bits,) = struct.unpack(fmt, fh.read(item))
        fh.seek(pos)
        fh.write(struct.pack(fmt, bits + 1))
    return t.name, index


@pytest.mark.parametrize("rel", [k for k in ALL if not k.endswith(".keras")] + ["diff/bert_tf", "diff/bert_pt5"])
def test_one_ulp_copy_reports_exactly_that_element(rel, tmp_path):
    src = fx(rel)
    copy = _copy(src, str(tmp_path / "copy"))
    name, index = _nudge(copy)
    r = diff_checkpoints(src, copy)
    bad = [t for t in r.tensors if t.status != "identical"]
    assert [(t.b, t.status) for t in bad] == [(name, "differs")], bad
    t = bad[0]
    assert t.first_index == index and t.elements_differ == 1 and t.rows_differ == 1 and t.bits_differ == 1
    assert t.max_abs > 0 and 0 < t.max_rel < 1e-2 and 0 < t.rel_l2 < 1e-2
    assert not r.identical
    # within a tolerance it is "near", and the whole diff matches
    r2 = diff_checkpoints(src, copy, rtol=1e-2)
    assert r2.identical and [t.status for t in r2.tensors if t.status != "identical"] == ["near"]


def test_one_ulp_across_layouts_tf_against_pt(tmp_path):
    """The nudged TF kernel is found in the transformers 5 save, at its TF index."""
    copy = _copy(os.path.join(DIFF, "bert_tf"), str(tmp_path / "copy"))
    name, index = _nudge(copy)
    r = diff_checkpoints(os.path.join(DIFF, "bert_pt5"), copy)
    bad = [t for t in r.tensors if t.status != "identical"]
    assert [t.b for t in bad] == [name]
    assert bad[0].first_index == (index[::-1] if bad[0].transform == "transpose" else index)


# -- unmatched, shapes, ties ------------------------------------------------------------------------

def test_different_models_list_only_a_and_only_b():
    r = diff_checkpoints(fx("tf/gpt2"), fx("tf/bert_mlm"))
    s = statuses(r)
    assert s.get("only-a") and s.get("only-b") and not r.identical
    assert {t.a for t in r.tensors if t.status == "only-a"} >= {
        "transformer/tfgpt2lm_head_model/transformer/wte/embeddings:0"}
    r = diff_checkpoints(fx("pt/llama_untied"), fx("pt/llama_tied"))
    assert [(t.a, t.status) for t in r.tensors if t.status == "only-a"] == [("lm_head.weight", "only-a")]


def _save(path: str, tensors: dict, fmt: str = "pt") -> str:
    from safetensors.numpy import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path, metadata={"format": fmt})
    return path


def test_tied_head_left_out_matches_the_embedding(tmp_path):
    """llama_tied stores no lm_head (as transformers 5 saves a tie); a copy
    that stores it pairs it with the embedding, and a changed head is found."""
    from safetensors.numpy import load_file

    src = fx("pt/llama_tied")
    tensors = load_file(os.path.join(src, "model.safetensors"))
    emb = tensors["model.embed_tokens.weight"]
    folder = tmp_path / "with_head"
    shutil.copytree(src, folder)
    _save(str(folder / "model.safetensors"), {**tensors, "lm_head.weight": emb.copy()})
    r = diff_checkpoints(folder, src)
    head = [t for t in r.tensors if t.a == "lm_head.weight"]
    assert [(t.b, t.match, t.status) for t in head] == [("model.embed_tokens.weight", "tied-head", "identical")]
    assert r.identical
    changed = emb.copy()
    changed[3, 5] = np.nextafter(changed[3, 5], np.float32(1))
    _save(str(folder / "model.safetensors"), {**tensors, "lm_head.weight": changed})
    r = diff_checkpoints(src, folder)
    bad = [t for t in r.tensors if t.status != "identical"]
    assert [(t.b, t.match, t.first_index) for t in bad] == [("lm_head.weight", "tied-head", (3, 5))]


def test_shape_and_dtype_mismatch_named(tmp_path):
    a = _save(str(tmp_path / "a.safetensors"), {"x.weight": np.ones((4, 3), np.float32),
                                                "y.weight": np.arange(6, dtype=np.float32)})
    b = _save(str(tmp_path / "b.safetensors"), {"x.weight": np.ones((3, 4), np.float32),
                                                "y.weight": np.arange(6, dtype=np.float16)})
    r = diff_checkpoints(a, b)
    got = {t.a: t for t in r.tensors}
    assert got["x.weight"].status == "shape-mismatch"
    assert got["y.weight"].status == "dtype-mismatch" and got["y.weight"].elements_differ == 0


def test_nan_and_tolerance_semantics(tmp_path):
    """Exact: bits (NaN payloads, -0.0); with a tolerance verify-tie's
    numpy.isclose on float64, NaN matching NaN, an option not given = 0."""
    qnan, other_nan = np.array([0x7FC00000, 0x7FC00001], np.uint32).view(np.float32)
    a = np.array([qnan, 1.0, 0.0, 2.0], np.float32)
    b = np.array([other_nan, 1.0, -0.0, 2.0 + 2.4e-7], np.float32)
    pa = _save(str(tmp_path / "a.safetensors"), {"v": a})
    pb = _save(str(tmp_path / "b.safetensors"), {"v": b})
    t = diff_checkpoints(pa, pb).tensors[0]
    assert (t.status, t.elements_differ, t.first_index) == ("differs", 3, (0,))
    assert t.nan_mismatch == 0 and math.isclose(t.max_abs, float(np.float32(2.0 + 2.4e-7)) - 2.0)
    t = diff_checkpoints(pa, pb, atol=1e-6).tensors[0]
    assert (t.status, t.elements_differ, t.bits_differ) == ("near", 0, 3)
    t = diff_checkpoints(pa, pb, rtol=1e-8).tensors[0]  # atol not given: 0
    assert (t.status, t.elements_differ, t.first_index) == ("differs", 1, (3,))
    nan_vs_number = _save(str(tmp_path / "c.safetensors"), {"v": np.array([1.0, 1.0, 0.0, 2.0], np.float32)})
    t = diff_checkpoints(pa, nan_vs_number, atol=1.0).tensors[0]
    assert t.status == "differs" and t.nan_mismatch == 1


def test_streams_large_transposed_pair_in_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((1024, 4096), dtype=np.float32)  # 16 MB, TF [in, out]
    tf_path = _save(str(tmp_path / "tf" / "model.safetensors"), {"dense/kernel:0": kernel}, fmt="tf")
    changed = np.ascontiguousarray(kernel.T)
    changed[4000, 300] += 1.0
    pt_path = _save(str(tmp_path / "pt" / "model.safetensors"), {"dense.weight": changed})
    del kernel, changed
    tracemalloc.start()
    r = diff_checkpoints(tf_path, pt_path, block_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t = r.tensors[0]
    assert (t.a, t.b, t.transform, t.match) == ("dense/kernel:0", "dense.weight", "transpose", "tf-pt-rules")
    assert (t.status, t.first_index, t.elements_differ, t.rows_differ) == ("differs", (300, 4000), 1, 1)
    assert peak < 8 << 20, peak  # a few 1 MB blocks, not the 16 MB tensor (twice)


def test_layer_of():
    assert layer_of("transformer.h.11.attn.c_attn.weight") == "transformer.h.11"
    assert layer_of("bert/tf_bert_for_masked_lm/bert/encoder/layer_._3/output/dense/kernel:0") == \
        "bert.tf_bert_for_masked_lm.bert.encoder.layer.3"
    assert layer_of("encoder.block.1.layer.0.SelfAttention.q.weight") == "encoder.block.1"
    assert layer_of("layers/dense/vars/0") == "(no layer)"
    assert layer_of("model.embed_tokens.weight") == "(no layer)"


# -- CLI ----------------------------------------------------------------------------------------

def test_cli_table_json_and_exit_codes():
    pt5, tuned, tf_dir = (os.path.join(DIFF, n) for n in ("bert_pt5", "bert_pt5_tuned", "bert_tf"))
    res = run("diff", tf_dir, pt5)
    assert res.exit_code == 0 and res.output.rstrip().endswith("IDENTICAL")
    assert "47 identical tensor(s) not listed" in res.output
    res = run("diff", tf_dir, pt5, "--all")
    assert "= bert.embeddings.word_embeddings.weight (tf-pt-rules)" in res.output
    res = run("diff", pt5, tuned)
    assert res.exit_code == 1 and res.output.rstrip().endswith("DIFFERENT")
    lines = res.output.splitlines()
    first_row = next(i for i, line in enumerate(lines) if line.startswith("--------")) + 1
    assert lines[first_row].startswith("differs")  # differences first
    assert "Per layer:" in res.output and "bert.encoder.layer.1" in res.output
    res = run("diff", pt5, tuned, "--json")
    doc = json.loads(res.output)
    assert res.exit_code == 1 and doc["identical"] is False
    assert {"a", "b", "status", "max_abs", "max_rel", "rel_l2", "match", "first_index"} <= set(doc["tensors"][0])
    assert {t["status"] for t in doc["tensors"]} <= set(STATUSES)
    assert doc["summary"]["by_status"]["differs"] == 20 and doc["summary"]["by_status"]["identical"] == 22
    res = run("diff", fx("tf/gpt2"), fx("pt/llama_tied"), "--json")
    assert res.exit_code == 1
    assert {t["status"] for t in json.loads(res.output)["tensors"]} == {"only-a", "only-b"}


@pytest.mark.parametrize("args, needle", [
    (["diff", "no/such/path", "fixtures/diff/bert_pt5"], "no such file or folder"),
    (["diff", "fixtures/diff/bert_pt5", "fixtures/diff/bert_tf", "--atol", "-1"], "--atol must be"),
    (["diff", "fixtures/diff/bert_pt5", "fixtures/diff/bert_tf", "--rtol", "nan"], "--rtol must be"),
])
def test_cli_bad_input_one_line_exit_2(args, needle, monkeypatch):
    monkeypatch.chdir(os.path.dirname(FIX))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("Error: ") and needle in res.output


def _png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("matplotlib not installed (the test extra installs it)")


def test_plot_written_as_png(tmp_path):
    _need_matplotlib()
    out = tmp_path / "diff.png"
    res = run("diff", os.path.join(DIFF, "bert_pt5"), os.path.join(DIFF, "bert_pt5_tuned"), "--plot", str(out))
    assert res.exit_code == 1
    w, h = _png_size(str(out))
    assert (w, h) == (1100, 480)
    assert os.path.getsize(out) > 10_000
    res = run("diff", os.path.join(DIFF, "bert_pt5"), os.path.join(DIFF, "bert_pt5_tuned"), "--plot", str(out))
    assert res.exit_code == 2 and "exists" in res.output  # not overwritten without --force
    res = run("diff", fx("tf/gpt2"), fx("tf/gpt2_sharded"), "--plot", str(out), "--force")
    assert res.exit_code == 0 and _png_size(str(out)) == (1100, 480)


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "diff.png"
    res = CliRunner().invoke(cli, ["diff", os.path.join(DIFF, "bert_pt5"), os.path.join(DIFF, "bert_tf"),
                                   "--plot", str(out)])
    assert res.exit_code == 2 and not out.exists()
    assert res.output.count("\n") == 1 and "pip install 'tietool[plot]'" in res.output


def test_plot_hostile_names_are_plain_text(tmp_path):
    """Names with mathtext markup or control characters do not break the plot."""
    _need_matplotlib()
    name = "x$.1.$\\frac{w\x1b[2J"
    a = _save(str(tmp_path / "a.safetensors"), {name: np.ones(3, np.float32)})
    b = _save(str(tmp_path / "b.safetensors"), {name: np.full(3, 2, np.float32)})
    res = run("diff", a, b, "--plot", str(tmp_path / "p.png"))
    assert res.exit_code == 1 and "\x1b" not in res.output
    assert _png_size(str(tmp_path / "p.png")) == (1100, 480)
