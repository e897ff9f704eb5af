"""Every layout read by tietool agrees with what h5py / safetensors report
directly: names, counts, shapes, dtypes, byte totals and the bytes themselves."""

import json
import os
import shutil
import zipfile

import h5py
import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

import tietool
from tietool.errors import CorruptCheckpointError, TietoolError
from tietool.ties.declaration import tie_declaration

from helpers import FIXTURES, MANIFEST, fixture

# -- direct listings with the libraries people use --------------------------------

def h5_datasets(source) -> dict[str, h5py.Dataset]:
    out = {}
    source.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def h5_value(ds: h5py.Dataset) -> np.ndarray:
    arr = ds[()]
    if ds.dtype.kind == "V":
        arr = np.ascontiguousarray(arr).view(ml_dtypes.bfloat16)
    return np.asarray(arr)


def direct_tensors(path):
    """name -> numpy array, read with h5py / safetensors, for any fixture file
    or folder (shards followed through their index)."""
    path = str(path)
    if os.path.isdir(path):
        for name in ("model.safetensors", "model.safetensors.index.json", "tf_model.h5", "tf_model.h5.index.json"):
            if os.path.exists(os.path.join(path, name)):
                return direct_tensors(os.path.join(path, name))
        others = sorted(n for n in os.listdir(path) if n.endswith((".weights.json", ".h5")) and "_0000" not in n)
        return direct_tensors(os.path.join(path, others[0]))
    if path.endswith(".safetensors"):
        with safe_open(path, "np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    if path.endswith(".json"):
        with open(path) as fh:
            index = json.load(fh)
        shards = []
        for v in index["weight_map"].values():
            for s in v if isinstance(v, list) else [v]:
                if s not in shards:
                    shards.append(s)
        out = {}
        for s in shards:
            out.update(direct_tensors(os.path.join(os.path.dirname(path), s)))
        return out
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as member, h5py.File(member, "r") as f:
            return {k: h5_value(v) for k, v in h5_datasets(f).items()}
    with h5py.File(path, "r") as f:
        return {k: h5_value(v) for k, v in h5_datasets(f).items()}


ALL_FIXTURES = sorted(
    k for k in MANIFEST
    if not k.endswith((".npy", ".json")) and (FIXTURES / k).exists()
)


def test_manifest_covers_every_layout():
    formats = set()
    for rel in ALL_FIXTURES:
        with tietool.open_checkpoint(fixture(rel)) as ckpt:
            formats.add(ckpt.format)
    assert formats >= {
        "keras2-h5", "keras2-full-h5", "hf-tf-h5-sharded", "keras3-weights-h5",
        "keras3-weights-sharded", "keras3-archive", "safetensors", "safetensors-sharded",
    }


@pytest.mark.parametrize("rel", ALL_FIXTURES)
def test_listing_and_bytes_match_direct_read(rel):
    expected = direct_tensors(fixture(rel))
    with tietool.open_checkpoint(fixture(rel)) as ckpt:
        names = [t.name for t in ckpt]
        assert len(names) == len(set(names)), "names must be unique"
        assert set(names) == set(expected)
        assert ckpt.total_bytes() == sum(a.nbytes for a in expected.values())
        for info in ckpt:
            want = expected[info.name]
            assert info.shape == want.shape, info.name
            assert info.dtype == want.dtype.name, info.name
            assert info.nbytes == want.nbytes
            got = ckpt.read(info.name)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), info.name  # bit for bit


@pytest.mark.parametrize("rel", ["tf/bert_mlm", "pt/llama_untied", "keras3/tied_revemb.keras",
                                 "keras3/bf16_revemb.weights.h5"])
def test_chunks_reassemble_exactly(rel):
    with tietool.open_checkpoint(fixture(rel)) as ckpt:
        for info in ckpt:
            blocks = list(ckpt.iter_chunks(info.name, max_bytes=100))
            if info.shape and info.shape[0] > 1 and info.nbytes > 200:
                assert len(blocks) > 1  # really streamed in bounded pieces
            joined = np.concatenate([b for _, b in blocks]) if info.shape else blocks[0][1]
            assert joined.tobytes() == ckpt.read(info.name).tobytes()
            assert [s for s, _ in blocks] == sorted(s for s, _ in blocks)


@pytest.mark.parametrize("rel", ["tf/gpt2", "pt/gpt2", "keras3/tied_revemb.keras", "keras3/untied_revemb.weights.h5"])
def test_offsets_point_at_the_raw_bytes(rel):
    """Where a tensor is stored contiguously, `offset` is where its bytes are
    in `file` (the .keras archive itself for an uncompressed member)."""
    with tietool.open_checkpoint(fixture(rel)) as ckpt:
        checked = 0
        for info in ckpt:
            if info.offset is None:
                continue
            with open(info.file, "rb") as fh:
                fh.seek(info.offset)
                raw = fh.read(info.nbytes)
            assert raw == ckpt.read(info.name).astype(ckpt.read(info.name).dtype.newbyteorder("<")).tobytes()
            checked += 1
        assert checked > 0


def test_keras2_names_hf_layout_and_config_default():
    with tietool.open_checkpoint(fixture("tf/gpt2")) as ckpt:
        assert ckpt.format == "keras2-h5"
        wte = [t for t in ckpt if t.name.endswith("wte/embeddings:0")]
        assert len(wte) == 1 and wte[0].name.startswith("transformer/")
        assert wte[0].layer == "transformer"
        assert ckpt.metadata["keras_version"].startswith("2.")
        assert ckpt.config_source.endswith("config.json")
        assert "tie_word_embeddings" not in ckpt.config
        decl = tie_declaration(ckpt.config)  # the one rule; highlights no longer carry a second one
        assert (decl.value, decl.source, decl.keys) == (True, "default of config class GPT2Config",
                                                        ("tie_word_embeddings",))
        assert {t.layer for t in ckpt} == {"transformer"}  # the file's layer_names: one layer


def test_duplicate_names_across_layer_groups_are_distinct_tensors():
    with tietool.open_checkpoint(fixture("tf/bert_mlm")) as ckpt:
        copies = [t.name for t in ckpt if t.name.endswith("word_embeddings/weight:0")]
        assert len(copies) == 2
        assert {c.split("/")[0] for c in copies} == {"bert", "mlm___cls"}


def test_untied_config_declared():
    with tietool.open_checkpoint(fixture("tf/mistral_untied")) as ckpt:
        decl = tie_declaration(ckpt.config)
        assert (decl.value, decl.source) == (False, "config.json key tie_word_embeddings")


def test_full_model_h5_config_and_optimizer_roles():
    with tietool.open_checkpoint(fixture("keras2/full_model.h5")) as ckpt:
        assert ckpt.format == "keras2-full-h5"
        assert ckpt.config["class_name"] in ("Functional", "Model")
        roles = {t.role for t in ckpt}
        assert roles == {"weight", "optimizer"}
        assert all(t.name.startswith("optimizer_weights/") for t in ckpt if t.role == "optimizer")
        assert isinstance(ckpt.training_config, dict)


def test_keras3_archive_in_place_with_layer_names_and_optimizer():
    path = fixture("keras3/tied_revemb.keras")
    before = set(os.listdir(path.parent))
    with tietool.open_checkpoint(path) as ckpt:
        assert ckpt.format == "keras3-archive"
        assert ckpt.config is not None and ckpt.metadata.get("keras_version", "").startswith("3.")
        emb = [t for t in ckpt if t.layer == "revemb"]
        assert emb and emb[0].shape == (64, 16)
        assert any(t.role == "optimizer" for t in ckpt)
    assert set(os.listdir(path.parent)) == before  # nothing extracted


def test_keras3_bfloat16_marked_by_attribute():
    with tietool.open_checkpoint(fixture("keras3/bf16_revemb.weights.h5")) as ckpt:
        bf = [t for t in ckpt if t.dtype == "bfloat16"]
        assert bf
        assert ckpt.read(bf[0].name).dtype == ml_dtypes.bfloat16


def test_safetensors_metadata_and_bf16():
    with tietool.open_checkpoint(fixture("pt/llama_bf16")) as ckpt:
        assert ckpt.metadata["format"] == "pt"
        assert {t.dtype for t in ckpt} == {"bfloat16"}
    with tietool.open_checkpoint(fixture("tf/gpt2_tf_safetensors")) as ckpt:
        assert ckpt.metadata["format"] == "tf"


def test_sharded_indexes_join_every_shard():
    for rel in ("tf/gpt2_sharded", "pt/gpt2_sharded", "keras3/sharded"):
        with tietool.open_checkpoint(fixture(rel)) as ckpt:
            weight_files = [f for f in ckpt.files if not f.endswith(("config.json",))]
            assert len({t.file for t in ckpt}) >= 2, rel
            assert all(os.path.exists(f) for f in weight_files)


def test_hf_shards_same_weights_as_single_file():
    with tietool.open_checkpoint(fixture("tf/gpt2")) as one, \
            tietool.open_checkpoint(fixture("tf/gpt2_sharded")) as many:
        single = {t.name.split("/", 1)[1]: one.read(t.name) for t in one}
        for t in many:
            key = t.name.split("/", 1)[1] if not t.name.startswith("transformer/") else t.name.split("/", 1)[1]
            match = [v for k, v in single.items() if k.endswith(key)]
            assert match and match[0].tobytes() == many.read(t.name).tobytes()


# -- laziness: opening reads headers, never data ------------------------------------

def test_open_reads_no_tensor_data_safetensors(tmp_path):
    src = fixture("pt/gpt2/model.safetensors")
    dst = tmp_path / "model.safetensors"
    shutil.copy(src, dst)
    with tietool.open_checkpoint(src) as ref:
        expected = [t.as_dict() | {"file": None} for t in ref]
        start = min(t.offset for t in ref)
    data = bytearray(dst.read_bytes())
    data[start:] = b"\xff" * (len(data) - start)  # garbage where the data is
    dst.write_bytes(bytes(data))
    with tietool.open_checkpoint(dst) as ckpt:
        assert [t.as_dict() | {"file": None} for t in ckpt] == expected


def test_open_reads_no_tensor_data_h5(tmp_path):
    src = fixture("tf/gpt2/tf_model.h5")
    dst = tmp_path / "tf_model.h5"
    shutil.copy(src, dst)
    data = bytearray(dst.read_bytes())
    with tietool.open_checkpoint(src) as ref:
        expected = [(t.name, t.shape, t.dtype, t.nbytes) for t in ref]
        for t in ref:
            data[t.offset:t.offset + t.nbytes] = b"\x7f" * t.nbytes
    dst.write_bytes(bytes(data))
    with tietool.open_checkpoint(dst) as ckpt:
        assert [(t.name, t.shape, t.dtype, t.nbytes) for t in ckpt] == expected
        first = next(iter(ckpt))
        assert np.all(ckpt.read(first.name).view(np.uint8) == 0x7F)


# -- Keras 2 attribute variants that real files have ---------------------------------

def test_names_stored_as_bytes_and_split_lists(tmp_path):
    """Keras 2 writes names as bytes and splits long lists into layer_names0,
    layer_names1...; both must read the same as plain str lists."""
    path = tmp_path / "split.h5"
    rng = np.random.default_rng(0)
    layers = [f"layer_{i}" for i in range(5)]
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.21.0"
        f.attrs["layer_names0"] = np.array([n.encode() for n in layers[:3]], dtype="S")
        f.attrs["layer_names1"] = np.array([n.encode() for n in layers[3:]], dtype="S")
        for n in layers:
            g = f.create_group(n)
            wn = [f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()]
            g.attrs["weight_names"] = np.array(wn, dtype="S")
            g.create_dataset(f"{n}/kernel:0", data=rng.standard_normal((3, 4)).astype("f4"))
            g.create_dataset(f"{n}/bias:0", data=np.zeros(4, "f4"))
    with tietool.open_checkpoint(path) as ckpt:
        assert ckpt.format == "keras2-h5"
        assert list(dict.fromkeys(t.layer for t in ckpt)) == layers  # layer_names, in order
        assert [t.name for t in ckpt][:2] == ["layer_0/layer_0/kernel:0", "layer_0/layer_0/bias:0"]
        assert ckpt.metadata["backend"] == "tensorflow"
        assert len(ckpt) == 10


def test_weight_names_order_is_authoritative(tmp_path):
    path = tmp_path / "order.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        g.create_dataset("dense/bias:0", data=np.zeros(2, "f4"))
        g.create_dataset("dense/kernel:0", data=np.ones((2, 2), "f4"))
    with tietool.open_checkpoint(path) as ckpt:
        assert [t.name for t in ckpt] == ["dense/dense/kernel:0", "dense/dense/bias:0"]


def test_listed_weight_missing_is_a_clear_error(tmp_path):
    path = tmp_path / "missing.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0"])
    with pytest.raises(CorruptCheckpointError) as err:
        tietool.open_checkpoint(path)
    assert "dense/kernel:0" in str(err.value) and str(path) in str(err.value)
    assert isinstance(err.value, ValueError)  # catchable as the builtin too


def test_folder_without_weights_and_missing_path(tmp_path):
    with pytest.raises(TietoolError) as err:
        tietool.open_checkpoint(tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        tietool.open_checkpoint(tmp_path / "nope.h5")


def test_big_endian_h5_dataset_reads_native(tmp_path):
    path = tmp_path / "be.weights.h5"
    values = np.arange(12, dtype=">f4").reshape(3, 4)
    with h5py.File(path, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.attrs["name"] = "dense"
        v.create_dataset("0", data=values)
    with tietool.open_checkpoint(path) as ckpt:
        (info,) = list(ckpt)
        assert info.dtype == "float32" and info.offset is None  # not raw-copyable
        got = ckpt.read(info.name)
        assert got.dtype == np.dtype("float32") and np.array_equal(got, values.astype("<f4"))


def test_heap_check_reads_metadata_not_tensor_data(tmp_path):
    """The global-heap check (against HDF5's infinite loop on a corrupt
    collection) scans only the file outside dataset storage: tensor bytes that
    happen to spell a corrupt heap header are data, not a reason to refuse."""
    fake = np.frombuffer(b"GCOL\x01\x00\x00\x00" + (8192).to_bytes(8, "little") + b"\xff" * 8176, dtype=np.uint8)
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = ["dense"]  # a variable-length string: the check runs
        g = f.create_group("dense")
        g.attrs["weight_names"] = ["dense/kernel:0"]
        g.create_dataset("dense/kernel:0", data=fake.reshape(64, 128))
    with tietool.open_checkpoint(path) as ckpt:
        (info,) = list(ckpt)
        assert ckpt.read(info.name).tobytes() == fake.tobytes()
