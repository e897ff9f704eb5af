"""`tietool verify-tie` as a user runs it: exit status, tables, JSON, errors."""

import json
import shutil

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import EXPECTED_TIES as EXPECTED
from helpers import fixture, invoke, run_cli


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_exit_status_per_fixture(rel):
    tied, kind, verdict, _n = EXPECTED[rel]
    r = invoke("verify-tie", fixture(rel))
    assert r.exit_code == (0 if tied else 1), r.output
    assert kind in r.output and verdict in r.output
    assert ("NOT TIED" not in r.output) is tied
    r = invoke("verify-tie", "--json", fixture(rel))
    assert r.exit_code == (0 if tied else 1)
    doc = json.loads(r.output)
    assert doc["tied"] is tied
    for key in ("tied", "groups", "config", "path", "format", "message"):
        assert key in doc
    assert set(doc["config"]) >= {"value", "source"}
    for g in doc["groups"]:
        assert {"members", "kind", "verdict"} <= set(g)
        assert (g["kind"], g["verdict"]) == (kind, verdict)
        if not g["tied"] and g["kind"] == "separate":
            assert {"max_abs_diff", "rows_differ", "first_rows"} <= set(g)


def test_subprocess_entry_point():
    r = run_cli("verify-tie", fixture("tf/t5"))
    assert r.returncode == 0 and r.stderr == ""
    assert "duplicate-copies" in r.stdout and "shared/shared/shared/embeddings:0" in r.stdout
    r = run_cli("verify-tie", fixture("pt/llama_untied"))
    assert r.returncode == 1 and "not tied" in r.stdout


def test_help_documents_exit_codes_and_tolerances():
    r = invoke("verify-tie", "--help")
    assert r.exit_code == 0
    for text in ("--embedding", "--decoder", "--atol", "--rtol", "--json", "Exit status", "bitwise", "NaN"):
        assert text in r.output


def test_one_ulp_tamper_and_atol(tmp_path):
    folder = tmp_path / "bert"
    shutil.copytree(fixture("tf/bert_mlm"), folder)
    with h5py.File(folder / "tf_model.h5", "r+") as f:
        ds = f["mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"]
        old = ds[12, 0]
        ds[12, 0] = np.nextafter(old, np.float32(-np.inf), dtype=np.float32)
        ulp = float(old) - float(ds[12, 0])
    r = invoke("verify-tie", "--json", folder)
    assert r.exit_code == 1
    g = json.loads(r.output)["groups"][0]
    assert g["verdict"] == "near copy" and g["first_rows"] == [12] and g["max_abs_diff"] == ulp
    r = invoke("verify-tie", folder)
    assert "near copy" in r.output and "(first: 12)" in r.output
    assert invoke("verify-tie", "--atol", "1e-6", folder).exit_code == 0
    assert invoke("verify-tie", "--rtol", "1e-4", folder).exit_code == 0


def test_config_mismatch_is_explained(tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(fixture("tf/gpt2"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    r = invoke("verify-tie", folder)
    assert r.exit_code == 1
    assert "config is wrong" in r.output and "random" in r.output


def test_explicit_names_and_bad_input(tmp_path):
    llama = fixture("pt/llama_untied")
    r = invoke("verify-tie", "--embedding", "model.embed_tokens.weight", "--decoder", "lm_head.weight", llama)
    assert r.exit_code == 1
    r = invoke("verify-tie", "--decoder", "no.such.tensor", llama)
    assert r.exit_code == 2 and r.stderr.startswith("Error: ") and "no.such.tensor" in r.stderr
    r = invoke("verify-tie", "--embedding", "model.embed_tokens.weight", "--decoder",
                "model.layers.0.mlp.down_proj.weight", llama)
    assert r.exit_code == 2 and "cannot pair" in r.stderr
    r = invoke("verify-tie", "--atol", "-1", llama)
    assert r.exit_code == 2
    r = invoke("verify-tie", tmp_path / "missing")
    assert r.exit_code == 2


def test_alias_nan_and_no_output(tmp_path):
    e = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    p = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": e}, str(p), metadata={"lm_head.weight": "model.embed_tokens.weight"})
    r = invoke("verify-tie", p)
    assert r.exit_code == 0 and "shared-storage" in r.output and "alias of model.embed_tokens.weight" in r.output
    h = e.copy()
    e[1, 1] = np.array([0x7FC00001], np.uint32).view(np.float32)[0]
    h[1, 1] = np.array([0x7FC00002], np.uint32).view(np.float32)[0]
    save_file({"model.embed_tokens.weight": e, "lm_head.weight": h}, str(p))
    assert invoke("verify-tie", p).exit_code == 1
    assert invoke("verify-tie", "--atol", "0", p).exit_code == 0
    save_file({"model.embed_tokens.weight": e}, str(p))
    r = invoke("verify-tie", p)
    assert r.exit_code == 1 and "no output layer" in r.output


def test_hostile_name_is_escaped(tmp_path):
    e = np.zeros((10, 4), np.float32)
    p = tmp_path / "m.safetensors"
    save_file({"tok_emb\x1b[2J": e, "lm_head\x07": e.copy()}, str(p))
    r = invoke("verify-tie", p)
    assert r.exit_code == 0
    assert "\x1b" not in r.output and "\x07" not in r.output and "\\x1b" in r.output


def test_inspect_lists_tie_groups():
    r = invoke("inspect", fixture("keras3/untied_revemb.weights.h5"))
    assert r.exit_code == 0
    assert "Tie groups:" in r.stdout and "vars/1 (T) [decoder]" in r.stdout and "unverified" in r.stdout
    doc = json.loads(invoke("inspect", "--json", fixture("tf/bert_mlm")).stdout)
    assert doc["ties"][0]["kind"] == "duplicate-copies" and len(doc["ties"][0]["members"]) == 2
