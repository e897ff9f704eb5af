"""One tie declaration (issue 27): ``inspect``, ``verify-tie`` and ``check`` give the same
``tie_declaration`` (JSON) and print the same line (text) for every checkpoint in fixtures/, with the
flag as saved, flipped and deleted; and the declaration follows transformers 5's own rules, taken
from the generated table (per-class defaults, forced values, nested flags, the config level a class
reads). What transformers 5 does on load: tests/interop/test_pt_tie_declaration.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tietool.audit.scan import find_checkpoints
from tietool.cli.commands import cli
from tietool.formats import open_checkpoint
from tietool.ties import data
from tietool.ties.declaration import FLAG, describe, tie_declaration

from helpers import flag_variants

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"


def _checkpoints() -> list[str]:
    return sorted(f.path for f in find_checkpoints([str(FIX)]) if f.error is None)


CHECKPOINTS = _checkpoints()


def _json(*args: str) -> dict:
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code in (0, 1), (args, res.output)
    return json.loads(res.output)


def _text(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code in (0, 1), (args, res.output)
    return " ".join(res.output.split())


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[os.path.relpath(p, FIX) for p in CHECKPOINTS])
def test_inspect_verify_tie_and_check_agree(path, tmp_path):
    assert len(CHECKPOINTS) > 100
    for variant, p in flag_variants(path, tmp_path).items():
        with open_checkpoint(p) as ckpt:
            want = tie_declaration(ckpt.config).to_json()
        inspect = _json("inspect", p)["tie_declaration"]
        verify = _json("verify-tie", p)["tie_declaration"]
        (checked,) = _json("check", p)["checkpoints"]
        assert inspect == verify == checked["tie_declaration"] == want, (variant, inspect, verify, checked)
        line = " ".join(describe(want).split())
        for cmd in ("inspect", "verify-tie", "check"):
            assert line in _text(cmd, p), (variant, cmd, line)


def _cfg(**kw) -> dict:
    return {"transformers_version": "5.25.0", **kw}


@pytest.mark.parametrize("cfg, value, source", [
    # absent: the config class's default, which is not always true (issue 27: LlamaConfig says false)
    (_cfg(model_type="llama", architectures=["LlamaForCausalLM"]), False, "default of config class LlamaConfig"),
    (_cfg(model_type="gpt2", architectures=["GPT2LMHeadModel"]), True, "default of config class GPT2Config"),
    (_cfg(model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True), True,
     "config.json key tie_word_embeddings"),
    # T5 forces the flag (config.json's false means "do not scale the decoder output")
    (_cfg(model_type="t5", architectures=["T5ForConditionalGeneration"], tie_word_embeddings=False), True,
     "forced by config class T5Config, which does not read config.json key tie_word_embeddings=false"),
    # Llava's config takes text_config's true when its own flag is false or absent
    (_cfg(model_type="llava", architectures=["LlavaForConditionalGeneration"],
          text_config={"model_type": "llama", FLAG: True}), True, "config.json key text_config.tie_word_embeddings"),
    (_cfg(model_type="llava", architectures=["LlavaForConditionalGeneration"], tie_word_embeddings=True,
          text_config={"model_type": "llama", FLAG: False}), True, "config.json key tie_word_embeddings"),
    # ... and an absent text flag means the text config class's default (Gemma's true, Llama's false)
    (_cfg(model_type="llava", architectures=["LlavaForConditionalGeneration"], text_config={"model_type": "gemma"}),
     True, "default of config class GemmaConfig (text_config)"),
    (_cfg(model_type="llava", architectures=["LlavaForConditionalGeneration"], text_config={"model_type": "llama"}),
     False, "default of config class LlavaConfig"),
    # an encoder-decoder composition ties inside its decoder, which reads decoder.tie_word_embeddings
    (_cfg(model_type="vision-encoder-decoder", architectures=["VisionEncoderDecoderModel"], tie_word_embeddings=False,
          decoder={"model_type": "bert", FLAG: True}), True, "config.json key decoder.tie_word_embeddings"),
    (_cfg(model_type="vision-encoder-decoder", architectures=["VisionEncoderDecoderModel"],
          decoder={"model_type": "bert"}), True, "default of config class BertConfig"),
    # a class whose head is in no _tied_weights_keys never ties, whatever the flag says
    (_cfg(model_type="mllama", architectures=["MllamaForConditionalGeneration"], tie_word_embeddings=True), False,
     "class MllamaForConditionalGeneration ties no weights to its embedding (its head lm_head.weight is not in "
     "_tied_weights_keys)"),
    # unknown to transformers 5: the key as written, else nothing
    (_cfg(model_type="my-own", architectures=["MyOwnForCausalLM"], tie_word_embeddings=False), False,
     "config.json key tie_word_embeddings"),
    (_cfg(model_type="my-own", architectures=["MyOwnForCausalLM"]), None,
     "tie_word_embeddings absent and the config class unknown"),
])
def test_declaration_follows_transformers_5(cfg, value, source):
    d = tie_declaration(cfg)
    assert (d.value, d.source) == (value, source)


def test_unknown_class_says_which_rules_applied():
    d = tie_declaration(_cfg(model_type="llama", architectures=["MyLlamaForCausalLM"]))
    assert (d.value, d.config_class, d.architecture) == (False, "LlamaConfig", None)
    assert d.rules is not None and "shape rules" in d.rules
    other = tie_declaration(_cfg(model_type="my-own"))
    assert other.rules is not None and "shape rules" in other.rules


def test_table_is_generated_from_transformers_5():
    t = data.table()
    assert t["generator"] == "tools/gen_tied_weights_keys.py" and t["transformers"].startswith("5.")
    lm = [a for a, e in t["architectures"].items() if e.get("lm_head_mapping")]
    assert len(lm) > 300 and sum(1 for a in lm if t["architectures"][a].get("built")) > 0.9 * len(lm)
    assert t["architectures"]["EncoderDecoderModel"]["reads"] == "decoder"
    assert t["architectures"]["LlamaForCausalLM"]["output"]["name"] == "lm_head.weight"
    assert t["model_types"]["t5"]["forced"] is True and t["model_types"]["llama"]["default"] is False


@pytest.mark.interop  # transformers 4.x (tietool's own environment has 4.57 for its TF classes)
def test_flags_disagree_names_the_flag_transformers_4_reads():
    """The warning's claim: transformers 4.x ties by ``config.get_text_config(decoder=True).tie_word_embeddings``
    (4.57 ``PreTrainedModel.tie_embeddings_and_encoder_decoder``), i.e. Llava's text_config flag, which
    transformers 5 does not follow when the top level says true."""
    transformers = pytest.importorskip("transformers")
    if not transformers.__version__.startswith("4."):
        pytest.skip("needs transformers 4.x")
    from tietool.audit.check import check_checkpoint

    folder = FIX / "damaged/pt/llava_nested_flag_disagrees"
    v4 = transformers.AutoConfig.from_pretrained(str(folder)).get_text_config(decoder=True).tie_word_embeddings
    cfg = json.loads((folder / "config.json").read_text())
    assert v4 is cfg["text_config"][FLAG] is False and tie_declaration(cfg).value is True
    (warning,) = check_checkpoint(folder).warnings
    assert "text_config.tie_word_embeddings=false" in warning.message and "transformers 4.x" in warning.message
