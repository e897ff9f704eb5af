"""tietool convert: lossless round trips on every fixture, ties, safe writes."""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors import safe_open

from tietool import OutputExistsError, TietoolError, UsageError, open_checkpoint
from tietool.convert import convert, parse_size
from tietool.errors import CorruptCheckpointError

from helpers import FIXTURES, Calls, fixture, run_cli

H5_FOLDERS = sorted(p.name for p in (FIXTURES / "tf").iterdir()
                    if (p / "tf_model.h5").exists() or (p / "tf_model.h5.index.json").exists())
H5_FILES = [
    "keras2/full_model.h5",
    "keras2/seed_shared/seed_shared_weights.h5",
    "keras3/tied_revemb.weights.h5",
    "keras3/untied_revemb.weights.h5",
    "keras3/bf16_revemb.weights.h5",
    "keras3/legacy_full.h5",
]
ST_SOURCES = ["pt/gpt2", "pt/gpt2_sharded", "pt/llama_bf16", "pt/llama_tied", "pt/llama_untied",
              "tf/gpt2_tf_safetensors"]


# -- helpers ------------------------------------------------------------------------

def h5_items(path) -> dict:
    """Every object of an HDF5 file: path -> (kind, attrs, dtype, shape, bytes)."""
    out = {}

    def attrs(obj):
        d = {}
        for k in obj.attrs:
            aid = obj.attrs.get_id(k)
            t = aid.get_type()
            kind = (t.get_class(), t.is_variable_str() if isinstance(t, h5py.h5t.TypeStringID) else None,
                    t.get_cset() if isinstance(t, h5py.h5t.TypeStringID) else None)
            v = obj.attrs[k]
            v = v.tolist() if isinstance(v, np.ndarray) else v
            d[k] = (kind, aid.get_space().get_simple_extent_type(), aid.shape, v)
        return d

    with h5py.File(path, "r") as f:
        out[""] = ("group", attrs(f))

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = np.asarray(obj[()])
                out[name] = ("dataset", attrs(obj), obj.dtype.str, obj.shape, data.tobytes())
            else:
                out[name] = ("group", attrs(obj))

        f.visititems(visit)
    return out


def assert_same_h5(a, b, ignore_root_attrs=()):
    ia, ib = h5_items(a), h5_items(b)
    assert list(ia) == list(ib) or sorted(ia) == sorted(ib)
    for k in ia:
        if k == "" and ignore_root_attrs:
            ra = {x: y for x, y in ia[k][1].items() if x not in ignore_root_attrs}
            rb = {x: y for x, y in ib[k][1].items() if x not in ignore_root_attrs}
            assert ra == rb
            continue
        assert ia[k] == ib[k], k


def st_items(path) -> tuple[dict, dict]:
    ck = open_checkpoint(path)
    with ck:
        tensors = {t.name: (t.dtype, t.shape, bytes(ck.store.read_bytes(t, 0, t.nbytes))) for t in ck}
        return tensors, dict(ck.metadata)


def weights_file(folder: Path) -> Path:
    from tietool.formats import find_weights

    return Path(find_weights(str(folder))[0])


def check_safe_open(folder_or_file: Path):
    paths = [folder_or_file] if folder_or_file.is_file() else list(folder_or_file.glob("*.safetensors"))
    assert paths
    for p in paths:
        with safe_open(str(p), "np") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                f.get_tensor(k) if "BF16" not in str(f.get_slice(k).get_dtype()) else None


def no_temp_left(folder: Path):
    assert not [p for p in folder.iterdir() if ".tietool-tmp-" in p.name]


# -- H5 -> safetensors -> H5 ----------------------------------------------------------

@pytest.mark.parametrize("name", H5_FOLDERS)
def test_hf_tf_folder_round_trip(tmp_path, name):
    src = FIXTURES / "tf" / name
    st = tmp_path / "st"
    back = tmp_path / "back"
    r1 = convert(src, "safetensors", out=st)
    check_safe_open(st)
    r2 = convert(st, "h5", out=back)
    assert r1.to_json()["verified"] and r2.to_json()["verified"]
    # every non-weight file kept unchanged
    for f in src.iterdir():
        if f.suffix in (".json", ".npy") and not f.name.endswith("index.json"):
            assert (st / f.name).read_bytes() == f.read_bytes()
            assert (back / f.name).read_bytes() == f.read_bytes()
    src_h5 = sorted(p.name for p in src.glob("*.h5"))
    assert sorted(p.name for p in back.glob("*.h5")) == src_h5
    for n in src_h5:
        assert_same_h5(src / n, back / n)
    if (src / "tf_model.h5.index.json").exists():
        assert (back / "tf_model.h5.index.json").read_bytes() == (src / "tf_model.h5.index.json").read_bytes()
    meta = st_items(weights_file(st))[1]
    assert meta["format"] == "tf"
    assert json.loads(meta["tietool.config"]) == json.loads((src / "config.json").read_text())
    no_temp_left(tmp_path)


@pytest.mark.parametrize("rel", H5_FILES)
def test_h5_file_round_trip(tmp_path, rel):
    src = FIXTURES / rel
    st = tmp_path / "x.safetensors"
    back = tmp_path / src.name
    convert(src, "safetensors", out=st)
    check_safe_open(st)
    convert(st, "h5", out=back)
    assert_same_h5(src, back)
    with open_checkpoint(back) as a, open_checkpoint(src) as b:
        assert a.format == b.format
        assert a.config == b.config
        # the Keras weight order (weight_names) and each tensor's layer come back as they were
        assert list(a.tensors) == list(b.tensors)
        assert [t.layer for t in a] == [t.layer for t in b]


def test_full_model_config_kept(tmp_path):
    src = FIXTURES / "keras2/full_model.h5"
    st = tmp_path / "m.safetensors"
    convert(src, "safetensors", out=st)
    meta = st_items(st)[1]
    with open_checkpoint(src) as ck:
        assert json.loads(meta["tietool.config"]) == ck.config


def test_bf16_keras3(tmp_path):
    src = FIXTURES / "keras3/bf16_revemb.weights.h5"
    st = tmp_path / "bf.safetensors"
    convert(src, "safetensors", out=st)
    with safe_open(str(st), "np") as f:
        dts = {str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    assert "BF16" in dts


def test_keras3_sharded_folder_round_trip(tmp_path):
    src = FIXTURES / "keras3/sharded"
    convert(src, "safetensors", out=tmp_path / "st")
    convert(tmp_path / "st", "h5", out=tmp_path / "back")
    for p in src.glob("*.weights.h5"):
        assert_same_h5(p, tmp_path / "back" / p.name)
    index = "untied_revemb.weights.json"
    assert (tmp_path / "back" / index).read_bytes() == (src / index).read_bytes()


def test_keras_archive(tmp_path):
    src = FIXTURES / "keras3/tied_revemb.keras"
    st = tmp_path / "t.safetensors"
    convert(src, "safetensors", out=st)
    meta = st_items(st)[1]
    with zipfile.ZipFile(src) as z:
        cfg = z.read("config.json").decode()
        keras_meta = z.read("metadata.json").decode()
        (tmp_path / "member.weights.h5").write_bytes(z.read("model.weights.h5"))
    assert meta["tietool.config"] == cfg and meta["tietool.keras_metadata"] == keras_meta  # the text, byte for byte
    r = convert(st, "h5", out=tmp_path / "t.weights.h5")
    assert_same_h5(tmp_path / "member.weights.h5", tmp_path / "t.weights.h5",
                   ignore_root_attrs=("tietool.config", "tietool.keras_metadata"))
    assert r.to_json()["files"] == [str(tmp_path / "t.weights.h5")]
    with h5py.File(tmp_path / "t.weights.h5", "r") as f:
        assert f.attrs["tietool.config"] == cfg and f.attrs["tietool.keras_metadata"] == keras_meta


# -- safetensors -> H5 -> safetensors ---------------------------------------------------

@pytest.mark.parametrize("rel", ST_SOURCES)
def test_safetensors_round_trip(tmp_path, rel):
    src = FIXTURES / rel
    h5 = tmp_path / "h5"
    back = tmp_path / "back"
    convert(src, "h5", out=h5)
    with open_checkpoint(h5) as ck:
        assert ck.format == "hf-tf-h5-shard"
    convert(h5, "safetensors", out=back)
    check_safe_open(back)
    a_t, a_m = st_items(src)
    b_t, b_m = st_items(back)
    assert a_t == b_t
    assert a_m == b_m
    assert (back / "config.json").read_bytes() == (src / "config.json").read_bytes()


def test_safetensors_file_round_trip_bf16(tmp_path):
    src = FIXTURES / "pt/llama_bf16/model.safetensors"
    convert(src, "h5", out=tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "r") as f:
        ds = f["model.embed_tokens.weight"]
        assert ds.dtype.kind == "V" and ds.attrs["dtype"] == "bfloat16"
    convert(tmp_path / "m.h5", "safetensors", out=tmp_path / "m.safetensors")
    assert st_items(src) == st_items(tmp_path / "m.safetensors")


# -- ties ---------------------------------------------------------------------------------

def test_t5_three_copies_become_one(tmp_path):
    out = tmp_path / "t5.safetensors"
    r = convert(FIXTURES / "tf/t5/tf_model.h5", "safetensors", out=out)
    kept = "shared/embeddings:0"  # the name transformers' TF safetensors gives the shared embedding
    assert r.aliases == {"encoder/shared/shared/embeddings:0": kept, "decoder/shared/shared/embeddings:0": kept}
    with safe_open(str(out), "np") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert kept in keys and not keys & set(r.to_json()["aliases"])
    assert all(meta[k] == kept for k in r.to_json()["aliases"])
    with open_checkpoint(out) as ck:
        assert sum(1 for t in ck if t.shape == (64, 16) and "shared" in t.name) == 1
    res = run_cli("verify-tie", out)
    if "No such command" not in res.stderr:
        assert res.returncode == 0, res.stderr


def test_bert_copies_deduped_and_keep(tmp_path):
    r = convert(FIXTURES / "tf/bert_mlm/tf_model.h5", "safetensors", out=tmp_path / "a.safetensors")
    assert "mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0" in r.to_json()["aliases"]
    r2 = convert(FIXTURES / "tf/bert_mlm/tf_model.h5", "safetensors", out=tmp_path / "b.safetensors", ties="keep")
    assert r2.to_json()["aliases"] == {}
    assert r2.to_json()["tensors"] == r.to_json()["tensors"] + len(r.to_json()["aliases"])


def test_different_copies_never_merged(tmp_path):
    # a Keras 2 file where one layer's copy differs by one bit
    src = tmp_path / "w.h5"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = a.copy()
    b.view(np.uint32)[2, 3] ^= 1
    with h5py.File(src, "w") as f:
        f.attrs["layer_names"] = [b"x", b"y"]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.21.0"
        for layer, data in (("x", a), ("y", b)):
            g = f.create_group(layer)
            g.attrs["weight_names"] = [b"m/emb/weight:0"]
            g.create_dataset("m/emb/weight:0", data=data)
    r = convert(src, "safetensors", out=tmp_path / "w.safetensors")
    assert r.to_json()["aliases"] == {}
    convert(tmp_path / "w.safetensors", "h5", out=tmp_path / "w2.h5")
    assert_same_h5(src, tmp_path / "w2.h5")


# -- safety ---------------------------------------------------------------------------------

def test_existing_output_refused(tmp_path):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        convert(FIXTURES / "tf/gpt2/tf_model.h5", "safetensors", out=out)
    assert out.read_bytes() == b"keep me"
    res = run_cli("convert", FIXTURES / "tf/gpt2/tf_model.h5", "--to", "safetensors", "-o", out)
    assert res.returncode == 2 and res.stderr.startswith("Error: ")
    assert out.read_bytes() == b"keep me"
    no_temp_left(tmp_path)
    r = convert(FIXTURES / "tf/gpt2/tf_model.h5", "safetensors", out=out, force=True)
    assert r.to_json()["verified"] and out.read_bytes() != b"keep me"


def test_existing_folder_output(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(OutputExistsError):
        convert(FIXTURES / "tf/gpt2", "safetensors", out=out)
    assert [p.name for p in out.iterdir()] == ["x"]
    # --force replaces only what a checkpoint folder holds: "x" is the user's (issue 10)
    with pytest.raises(UsageError, match="holds x"):
        convert(FIXTURES / "tf/gpt2", "safetensors", out=out, force=True)
    assert [p.name for p in out.iterdir()] == ["x"]
    (out / "x").unlink()
    (out / "tf_model.h5").write_text("stale")
    (out / "config.json").write_text("{}")
    convert(FIXTURES / "tf/gpt2", "safetensors", out=out, force=True)
    assert (out / "model.safetensors").exists() and not (out / "tf_model.h5").exists()
    no_temp_left(tmp_path)


def test_unwritable_target(tmp_path):
    blocker = tmp_path / "some_file"
    blocker.write_text("")
    res = run_cli("convert", FIXTURES / "tf/gpt2/tf_model.h5", "--to", "safetensors", "-o", blocker / "out.safetensors")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("Error: ")
    assert blocker.read_text() == ""


@pytest.mark.parametrize("to,src", [("safetensors", "tf/t5"), ("h5", "pt/gpt2")])
def test_interrupted_write_leaves_nothing(tmp_path, to, src):
    """An interrupt in the middle of writing (here from the progress callback,
    at the third report of bytes written) leaves no output and no temporary."""
    calls = {"n": 0}

    def interrupt_third_write(phase, done, total):
        if phase == "write":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt

    for out in (tmp_path / "folder_out", tmp_path / "file.out"):
        calls["n"] = 0
        source = FIXTURES / src if out.name == "folder_out" else weights_file(FIXTURES / src)
        with pytest.raises(KeyboardInterrupt):
            convert(source, to, out=out, progress=interrupt_third_write)
        assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_input_untouched_and_defaults(tmp_path):
    import shutil

    src = tmp_path / "gpt2"
    shutil.copytree(FIXTURES / "tf/gpt2", src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    r = convert(src, "safetensors")
    assert r.to_json()["output"] == str(tmp_path / "gpt2-safetensors")
    r = convert(src / "tf_model.h5", "safetensors")
    assert r.to_json()["output"] == str(src / "model.safetensors")
    after = {p.name: p.read_bytes() for p in src.iterdir() if p.name != "model.safetensors"}
    assert after == before


def test_sharded_safetensors_output(tmp_path):
    r = convert(FIXTURES / "tf/gpt2", "safetensors", out=tmp_path / "s", shard_size="10KB")
    idx = json.loads((tmp_path / "s/model.safetensors.index.json").read_text())
    assert len(set(idx["weight_map"].values())) >= 2
    check_safe_open(tmp_path / "s")
    convert(tmp_path / "s", "h5", out=tmp_path / "b")
    assert_same_h5(FIXTURES / "tf/gpt2/tf_model.h5", tmp_path / "b/tf_model.h5")
    assert r.to_json()["verified"]


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        convert(FIXTURES / "pt/gpt2", "safetensors", out=tmp_path / "x")
    with pytest.raises(UsageError):
        convert(FIXTURES / "tf/gpt2", "onnx", out=tmp_path / "x")
    assert parse_size("10KB") == 10_000 and parse_size("2GiB") == 2 * 2**30


def test_cli_json_summary(tmp_path):
    res = run_cli("convert", FIXTURES / "tf/t5", "--to", "safetensors", "-o", tmp_path / "o", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["aliases_recorded"] == 2 and data["tensors"] == 26 and data["files"]
    assert res.stderr == ""  # not a terminal: no progress
    res = run_cli("convert", tmp_path / "o", "--to", "h5", "-o", tmp_path / "b", "--quiet", "--no-verify")
    assert res.returncode == 0, res.stderr
    assert_same_h5(FIXTURES / "tf/t5/tf_model.h5", tmp_path / "b/tf_model.h5")


def test_hf_source_to_safetensors_says_how_to_get_pytorch_names(tmp_path):
    """The lossless output keeps HDF5 dataset paths, which no transformers
    loader expects: the summary says so (for an HF source, not for Keras)."""
    from tietool.convert import convert

    r = convert(fixture("tf/gpt2"), "safetensors", tmp_path / "hf")
    assert any("--names pt" in n for n in r.to_json()["notes"])
    r = convert(fixture("keras3/tied_revemb.weights.h5"), "safetensors", tmp_path / "k3.safetensors")
    assert r.to_json()["notes"] == []


VERDICT_FIXTURES = sorted(
    str(p.relative_to(FIXTURES)) for p in
    list(FIXTURES.glob("tf/*")) + list(FIXTURES.glob("pt/*")) + list(FIXTURES.glob("keras3/*.h5"))
    + list(FIXTURES.glob("keras3/*.keras")) + [FIXTURES / "keras2/full_model.h5", FIXTURES / "keras2/seed_shared"]
)


@pytest.mark.parametrize("rel", VERDICT_FIXTURES)
def test_verify_tie_agrees_after_conversion(tmp_path, rel):
    """Converting must not change what verify-tie concludes: same verdict,
    same kind of tie, whichever direction."""
    from tietool.convert import convert
    from tietool.formats import open_checkpoint
    from tietool.ties.verify import verify_tie

    src = fixture(rel)
    with open_checkpoint(src) as ckpt:
        to = "h5" if ckpt.format.startswith("safetensors") else "safetensors"
    out = tmp_path / ("out.h5" if to == "h5" and src.is_file() else "out")
    convert(src, to, out)
    before, after = verify_tie(src), verify_tie(out)
    assert after.tied == before.tied, (before.message, after.message)
    assert [g.verdict for g in after.groups] == [g.verdict for g in before.groups]


def test_hf_tf_names_match_transformers_own_tf_safetensors(tmp_path):
    """A transformers tf_model.h5 becomes the safetensors transformers' TF
    save_pretrained(safe_serialization=True) writes: same names, same bytes;
    the fixture tf/gpt2_tf_safetensors was written that way from the same
    weights as tf/gpt2."""
    r = convert(FIXTURES / "tf/gpt2", "safetensors", out=tmp_path / "st")
    assert r.to_json()["notes"] and "transformers TF loads" in r.to_json()["notes"][0]
    ours, _ = st_items(tmp_path / "st" / "model.safetensors")
    theirs, _ = st_items(FIXTURES / "tf/gpt2_tf_safetensors/model.safetensors")
    assert set(ours) == set(theirs)
    for k in theirs:
        assert ours[k] == theirs[k], k
    # and back: the original tf_model.h5, dataset for dataset
    convert(tmp_path / "st", "h5", out=tmp_path / "back")
    assert_same_h5(FIXTURES / "tf/gpt2/tf_model.h5", tmp_path / "back" / "tf_model.h5")


def test_name_clash_keeps_dataset_paths(tmp_path):
    """With --ties keep, BERT's two word-embedding copies would get one
    transformers name: the dataset paths are kept instead, and said so."""
    r = convert(FIXTURES / "tf/bert_mlm", "safetensors", out=tmp_path / "k", ties="keep")
    assert any("dataset paths" in n for n in r.to_json()["notes"])
    keys, _ = st_items(tmp_path / "k" / "model.safetensors")
    assert "mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0" in keys


# -- one pipeline: file metadata, side files, the reference parser, the result ----------------

def test_a_file_beside_another_weights_file_round_trips(tmp_path):
    """A safetensors file in a folder that also holds tf_model.h5: its own
    ``__metadata__`` only comes back (nothing about the folder), and
    safetensors -> H5 -> safetensors stays lossless."""
    src = tmp_path / "both"
    src.mkdir()
    for f in (FIXTURES / "pt/gpt2").iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    (src / "tf_model.h5").write_bytes((FIXTURES / "tf/gpt2/tf_model.h5").read_bytes())  # another weights file
    convert(src / "model.safetensors", "h5", out=tmp_path / "m.h5")
    convert(tmp_path / "m.h5", "safetensors", out=tmp_path / "back.safetensors")
    assert st_items(src / "model.safetensors") == st_items(tmp_path / "back.safetensors")
    with safe_open(str(tmp_path / "back.safetensors"), "np") as f:
        back_meta = f.metadata() or {}
    with safe_open(str(src / "model.safetensors"), "np") as f:
        assert back_meta == (f.metadata() or {})


def test_side_file_policy(tmp_path):
    """Copied: regular files and links inside the source (a Hugging Face cache
    snapshot's links into its blobs/ too); not copied: links out of the source,
    hidden files and other weight files."""
    outside = tmp_path / "secret.txt"
    outside.write_text("do not carry me")
    repo = tmp_path / "models--org--gpt2"
    blobs, snap = repo / "blobs", repo / "snapshots" / ("a" * 40)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in (FIXTURES / "tf/gpt2").iterdir():
        (blobs / f.name).write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("../../blobs") / f.name)
    (snap / "secret.txt").symlink_to(outside)
    (snap / "notes.md").write_text("mine")
    (snap / "notes-link.md").symlink_to("notes.md")
    (snap / ".gitattributes").write_text("*.h5 filter=lfs")
    (snap / "pytorch_model.bin").write_bytes(b"stale weights")
    for names in ("keras", "pt"):
        out = tmp_path / f"out-{names}"
        r = convert(snap, "safetensors", out=out, names=names)
        copied = sorted(Path(p).name for p in r.copied_files)
        assert copied == ["config.json", "generation_config.json", "notes-link.md", "notes.md",
                          "ref_input_ids.npy", "ref_logits.npy"], names
        assert not any(p.is_symlink() for p in out.iterdir())
        assert (out / "config.json").read_bytes() == (FIXTURES / "tf/gpt2/config.json").read_bytes()
        assert r.notes[-1] == "not copied (symbolic links out of the source folder): secret.txt"
        assert r.to_json()["notes"] == list(r.notes)


def test_verification_uses_the_reference_parser(tmp_path, monkeypatch):
    """Every safetensors output is opened with safetensors.safe_open; what it
    reads must be the plan, else nothing is written."""
    import safetensors

    opened = []
    real = safetensors.safe_open

    def spy(path, framework, *a, **k):
        opened.append(Path(path).name.split(".tietool-tmp-")[0])
        return real(path, framework, *a, **k)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    convert(FIXTURES / "tf/gpt2", "safetensors", out=tmp_path / "s", shard_size="10KB")
    shards = sorted(p.name for p in (tmp_path / "s").glob("*.safetensors"))
    assert len(shards) >= 2 and sorted(opened) == shards
    convert(FIXTURES / "tf/gpt2", out=tmp_path / "p", names="pt")
    assert opened[-1] == "model.safetensors"

    class Wrong:  # the reference parser reads another shape than planned
        def __init__(self, path, framework):
            self.f = real(path, framework)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def metadata(self):
            return self.f.metadata()

        def keys(self):
            return self.f.keys()

        def get_slice(self, k):
            s = self.f.get_slice(k)
            return type("S", (), {"get_dtype": s.get_dtype, "get_shape": lambda self: [*s.get_shape(), 1]})()

    monkeypatch.setattr(safetensors, "safe_open", Wrong)
    with pytest.raises(TietoolError, match="safe_open reads other tensors"):
        convert(FIXTURES / "tf/gpt2", "safetensors", out=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_result_json_keys_and_order(tmp_path):
    """``--json`` keeps its keys and their order for both naming schemes."""
    r = convert(FIXTURES / "tf/t5", "safetensors", out=tmp_path / "k")
    assert list(r.to_json()) == ["source", "source_format", "names", "to", "to_inferred", "output", "files",
                                 "copied_files", "tensors", "bytes", "file_bytes", "aliases", "aliases_recorded",
                                 "verified", "fsynced", "seconds", "notes"]
    assert r.to_json()["aliases_recorded"] == r.aliases_recorded == len(r.aliases) == 2
    p = convert(FIXTURES / "tf/gpt2", out=tmp_path / "p", names="pt")
    assert list(p.to_json()) == ["source", "source_format", "to", "names", "output", "files", "copied_files",
                                 "tensors", "bytes", "file_bytes", "transposed", "permuted", "squeezed", "reshaped",
                                 "pt_class", "dropped", "copies_merged", "tied_heads_left_out", "aliases",
                                 "aliases_recorded", "verified", "fsynced", "seconds", "to_inferred"]
    assert p.to_inferred == "--names pt writes safetensors" and p.pt is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.tensors = 0  # type: ignore[misc]


def test_dedupe_splits_candidates_by_their_first_bytes(tmp_path, monkeypatch):
    """Many same-shaped candidates (tie detection names every equal-shape
    matrix): only those whose first 64 KB agree are compared in full, so
    seven candidates cost four comparisons, not twenty-one; a tensor that
    agrees for 64 KB and differs in its last byte is still kept apart."""
    import h5py


    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((40, 1024)).astype("<f4"), rng.standard_normal((40, 1024)).astype("<f4")
    near = a.copy()
    near.reshape(-1).view(np.uint8)[-1] ^= 1
    zeros = np.zeros((40, 1024), "<f4")
    arrays = [a, a, near, b, b, zeros, zeros]
    path = tmp_path / "seven.h5"
    with h5py.File(path, "w") as f:
        names = [f"embedding_{i}" for i in range(len(arrays))]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.21.0"
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        for n, arr in zip(names, arrays, strict=True):
            g = f.create_group(n)
            g.attrs["weight_names"] = np.array([f"{n}/embeddings:0".encode()])
            g.create_group(n).create_dataset("embeddings:0", data=arr)
    from tietool.io.tensorcopy import same_tensor_bytes

    with Calls(callers={"same": "convert/dedupe.py"}, same=same_tensor_bytes) as calls:
        r = convert(path, "safetensors", out=tmp_path / "out.safetensors")
    key = "embedding_{0}/embedding_{0}/embeddings:0".format
    assert r.aliases == {key(1): key(0), key(4): key(3), key(6): key(5)}
    assert calls["same"] == 4


def test_raw_copies_are_compared_as_they_are_written(tmp_path, monkeypatch):
    """Verification of a safetensors output compares each raw copy as soon as
    it is written (on a helper thread, while the next one is copied) and
    does not read it again at the end; a byte that differs is still found,
    named, and nothing is left behind."""
    import threading

    from tietool.convert import write
    from tietool.io import tensorcopy

    with Calls(callers={"same": "convert/verify.py"}, same=tensorcopy.same_tensor_bytes) as later:
        r = convert(FIXTURES / "tf/gpt2", "safetensors", out=tmp_path / "ok")
    assert r.verified and r.tensors > 10 and later["same"] == 0  # every tensor compared while written

    real_copy = tensorcopy.copy_tensor
    flipped: list[str] = []

    def copy_then_flip(ckpt, info, files, fd, pos, progress=None, wb=None):
        real_copy(ckpt, info, files, fd, pos, progress, wb)
        if not flipped and info.nbytes > 1000:
            with open(info.file, "rb") as src:  # the writer's descriptor is write-only
                src.seek(info.offset + 999)
                os.pwrite(fd, bytes([src.read(1)[0] ^ 0x10]), pos + 999)
            flipped.append(info.name)

    monkeypatch.setattr(write.writers, "copy_tensor", copy_then_flip)
    before = threading.active_count()
    with pytest.raises(CorruptCheckpointError, match=r"verification failed: bytes of '.*' differ from the source"):
        convert(FIXTURES / "tf/gpt2", "safetensors", out=tmp_path / "bad")
    assert flipped and not (tmp_path / "bad").exists()
    assert sorted(os.listdir(tmp_path)) == ["ok"]
    assert threading.active_count() == before  # the checking thread ended


def test_early_check_stops_when_the_write_fails(tmp_path):
    """A failure while writing (here at the third report of bytes written) ends
    the checking thread and is what the caller sees."""
    import threading

    count = []

    def fail_third(phase, done, total):  # the third report of bytes written: the write fails there
        count.append(phase)
        if count.count("write") == 3:
            raise OSError(5, "Input/output error")

    before = threading.active_count()
    with pytest.raises(OSError):
        convert(FIXTURES / "tf/gpt2", "safetensors", out=tmp_path / "bad", progress=fail_third)
    assert threading.active_count() == before and os.listdir(tmp_path) == []


def test_an_early_check_at_another_offset_is_not_trusted(tmp_path):
    """If the finished file put a tensor elsewhere than where it was compared
    while written, verification compares it again (and finds the truth)."""
    from tietool.convert import verify
    from tietool.formats import open_as_stored

    out = tmp_path / "m.safetensors"
    convert(FIXTURES / "tf/gpt2/tf_model.h5", "safetensors", out=out)
    got = open_as_stored(str(out))
    name, info = next((n, t) for n, t in got.tensors.items() if t.nbytes > 0)
    got.close()
    with open(out, "r+b") as fh:  # damage that tensor in place
        fh.seek(info.offset)
        b = fh.read(1)
        fh.seek(info.offset)
        fh.write(bytes([b[0] ^ 1]))
    from tietool.convert import keras_plan
    from tietool.formats import open_checkpoint
    from tietool.io.tensorcopy import SourceFiles

    with open_checkpoint(str(FIXTURES / "tf/gpt2/tf_model.h5")) as ckpt:
        files = SourceFiles()
        plan = keras_plan.plan_to_safetensors(ckpt, "dedupe", None, files, "tf_model.h5")
        files.close()
        o = plan.outputs[0]
        verify.verify_output(o, str(out), ckpt, None, {name: info.offset})  # trusted: at that offset
        with pytest.raises(CorruptCheckpointError, match=f"bytes of '{name}' differ"):
            verify.verify_output(o, str(out), ckpt, None, {name: info.offset + 1})
