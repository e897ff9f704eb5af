"""Exact output of every command, in-process: tests/golden/<command>.txt holds,
for each command line below, stdout, stderr and the exit status, byte for byte
(timings as ``<T>``: helpers.timeless; the folder they run in as ``<CWD>``, where
a message names an absolute path: the shards of a sharded checkpoint). The commands run from a folder that looks
like the repository root (``fixtures/`` in it) with relative paths, in order, so
a command may read what an earlier one wrote.

After an intended change of output: ``python -m pytest tests/test_golden.py
--update-golden`` (or TIETOOL_UPDATE_GOLDEN=1), then review ``git diff tests/golden``.
"""

from __future__ import annotations

import pytest

from helpers import (
    EXPECTED_TIES,
    FIXTURES,
    GOLDEN,
    assert_golden,
    invoke,
    same_but_last_digits,
    transcript,
    updating_golden,
)

COMMANDS = ("inspect", "verify-tie", "convert", "run", "check", "fix", "diff")

SESSIONS: dict[str, list[list[str]]] = {
    "help": [["--help"], ["--version"], *[[c, "--help"] for c in COMMANDS], ["nosuch"], ["inspect"]],
    "inspect": [
        ["inspect", "fixtures/tf/bert_mlm"],
        ["inspect", "fixtures/tf/gpt2", "--filter", "*wte*"],
        ["inspect", "fixtures/tf/t5"],
        ["inspect", "fixtures/keras3/tied_revemb.keras"],
        ["inspect", "fixtures/keras3/bf16_revemb.weights.h5"],
        ["inspect", "fixtures/keras3/sharded/untied_revemb.weights.json"],
        ["inspect", "fixtures/keras2/full_model.h5"],
        ["inspect", "fixtures/pt/gpt2_sharded"],
        ["inspect", "fixtures/pt/llama_untied", "--json"],
        ["inspect", "fixtures/keras3/untied_revemb.weights.h5", "--json"],
        ["inspect", "missing.h5"],
        ["inspect", "missing.h5", "--json"],
        ["inspect", "--", "--debug"],
    ],
    "verify-tie": [
        *[["verify-tie", f"fixtures/{rel}"] for rel in sorted(EXPECTED_TIES)],
        ["verify-tie", "fixtures/tf/t5", "--json"],
        ["verify-tie", "fixtures/pt/llama_untied", "--json"],
        ["verify-tie", "fixtures/damaged/tf/t5_copies_differ"],
        ["verify-tie", "fixtures/damaged/tf/bert_copies_differ", "--atol", "1e-6"],
        ["verify-tie", "fixtures/damaged/pt/llama_flag_untied_no_head"],
        ["verify-tie", "fixtures/kerashub/t5gemma/backbone.keras"],
        ["verify-tie", "fixtures/pt/llama_untied", "--embedding", "model.embed_tokens.weight",
         "--decoder", "lm_head.weight"],
        ["verify-tie", "fixtures/pt/llama_untied", "--decoder", "no.such.tensor"],
        ["verify-tie", "fixtures/pt/gpt2", "--embedding", "nope", "--json"],
        ["verify-tie", "fixtures/pt/llama_untied", "--atol", "-1"],
    ],
    "convert": [
        ["convert", "fixtures/tf/t5", "-o", "t5-st"],
        ["convert", "t5-st", "-o", "t5-back"],
        ["convert", "fixtures/tf/t5", "--names", "pt", "-o", "t5-pt"],
        ["convert", "fixtures/tf/t5", "--ties", "keep", "-o", "t5-keep.safetensors", "--json"],
        ["convert", "fixtures/keras3/tied_revemb.keras", "-o", "m.safetensors"],
        ["convert", "m.safetensors"],
        ["convert", "m.keras", "--to", "h5", "-o", "m.weights.h5"],
        ["convert", "fixtures/pt/gpt2_sharded", "-o", "gpt2-h5"],
        ["convert", "fixtures/pt/llama_untied", "--to", "safetensors", "-o", "x"],
        ["convert", "fixtures/tf/gpt2", "--names", "pt", "--shard-size", "10KB", "-o", "gpt2-pt", "--quiet"],
        ["convert", "fixtures/tf/gpt2", "--to", "h5", "-o", "y"],
        ["convert", "fixtures/keras3/tied_revemb.keras", "-o", "m.safetensors"],
        ["convert", "fixtures/keras3/tied_revemb.keras", "-o", "m.safetensors", "--json"],
        ["convert", "fixtures/keras3/tied_revemb.keras", "--to", "keras"],
        ["convert", "t5-st", "-o", "t5-st/inside"],
    ],
    "check": [
        ["check", "fixtures/damaged", "fixtures/pt/gpt2"],
        ["check", "fixtures/tf", "fixtures/keras3"],
        ["check", "fixtures/damaged/tf/t5_copies_differ", "--json"],
        ["check", "fixtures/pt/gpt2", "missing"],
    ],
    "fix": [
        ["fix", "fixtures/damaged/pt/llama_flag_untied_no_head", "-o", "llama-fixed"],
        ["fix", "fixtures/damaged/pt/gpt2_default_tied_different_head", "-o", "gpt2-fixed", "--json"],
        ["fix", "fixtures/damaged/pt/llava_nested_flag_disagrees", "-o", "llava-fixed"],
        ["fix", "fixtures/damaged/pt/llama_sharded_flag_untied_no_head", "-o", "sharded-fixed"],
        ["fix", "fixtures/damaged/tf/t5_copies_differ", "-o", "t5-fixed"],
        ["fix", "fixtures/damaged/tf/bert_copies_differ", "-o", "bert-fixed"],
        ["fix", "fixtures/damaged/tf/bert_copies_differ", "-o", "bert-fixed", "--prefer", "embedding"],
        ["fix", "fixtures/pt/gpt2", "-o", "gpt2-ok"],
        ["fix", "fixtures/pt/gpt2", "-o", "gpt2-explicit", "--head", "explicit"],
        ["fix", "gpt2-explicit", "-o", "gpt2-implicit", "--head", "implicit"],
        ["fix", "fixtures/damaged/pt/llama_flag_untied_no_head", "-o", "llama-fixed"],
    ],
    "diff": [
        ["diff", "fixtures/diff/bert_tf", "fixtures/diff/bert_pt5"],
        ["diff", "fixtures/diff/bert_pt5", "fixtures/diff/bert_pt5_tuned"],
        ["diff", "fixtures/diff/bert_pt5", "fixtures/diff/bert_pt5_tuned", "--all"],
        ["diff", "fixtures/diff/bert_pt5", "fixtures/diff/bert_pt5_tuned", "--atol", "0.001"],
        ["diff", "fixtures/diff/bert_tf", "fixtures/diff/bert_pt5_tuned", "--json"],
        ["diff", "fixtures/tf/gpt2", "fixtures/pt/llama_untied"],
        ["diff", "fixtures/tf/gpt2", "missing"],
    ],
    # `run` imports TensorFlow (the `tf` extra)
    "run": [
        ["run", "fixtures/tf/gpt2", "--mode", "embedding", "--ids", "1,2,3"],
        ["run", "fixtures/tf/gpt2", "--mode", "linear", "--input", "fixtures/keras2/seed_shared/hidden.npy",
         "--top-k", "3"],
        ["run", "fixtures/pt/llama_untied", "--mode", "embedding", "--ids", "0,5", "--json"],
        ["run", "fixtures/keras3/tied_revemb.keras", "--mode", "embedding", "--input",
         "fixtures/keras3/tied_revemb_ids.npy", "--output", "emb.npy"],
        ["run", "fixtures/kerashub/gemma/softcap.keras", "--mode", "linear", "--input",
         "fixtures/kerashub/gemma/softcap_hidden.npy", "--top-k", "1"],
        ["run", "fixtures/kerashub/esm/backbone.keras", "--mode", "linear", "--input",
         "fixtures/kerashub/gemma/softcap_hidden.npy"],
        ["run", "fixtures/tf/gpt2", "--mode", "embedding", "--ids", "64"],
        ["run", "fixtures/tf/gpt2", "--mode", "embedding", "--ids", "1", "--output", "out.txt"],
    ],
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.interop, pytest.mark.tf_kernels]
                                               if n == "run" else []) for n in SESSIONS])
def test_golden(name, tmp_path, monkeypatch):
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    text = "\n".join(transcript(args, invoke(*args)) for args in SESSIONS[name])
    for cwd in {str(tmp_path.resolve()), str(tmp_path)}:
        text = text.replace(cwd, "<CWD>")
    golden = GOLDEN / f"{name}.txt"
    if name == "run" and not updating_golden() and golden.exists() and same_but_last_digits(golden.read_text(), text):
        return  # numbers TensorFlow computed, printed to their last digit: one unit off on another CPU is the same
    assert_golden(f"{name}.txt", text)


def test_every_command_has_a_golden_session():
    helped = {args[0] for args in SESSIONS["help"] if "--help" in args}
    assert set(COMMANDS) <= helped and set(COMMANDS) <= set(SESSIONS)
    listed = invoke("--help").stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    assert sorted(line.split()[0] for line in listed.splitlines()) == sorted(COMMANDS)
