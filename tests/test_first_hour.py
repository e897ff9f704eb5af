"""A newcomer's first hour (issue 23): each friction met by following the README
and the help, and each message read by someone who has never seen the code.
The README itself runs in test_readme.py; the help examples in
test_daily_use.py; `run`'s line while TensorFlow loads in test_cli_terminal.py;
permission messages in test_safety.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tietool.convert import parse_size
from tietool.errors import UsageError
from tietool.formats import FORMATS, open_checkpoint

from helpers import FIXTURES, ROOT, fixture, invoke, one_error_line

# -- output paths that follow the name --------------------------------------------------------

def test_folder_source_to_a_file_name_writes_that_file(tmp_path):
    out = tmp_path / "t5.safetensors"
    r = invoke("convert", fixture("tf/t5"), "-o", out)
    assert r.exit_code == 0, r.output
    assert out.is_file(), "a folder named t5.safetensors"
    assert f"  wrote {out}\n" in r.stdout and "other file(s)" not in r.stdout
    assert "one file, as -o names it" in r.stdout
    with open_checkpoint(out) as a, open_checkpoint(fixture("tf/t5")) as b:
        assert a.config == b.config  # carried in the file
        assert len(a.tensors) == len(b.tensors) - 2  # the two other stored copies recorded as aliases
    assert invoke("verify-tie", out).exit_code == 0
    # the same for h5 from a safetensors folder
    r = invoke("convert", fixture("pt/gpt2"), "--to", "h5", "-o", tmp_path / "g.h5")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.h5").is_file()


def test_folder_source_to_a_file_name_refused_when_several_files(tmp_path):
    r = invoke("convert", fixture("tf/t5"), "-o", tmp_path / "t5.safetensors", "--shard-size", "10KB")
    line = one_error_line(r.exit_code, r.stderr, "-o names one safetensors file, but this output is")
    assert "shards and their index: give -o a folder name" in line
    r = invoke("convert", fixture("tf/t5"), "--names", "pt", "-o", tmp_path / "t5.safetensors")
    one_error_line(r.exit_code, r.stderr, "--names pt writes a folder")
    assert os.listdir(tmp_path) == []


def test_sizes_need_a_unit(tmp_path):
    for bare in ("5", "5000000", "1.5"):
        r = invoke("convert", fixture("tf/t5"), "-o", tmp_path / "o", "--shard-size", bare)
        assert r.exit_code == 2 and "needs a unit: e.g. 5GB, 500MB" in r.stderr, r.stderr
        with pytest.raises(UsageError, match="needs a unit"):
            parse_size(bare)
    assert parse_size("5GB") == 5 * 10**9 and parse_size("500MB") == 500 * 10**6 and parse_size("100B") == 100
    assert parse_size(4096) == 4096  # the library's int is bytes
    assert os.listdir(tmp_path) == []


def test_to_pt_points_to_names_pt(tmp_path):
    r = invoke("convert", fixture("tf/t5"), "--to", "pt", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "use --names pt" in r.stderr, r.stderr


def test_names_pt_summary_lists_the_names_it_wrote(tmp_path):
    r = invoke("convert", fixture("tf/t5"), "--names", "pt", "-o", tmp_path / "pt")
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stdout.splitlines() if " once for the stored copies " in x]
    assert lines == ["  wrote shared.weight once for the stored copies shared/shared/shared/embeddings:0, "
                     "encoder/shared/shared/embeddings:0, decoder/shared/shared/embeddings:0"]


def test_check_missing_path_is_an_error_line_and_the_others_are_checked():
    r = invoke("check", "no/such/folder", fixture("pt/gpt2"))
    assert r.exit_code == 2
    assert r.stderr == "Error: no/such/folder: no such file or folder\n"
    assert f"{fixture('pt/gpt2')}  ok" in r.stdout.replace("   ", "  ")
    doc = json.loads(invoke("check", "no/such/folder", fixture("pt/gpt2"), "--json").stdout)
    assert [c["ok"] for c in doc["checkpoints"]] == [None, True] and doc["exit_code"] == 2


def test_diff_plot_names_the_file(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "d.png"
    r = invoke("diff", fixture("diff/bert_pt5"), fixture("diff/bert_pt5_tuned"), "--plot", png)
    assert r.exit_code == 1 and png.is_file()
    assert f"plot: wrote {png} (rel L2 per tensor, grouped by layer)" in r.stdout
    doc = json.loads(invoke("diff", fixture("diff/bert_pt5"), fixture("diff/bert_pt5_tuned"), "--plot", png,
                            "--force", "--json").stdout)
    assert doc["plot"] == str(png)


# -- wording ------------------------------------------------------------------------------------

def test_check_table_never_breaks_a_name():
    r = invoke("check", fixture("damaged"))
    names = {"mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0",
             "bert/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"}
    for name in names:
        assert name in r.stdout, name
    assert "tf_bert_for_mas\n" not in r.stdout


def test_no_output_layer_said_once():
    r = invoke("run", fixture("kerashub/esm/backbone.keras"), "--mode", "linear", "--input",
               fixture("kerashub/gemma/softcap_hidden.npy"))
    line = one_error_line(r.exit_code, r.stderr, "finds no output layer here")
    assert line.count("no output layer") == 1, line


def test_no_head_name_reads_as_english(tmp_path):
    """Without architectures there is no name for the head: the sentences say
    "no output layer is stored" and "the output layer", never "no an output layer"."""
    src = tmp_path / "m"
    shutil.copytree(fixture("damaged/pt/llama_flag_untied_no_head"), src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("architectures", None)
    (src / "config.json").write_text(json.dumps(cfg))
    doc = json.loads(invoke("check", src, "--json").stdout)
    text = " ".join(doc["checkpoints"][0]["problems"])
    assert "no output layer is stored" in text and "reports the output layer missing" in text, text
    assert "an output layer" not in text


def test_index_formats_spelled_one_way():
    sharded = {k: v for k, v in FORMATS.items() if k.endswith("-sharded")}
    assert len(sharded) == 3
    assert all(v.endswith(" and its shards") and ": " in v and "(" not in v for v in sharded.values()), sharded


def test_two_copies_have_no_odd_one_out():
    r = invoke("verify-tie", fixture("damaged/tf/bert_copies_differ"))
    assert "odd one out" not in r.stdout
    assert "copies differ: mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0 first differs at" \
        in r.stdout
    r = invoke("verify-tie", fixture("damaged/tf/t5_copies_differ"))  # three copies, a majority of two
    assert "odd one out: decoder/shared/shared/embeddings:0: first differs at" in r.stdout


def test_inspect_unverified_says_how_to_verify():
    r = invoke("inspect", fixture("tf/bert_mlm"))
    assert "unverified" in r.stdout
    assert r.stdout.rstrip().endswith(
        "unverified: inspect reads headers only; to compare the stored values bit for bit, run\n"
        f"  tietool verify-tie {fixture('tf/bert_mlm')}")
    assert "verify-tie" not in invoke("inspect", fixture("pt/gpt2")).stdout  # implicit: nothing to verify


def test_wrong_tensor_name_suggests_close_ones():
    r = invoke("verify-tie", fixture("pt/llama_untied"), "--embedding", "model.embed_token.weight")
    one_error_line(r.exit_code, r.stderr, "no tensor named 'model.embed_token.weight' "
                                          "(did you mean 'model.embed_tokens.weight'?)")
    r = invoke("verify-tie", fixture("pt/llama_untied"), "--embedding", "zzz")
    line = one_error_line(r.exit_code, r.stderr, "no tensor named 'zzz'")
    assert "did you mean" not in line


# -- the second environment, announced ------------------------------------------------------------

def test_torch_environment_build_is_announced(tmp_path):
    """Without TIETOOL_PT_PYTHON the tests build the torch + transformers 5
    environment, and say so on the terminal first (what, where, how big, how
    to skip it) with pip's own output after it. Here pip may not reach an
    index, so the build fails at once: the announcement and the skip reason
    are what is checked."""
    venv = tmp_path / "venv-pt"
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_probe.py").write_text("def test_probe(pt_python):\n    pass\n")
    for name in ("conftest.py", "helpers.py"):
        shutil.copyfile(ROOT / "tests" / name, tests / name)
    (tmp_path / "repo" / "fixtures").symlink_to(FIXTURES)  # helpers reads fixtures/MANIFEST.json
    env = {k: v for k, v in os.environ.items() if k != "TIETOOL_PT_PYTHON"}
    env.update(TIETOOL_PT_VENV=str(venv), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests"],
                         cwd=tmp_path / "repo", env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert "building the torch + transformers 5 environment" in out, out[-3000:]
    assert f"where: {venv}" in out and "about 1.2 GB on disk" in out and "TIETOOL_PT_PYTHON=" in out
    assert "1 skipped" in res.stdout and "pip install" in res.stdout, res.stdout[-2000:]
    assert not venv.exists() and not list(tmp_path.glob("venv-pt.building-*"))  # a failed build is not kept


# -- tests that pass on any CPU: the bound where a library computes -------------------------------------

def test_kernel_bound_takes_one_bf16_ulp_and_not_a_wrong_result():
    """helpers.assert_kernel_close: a bfloat16 result one ulp off (what oneDNN gave on another CPU)
    passes; two ulps of a large logit, a dropped soft cap or a wrong weight do not."""
    import ml_dtypes
    import numpy as np

    from helpers import assert_kernel_close

    rng = np.random.default_rng(0)
    want = rng.standard_normal((2, 3, 32)).astype(ml_dtypes.bfloat16).astype(np.float32)
    bits = want.astype(ml_dtypes.bfloat16).view(np.uint16)
    one_ulp = (bits + 1).view(ml_dtypes.bfloat16).astype(np.float32)  # every element one bf16 ulp away
    assert_kernel_close(one_ulp, want, depth=8, compute_dtype="bfloat16")
    with pytest.raises(AssertionError):
        assert_kernel_close(one_ulp, want, depth=8)  # as float32, one bf16 ulp is far too much
    big = np.argmax(np.abs(want))
    two = want.copy()
    two.flat[big] = (bits.flat[big] + 2).view(ml_dtypes.bfloat16).astype(np.float32)
    with pytest.raises(AssertionError):
        assert_kernel_close(two, want, depth=8, compute_dtype="bfloat16")
    with pytest.raises(AssertionError):
        assert_kernel_close(np.tanh(want / 0.5) * 0.5, want, depth=8, compute_dtype="bfloat16")
    f32 = rng.standard_normal((4, 16)).astype(np.float32)
    assert_kernel_close(f32 * np.float32(1 + 2**-23), f32, depth=16)  # reordering-sized
    with pytest.raises(AssertionError):
        assert_kernel_close(f32 * np.float32(1 + 1e-4), f32, depth=16)
