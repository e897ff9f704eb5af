"""tietool check / fix on the damaged fixtures (fixtures/make_damaged.py), without
torch. Loading the repaired copies in transformers 5: tests/interop/test_check_fix_pt.py."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tietool.audit.check import check_checkpoint, check_paths
from tietool.audit.fix import fix
from tietool.audit.jsonedit import delete_key, set_value
from tietool.cli.commands import cli
from tietool.cli.exits import check_exit
from tietool.cli.render import fix_command
from tietool.errors import CopiesDifferError, UsageError
from tietool.formats import open_checkpoint
from tietool.ties.verify import verify_tie

from helpers import digest

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
DAMAGED = FIX / "damaged"
MANIFEST = json.loads((DAMAGED / "MANIFEST.json").read_text())
CASES = sorted(MANIFEST)
PROBLEMS = [c for c in CASES if MANIFEST[c]["expect"]["check"] == 1]


def prefer_for(case: str) -> str | None:
    return "embedding" if MANIFEST[case]["expect"].get("majority") is False else None


@pytest.mark.parametrize("case", CASES)
def test_check_reports_each_damage(case):
    exp = MANIFEST[case]["expect"]
    report = check_paths([str(DAMAGED / case)])
    assert check_exit(report) == exp["check"]
    (res,) = report.checkpoints
    if exp["check"] == 0:
        assert res.ok and not res.problems and fix_command(res) is None
        assert [w.code for w in res.warnings] == ([exp["warning"]] if "warning" in exp else [])
        if "warning" in exp:  # names the flag transformers 5 reads and the loader that reads the other one
            message = res.warnings[0].message
            assert "transformers 5" in message and "transformers 4.x" in message, message
            assert any(n and n in message for n in set(res.heads) | {res.embedding}), message
    else:
        assert res.ok is False
        assert [p.code for p in res.problems] == [exp["problem"]]
        assert fix_command(res).startswith(f"tietool fix {DAMAGED / case} -o ")
        message = res.problems[0].message
        assert "transformers 5" in message or "loader" in message
        names = set(res.heads) | {res.embedding}
        assert any(n and n in message for n in names), message  # names the tensors


@pytest.mark.parametrize("case", PROBLEMS)
def test_fix_repairs_and_keeps_everything_else(tmp_path, case):
    src = DAMAGED / case
    before = digest(src)
    out = tmp_path / "out"
    result = fix(src, out, prefer=prefer_for(case))
    assert digest(src) == before  # the source is never modified
    assert result.output == str(out) and result.verified and result.repairs
    after = check_checkpoint(out)
    assert after.ok, after.problems
    assert sorted(os.listdir(out)) == sorted(os.listdir(src))  # same file names, shards and index
    got = digest(out)
    changed = {n for n in before if got[n] != before[n]}
    kinds = {r.kind for r in result.repairs}
    if kinds == {"set-flag"}:
        assert changed == {"config.json"}
        old = (src / "config.json").read_text().splitlines()
        new = (out / "config.json").read_text().splitlines()
        diff = [d for d in difflib.ndiff(old, new) if d[:1] in "+-"]
        edited = [d for d in diff if "tie_word_embeddings" not in d]
        # only the flag's line changes (or a line is added; the one before it gains a comma)
        assert len(edited) <= 2 and all(d[2:].rstrip(",") in (x.rstrip(",") for x in old + new) for d in edited), diff
        cfg_old, cfg_new = json.loads("\n".join(old)), json.loads("\n".join(new))
        for r in result.repairs:
            *parents, key = r.key.split(".")
            node = cfg_new
            for p in parents:
                node = node[p]
            assert node[key] is r.value
        strip = lambda c: {k: (strip(v) if isinstance(v, dict) else v) for k, v in c.items()  # noqa: E731
                           if k != "tie_word_embeddings"}
        assert strip(cfg_old) == strip(cfg_new)
        assert list(cfg_old) == [k for k in cfg_new if k in cfg_old]  # key order kept
    else:
        assert kinds == {"use-copy"}
        assert changed == {"tf_model.h5"}


def test_t5_majority_restores_the_damaged_element(tmp_path):
    case = "tf/t5_copies_differ"
    dmg = MANIFEST[case]["damage"][0]
    out = tmp_path / "t5"
    fix(DAMAGED / case, out)
    with open_checkpoint(out) as ckpt:
        copies = [ckpt.read(n) for n in ckpt.tensors if n.endswith("shared/shared/embeddings:0")]
        assert len(copies) == 3
        for c in copies[1:]:
            assert c.tobytes() == copies[0].tobytes()
        r, c = dmg["index"]
        assert float(ckpt.read(dmg["dataset"])[r, c]) == float.fromhex(dmg["original"])


def test_no_majority_needs_prefer(tmp_path):
    src = DAMAGED / "tf/bert_copies_differ"
    with pytest.raises(CopiesDifferError, match="--prefer embedding"):
        fix(src, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(cli, ["fix", str(src), "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and not (tmp_path / "x").exists()
    assert res.output.count("\n") == 1 and res.output.startswith("Error: ") and "--prefer" in res.output
    out = tmp_path / "dec"
    fix(src, out, prefer="decoder")
    with open_checkpoint(out) as ckpt:
        a, b = (ckpt.read(n) for n in ckpt.tensors if n.endswith("word_embeddings/weight:0"))
        assert a.tobytes() == b.tobytes()
        r, c = MANIFEST["tf/bert_copies_differ"]["damage"][0]["index"]
        assert float(a[r, c]) != float.fromhex(MANIFEST["tf/bert_copies_differ"]["damage"][0]["original"])
    with pytest.raises(UsageError, match="names none of the copies"):
        fix(src, tmp_path / "y", prefer="nope")


def test_verify_tie_names_the_odd_copy_and_first_index():
    g = verify_tie(DAMAGED / "tf/t5_copies_differ").to_json()["groups"][0]
    agree = g["agreement"]
    assert agree["majority"] == ["shared/shared/shared/embeddings:0", "encoder/shared/shared/embeddings:0"]
    (odd,) = agree["odd_ones_out"]
    assert odd["name"] == "decoder/shared/shared/embeddings:0"
    assert odd["index"] == MANIFEST["tf/t5_copies_differ"]["damage"][0]["index"]
    agree = verify_tie(DAMAGED / "tf/bert_copies_differ").to_json()["groups"][0]["agreement"]
    assert agree["majority"] is None and agree["odd_ones_out"][0]["index"] == [7, 3]
    res = CliRunner().invoke(cli, ["verify-tie", str(DAMAGED / "tf/t5_copies_differ")])
    assert "odd one out: decoder/shared/shared/embeddings:0: first differs at [7, 3]" in res.output


def test_nothing_to_fix_writes_nothing(tmp_path):
    for src in (FIX / "pt/gpt2", DAMAGED / "pt/llama_untied_identical_head", FIX / "tf/t5"):
        res = CliRunner().invoke(cli, ["fix", str(src), "-o", str(tmp_path / "o")])
        assert res.exit_code == 0 and "nothing to fix" in res.output
        assert not (tmp_path / "o").exists()


def test_head_implicit_and_explicit(tmp_path):
    src = DAMAGED / "pt/llama_untied_identical_head"
    out = tmp_path / "implicit"
    r = fix(src, out, head="implicit")
    assert {x.kind for x in r.repairs} == {"drop-head", "set-flag"}
    with open_checkpoint(out) as ckpt:
        assert "lm_head.weight" not in ckpt.tensors
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    c = check_checkpoint(out)
    assert c.ok and c.stored == "no head" and c.tied is True
    for src in (FIX / "pt/llama_tied", FIX / "pt/gpt2_sharded"):
        out = tmp_path / src.name
        r = fix(src, out, head="explicit")
        assert [x.kind for x in r.repairs] == ["write-head"]
        c = check_checkpoint(out)
        assert c.ok and c.stored == "identical copy" and "lm_head.weight" in c.heads
        if src.name == "gpt2_sharded":
            index = json.loads((out / "model.safetensors.index.json").read_text())
            old = json.loads((src / "model.safetensors.index.json").read_text())
            assert index["weight_map"]["lm_head.weight"] == old["weight_map"]["transformer.wte.weight"]
            assert index["metadata"]["total_size"] == old["metadata"]["total_size"] + 64 * 16 * 4
            assert index["metadata"]["total_parameters"] == old["metadata"]["total_parameters"] + 64 * 16
    with pytest.raises(UsageError, match="--head explicit rewrites safetensors"):
        fix(FIX / "tf/gpt2", tmp_path / "tf", head="explicit")


def test_convert_names_pt_head_explicit(tmp_path):
    out = tmp_path / "pt"
    res = CliRunner().invoke(cli, ["convert", str(FIX / "tf/gpt2"), "--to", "safetensors", "--names", "pt",
                                   "--head", "explicit", "-o", str(out)])
    assert res.exit_code == 0, res.output
    with open_checkpoint(out) as ckpt:
        assert ckpt.read("lm_head.weight").tobytes() == ckpt.read("transformer.wte.weight").tobytes()
    assert check_checkpoint(out).ok
    res = CliRunner().invoke(cli, ["convert", str(FIX / "tf/gpt2"), "--to", "safetensors", "--head", "explicit",
                                   "-o", str(tmp_path / "k")])
    assert res.exit_code == 2 and "--names pt" in res.output


def _hf_cache(tmp_path: Path) -> Path:
    """models--ORG--NAME/snapshots/REV/ whose files are symlinks into blobs/, as huggingface_hub lays it out."""
    hub = tmp_path / "hub"
    for org_name, fixtures in (("org--llama", ["pt/llama_flag_untied_no_head"]), ("org--gpt2", ["pt/gpt2"])):
        repo = hub / f"models--{org_name}"
        (repo / "blobs").mkdir(parents=True)
        (repo / "refs").mkdir()
        for rev in ("a" * 40, "b" * 40):  # two revisions linking the same blobs
            snap = repo / "snapshots" / rev
            snap.mkdir(parents=True)
            src = (DAMAGED if "flag" in fixtures[0] else FIX) / fixtures[0]
            for f in src.iterdir():
                blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
                if not blob.exists():
                    shutil.copyfile(f, blob)
                (snap / f.name).symlink_to(os.path.relpath(blob, snap))
        (repo / "refs" / "main").write_text("b" * 40)
    return hub


def test_check_hf_cache_layout_reports_each_checkpoint_once(tmp_path):
    hub = _hf_cache(tmp_path)
    report = check_paths([str(hub)])
    assert [c.model for c in report.checkpoints] == ["org/gpt2@aaaaaaaaaaaa", "org/llama@aaaaaaaaaaaa"]
    assert [c.ok for c in report.checkpoints] == [True, False]
    assert check_exit(report) == 1
    out = tmp_path / "fixed"
    fix(report.checkpoints[1].path, out)
    assert check_checkpoint(out).ok
    assert not any(p.is_symlink() for p in out.iterdir())  # the blobs' bytes, not links


def test_check_all_fixtures_and_unreadable(tmp_path):
    report = check_paths([str(FIX)])
    paths = [c.path for c in report.checkpoints]
    assert len(paths) == len(set(paths))
    assert all(c.ok is not None for c in report.checkpoints)
    bad = {os.path.relpath(c.path, FIX) for c in report.checkpoints if not c.ok}
    # transformers' own TF classes that build a head of their own while their config
    # leaves tie_word_embeddings at its default (true): a real flag/weights disagreement
    families = json.loads((FIX / "tf_families" / "MANIFEST.json").read_text())["families"]
    untied_by_class = {f"tf_families/{k}" for k, v in families.items()
                       if v["declared_tie"] is True and v["expected_verdict"] == "not tied"}
    assert untied_by_class  # BLIP text, MobileBERT, XGLM
    assert bad == {f"damaged/{p}" for p in PROBLEMS} | untied_by_class
    assert check_exit(report) == 1
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    shutil.copytree(FIX / "pt/gpt2", tmp_path / "models" / "gpt2")
    report = check_paths([str(tmp_path / "models"), str(tmp_path / "missing")])
    assert [c.ok for c in report.checkpoints] == [None, True, None]
    assert check_exit(report) == 2


def test_check_cli_table_json_and_exit_codes(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["check", str(FIX / "pt"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    for c in doc["checkpoints"]:
        assert {"path", "ok", "tied", "problems", "fix"} <= set(c)
        assert c["ok"] is True and c["problems"] == [] and c["fix"] is None
    res = runner.invoke(cli, ["check", str(DAMAGED / "pt/llama_flag_untied_no_head"), str(FIX / "pt/gpt2")])
    assert res.exit_code == 1
    header = res.output.splitlines()[0].split()
    assert header == ["path", "verdict", "tie", "problem"]
    assert "false (config.json key tie_word_embeddings)" in " ".join(res.output.split())
    assert "PROBLEM" in res.output and f"tietool fix {DAMAGED / 'pt/llama_flag_untied_no_head'} -o" in res.output
    res = runner.invoke(cli, ["check", str(tmp_path / "nope")])
    assert res.exit_code == 2


def test_fix_refuses_existing_output_and_file_sources_needing_config(tmp_path):
    src = DAMAGED / "pt/llama_flag_untied_no_head"
    (tmp_path / "o").mkdir()
    res = CliRunner().invoke(cli, ["fix", str(src), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--force" in res.output
    res = CliRunner().invoke(cli, ["fix", str(src / "model.safetensors"), "-o", str(tmp_path / "f.safetensors")])
    assert res.exit_code == 2 and "give the model folder" in res.output
    assert not (tmp_path / "f.safetensors").exists()


@pytest.mark.parametrize("text, path, value, want", [
    ('{\n  "a": 1,\n  "b": {\n    "c": true\n  }\n}', ("b", "c"), False,
     '{\n  "a": 1,\n  "b": {\n    "c": false\n  }\n}'),
    ('{\n    "a": 1.50,\n    "z": [1, 2]\n}', ("t",), True, '{\n    "a": 1.50,\n    "z": [1, 2],\n    "t": true\n}'),
    ('{"a": 1, "b": 2}', ("t",), False, '{"a": 1, "b": 2, "t": false}'),
    ('{}', ("t",), True, '{"t": true}'),
])
def test_jsonedit_changes_only_the_key(text, path, value, want):
    assert set_value(text, path, value) == want
    assert json.loads(want)


def test_jsonedit_delete():
    text = '{\n  "a": 1,\n  "b": "x\\"}",\n  "c": 3\n}'
    assert delete_key(text, ("b",)) == '{\n  "a": 1,\n  "c": 3\n}'
    assert delete_key(text, ("c",)) == '{\n  "a": 1,\n  "b": "x\\"}"\n}'
    assert np.isfinite(json.loads(delete_key(text, ("a",)))["c"])


def test_hostile_corpus_check_lists_fix_refuses(tmp_path, hostile_corpus):
    """Every broken or hostile input of tests/hostile_corpus.py: check lists it as unreadable (exit 2) without
    a traceback; fix refuses it with one line and leaves nothing behind; the inputs are unchanged."""
    before = digest(hostile_corpus.root)
    runner = CliRunner()
    for name, rel in hostile_corpus.cases.items():
        if name in hostile_corpus.expect_ok:
            continue
        path = str(hostile_corpus.workdir / rel)
        res = runner.invoke(cli, ["check", path, "--json"])
        assert res.exit_code == 2, (name, res.output)
        doc = json.loads(res.stdout)
        assert any(c["ok"] is None and c["error"] for c in doc["checkpoints"]), (name, doc)
        out = tmp_path / "out" / name
        out.parent.mkdir(exist_ok=True)
        res = runner.invoke(cli, ["fix", path, "-o", str(out)])
        assert res.exit_code == 2, (name, res.output)
        assert res.output.startswith("Error: ") and res.output.count("\n") == 1, (name, res.output)
        assert not out.exists() and not any(p.name.startswith(".") for p in out.parent.iterdir())
    assert digest(hostile_corpus.root) == before


def test_every_consistent_fixture_layout_has_nothing_to_fix(tmp_path):
    """check and fix on every layout tietool reads (the committed fixtures): consistent, nothing written."""
    report = check_paths([str(FIX / d) for d in ("tf", "pt", "keras2", "keras3")])
    formats = {c.format for c in report.checkpoints}
    assert {"keras2-h5", "keras2-full-h5", "hf-tf-h5-sharded", "keras3-weights-h5", "keras3-weights-sharded",
            "keras3-archive", "safetensors", "safetensors-sharded"} <= formats
    assert check_exit(report) == 0
    for c in report.checkpoints:
        r = fix(c.path, tmp_path / "out")
        assert r.nothing_to_fix and r.output is None and not (tmp_path / "out").exists()


def test_fix_verification_finds_a_flipped_byte(tmp_path, monkeypatch):
    """fix re-reads what it wrote and compares it with the source byte for
    byte: one byte flipped behind the writer's back is refused, nothing written."""
    from tietool.errors import CorruptCheckpointError
    from tietool.formats import h5_writer
    from tietool.io.tensorcopy import copy_tensor

    flipped = []

    def copy_then_flip(ckpt, info, files, fd, pos, progress=None, wb=None):
        copy_tensor(ckpt, info, files, fd, pos, progress, wb)
        if not flipped and info.nbytes and "shared" not in info.name:  # not a copy of the tie: only bytes tell
            byte = os.pread(fd, 1, pos)
            os.pwrite(fd, bytes([byte[0] ^ 0x01]), pos)
            flipped.append(info.name)

    monkeypatch.setattr(h5_writer, "copy_tensor", copy_then_flip)
    src = DAMAGED / "tf/t5_copies_differ"
    before = hashlib.sha256((src / "tf_model.h5").read_bytes()).hexdigest()
    with pytest.raises(CorruptCheckpointError, match=r"verification failed: '.*' differs from '.*'$"):
        fix(src, tmp_path / "t5")
    assert flipped and not (tmp_path / "t5").exists() and os.listdir(tmp_path) == []
    assert hashlib.sha256((src / "tf_model.h5").read_bytes()).hexdigest() == before
