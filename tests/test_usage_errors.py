"""Every refusal of a request (not of a file) is one line, exit 2, and writes
nothing: convert's option combinations and targets, run's output path and
pair options. These fail before any TensorFlow import. In-process (helpers.invoke)."""

import os

import pytest

from helpers import fixture, invoke


def one_error_line(r, needle):
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("src, args, needle", [
    ("pt/gpt2", ["--to", "safetensors"], "already safetensors"),
    ("tf/gpt2", ["--to", "h5"], "already HDF5"),
    ("tf/gpt2", ["--to", "h5", "--names", "pt"], "--names pt writes safetensors"),
    ("tf/gpt2", ["--to", "safetensors", "--names", "pt", "--ties", "keep"], "no --ties keep"),
    ("pt/gpt2", ["--to", "h5", "--shard-size", "1MB"], "only supported for safetensors"),
])
def test_convert_refusals(tmp_path, src, args, needle):
    out = tmp_path / "out"
    one_error_line(invoke("convert", fixture(src), *args, "-o", out), needle)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_convert_never_writes_over_its_source(tmp_path):
    import shutil

    src = tmp_path / "gpt2"
    shutil.copytree(fixture("tf/gpt2"), src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    one_error_line(invoke("convert", src / "tf_model.h5", "--to", "safetensors", "-o", src / "tf_model.h5", "--force"),
                   "overwrite the source")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


@pytest.mark.parametrize("make, args, needle", [
    (None, ["--output", "out.txt"], "must end in .npy"),
    ("out.npy", ["--output", "out.npy"], "exists (use --force"),
    (None, ["--output", "missing/out.npy"], "folder does not exist"),
])
def test_run_output_refused_before_any_work(tmp_path, monkeypatch, make, args, needle):
    monkeypatch.chdir(tmp_path)
    if make:
        (tmp_path / make).write_bytes(b"keep me")
    r = invoke("run", fixture("tf/gpt2"), "--mode", "embedding", "--ids", "1,2", *args)
    one_error_line(r, needle)
    if make:
        assert (tmp_path / make).read_bytes() == b"keep me"


def test_run_pair_options(tmp_path):
    r = invoke("run", fixture("tf/gpt2"), "--mode", "embedding", "--ids", "1", "--decoder", "lm_head.weight")
    one_error_line(r, "--decoder needs --embedding")
    r = invoke("run", fixture("keras3/tied_revemb.weights.h5"), "--mode", "embedding", "--ids", "1",
                "--embedding", "nope")
    one_error_line(r, "nope")


def test_broken_layout_metadata_refused(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    src = tmp_path / "m.safetensors"
    save_file({"a": np.zeros(2, "f4")}, str(src), metadata={"format": "tf", "tietool.layout": "{not json"})
    one_error_line(invoke("convert", src, "--to", "h5", "-o", tmp_path / "m.h5"),
                   "tietool layout record (__metadata__ tietool.layout): ")
    assert not (tmp_path / "m.h5").exists()


def test_keras_suffix_without_zip_refused(tmp_path):
    p = tmp_path / "m.keras"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    one_error_line(invoke("inspect", p), "not a .keras archive")
