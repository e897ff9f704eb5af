"""Every transformers 4.57.6 TF class with an LM head (fixtures/tf_families, written by
fixtures/make_tf_families.py): the verdict the TF model itself implies, and one verdict
per model across conversions. Loading the --names pt output in transformers 5:
tests/interop/test_pt_families.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tietool.convert import convert, convert_to_pt
from tietool.ties.verify import verify_tie

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ROOT / "fixtures" / "tf_families"
MANIFEST = json.loads((FAMILIES / "MANIFEST.json").read_text())
NAMES = sorted(MANIFEST["families"])

# How a conversion may change the way a tie is *stored* (the verdict never changes):
# lossless safetensors writes copies of one variable once (aliases), --names pt leaves
# out a head transformers 5 ties back; everything else keeps the kind.
DEDUPED = {"duplicate-copies": {"shared-storage", "duplicate-copies"},
           "transposed-copy": {"shared-storage", "transposed-copy"}}
PT = {"duplicate-copies": {"implicit", "duplicate-copies"}, "transposed-copy": {"implicit", "transposed-copy"}}


def outcome(path) -> tuple[str, str, dict | None]:
    r = verify_tie(path)
    assert r.to_json()["groups"], r.to_json()["message"]
    [g] = r.to_json()["groups"]
    return g["verdict"], g["kind"], g.get("consistency")


@pytest.mark.parametrize("family", NAMES)
def test_one_verdict_per_model(tmp_path, family):
    src = FAMILIES / family
    want = MANIFEST["families"][family]
    verdict, kind, consistency = outcome(src)
    assert verdict == want["expected_verdict"], (verdict, want["expected_because"])
    if want["expected_because"] == "an output embedding of another width":
        # untied by design: the config saying so is consistent, never "the config is wrong"
        assert kind == "separate" and consistency["consistent"] is True, consistency
    convert_to_pt(src, tmp_path / "pt")
    convert(src, "safetensors", out=tmp_path / "st")
    convert(src, "safetensors", out=tmp_path / "st_keep", ties="keep")
    convert(tmp_path / "st", "h5", out=tmp_path / "back")
    got = {name: outcome(tmp_path / name)[:2] for name in ("pt", "st", "st_keep", "back")}
    assert {v for v, _k in got.values()} == {verdict}, got
    assert got["st_keep"][1] == kind and got["back"][1] == kind, got
    assert got["st"][1] in DEDUPED.get(kind, {kind}), got
    assert got["pt"][1] in PT.get(kind, {kind}), got


def test_sizes():
    for family in NAMES:
        size = sum(f.stat().st_size for f in (FAMILIES / family).iterdir())
        assert size < 150 * 1024, (family, size)
    total = sum(f.stat().st_size for f in (FAMILIES).rglob("*") if f.is_file())
    assert total < 5 * 1024 * 1024, total
    # All of fixtures/ under 16 MB: it was 10 MB until this round added the transformers 5 sweep subset
    # (1.5 MB) and the keras-hub <-> transformers presets and folders (2.6 MB); the files are tiny models,
    # the budget keeps them so.
    files = (f for f in (ROOT / "fixtures").rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    total = sum(f.stat().st_size for f in files)
    assert total < 16 * 1024 * 1024, total


@pytest.mark.interop  # transformers 4.57.6 with its TF classes, in a subprocess
def test_coverage_is_every_tf_lm_head_class():
    """The classes make_tf_families.py finds by introspection today are exactly the
    generated families plus the listed exclusions (a new or lost class fails here)."""
    code = ("import json, sys; sys.path.insert(0, %r); import make_tf_families as M, transformers as tr; "
            "print(json.dumps(M.candidates(tr)))" % str(ROOT / "fixtures"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    found = set(json.loads(res.stdout.strip().splitlines()[-1]))
    base = {e["class"] for e in MANIFEST["families"].values() if not e["variant_of"]}
    assert found == base | set(MANIFEST["excluded"]), (found ^ (base | set(MANIFEST["excluded"])))
    assert not base & set(MANIFEST["excluded"])


def test_pt_plan_drops_and_reshapes():
    """What transformers 5's classes expect decides: MPNet's TF pooler is dropped and
    listed; ConvBERT's depthwise kernels and conv biases get PyTorch's size-1 axes."""
    import tietool
    from tietool.convert.ptnames import make_plan

    with tietool.open_checkpoint(FAMILIES / "mpnet_masked_lm") as ckpt:
        plan = make_plan(ckpt)
    assert plan.pt_class == "MPNetForMaskedLM"
    assert sorted(n.rsplit("/", 2)[-2] + "/" + n.rsplit("/", 1)[-1] for n in plan.dropped) == [
        "dense/bias:0", "dense/kernel:0"]
    assert all("pooler" in n for n in plan.dropped)
    with tietool.open_checkpoint(FAMILIES / "conv_bert_masked_lm") as ckpt:
        shapes = {e.pt_name: e.shape for e in make_plan(ckpt).entries}
    assert shapes["convbert.encoder.layer.0.attention.self.key_conv_attn_layer.depthwise.weight"] == (16, 1, 3)
    assert shapes["convbert.encoder.layer.0.attention.self.key_conv_attn_layer.bias"] == (8, 1)


def test_pt_summary_lists_dropped(tmp_path):
    from click.testing import CliRunner

    from tietool.cli.commands import cli

    res = CliRunner().invoke(cli, ["convert", str(FAMILIES / "mpnet_masked_lm"), "--to", "safetensors", "--names",
                                   "pt", "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert len(summary["dropped"]) == 2 and summary["pt_class"] == "MPNetForMaskedLM"
    res = CliRunner().invoke(cli, ["convert", str(FAMILIES / "mpnet_masked_lm"), "--to", "safetensors", "--names",
                                   "pt", "-o", str(tmp_path / "out2")])
    assert res.exit_code == 0 and res.output.count("  dropped ") == 2, res.output
