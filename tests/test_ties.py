"""Tie detection (tietool.ties.verify) and streaming comparison (tietool.ties.compare)."""

import json
import shutil

import h5py
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from tietool.cli.render import render_inspect, render_tie_groups, render_verify_tie
from tietool.errors import TensorNotFoundError, UsageError
from tietool.formats import open_checkpoint
from tietool.summary import inspect_checkpoint
from tietool.ties import compare
from tietool.ties import verify as ties

from helpers import EXPECTED_TIES, fixture

EXPECTED = EXPECTED_TIES


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_every_fixture(rel):
    tied, kind, verdict, n = EXPECTED[rel]
    r = ties.verify_tie(fixture(rel))
    assert r.to_json()["tied"] is tied
    [g] = r.to_json()["groups"]
    assert (g["kind"], g["verdict"], len(g["members"])) == (kind, verdict, n)
    json.dumps(r.to_json())  # JSON-ready
    assert render_verify_tie(r)


def test_expected_agrees_with_manifest():
    from helpers import MANIFEST

    for rel, (tied, *_rest) in EXPECTED.items():
        key = rel if rel in MANIFEST else rel.rsplit("/", 1)[0]
        assert MANIFEST[key]["declared_tie"] is tied, rel


def test_members_and_orientation():
    g = ties.verify_tie(fixture("tf/mistral_untied")).to_json()["groups"][0]
    emb, dec = g["members"]
    assert emb["role"] == "embedding" and emb["name"].endswith("embed_tokens/embeddings:0") and not emb["transposed"]
    assert dec["role"] == "decoder" and dec["name"].endswith("lm_head/kernel:0") and dec["transposed"]
    g = ties.verify_tie(fixture("keras3/untied_revemb.weights.h5")).to_json()["groups"][0]
    assert [m["name"] for m in g["members"]] == ["layers/reversible_embedding/vars/0",
                                                 "layers/reversible_embedding/vars/1"]
    assert g["members"][1]["transposed"] and g["rows_differ"] == 64


def test_position_and_optimizer_tensors_are_never_members():
    for rel in ("tf/bert_mlm", "tf/gpt2", "keras3/tied_revemb.keras", "keras2/full_model.h5"):
        with open_checkpoint(fixture(rel)) as ck:
            for g in ties.find_ties(ck):
                for m in g.members:
                    assert "position" not in m.name and "wpe" not in m.name
                    assert not m.name.startswith(("optimizer", "optimizer_weights"))


def test_config_declarations():
    c = ties.verify_tie(fixture("tf/gpt2")).to_json()["config"]
    assert (c["value"], c["source"], c["key"]) == (True, "default", "tie_word_embeddings")
    assert ties.verify_tie(fixture("pt/llama_bf16")).to_json()["config"]["value"] is False
    assert ties.verify_tie(fixture("pt/llama_bf16")).to_json()["config"]["source"] == "declared"
    c = ties.verify_tie(fixture("keras3/tied_revemb.keras")).to_json()["config"]
    assert (c["value"], c["key"]) == (True, "tie_weights")
    assert ties.verify_tie(fixture("keras3/untied_revemb.weights.h5")).to_json()["config"]["value"] is None


def test_find_ties_reads_no_data():
    for rel in EXPECTED:
        with open_checkpoint(fixture(rel)) as ck:
            def boom(*a, **k):
                raise AssertionError("data read")
            ck.store.read_rows = boom
            groups = ties.find_ties(ck)
            assert len(groups) == 1
            d = groups[0].to_json()
            assert d["verdict"] in ("tied", "unverified")
            render_tie_groups(groups)


def test_inspect_shows_tie_groups():
    rep = inspect_checkpoint(fixture("tf/t5"))
    [g] = rep.to_json()["ties"]
    assert g["kind"] == "duplicate-copies" and g["verdict"] == "unverified" and len(g["members"]) == 3
    text = render_inspect(rep)
    assert "Tie groups:" in text and "encoder/shared/shared/embeddings:0" in text
    assert inspect_checkpoint(fixture("pt/gpt2")).to_json()["ties"][0]["kind"] == "implicit"


# -- tampering ---------------------------------------------------------------------------

def _tamper_h5(src, dst, dataset, row, col):
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        ds = f[dataset]
        old = ds[row, col]
        new = np.nextafter(old, np.float32(np.inf), dtype=np.float32)
        ds[row, col] = new
    return float(new) - float(old)


@pytest.mark.parametrize("rel,dataset", [
    ("tf/bert_mlm", "mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"),
    ("tf/bert_mlm", "bert/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"),
    ("tf/t5", "decoder/shared/shared/embeddings:0"),
    ("tf/t5", "shared/shared/shared/embeddings:0"),
])
def test_one_ulp_in_one_copy(tmp_path, rel, dataset):
    folder = tmp_path / "m"
    shutil.copytree(fixture(rel), folder)
    ulp = _tamper_h5(fixture(rel) / "tf_model.h5", folder / "tf_model.h5", dataset, 37, 5)
    r = ties.verify_tie(folder)
    assert r.to_json()["tied"] is False
    [g] = r.to_json()["groups"]
    assert g["kind"] == "duplicate-copies" and g["verdict"] == "near copy"
    assert g["first_rows"] == [37] and g["rows_differ"] == 1
    assert g["max_abs_diff"] == ulp
    assert g["consistency"]["wrong_side"] == "weights"
    # a tolerance makes it pass; the bits still differ and are counted
    r = ties.verify_tie(folder, atol=1e-6)
    assert r.to_json()["tied"] is True and r.to_json()["groups"][0]["verdict"] == "tied"
    # tampering the reference copy makes every other copy differ from it
    comparisons = r.to_json()["groups"][0]["comparisons"]
    assert sum(c["bits_differ"] for c in comparisons) == (1 if "cls" in dataset or "decoder/" in dataset else
                                                        len(comparisons))
    assert ties.verify_tie(folder, rtol=1e-5).to_json()["tied"] is True
    assert ties.verify_tie(folder, atol=0.0).to_json()["tied"] is False


def test_far_copy_is_not_near(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(fixture("tf/bert_mlm"), folder)
    with h5py.File(folder / "tf_model.h5", "r+") as f:
        ds = f["mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"]
        ds[3, :] = ds[3, :] + 1.0
    g = ties.verify_tie(folder).to_json()["groups"][0]
    assert g["verdict"] == "copies differ" and g["first_rows"] == [3]
    assert abs(g["max_abs_diff"] - 1.0) < 1e-6


# -- built checkpoints ----------------------------------------------------------------------

def _emb(v=64, h=16, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(0, 0.02, (v, h)).astype(dtype)


def test_transposed_exact_copy_safetensors(tmp_path):
    e = _emb()
    p = tmp_path / "t.safetensors"
    save_file({"model.embed_tokens.weight": e, "lm_head.kernel": np.ascontiguousarray(e.T)}, str(p))
    r = ties.verify_tie(p)
    assert r.to_json()["tied"] is True
    g = r.to_json()["groups"][0]
    assert g["kind"] == "transposed-copy" and g["members"][1]["transposed"]


@pytest.mark.parametrize("chunked", [False, True])
def test_transposed_copy_keras3_h5(tmp_path, chunked):
    e = _emb(100, 12)
    p = tmp_path / "m.weights.h5"
    kw = {"chunks": (4, 7), "compression": "gzip"} if chunked else {}
    with h5py.File(p, "w") as f:
        f.create_dataset("layers/reversible_embedding/vars/0", data=e, **kw)
        f.create_dataset("layers/reversible_embedding/vars/1", data=np.ascontiguousarray(e.T), **kw)
    g = ties.verify_tie(p).to_json()["groups"][0]
    assert (g["kind"], g["verdict"]) == ("transposed-copy", "tied")
    with h5py.File(p, "r+") as f:
        f["layers/reversible_embedding/vars/1"][5, 77] += np.float32(0.5)
    g = ties.verify_tie(p).to_json()["groups"][0]
    assert g["verdict"] == "copies differ" and g["first_rows"] == [77]


def test_hard_link_is_shared_storage(tmp_path):
    p = tmp_path / "m.weights.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("layers/reversible_embedding/vars/0", data=_emb())
        f["layers/lm_head/vars/0"] = f["layers/reversible_embedding/vars/0"]
    g = ties.verify_tie(p).to_json()["groups"][0]
    assert (g["kind"], g["verdict"]) == ("shared-storage", "tied")
    assert g["members"][1]["same_storage_as"] == "layers/reversible_embedding/vars/0"


def test_safetensors_alias_is_shared_storage(tmp_path):
    p = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": _emb()}, str(p),
              metadata={"format": "pt", "lm_head.weight": "model.embed_tokens.weight"})
    r = ties.verify_tie(p)
    g = r.to_json()["groups"][0]
    assert r.to_json()["tied"] and g["kind"] == "shared-storage"
    assert g["members"][1] == {"name": "lm_head.weight", "role": "decoder", "shape": [64, 16], "dtype": "float32",
                               "transposed": False, "stored": False, "same_storage_as": "model.embed_tokens.weight"}


def test_no_output_layer(tmp_path):
    p = tmp_path / "e.safetensors"
    save_file({"embeddings.word_embeddings.weight": _emb()}, str(p))
    r = ties.verify_tie(p)
    assert r.to_json()["tied"] is False and r.to_json()["groups"][0]["verdict"] == "no output layer"
    folder = tmp_path / "base"
    shutil.copytree(fixture("pt/gpt2"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["GPT2Model"]
    (folder / "config.json").write_text(json.dumps(cfg))
    r = ties.verify_tie(folder)
    assert r.to_json()["tied"] is False and r.to_json()["groups"][0]["verdict"] == "no output layer"
    assert "GPT2Model" in r.to_json()["groups"][0]["reason"]
    p = tmp_path / "x.safetensors"
    save_file({"dense.kernel": _emb()}, str(p))
    r = ties.verify_tie(p)
    assert r.to_json()["tied"] is False and r.to_json()["groups"] == [] and "no output layer" in r.to_json()["message"]


def test_config_says_tied_but_separate_decoder(tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(fixture("pt/llama_untied"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (folder / "config.json").write_text(json.dumps(cfg))
    g = ties.verify_tie(folder).to_json()["groups"][0]
    assert g["verdict"] == "not tied"
    assert g["consistency"]["consistent"] is False and g["consistency"]["wrong_side"] == "config"
    assert "transformers 5 keeps the stored decoder" in g["consistency"]["message"]


def test_config_says_untied_but_one_matrix(tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(fixture("tf/gpt2"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    r = ties.verify_tie(folder)
    g = r.to_json()["groups"][0]
    assert r.to_json()["tied"] is False and g["kind"] == "no-decoder" and g["verdict"] == "not tied"
    assert g["consistency"]["wrong_side"] == "config" and "random" in g["consistency"]["message"]
    assert (r.to_json()["config"]["value"], r.to_json()["config"]["source"]) == (False, "declared")


def test_untied_config_with_identical_copies_is_tied(tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(fixture("pt/llama_untied"), folder)
    with open_checkpoint(folder) as ck:
        e = ck.read("model.embed_tokens.weight")
        rest = {n: ck.read(n) for n in ck.tensors}
    rest["lm_head.weight"] = e.copy()
    save_file(rest, str(folder / "model.safetensors"), metadata={"format": "pt"})
    g = ties.verify_tie(folder).to_json()["groups"][0]
    assert (g["kind"], g["verdict"]) == ("duplicate-copies", "tied")
    assert g["consistency"]["consistent"] is True


def test_bfloat16_copies(tmp_path):
    e = _emb(dtype=ml_dtypes.bfloat16)
    p = tmp_path / "b.safetensors"
    save_file({"model.embed_tokens.weight": e, "lm_head.weight": e.copy()}, str(p))
    assert ties.verify_tie(p).to_json()["groups"][0]["verdict"] == "tied"
    h = e.copy()
    bits = h.view(np.uint16)
    bits[9, 3] += 1  # one bfloat16 ulp
    save_file({"model.embed_tokens.weight": e, "lm_head.weight": h}, str(p))
    g = ties.verify_tie(p).to_json()["groups"][0]
    assert g["verdict"] == "near copy" and g["first_rows"] == [9]
    assert g["max_abs_diff"] == abs(float(h[9, 3]) - float(e[9, 3])) > 0


def _nan(payload):
    return np.array([0x7FC00000 | payload], dtype=np.uint32).view(np.float32)[0]


def test_nan_bits(tmp_path):
    e = _emb()
    e[4, 2] = _nan(1)
    p = tmp_path / "n.safetensors"
    save_file({"model.embed_tokens.weight": e, "lm_head.weight": e.copy()}, str(p))
    assert ties.verify_tie(p).to_json()["tied"] is True  # same NaN bits: identical
    h = e.copy()
    h[4, 2] = _nan(2)
    save_file({"model.embed_tokens.weight": e, "lm_head.weight": h}, str(p))
    r = ties.verify_tie(p)
    g = r.to_json()["groups"][0]
    assert r.to_json()["tied"] is False and g["first_rows"] == [4]  # exact: payloads differ
    assert ties.verify_tie(p, atol=0.0).to_json()["tied"] is True  # tolerance: any NaN matches any NaN
    h[4, 2] = 1.0
    save_file({"model.embed_tokens.weight": e, "lm_head.weight": h}, str(p))
    g = ties.verify_tie(p, atol=1.0).to_json()["groups"][0]
    assert g["verdict"] != "tied" and g["comparisons"][0]["nan_mismatch"] == 1


def test_explicit_pair():
    bert = fixture("tf/bert_mlm")
    a = "bert/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"
    b = "mlm___cls/tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0"
    g = ties.verify_tie(bert, embedding=b, decoder=a).to_json()["groups"][0]
    assert [m["name"] for m in g["members"]] == [b, a] and g["verdict"] == "tied"
    g = ties.verify_tie(fixture("pt/llama_untied"), embedding="model.embed_tokens.weight", decoder="lm_head.weight")
    assert g.tied is False
    g = ties.verify_tie(fixture("tf/mistral_untied"), decoder="lm_head/tf_mistral_for_causal_lm/lm_head/kernel:0")
    assert g.groups[0].members[1].transposed is True
    with pytest.raises(TensorNotFoundError):
        ties.verify_tie(bert, embedding="nope")
    with pytest.raises(KeyError):
        ties.verify_tie(bert, decoder="nope")
    with pytest.raises(UsageError):
        ties.verify_tie(bert, embedding=a,
                        decoder="bert/tf_bert_for_masked_lm/bert/embeddings/position_embeddings/embeddings:0")
    with pytest.raises(ValueError):
        ties.verify_tie(bert, embedding=a, decoder=a)
    with pytest.raises(UsageError):
        ties.verify_tie(bert, atol=-1.0)


def test_classify():
    c = ties.classify
    assert c("transformer/wte/embeddings:0") == "embedding"
    assert c("transformer/wpe/embeddings:0") == "position"
    assert c("bert.embeddings.token_type_embeddings.weight") == "position"
    assert c("lm_head.weight") == "decoder"
    assert c("gpt_neox.embed_out.weight") == "decoder"
    assert c("cls.predictions.decoder.weight") == "decoder"
    assert c("model.decoder.embed_tokens.weight") == "embedding"
    assert c("model_weights/revemb/revemb/reverse_embeddings") == "decoder"
    assert c("transformer/h_._0/mlp/c_proj/weight:0") is None
    assert c("layers/reversible_embedding/vars/0") == "embedding"


# -- compare -------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(v=st.integers(1, 40), h=st.integers(1, 9), transposed=st.booleans(),
       hits=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 8)), max_size=4),
       block=st.integers(1, 200))
def test_streaming_matches_numpy(tmp_path_factory, v, h, transposed, hits, block):
    e = np.random.default_rng(v * 31 + h).normal(size=(v, h)).astype(np.float32)
    d = e.copy()
    for r, c in hits:
        d[r % v, c % h] += 1.0
    p = tmp_path_factory.mktemp("cmp") / "c.safetensors"
    save_file({"a": e, "b": np.ascontiguousarray(d.T) if transposed else d}, str(p))
    with open_checkpoint(p) as ck:
        [diff] = compare.compare_copies(ck, ck.info("a"), [(ck.info("b"), transposed)], block_bytes=block)
    bad = e != d
    rows = np.flatnonzero(bad.any(axis=1))
    assert diff.elements_differ == int(bad.sum()) and diff.rows_differ == rows.size
    assert diff.first_rows == [int(x) for x in rows[:10]]
    assert diff.max_abs_diff == (float(np.abs(e.astype(np.float64) - d).max()) if bad.any() else 0.0)


def test_compare_memory_is_bounded(tmp_path):
    import tracemalloc

    e = _emb(4000, 64)
    p = tmp_path / "big.safetensors"
    save_file({"a": e, "b": np.ascontiguousarray(e.T)}, str(p))
    with open_checkpoint(p) as ck:
        tracemalloc.start()
        [diff] = compare.compare_copies(ck, ck.info("a"), [(ck.info("b"), True)], block_bytes=64 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert diff.equal and diff.identical
    assert peak < 600 * 1024  # the matrices are 1 MB each


def test_bfloat16_transposed_copy(tmp_path):
    e = _emb(300, 20, dtype=ml_dtypes.bfloat16)
    p = tmp_path / "b.safetensors"
    save_file({"tok_embeddings.weight": e, "output.kernel": np.ascontiguousarray(e.T)}, str(p))
    g = ties.verify_tie(p).to_json()["groups"][0]
    assert (g["kind"], g["verdict"]) == ("transposed-copy", "tied")
    t = np.ascontiguousarray(e.T)
    t.view(np.uint16)[3, 250] ^= 1
    save_file({"tok_embeddings.weight": e, "output.kernel": t}, str(p))
    g = ties.verify_tie(p, ).to_json()["groups"][0]
    assert (g["kind"], g["verdict"], g["first_rows"]) == ("transposed-copy", "near copy", [250])


def test_unnamed_dense_head_found_by_shape(tmp_path):
    """A Keras 3 Embedding + Dense(vocab) model: the head's variables have no
    names and its layer is just "dense", but its kernel is [hidden, vocab]."""
    import h5py

    rng = np.random.default_rng(5)
    path = tmp_path / "lm.weights.h5"
    with h5py.File(path, "w") as f:
        e = f.create_group("layers/embedding/vars")
        e.attrs["name"] = "embedding"
        e.create_dataset("0", data=rng.standard_normal((50, 8)).astype("f4"))
        d = f.create_group("layers/dense/vars")
        d.attrs["name"] = "dense"
        d.create_dataset("0", data=rng.standard_normal((8, 50)).astype("f4"))
        d.create_dataset("1", data=np.zeros(50, "f4"))
        f.create_group("vars")
    report = ties.verify_tie(path)
    assert report.to_json()["tied"] is False
    (g,) = report.to_json()["groups"]
    assert g["kind"] == "separate"
    assert [m["name"] for m in g["members"] if m["role"] == "decoder"] == ["layers/dense/vars/0"]
    # and the same head holding the transposed embedding is a tie
    with h5py.File(path, "r+") as f:
        f["layers/dense/vars/0"][...] = f["layers/embedding/vars/0"][()].T
    report = ties.verify_tie(path)
    assert report.to_json()["tied"] is True and report.to_json()["groups"][0]["kind"] == "transposed-copy"
