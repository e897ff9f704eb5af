"""Daily use (issue 15), through the CLI in-process with exact expected output:
help with examples and per-command exit codes, --to inferred, .keras back to
.keras, converted files inspected like their source, --json errors, --debug
anywhere, paths as the user gave them. Progress on a terminal is in
test_cli_terminal.py; Keras 3 reading the .keras output in test_keras_reads_converted.
"""

from __future__ import annotations

import json
import re
import shlex
import zipfile
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from tietool.cli.commands import cli
from tietool.convert import convert
from tietool.summary import inspect_checkpoint

from helpers import FIXTURES, MANIFEST

KERAS = "fixtures/keras3/tied_revemb.keras"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A working folder that looks like the repository root (fixtures/ in it),
    so that commands run exactly as the help and README write them."""
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIETOOL_DEBUG", raising=False)
    return tmp_path


def tietool(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="tietool")


def timeless(text: str) -> str:
    return re.sub(r"\d+\.\d\d s, ", "0.00 s, ", text)


# -- help -------------------------------------------------------------------------------

def test_command_list_summaries_fit():
    r = tietool("--help")
    assert r.exit_code == 0
    commands = r.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    assert commands == (
        "  check       Audit tie flags against the stored weights.\n"
        "  convert     Convert losslessly: HDF5, .keras <-> safetensors.\n"
        "  diff        Compare two checkpoints tensor by tensor.\n"
        "  fix         Write a repaired copy of a checkpoint.\n"
        "  inspect     List tensors, config and ties (headers only).\n"
        "  run         Run the shared layer's embedding or linear pass.\n"
        "  verify-tie  Prove the embedding and LM head are tied."
    )


COMMON_EXITS = ('    2  bad input or usage: one line "Error: FILE: what is wrong" on stderr\n'
                "    3  internal error (a bug; --debug or TIETOOL_DEBUG=1 shows the traceback)\n")
EXITS = {
    "inspect": "  Exit status:\n    0  success\n" + COMMON_EXITS,
    "run": "  Exit status:\n    0  success\n" + COMMON_EXITS,
    "convert": "  Exit status:\n    0  success\n" + COMMON_EXITS,
    "verify-tie": ("  Exit status:\n    0  tied, every stored copy identical\n"
                   "    1  not tied, a copy differs, or no output layer\n" + COMMON_EXITS),
}


# every command the CLI has, in the order the help examples build on each other (convert's
# examples write what later ones read); a command added later is picked up too
ALL_COMMANDS = ("inspect", "verify-tie", "run", "convert", "check", "fix", "diff")
ALL_COMMANDS += tuple(sorted(set(cli.commands) - set(ALL_COMMANDS)))


def examples(command: str) -> list[str]:
    text = tietool(command, "--help").stdout
    block = text.split("  Examples:\n\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()]


@pytest.mark.parametrize("command", sorted(EXITS))
def test_help_has_examples_and_only_its_exit_codes(command):
    r = tietool(command, "--help")
    assert r.exit_code == 0
    assert r.stdout.endswith(EXITS[command]), r.stdout[-400:]
    assert r.stdout.count("Exit status:") == 1
    lines = examples(command)
    assert 2 <= len(lines) <= 4 and all(line.startswith(f"tietool {command} ") for line in lines), lines


@pytest.mark.interop  # the `run` examples need TensorFlow
@pytest.mark.tf_kernels
def test_help_examples_run_as_written(fresh_clone):
    """Every example line of every command's help, in order, from the root of a
    fresh clone (the shipped fixtures only): exit 0 or 1, nothing on stderr,
    and what they write is under out/ (git status stays clean)."""
    import subprocess

    ran = []
    for command in ALL_COMMANDS:
        for line in examples(command):
            args = shlex.split(line.split("  #", 1)[0])[1:]
            r = tietool(*args)
            assert r.exit_code in (0, 1) and r.stderr == "", (line, r.stdout, r.stderr)
            ran.append(line)
    assert len(ran) >= 17
    assert Path("out/m.keras").is_file() and Path("out/gpt2-pt/model.safetensors").is_file()
    assert Path("out/emb.npy").is_file() and Path("out/diff.png").is_file()
    assert subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout == ""


def test_top_level_help_names_every_command_that_exits_1():
    r = tietool("--help")
    block = r.stdout.split("Exit status:\n", 1)[1]
    one = block.split("\n    2  ", 1)[0].split("    1  ", 1)[1]
    assert sorted(c for c in ALL_COMMANDS if f"{c}:" in one) == ["check", "diff", "verify-tie"]
    for command in ("check", "diff", "verify-tie"):
        assert "\n    1  " in tietool(command, "--help").stdout, command
    for command in ("inspect", "run", "convert", "fix"):
        assert "\n    1  " not in tietool(command, "--help").stdout, command


# -- --to inferred, paths as given ------------------------------------------------------

def test_default_output_beside_the_source_as_given(repo):
    import shutil

    shutil.copytree("fixtures/tf/gpt2", "models/gpt2")
    r = tietool("convert", "models/gpt2", "--names", "pt")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout) == (
        "models/gpt2 (keras2-h5) -> models/gpt2-pt (PyTorch names)\n"
        "  chose --to safetensors: --names pt writes safetensors\n"
        "  wrote models/gpt2-pt/model.safetensors\n"
        "  copied 4 other file(s) unchanged\n"
        "  16 tensors, 19,392 bytes of tensor data, 0.00 s, verified\n"
    )
    r = tietool("convert", "models/gpt2/tf_model.h5", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["output"], doc["files"], doc["to"], doc["to_inferred"]) == (
        "models/gpt2/model.safetensors", ["models/gpt2/model.safetensors"], "safetensors", "the source is HDF5")


def test_convert_names_pt_without_to(repo):
    r = tietool("convert", "fixtures/tf/gpt2", "--names", "pt", "-o", "gpt2-pt")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout) == (
        "fixtures/tf/gpt2 (keras2-h5) -> gpt2-pt (PyTorch names)\n"
        "  chose --to safetensors: --names pt writes safetensors\n"
        "  wrote gpt2-pt/model.safetensors\n"
        "  copied 4 other file(s) unchanged\n"
        "  16 tensors, 19,392 bytes of tensor data, 0.00 s, verified\n"
    )
    # and back: plain safetensors -> h5, beside the source, relative as given
    r = tietool("convert", "gpt2-pt")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout) == (
        "gpt2-pt (safetensors) -> gpt2-pt-h5\n"
        "  chose --to h5: the source is safetensors\n"
        "  wrote gpt2-pt-h5/model.h5\n"
        "  copied 4 other file(s) unchanged\n"
        "  16 tensors, 19,392 bytes of tensor data, 0.00 s, verified\n"
    )


def test_to_inferred_from_source_and_recorded_origin(repo):
    r = tietool("convert", "fixtures/tf/gpt2/tf_model.h5", "-o", "g")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout).splitlines()[:3] == [
        "fixtures/tf/gpt2/tf_model.h5 (keras2-h5) -> g",
        "  chose --to safetensors: the source is HDF5",
        "  wrote g",
    ]
    r = tietool("convert", "g", "-o", "back")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout).splitlines()[:3] == [
        "g (safetensors) -> back",
        "  chose --to h5: the source was converted from keras2-h5",
        "  wrote back",
    ]
    assert_same_weights("fixtures/tf/gpt2/tf_model.h5", "back")


def test_explicit_to_is_not_restated(repo):
    r = tietool("convert", "fixtures/tf/gpt2/tf_model.h5", "--to", "safetensors", "-o", "x.st")
    assert r.exit_code == 0, r.stderr
    assert "chose --to" not in r.stdout
    assert r.stdout.startswith("fixtures/tf/gpt2/tf_model.h5 (keras2-h5) -> x.st\n  wrote x.st\n")


# -- .keras back to .keras -------------------------------------------------------------

def test_keras_to_safetensors_to_keras(repo):
    r = tietool("convert", KERAS, "-o", "m.safetensors")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout) == (
        "fixtures/keras3/tied_revemb.keras (keras3-archive) -> m.safetensors\n"
        "  chose --to safetensors: the output name ends in .safetensors\n"
        "  wrote m.safetensors\n"
        "  11 tensors, 15,564 bytes of tensor data, 0.00 s, verified\n"
    )
    r = tietool("convert", "m.safetensors")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout) == (
        "m.safetensors (safetensors) -> m.keras\n"
        "  chose --to keras: the source was converted from a .keras archive\n"
        "  wrote m.keras\n"
        "  11 tensors, 15,564 bytes of tensor data, 0.00 s, verified\n"
    )
    with zipfile.ZipFile(KERAS) as a, zipfile.ZipFile("m.keras") as b:
        assert [i.filename for i in b.infolist()] == [i.filename for i in a.infolist()] == \
            ["metadata.json", "config.json", "model.weights.h5"]
        for name in ("config.json", "metadata.json"):
            assert b.read(name) == a.read(name)  # byte for byte
        assert [(i.date_time, i.compress_type) for i in b.infolist()] == \
            [(i.date_time, i.compress_type) for i in a.infolist()]
    assert_same_weights(KERAS, "m.keras")


def test_keras_to_h5_extracts_weights_and_back(repo):
    Path("k.keras").write_bytes(Path(KERAS).read_bytes())
    r = tietool("convert", "k.keras", "--to", "h5")
    assert r.exit_code == 0, r.stderr
    assert timeless(r.stdout) == (
        "k.keras (keras3-archive) -> k.weights.h5\n"
        "  wrote k.weights.h5\n"
        "  11 tensors, 15,564 bytes of tensor data, 0.00 s, verified\n"
    )
    with zipfile.ZipFile(KERAS) as z, h5py.File("k.weights.h5") as f:
        assert f.attrs["tietool.config"] == z.read("config.json").decode()
        assert f.attrs["tietool.keras_metadata"] == z.read("metadata.json").decode()
        assert sorted(f) == ["layers", "optimizer", "vars"]
    assert_same_weights(KERAS, "k.weights.h5")
    r = tietool("convert", "k.weights.h5", "--to", "keras", "-o", "k2.keras")
    assert r.exit_code == 0, r.stderr
    with zipfile.ZipFile(KERAS) as a, zipfile.ZipFile("k2.keras") as b:
        assert [i.filename for i in b.infolist()] == [i.filename for i in a.infolist()]
        assert all(b.read(n) == a.read(n) for n in ("config.json", "metadata.json"))
    assert_same_weights(KERAS, "k2.keras")


def assert_same_weights(a: str, b: str) -> None:
    from tietool.formats import open_checkpoint

    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        assert list(ca.tensors) == list(cb.tensors)
        for t in ca:
            u = cb.tensors[t.name]
            assert (u.dtype, u.shape, u.role) == (t.dtype, t.shape, t.role)
            assert ca.read(t.name).tobytes() == cb.read(t.name).tobytes(), t.name


NEEDS_ARCHIVE = "--to keras needs a .keras archive converted by tietool"


@pytest.mark.parametrize("src, args, needle", [
    (KERAS, ["--to", "keras"], "source is already a .keras archive"),
    ("fixtures/keras3/untied_revemb.weights.h5", ["--to", "keras"], NEEDS_ARCHIVE),
    ("fixtures/pt/gpt2", ["--to", "keras"], NEEDS_ARCHIVE),
])
def test_to_keras_refusals(repo, src, args, needle):
    r = tietool("convert", src, *args, "-o", "out.keras")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("Error: ") and needle in r.stderr and len(r.stderr.splitlines()) == 1
    assert not Path("out.keras").exists()


# -- inspect: converted files look like their source ---------------------------------

def test_inspect_converted_keras_shows_the_source_highlights(repo):
    assert tietool("convert", KERAS, "-o", "m.safetensors").exit_code == 0
    head = "\n".join(tietool("inspect", "m.safetensors").stdout.split("\n\n")[0].splitlines())
    assert head == (
        "path                m.safetensors\n"
        "format              safetensors (safetensors)\n"
        "converted from      keras3-archive (Keras 3 .keras archive)\n"
        "files               m.safetensors\n"
        "tensors             11 (8 optimizer)\n"
        "parameters          1,296\n"
        "total size          15.6 KB (15,564 bytes)\n"
        "by dtype            float32 15.6 KB, int64 8 B\n"
        "config              m.safetensors:__metadata__ tietool.config\n"
        "class name          Functional\n"
        "vocab size          64\n"
        "hidden size         16\n"
        "tie declaration     true (Keras layer 'revemb' tie_weights)\n"
        "meta date_saved     2026-11-29@14:15:58\n"
        "meta format         keras\n"
        "meta keras_version  3.15.1"
    )
    src = tietool("inspect", KERAS).stdout.split("\n\n")
    out = tietool("inspect", "m.safetensors").stdout.split("\n\n")
    assert src[1:] == out[1:]  # the same tensor table (roles included) and tie groups


def weight_sources() -> list[str]:
    return sorted(rel for rel, entry in MANIFEST.items() if not rel.endswith((".npy", ".json")))


def test_every_fixture_and_its_conversions_report_the_same_counts(tmp_path):
    """Parameters (optimizer state apart), optimizer tensors and config
    highlights: the same for each fixture, its conversion and the way back."""
    seen = 0
    for rel in weight_sources():
        src = FIXTURES / rel
        a = inspect_checkpoint(src)
        for ties in ("dedupe",):  # the default; copies written once must still count as stored
            out = tmp_path / f"{rel.replace('/', '_')}-{ties}"
            first = convert(src, None, out=out, ties=ties)
            back = convert(out, None, out=tmp_path / f"{out.name}-back")
            for r in (first, back):
                b = inspect_checkpoint(r.output)
                for key in ("parameter_count", "optimizer_tensor_count", "tensor_count"):
                    if key == "tensor_count" and ties == "dedupe" and r is first:
                        continue  # copies written once
                    assert b.to_json()["summary"][key] == a.to_json()["summary"][key], (rel, ties, r.to, key)
                assert b.to_json()["config_highlights"] == a.to_json()["config_highlights"], (rel, ties, r.to)
                seen += 1
    assert seen >= 2 * len(weight_sources()) >= 40


# -- errors for scripts, --debug anywhere ----------------------------------------------

@pytest.mark.parametrize("args, message, file, code", [
    (["inspect", "missing.h5", "--json"], "no such file or folder", "missing.h5", 2),
    (["verify-tie", "--json", "fixtures/pt/gpt2", "--embedding", "nope"], "no tensor named 'nope'",
     "fixtures/pt/gpt2", 2),
    (["convert", KERAS, "--to", "keras", "--json"],
     "source is already a .keras archive: nothing to convert (choose another --to)", KERAS, 2),
    (["convert", KERAS, "--json", "--zzz"], "No such option '--zzz'.", None, 2),
    (["--zzz", "inspect", KERAS, "--json"], "No such option '--zzz'.", None, 2),
    (["nosuch", "--json"], "No such command 'nosuch'.", None, 2),
])
def test_json_error_document(repo, args, message, file, code):
    r = tietool(*args)
    assert r.exit_code == code
    assert json.loads(r.stdout) == {"error": {"message": message, "file": file, "exit_code": code}}
    assert r.stdout == json.dumps({"error": {"message": message, "file": file, "exit_code": code}}, indent=2) + "\n"
    assert "Error: " in r.stderr


def test_json_error_for_existing_output_names_it_as_given(repo):
    Path("m.safetensors").write_bytes(b"keep")
    r = tietool("convert", KERAS, "-o", "m.safetensors", "--json")
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {"error": {"message": "output exists (use --force to overwrite)",
                                              "file": "m.safetensors", "exit_code": 2}}
    assert r.stderr == "Error: m.safetensors: output exists (use --force to overwrite)\n"
    assert Path("m.safetensors").read_bytes() == b"keep"


def test_no_json_document_without_json(repo):
    r = tietool("inspect", "missing.h5")
    assert r.exit_code == 2 and r.stdout == "" and r.stderr == "Error: missing.h5: no such file or folder\n"


@pytest.mark.parametrize("args", [
    ["--debug", "inspect", "missing.h5"],
    ["inspect", "--debug", "missing.h5"],
    ["inspect", "missing.h5", "--debug"],
])
def test_debug_anywhere(repo, args):
    r = tietool(*args)
    assert r.exit_code == 2
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.endswith("Error: missing.h5: no such file or folder\n")


def test_debug_after_double_dash_is_a_path(repo):
    r = tietool("inspect", "--", "--debug")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert r.stderr == "Error: --debug: no such file or folder\n"


# -- progress of the reading commands --------------------------------------------------

def test_run_reports_the_bytes_it_compares_and_reads():
    """`run` tells its progress reporter what verify-tie compares and what it
    reads (drawn on a terminal only past ~100 MB: tietool.cli.progress.LARGE_BYTES)."""
    from tietool.layer.pair import load_pair

    calls = []
    pair = load_pair(FIXTURES / "tf" / "bert_mlm", progress=lambda *a: calls.append(a))
    assert pair.tied and pair.embedding_matrix.shape == (64, 16)
    assert [c for c in calls if c[1] == c[2]] == [("compare", 8192, 8192), ("read", 4096, 4096)]
    calls.clear()
    load_pair(FIXTURES / "pt" / "llama_untied", progress=lambda *a: calls.append(a))
    assert [c for c in calls if c[1] == c[2]] == [("compare", 8192, 8192), ("read", 8192, 8192)]


def test_small_reads_draw_nothing_when_large_only():
    import io

    from tietool.cli.progress import LARGE_BYTES, ByteProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = ByteProgress(file=screen, min_total=LARGE_BYTES)
    bar("read", 4096, 8192)
    bar("read", 8192, 8192)
    bar.close()
    assert screen.getvalue() == ""
    bar = ByteProgress(file=screen, min_total=LARGE_BYTES)
    bar("read", LARGE_BYTES, LARGE_BYTES)
    bar.close()
    assert "100%  100.0 MB of 100.0 MB" in screen.getvalue()


@pytest.mark.parametrize("metadata, warning", [
    ({"tietool.config": "{not json"}, "tietool.config is not a usable config"),
    ({"tietool.config": "[1, 2]"}, "tietool.config is not a JSON object"),
    ({"tietool.config": "{}", "tietool.layout": "{not json", "tietool.names": "[]"}, "tietool names record"),
    ({"tietool.config": "{}", "tietool.layout": '{"source_format": "keras3-archive"}', "tietool.names": "{bad"},
     "tietool layout record"),
    ({"tietool.config": "{}", "tietool.layout": '{"tietool": 1, "source_format": "keras3-archive", "files": []}'},
     "tietool layout record"),
])
def test_carried_records_that_are_wrong_are_not_fatal(tmp_path, metadata, warning):
    """inspect reads the weights of a file whose tietool records are broken:
    each broken record is a warning naming it and is not used (a layout that
    is not one says nothing of where the weights came from); a config that
    is not one is a warning, not a config."""
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file({"optimizer/vars/0": np.zeros(2, "f4"), "w": np.zeros((2, 2), "f4")}, str(path), metadata=metadata)
    report = inspect_checkpoint(path)
    assert report.to_json()["summary"]["tensor_count"] == 2
    assert any(warning in w for w in report.to_json()["warnings"])
    assert report.to_json()["config"] == (None if "usable" in warning or "object" in warning else {})
    roles = {t["name"]: t["role"] for t in report.to_json()["tensors"]}
    assert roles == {"optimizer/vars/0": "weight", "w": "weight"}
