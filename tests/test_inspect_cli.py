"""The `inspect` command as a user runs it: table, JSON, filter, errors. In-process
(helpers.invoke), except the checks of the real entry points and their imports."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from safetensors import safe_open

from helpers import fixture, invoke, run_cli


def test_table_and_summary_for_hf_tf_folder():
    r = invoke("inspect", fixture("tf/bert_mlm"))
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "keras2-h5" in out
    assert "bert/" in out and "mlm___cls/" in out and "word_embeddings/weight:0" in out
    assert "tie declaration     true (default of config class BertConfig)" in out
    assert "model type" in out and "bert" in out
    # byte total as h5py sees it
    with h5py.File(fixture("tf/bert_mlm/tf_model.h5"), "r") as f:
        total = []
        f.visititems(lambda n, o: total.append(o.nbytes) if isinstance(o, h5py.Dataset) else None)
    assert f"({sum(total):,} bytes)" in out
    assert r.stderr == ""


def test_json_document_shape_and_values():
    r = invoke("inspect", "--json", fixture("pt/llama_untied"))
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("format", "files", "tensors", "config", "metadata"):
        assert key in doc
    assert doc["format"] == "safetensors"
    assert doc["metadata"]["format"] == "pt"
    assert doc["config"]["tie_word_embeddings"] is False
    with safe_open(str(fixture("pt/llama_untied/model.safetensors")), "np") as f:
        keys = set(f.keys())
        shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
    assert {t["name"] for t in doc["tensors"]} == keys
    for t in doc["tensors"]:
        assert t["shape"] == shapes[t["name"]]
        assert set(t) >= {"name", "shape", "dtype", "nbytes"}
    assert doc["summary"]["tensor_count"] == len(keys)


def test_json_lists_duplicates_and_optimizer_state():
    doc = json.loads(invoke("inspect", "--json", fixture("tf/t5")).stdout)
    shared = [t for t in doc["tensors"] if t["name"].endswith("shared/embeddings:0")]
    assert len(shared) == 3  # every stored copy is listed
    doc = json.loads(invoke("inspect", "--json", fixture("keras3/tied_revemb.keras")).stdout)
    assert any(t["role"] == "optimizer" for t in doc["tensors"])
    assert doc["summary"]["optimizer_tensor_count"] > 0


def test_filter_narrows_table_not_summary():
    r = invoke("inspect", "--filter", "*wte*", fixture("tf/gpt2"))
    assert r.exit_code == 0
    assert "wte/embeddings:0" in r.stdout and "wpe/embeddings:0" not in r.stdout
    assert "1 of 16 tensors match the filter" in r.stdout


def test_control_characters_in_names_are_escaped(tmp_path):
    path = tmp_path / "evil.weights.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("layers/x\x1b[2Jy/vars")
        g.attrs["name"] = "x"
        g.create_dataset("0", data=np.zeros((2, 2), "f4"))
    r = invoke("inspect", path)
    assert r.exit_code == 0, r.stderr
    assert "\x1b" not in r.stdout
    assert "x\\x1b[2Jy" in r.stdout


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40), "HDF5"),
        (lambda p: p.write_bytes(b"not a checkpoint at all, just text\n"), "not"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, make, needle):
    path = tmp_path / "model.h5"
    make(path)
    r = invoke("inspect", path)
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: ")
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_truncated_file(tmp_path):
    data = fixture("tf/gpt2/tf_model.h5").read_bytes()
    path = tmp_path / "tf_model.h5"
    path.write_bytes(data[: len(data) // 2])
    r = invoke("inspect", path)
    assert r.exit_code == 2 and r.stderr.startswith(f"Error: {path}: ") and "Traceback" not in r.stderr


def test_missing_path_and_debug_traceback(tmp_path):
    r = invoke("inspect", tmp_path / "nope")
    assert r.exit_code == 2 and r.stderr.strip() == f"Error: {tmp_path / 'nope'}: no such file or folder"
    r = invoke("--debug", "inspect", tmp_path / "nope")
    assert r.exit_code == 2 and "Traceback" in r.stderr
    r = invoke("inspect", tmp_path / "nope", env={"TIETOOL_DEBUG": "1"})
    assert "Traceback" in r.stderr


def test_version_help_and_usage_errors():
    r = invoke("--version")
    assert r.exit_code == 0 and "tietool" in r.stdout
    r = invoke("inspect", "--help")
    assert r.exit_code == 0 and "Exit status" in r.stdout and "--json" in r.stdout
    r = invoke("inspect")
    assert r.exit_code == 2


def test_console_script_and_module_agree():
    a = run_cli("inspect", "--json", fixture("pt/gpt2"))
    exe = os.path.join(os.path.dirname(sys.executable), "tietool")
    b = subprocess.run([exe] + ["inspect", "--json", str(fixture("pt/gpt2"))], capture_output=True, text=True)
    assert b.returncode == 0 and json.loads(a.stdout) == json.loads(b.stdout)


def test_cli_import_stays_light():
    code = ("import sys, tietool.cli.commands; "
            "bad = [m for m in ('tensorflow', 'keras', 'torch', 'h5py') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]"
