"""tietool's own records (tietool.formats.records): parsed once, checked, and
never allowed to decide where tietool writes.

Each hostile file is built here, in a temporary folder: safetensors files with
``safetensors.numpy`` and a hand-written ``__metadata__``, HDF5 files with
h5py. A record that is wrong (JSON type, shape, a reference to a tensor that
is not stored, a file name that is not one plain name) makes a conversion
back exit 2 with one line naming the record, and nothing is written anywhere
(the whole temporary folder is compared before and after); ``inspect`` still
reads the weights and warns."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tietool import open_checkpoint
from tietool.formats.recordcheck import MAX_NAME_BYTES, file_name_problem

from helpers import invoke

LAYOUT = "tietool layout record"
ORIGIN = "tietool origin record"


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _error(r, needle: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def _tree(*datasets: str) -> dict:
    """transformers' TF shard layout: root layer_names lists the datasets."""
    names = {"type": "str", "vlen": True, "cset": "utf8", "size": None, "space": "simple",
             "shape": [len(datasets)], "value": list(datasets)}
    return {"groups": {"": {"layer_names": names}}, "datasets": {d: {"attrs": {}, "opaque": False} for d in datasets}}


def _layout(names: list[str], index: str | None = None, source: str = "hf-tf-h5-shard", **extra) -> dict:
    """File ``names[0]`` holds tensor w, ``names[1]`` tensor v, any others nothing."""
    files = [{"name": n, "tree": _tree(*["w", "v", ""][i:i + 1]) if i < 2 else _tree()}
             for i, n in enumerate(names)]
    out = {"tietool": 1, "source_format": source, "files": files, "index": None}
    if index is not None:
        out["index"] = {"name": index, "text": json.dumps({"weight_map": {f"t{i}": n for i, n in enumerate(names)}})}
    out.update(extra)
    return out


def _st(path: Path, metadata: dict) -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    md = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    save_file({"w": np.arange(6, dtype="float32").reshape(2, 3), "v": np.ones(4, "float16")}, str(path), metadata=md)
    return path


def _h5_with_origin(path: Path, origin) -> Path:
    """A flat HDF5 file (transformers' TF shard layout) whose root attribute
    tietool.safetensors is ``origin`` (JSON-dumped unless a str/number)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = ["w"]
        f["w"] = np.arange(6, dtype="float32").reshape(2, 3)
        f.attrs["tietool.safetensors"] = origin if isinstance(origin, (str, int)) else json.dumps(origin)
    return path


# -- file names from records ---------------------------------------------------------------------

HOSTILE_NAMES = {
    "parent": "../x.h5",
    "absolute": "/tmp/x.h5",
    "subfolder": "a/b.h5",
    "backslash": "a\\b.h5",
    "drive": "C:x.h5",
    "dot": ".",
    "dotdot": "..",
    "nul": "x\0.h5",
    "newline": "x\n.h5",
    "escape": "\x1b[2Jx.h5",
    "del": "x\x7f.h5",
    "hidden": ".x.h5",
    "overlong": "x" * 300 + ".h5",
    "overlong_utf8": "\u00e9" * 128 + ".h5",
    "device": "CON.h5",
    "trailing_dot": "x.h5.",
    "empty": "",
    "wrong_suffix": "x.safetensors",
    "not_a_string": 7,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
def test_file_name_problem_refuses(name):
    assert file_name_problem(HOSTILE_NAMES[name], (".h5",)) is not None


@pytest.mark.parametrize("name", ["tf_model.h5", "tf_model-00001-of-00002.h5", "x.weights.h5", "m\u00e9.h5",
                                  "x" * (MAX_NAME_BYTES - 3) + ".h5"])
def test_file_name_problem_accepts(name):
    assert file_name_problem(name, (".h5",)) is None


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_layout_file_name_never_becomes_a_path(tmp_path, case):
    """A layout record naming a hostile file: converting back, with and
    without -o, single file and sharded (a folder of the recorded names),
    exits 2 naming the record and writes nothing anywhere."""
    work = tmp_path / "work"
    single = _st(work / "src" / "one.safetensors", {"tietool.layout": _layout([HOSTILE_NAMES[case]])})
    sharded = _st(work / "src2" / "two.safetensors", {"tietool.layout": _layout(
        ["ok-00001.h5", HOSTILE_NAMES[case]], index="ok.h5.index.json", source="hf-tf-h5-sharded")})
    (work / "victim.h5").write_bytes(b"the user's file")
    before = _snapshot(tmp_path)
    for src in (single, sharded):
        _error(invoke("convert", src, "--to", "h5"), LAYOUT)
        _error(invoke("convert", src, "--to", "h5", "-o", work / "out"), LAYOUT)
        r = invoke("inspect", src, "--json")
        assert r.exit_code == 0, r.stderr
        assert any(LAYOUT in w for w in json.loads(r.stdout)["warnings"])
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("index", ["../i.json", "sub/i.json", "i.txt", "i\r.json"])
def test_index_name_checked(tmp_path, index):
    src = _st(tmp_path / "m.safetensors", {"tietool.layout": _layout(["a.h5", "b.h5"], index=index,
                                                                       source="hf-tf-h5-sharded")})
    before = _snapshot(tmp_path)
    _error(invoke("convert", src, "--to", "h5", "-o", tmp_path / "out"), "index name")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("names", [["a.h5", "a.h5"], ["a.h5", "A.h5"], ["a.h5", "b.h5", "B.H5"]])
def test_duplicate_output_names_refused(tmp_path, names):
    src = _st(tmp_path / "m.safetensors", {"tietool.layout": _layout(names, index="m.h5.index.json",
                                                                       source="hf-tf-h5-sharded")})
    before = _snapshot(tmp_path)
    _error(invoke("convert", src, "--to", "h5", "-o", tmp_path / "out"), "twice")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("weight_map", [{"w": "../x.h5"}, {"w": ["a.h5", "/abs.h5"]}, {"w": "c.h5"}, {"w": 1}, []])
def test_index_text_names_only_recorded_files(tmp_path, weight_map):
    layout = _layout(["a.h5", "b.h5"], index="m.h5.index.json", source="hf-tf-h5-sharded")
    layout["index"]["text"] = json.dumps({"weight_map": weight_map})
    src = _st(tmp_path / "m.safetensors", {"tietool.layout": layout})
    before = _snapshot(tmp_path)
    _error(invoke("convert", src, "--to", "h5", "-o", tmp_path / "out"), "index text")
    assert _snapshot(tmp_path) == before


def test_index_name_may_not_repeat_a_file(tmp_path):
    src = _st(tmp_path / "m.safetensors", {"tietool.layout": _layout(["a.h5", "b.h5"], index="a.h5",
                                                                       source="hf-tf-h5-sharded")})
    _error(invoke("convert", src, "--to", "h5", "-o", tmp_path / "out"), LAYOUT)


@pytest.mark.parametrize("name", ["../x.safetensors", "/tmp/x.safetensors", "a/x.safetensors", "a\\x.safetensors",
                                  "C:x.safetensors", "..", "x\0.safetensors", "x\x1b.safetensors",
                                  "y" * 300 + ".safetensors", "x.h5", 5])
def test_hdf5_origin_file_name_never_becomes_a_path(tmp_path, name):
    """The HDF5 attribute naming the original safetensors file (tietool.safetensors)."""
    src = _h5_with_origin(tmp_path / "src" / "tf_model.h5", {"metadata": {}, "file": name})
    before = _snapshot(tmp_path)
    _error(invoke("convert", src, "--to", "safetensors"), ORIGIN)
    _error(invoke("convert", src, "--to", "safetensors", "-o", tmp_path / "out"), ORIGIN)
    _error(invoke("convert", src, "--to", "safetensors", "--shard-size", "8B", "-o", tmp_path / "out"), ORIGIN)
    assert _snapshot(tmp_path) == before


def test_output_folder_that_is_a_symlink(tmp_path):
    """-o naming a symlink to a folder of the user's: refused without
    --force; with --force the link itself is replaced, and nothing is ever
    written into the folder it points to."""
    src = _st(tmp_path / "m.safetensors", {"tietool.layout": _layout(["a.h5", "b.h5"], index="a.h5.index.json",
                                                                       source="hf-tf-h5-sharded")})
    users = tmp_path / "users"
    users.mkdir()
    (users / "a.h5").write_bytes(b"keep me")
    link = tmp_path / "out"
    link.symlink_to(users, target_is_directory=True)
    before = _snapshot(users)
    _error(invoke("convert", src, "--to", "h5", "-o", link), "exists")
    assert _snapshot(users) == before and link.is_symlink()
    r = invoke("convert", src, "--to", "h5", "-o", link, "--force")
    assert r.exit_code == 0, r.stderr
    assert _snapshot(users) == before
    assert not link.is_symlink() and sorted(os.listdir(link)) == ["a.h5", "a.h5.index.json", "b.h5"]


# -- wrong JSON type, shape or reference -> exit 2 naming the record -----------------------------------

def _good() -> dict:
    return _layout(["m.h5"])


def _with(**changes) -> dict:
    out = _good()
    out.update(changes)
    return out


def _file_with(**changes) -> dict:
    f = {"name": "m.h5", "tree": _tree("w")}
    f.update(changes)
    return _with(files=[f])


def _attr(spec: dict) -> dict:
    tree = _tree("w")
    tree["groups"][""] = {"a": spec}
    return _file_with(tree=tree)


BAD_LAYOUTS = {
    "not_json": "{not json",
    "list": [],
    "string": "x",
    "number": 3,
    "no_files": {"tietool": 1, "source_format": "keras3-weights-h5"},
    "version_true": _with(tietool=True),
    "version_2": _with(tietool=2),
    "source_list": _with(source_format=["keras2-h5"]),
    "source_safetensors": _with(source_format="safetensors"),
    "files_object": _with(files={"name": "m.h5"}),
    "files_empty": _with(files=[]),
    "file_string": _with(files=["m.h5"]),
    "two_files_unsharded": _layout(["a.h5", "b.h5"]),
    "sharded_without_index": _layout(["a.h5", "b.h5"], source="hf-tf-h5-sharded"),
    "index_unsharded": _layout(["a.h5"], index="a.json"),
    "index_text_number": _layout(["a.h5", "b.h5"], source="hf-tf-h5-sharded") | {"index": {"name": "i.json",
                                                                                             "text": 1}},
    "unknown_key": _with(extra=1),
    "tree_list": _file_with(tree=[]),
    "tree_no_datasets": _file_with(tree={"groups": {}}),
    "dataset_opaque_float32": _file_with(tree={"groups": {}, "datasets": {"w": {"opaque": True}}}),
    "datasets_list": _file_with(tree={"groups": {}, "datasets": ["w"]}),
    "dataset_not_stored": _file_with(tree=_tree("w", "ghost")),
    "dataset_dotdot": _file_with(tree=_tree("../w")),
    "dataset_and_group": _file_with(tree={"groups": {"": {}, "w": {}}, "datasets": {"w": {}}}),
    "dataset_under_dataset": _file_with(tree={"groups": {}, "datasets": {"w": {}, "w/x": {}}}),
    "opaque_string": _file_with(tree={"groups": {}, "datasets": {"w": {"opaque": "yes"}}}),
    "attrs_list": _file_with(tree={"groups": {"": []}, "datasets": {"w": {}}}),
    "attr_object_dtype": _attr({"type": "num", "dtype": "O", "space": "scalar", "value": 1}),
    "attr_subarray_bomb": _attr({"type": "num", "dtype": "(1000000000,)f8", "space": "scalar", "value": 1}),
    "attr_huge_shape": _attr({"type": "num", "dtype": "<f8", "space": "simple", "shape": [2**40], "value": []}),
    "attr_shape_mismatch": _attr({"type": "num", "dtype": "<f8", "space": "simple", "shape": [3], "value": [1]}),
    "attr_int_overflow": _attr({"type": "num", "dtype": "<i1", "space": "scalar", "value": 1000}),
    "attr_string_value_number": _attr({"type": "str", "vlen": True, "cset": "utf8", "size": None,
                                       "space": "scalar", "shape": None, "value": 5}),
    "attr_fixed_string_huge": _attr({"type": "str", "vlen": False, "cset": "ascii", "size": 2**40,
                                     "space": "scalar", "shape": None, "value": "x"}),
    "attr_ascii_not_ascii": _attr({"type": "str", "vlen": True, "cset": "ascii", "size": None,
                                   "space": "scalar", "shape": None, "value": "\u20ac"}),
    "attr_type_unknown": _attr({"type": "ref", "space": "scalar", "value": 1}),
    "attr_space_unknown": _attr({"type": "num", "dtype": "<f8", "space": "weird", "value": 1}),
    "archive_not_list": _layout(["m.weights.h5"], source="keras3-archive", archive={"a": 1}),
    "archive_bad_date": _layout(["m.weights.h5"], source="keras3-archive",
                                archive=[{"name": "config.json", "date_time": [1970, 1, 1, 0, 0, 0]}]),
    "archive_short_date": _layout(["m.weights.h5"], source="keras3-archive",
                                  archive=[{"name": "config.json", "date_time": [2024]}]),
    "archive_repeated": _layout(["m.weights.h5"], source="keras3-archive",
                                archive=[{"name": "config.json", "date_time": [2024, 1, 1, 0, 0, 0]}] * 2),
    "archive_not_keras": _with(archive=[]),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_bad_layout_record_is_exit_2_naming_it(tmp_path, case):
    src = _st(tmp_path / "src" / "m.safetensors", {"tietool.layout": BAD_LAYOUTS[case],
                                                     "tietool.config": "{}"})
    before = _snapshot(tmp_path)
    for to in ("h5", "keras"):
        r = invoke("convert", src, "--to", to, "-o", tmp_path / f"out.{to}")
        _error(r, LAYOUT)
    assert _snapshot(tmp_path) == before
    r = invoke("inspect", src, "--json")
    assert r.exit_code == 0, r.stderr
    assert any(LAYOUT in w for w in json.loads(r.stdout)["warnings"])


@pytest.mark.parametrize("names, needle", [
    ("{bad", "tietool names record"),
    ([], "tietool names record"),
    ({"w": "ghost"}, "tietool names record"),
    ({"w": ["w"]}, "tietool names record"),
    ({"../w": "w"}, "tietool names record"),
])
def test_bad_names_record(tmp_path, names, needle):
    src = _st(tmp_path / "m.safetensors", {"tietool.layout": _good(), "tietool.names": names})
    _error(invoke("convert", src, "--to", "h5", "-o", tmp_path / "out.h5"), needle)
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("origin", ["{bad", "[1]", 5, {"metadata": [], "file": "m.safetensors"},
                                    {"metadata": {"a": 1}, "file": "m.safetensors"}, {"file": "m.safetensors"},
                                    {"metadata": {}, "file": "m.safetensors", "more": 1}])
def test_bad_hdf5_origin_record(tmp_path, origin):
    src = _h5_with_origin(tmp_path / "tf_model.h5", origin)
    before = _snapshot(tmp_path)
    _error(invoke("convert", src, "--to", "safetensors", "-o", tmp_path / "out.safetensors"), ORIGIN)
    assert _snapshot(tmp_path) == before
    r = invoke("inspect", src)
    assert r.exit_code == 0 and ORIGIN in r.stdout + r.stderr


def test_good_hdf5_origin_record_restores_name_and_metadata(tmp_path):
    src = _h5_with_origin(tmp_path / "tf_model.h5", {"metadata": {"format": "pt", "x": "y"},
                                                     "file": "model.safetensors"})
    r = invoke("convert", src, "--to", "safetensors")
    assert r.exit_code == 0, r.stderr
    with open_checkpoint(tmp_path / "model.safetensors") as ckpt:
        assert ckpt.metadata == {"format": "pt", "x": "y"}


def test_records_are_typed_fields_of_the_checkpoint(tmp_path):
    layout = _layout(["m.h5"], source="keras3-weights-h5")
    layout["files"][0]["tree"] = _tree("w", "copy", "v")
    src = _st(tmp_path / "m.safetensors", {"tietool.layout": layout, "copy": "w", "tietool.config": '{"a": 1}',
                                           "tietool.keras_metadata": '{"keras_version": "3"}'})
    with open_checkpoint(src) as ckpt:
        rec = ckpt.records
        assert rec.problems == {}
        assert rec.layout is not None and rec.layout.source_format == "keras3-weights-h5"
        assert rec.layout.files[0].name == "m.h5"
        assert rec.layout.files[0].tensors == {"w": "w", "copy": "w", "v": "v"}
        assert rec.layout.copies == {"copy": "w"} and rec.aliases == {"copy": "w"}
        assert rec.config_text == '{"a": 1}' and ckpt.config == {"a": 1}
        assert rec.keras_metadata == {"keras_version": "3"}
        assert ckpt.origin_format == "keras3-weights-h5"


# -- -o ending in a separator ------------------------------------------------------------------------

def test_output_with_trailing_slash_is_a_folder(tmp_path):
    """``convert x -o out.safetensors/``: the trailing / names a folder, and
    the output file goes inside it under its usual name (never a file named
    out.safetensors, never exit 3)."""
    from safetensors.numpy import save_file

    src = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((2, 3), "float32")}, str(src))
    out = tmp_path / "out.safetensors"
    r = invoke("convert", src, "--to", "h5", "-o", f"{out}/")
    assert r.exit_code == 0, r.stderr
    assert out.is_dir() and sorted(os.listdir(out)) == ["model.h5"]
    back = tmp_path / "back"
    r = invoke("convert", out / "model.h5", "-o", f"{back}{os.sep}")
    assert r.exit_code == 0, r.stderr
    assert sorted(os.listdir(back)) == ["model.safetensors"]
    assert (back / "model.safetensors").read_bytes() == src.read_bytes()
    before = _snapshot(tmp_path)
    _error(invoke("convert", src, "--to", "h5", "-o", f"{out}/"), "exists")
    assert _snapshot(tmp_path) == before


def test_fix_output_with_trailing_slash_refused(tmp_path):
    """``fix`` writes a file for a file: ``-o name/`` is refused before any work."""
    from tietool.errors import UsageError
    from tietool.io.safe_output import check_output

    with pytest.raises(UsageError, match="names a folder"):
        check_output(f"{tmp_path}/x.safetensors/", [], folder=False, force=False)
    assert not (tmp_path / "x.safetensors").exists()


# -- structure-aware mutations of a real layout record (a fast sample) --------------------------------

HOSTILE_VALUES = [None, 0, -1, 2**70, 1.5, True, "", ".", "..", "../x.h5", "/abs.h5", "a/b.h5", "a\\b.h5", "C:x.h5",
                  "x\0.h5", "x\n.h5", "y" * 300, [], {}, [[[[[]]]]], {"a": {"b": {}}}, "keras3-archive", "w"]


def _nodes(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nodes(v, (*path, i))


def _mutate(record: dict, rng) -> dict:
    out = json.loads(json.dumps(record))
    for _ in range(rng.randint(1, 3)):
        nodes = [p for p, _v in _nodes(out) if p]
        path = rng.choice(nodes)
        parent = out
        for step in path[:-1]:
            parent = parent[step]
        kind = rng.random()
        if kind < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind < 0.25 and isinstance(parent, dict):
            parent[rng.choice(HOSTILE_VALUES[6:14])] = parent[path[-1]]  # a hostile key
        else:
            parent[path[-1]] = rng.choice(HOSTILE_VALUES)
    return out


@pytest.fixture(scope="module")
def lossless(tmp_path_factory):
    """A real lossless conversion of a Keras 3 file: its tensors and __metadata__."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from helpers import fixture

    out = tmp_path_factory.mktemp("lossless") / "m.safetensors"
    r = invoke("convert", fixture("keras3/tied_revemb.weights.h5"), "-o", out)
    assert r.exit_code == 0, r.stderr
    with safe_open(str(out), "np") as f:
        metadata = f.metadata()
    return load_file(str(out)), metadata


def test_layout_record_mutations_never_exit_3(tmp_path, lossless):
    """200 mutations of a real tietool.layout (a value replaced by a hostile
    one, a key removed or added): converting back exits 0 or 2 with one
    line, and writes nothing outside its -o folder."""
    import random

    from safetensors.numpy import save_file

    tensors, metadata = lossless
    record = json.loads(metadata["tietool.layout"])
    rng = random.Random(26)
    work = tmp_path / "work"
    work.mkdir()
    codes = {0: 0, 2: 0}
    for i in range(200):
        md = dict(metadata, **{"tietool.layout": json.dumps(_mutate(record, rng))})
        src = work / "m.safetensors"
        save_file(tensors, str(src), metadata=md)
        out = tmp_path / f"out{i}"
        r = invoke("convert", src, "--to", "h5", "-o", f"{out}/")
        assert r.exit_code in codes, (md["tietool.layout"], r.exit_code, r.stderr)
        codes[r.exit_code] += 1
        if r.exit_code:
            _error(r, "")
            assert not out.exists()
        else:
            assert all(p.parent == out for p in out.rglob("*"))
        assert sorted(os.listdir(work)) == ["m.safetensors"]
    assert codes[2] > 100  # most mutations break the record
