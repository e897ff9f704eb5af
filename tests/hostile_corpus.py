# ruff: noqa: E501  (the cases are a table: one case per line)
"""Build a corpus of broken and hostile checkpoint files.

Everything is made byte by byte, with ``struct``/``zipfile``/``zlib``, or
with h5py (low-level APIs where the high-level ones refuse): no TensorFlow,
no Keras, nothing that could run what it writes. A few cases start from a
copy of a real fixture (truncated, or with one attribute replaced).

    build_corpus(dirpath) -> [(case_name, path), ...]
    python tests/hostile_corpus.py OUTDIR

Every case lives in its own folder ``OUTDIR/<case_name>/``. All cases but
those in :data:`EXPECT_OK` must be refused by every command with exit
status 2 and one line ``Error: FILE: what is wrong``. :data:`EXPECT_TEXT`
lists text the error line must contain (the offending tensor's name ...).
"""

from __future__ import annotations

import base64
import json
import marshal
import random
import shutil
import struct
import sys
import zipfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: Cases that are valid checkpoints, hostile only in what they carry:
#: ``inspect`` must succeed (exit 0) and report, never run or print raw.
EXPECT_OK = {"keras2_full_model_lambda", "keras3_archive_lambda", "st_ansi_names"}
#: Marker a Lambda case's function would create if it were ever run.
MARKER_NAME = "LAMBDA_CODE_RAN"
#: Substrings the one-line error must contain (besides the file name).
EXPECT_TEXT: dict[str, list[str]] = {}
#: Tensor names with control characters / ANSI escapes (case st_ansi_names).
ANSI_NAMES = [
    "\x1b[2J\x1b[1;31mPWNED\x1b[0m",
    "line1\nline2\rover",
    "bell\x07\x08\x7f",
    "rtl\u202eoverride",
    "zero\u200bwidth",
]


# -- safetensors, byte by byte ------------------------------------------------------

def st_bytes(header, data: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file: 8-byte little-endian header length, header, data.
    ``header`` may be a dict (dumped as JSON) or raw bytes/str."""
    if isinstance(header, dict):
        raw = json.dumps(header).encode()
    elif isinstance(header, str):
        raw = header.encode("utf-8")
    else:
        raw = header
    n = len(raw) if length is None else length
    return struct.pack("<Q", n) + raw + data


def _t(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _valid_st_header() -> dict:
    return {"__metadata__": {"format": "pt"}, "a": _t("F32", [2, 2], 0, 16), "b": _t("F32", [4], 16, 32)}


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _safetensors_cases(root: Path) -> list[tuple[str, Path, list[str]]]:
    data32 = bytes(range(32))
    out = []

    def case(name, content, expect=(), fname="model.safetensors"):
        out.append((name, _write(root / name / fname, content), list(expect)))

    valid = st_bytes(_valid_st_header(), data32)
    case("st_empty", b"")
    case("st_short_prefix", b"\x10\x00\x00")
    case("st_header_len_past_eof", st_bytes(b'{"a":1}', length=5000))
    case("st_header_len_over_100mb", st_bytes(b"{}", length=100_000_001))
    case("st_header_len_2_64", b"\xff" * 8 + b"{}")
    case("st_header_not_utf8", st_bytes(b'{"a\xff\xfe": {}}'))
    case("st_header_not_json", st_bytes(b"{this is not json"))
    case("st_header_not_object", st_bytes(b"[1, 2, 3]"))
    case("st_header_nested_deep", st_bytes(b"[" * 200_000 + b"]" * 200_000))
    dup = (
        '{"dup_tensor": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},'
        ' "dup_tensor": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}'
    )
    case("st_duplicate_key", st_bytes(dup, data32), ["dup_tensor"])
    case("st_unknown_dtype", st_bytes({"odd_dtype": _t("Q7", [4], 0, 16), "b": _t("F32", [4], 16, 32)}, data32), ["odd_dtype", "Q7"])
    case("st_dtype_not_str", st_bytes({"num_dtype": _t(7, [4], 0, 16)}, data32[:16]), ["num_dtype"])
    case("st_negative_shape", st_bytes({"neg_shape": _t("F32", [-1, 4], 0, 16)}, data32[:16]), ["neg_shape"])
    case("st_shape_not_ints", st_bytes({"float_shape": _t("F32", [2.0, 2], 0, 16)}, data32[:16]), ["float_shape"])
    case("st_shape_bool", st_bytes({"bool_shape": _t("F32", [True], 0, 4)}, data32[:4]), ["bool_shape"])
    case("st_size_mismatch", st_bytes({"wrong_span": _t("F32", [3, 3], 0, 16), "b": _t("F32", [4], 16, 32)}, data32), ["wrong_span"])
    case("st_huge_shape_small_span", st_bytes({"huge": _t("F32", [2**40, 2**40], 0, 16)}, data32[:16]), ["huge"])
    case("st_shape_bomb_past_eof", st_bytes({"bomb": _t("F32", [2**20, 2**20], 0, 4 * 2**40)}, data32), ["bomb"])
    case("st_hole", st_bytes({"a": _t("F32", [4], 0, 16), "after_hole": _t("F32", [4], 20, 36)}, bytes(36)), ["after_hole"])
    case("st_overlap", st_bytes({"a": _t("F32", [4], 0, 16), "overlapping": _t("F32", [4], 8, 24)}, bytes(24)), ["overlapping"])
    case("st_not_from_zero", st_bytes({"late_start": _t("F32", [4], 4, 20)}, bytes(20)), ["late_start"])
    case("st_trailing_bytes", st_bytes(_valid_st_header(), data32 + b"EXTRA"))
    case("st_data_past_eof", st_bytes({"a": _t("F32", [4], 0, 16), "beyond": _t("F32", [4], 16, 32)}, data32[:20]), ["beyond"])
    case("st_offsets_reversed", st_bytes({"reversed": _t("F32", [0], 16, 0)}, b""), ["reversed"])
    case("st_offsets_negative", st_bytes({"neg_off": _t("F32", [4], -16, 0)}, b""), ["neg_off"])
    case("st_offsets_nan", st_bytes('{"nan_off": {"dtype": "F32", "shape": [4], "data_offsets": [NaN, 16]}}', data32[:16]), ["nan_off"])
    case("st_offsets_three", st_bytes({"three": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16, 32]}}, data32[:16]), ["three"])
    case("st_entry_not_object", st_bytes({"not_obj": [1, 2, 3]}), ["not_obj"])
    case("st_entry_missing_key", st_bytes({"no_offsets": {"dtype": "F32", "shape": [4]}}, data32[:16]), ["no_offsets"])
    case("st_entry_extra_key", st_bytes({"extra_key": dict(_t("F32", [4], 0, 16), exec="x")}, data32[:16]), ["extra_key"])
    case("st_metadata_not_str", st_bytes({"__metadata__": {"format": 1}, "a": _t("F32", [4], 0, 16)}, data32[:16]), ["__metadata__"])
    case("st_metadata_not_object", st_bytes({"__metadata__": ["x"], "a": _t("F32", [4], 0, 16)}, data32[:16]), ["__metadata__"])
    case("st_truncated_half", valid[: len(valid) // 2])
    case("st_truncated_data", valid[:-1])
    case("st_random_bytes", random.Random(1).randbytes(4096))
    # A bad entry whose name would repaint the terminal: the error must escape it.
    case("st_ansi_name_in_error", st_bytes({"\x1b[2J\x1b[31mevil\nname": _t("BAD", [4], 0, 16)}, data32[:16]), ["evil"])
    # Valid, hostile names only: inspect must escape them in its table.
    names = {}
    pos = 0
    for n in ANSI_NAMES:
        names[n] = _t("F32", [2], pos, pos + 8)
        pos += 8
    case("st_ansi_names", st_bytes(names, bytes(pos)))
    return out


# -- HDF5 through h5py -------------------------------------------------------------

def _h5py():
    import h5py
    import numpy as np

    return h5py, np


def _keras2_skeleton(f, layer: str = "dense", weights: tuple[str, ...] = ("kernel:0",)) -> None:
    """Root attrs of a Keras 2 save_weights file listing ``layer/layer/<w>``."""
    f.attrs["layer_names"] = [layer.encode()]
    f.attrs["backend"] = b"tensorflow"
    f.attrs["keras_version"] = b"2.15.0"
    g = f.require_group(layer)
    g.attrs["weight_names"] = [f"{layer}/{w}".encode() for w in weights]
    f.require_group(f"{layer}/{layer}")


def _victim(path: Path):
    """A harmless, valid HDF5 file a hostile link could reach."""
    h5py, np = _h5py()
    with h5py.File(path, "w") as f:
        f["secret"] = np.arange(16, dtype="float32").reshape(4, 4)
    return path


def _h5_cases(root: Path) -> list[tuple[str, Path, list[str]]]:
    h5py, np = _h5py()
    out = []

    def new(name, fname="tf_model.h5"):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        return d, d / fname

    # external link to another (valid) HDF5 file
    d, p = new("h5_external_link")
    victim = _victim(d / "victim.h5")
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
        f["dense/dense"]["kernel:0"] = h5py.ExternalLink(str(victim), "/secret")
    out.append(("h5_external_link", p, ["external link"]))

    # soft link inside a layer
    d, p = new("h5_soft_link")
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
        f["elsewhere"] = np.zeros((4, 4), "float32")
        f["dense/dense"]["kernel:0"] = h5py.SoftLink("/elsewhere")
    out.append(("h5_soft_link", p, ["soft link"]))

    # soft-link loop: /a -> /b -> /a
    d, p = new("h5_soft_link_loop")
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = [b"a"]
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")
    out.append(("h5_soft_link_loop", p, ["soft link"]))

    # soft-link loop reached while walking a Keras 3 layout
    d, p = new("h5_soft_link_loop_keras3", "model.weights.h5")
    with h5py.File(p, "w") as f:
        f.create_group("layers/dense/vars")
        f["layers/dense/vars"]["0"] = h5py.SoftLink("/layers/dense/vars/1")
        f["layers/dense/vars"]["1"] = h5py.SoftLink("/layers/dense/vars/0")
    out.append(("h5_soft_link_loop_keras3", p, ["soft link"]))

    # external storage: the dataset's bytes live in another file
    d, p = new("h5_external_storage")
    secret = _write(d / "secret.bin", bytes(range(64)))
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
        f["dense/dense"].create_dataset("kernel:0", shape=(4, 4), dtype="float32", external=[(str(secret), 0, 64)])
    out.append(("h5_external_storage", p, ["external"]))

    # virtual dataset mapping another file
    d, p = new("h5_virtual_dataset")
    victim = _victim(d / "victim.h5")
    layout = h5py.VirtualLayout(shape=(4, 4), dtype="float32")
    layout[:] = h5py.VirtualSource(str(victim), "secret", shape=(4, 4))
    with h5py.File(p, "w", libver="latest") as f:
        _keras2_skeleton(f)
        f["dense/dense"].create_virtual_dataset("kernel:0", layout)
    out.append(("h5_virtual_dataset", p, ["virtual"]))

    # shape bomb: chunked dataset declaring 4 TiB, storing nothing
    d, p = new("h5_shape_bomb_chunked")
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
        f["dense/dense"].create_dataset("kernel:0", shape=(2**20, 2**20), dtype="float32", chunks=(256, 256))
    out.append(("h5_shape_bomb_chunked", p, ["kernel:0", "bomb"]))

    # contiguous dataset declaring 4 TiB with no storage allocated
    d, p = new("h5_shape_bomb_contiguous")
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
        space = h5py.h5s.create_simple((2**20, 2**20))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_LATE)
        h5py.h5d.create(f["dense/dense"].id, b"kernel:0", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
    out.append(("h5_shape_bomb_contiguous", p, ["kernel:0"]))

    # Keras 3 layout with a shape bomb
    d, p = new("h5_shape_bomb_keras3", "model.weights.h5")
    with h5py.File(p, "w") as f:
        g = f.create_group("layers/embedding/vars")
        g.attrs["name"] = "embedding"
        g.create_dataset("0", shape=(2**30, 2**12), dtype="float32", chunks=(1024, 64))
    out.append(("h5_shape_bomb_keras3", p, ["bomb"]))

    # a filter that needs a plugin (bitshuffle, id 32008): never loaded
    d, p = new("h5_filter_plugin")
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
        space = h5py.h5s.create_simple((4, 4))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4, 4))
        dcpl.set_filter(32008, h5py.h5z.FLAG_OPTIONAL, (0, 0))
        dsid = h5py.h5d.create(f["dense/dense"].id, b"kernel:0", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
        dsid.write_direct_chunk((0, 0), b"\x00" * 64, filter_mask=0)
    out.append(("h5_filter_plugin", p, ["kernel:0"]))

    # an attribute over the 64 MiB cap
    d, p = new("h5_huge_attribute")
    with h5py.File(p, "w", libver="latest") as f:
        _keras2_skeleton(f)
        f["dense/dense/kernel:0"] = np.zeros((4, 4), "float32")
        f.attrs.create("notes", np.zeros(65 * 1024 * 1024, dtype="uint8"))
    out.append(("h5_huge_attribute", p, ["notes"]))

    # groups nested past the walk's depth limit (Keras 3 layout)
    d, p = new("h5_deep_groups", "model.weights.h5")
    with h5py.File(p, "w") as f:
        f.create_group("layers/" + "/".join(["g"] * 100))
    out.append(("h5_deep_groups", p, ["deeper"]))

    # string dataset where a tensor is expected
    d, p = new("h5_string_dataset")
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
        f["dense/dense"]["kernel:0"] = np.array([b"not", b"a", b"tensor"])
    out.append(("h5_string_dataset", p, ["kernel:0"]))

    # layer_names lists a group that is missing; weight_names lists a missing dataset
    d, p = new("h5_missing_group")
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = [b"ghost"]
    out.append(("h5_missing_group", p, ["ghost"]))
    d, p = new("h5_missing_weight")
    with h5py.File(p, "w") as f:
        _keras2_skeleton(f)
    out.append(("h5_missing_weight", p, ["kernel:0"]))

    # valid HDF5 but no Keras layout
    d, p = new("h5_not_keras")
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros(3)
    out.append(("h5_not_keras", p, []))

    # non-UTF-8 bytes in layer_names
    d, p = new("h5_layer_names_not_utf8")
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = np.array([b"\xff\xfe"], dtype="S2")
    out.append(("h5_layer_names_not_utf8", p, []))

    # byte-level damage to a real checkpoint
    real = (FIXTURES / "tf" / "gpt2" / "tf_model.h5").read_bytes()
    for name, content in (
        ("h5_empty", b""),
        ("h5_signature_only", real[:8]),
        ("h5_truncated_superblock", real[:48]),
        ("h5_truncated_1k", real[:1024]),
        ("h5_truncated_half", real[: len(real) // 2]),
        ("h5_truncated_last_byte", real[:-1]),
        ("h5_random_bytes", random.Random(2).randbytes(8192)),
        ("h5_signature_then_garbage", real[:8] + random.Random(3).randbytes(8184)),
        # HDF5 2.0 loops forever reading a variable-length string through a
        # global heap whose free-space object claims size 0.
        ("h5_global_heap_free_space_size_0", _zero_free_space(real)),
    ):
        d, p = new(name)
        _write(p, content)
        out.append((name, p, []))
    return out


def _zero_free_space(h5_bytes: bytes) -> bytes:
    """The file with the free-space object (index 0) of its first global heap
    collection set to size 0."""
    data = bytearray(h5_bytes)
    start = data.find(b"GCOL")
    (csize,) = struct.unpack_from("<Q", data, start + 8)
    p = start + 16
    while p < start + csize:
        idx = struct.unpack_from("<H", data, p)[0]
        (osize,) = struct.unpack_from("<Q", data, p + 8)
        if idx == 0:
            struct.pack_into("<Q", data, p + 8, 0)
            return bytes(data)
        p += 16 + ((osize + 7) & ~7)
    raise AssertionError("no free-space object in the fixture's global heap")


# -- Keras 2 full model with a Lambda layer ----------------------------------------------

def _marshalled_writer(marker: Path) -> str:
    """base64 of a marshalled code object that would create ``marker``, in
    the shape Keras 2 ``func_dump`` writes. It is compiled, never called."""
    src = f"def f(x):\n    open({str(marker)!r}, 'w').write('ran')\n    return x\n"
    ns: dict = {}
    exec(compile(src, "<hostile>", "exec"), ns)  # defines f; does not call it
    return base64.b64encode(marshal.dumps(ns["f"].__code__)).decode("ascii")


def _lambda_cases(root: Path) -> list[tuple[str, Path, list[str]]]:
    h5py, _ = _h5py()
    out = []
    d = root / "keras2_full_model_lambda"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "full_model.h5"
    shutil.copyfile(FIXTURES / "keras2" / "full_model.h5", p)
    code = _marshalled_writer(d / MARKER_NAME)
    with h5py.File(p, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        layers = cfg["config"]["layers"]
        lam = {
            "class_name": "Lambda",
            "config": {
                "name": "evil_lambda",
                "trainable": True,
                "dtype": "float32",
                "function": [code, None, None],
                "function_type": "lambda",
                "module": "__main__",
                "output_shape": None,
                "output_shape_type": "raw",
                "output_shape_module": None,
                "arguments": {},
            },
            "name": "evil_lambda",
            "inbound_nodes": [[["embedding", 0, 0, {}]]],
        }
        for layer in layers:
            if layer["name"] == "lm_head":
                layer["inbound_nodes"] = [[["evil_lambda", 0, 0, {}]]]
        layers.insert(len(layers) - 1, lam)
        del f.attrs["model_config"]
        f.attrs["model_config"] = json.dumps(cfg).encode()
    out.append(("keras2_full_model_lambda", p, []))

    # Keras 3 archive whose config.json carries a __lambda__ and a custom object
    d = root / "keras3_archive_lambda"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "model.keras"
    with zipfile.ZipFile(FIXTURES / "keras3" / "tied_revemb.keras") as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    cfg = json.loads(members["config.json"])
    cfg["config"]["layers"].append({
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "evil_lambda",
        "config": {"name": "evil_lambda", "function": {"class_name": "__lambda__", "config": {
            "code": _marshalled_writer(d / MARKER_NAME), "defaults": None, "closure": None}}},
    })
    cfg["config"]["layers"].append({
        "module": "evil_pkg.layers", "class_name": "Backdoor", "registered_name": "evil_pkg>Backdoor",
        "name": "backdoor", "config": {"name": "backdoor"},
    })
    members["config.json"] = json.dumps(cfg).encode()
    _zip(p, members)
    out.append(("keras3_archive_lambda", p, []))
    return out


# -- zip archives --------------------------------------------------------------------

def _zip(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=compress)
    return path


def _archive_cases(root: Path) -> list[tuple[str, Path, list[str]]]:
    fixture = FIXTURES / "keras3" / "tied_revemb.keras"
    with zipfile.ZipFile(fixture) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    out = []

    def case(name, content_or_members, expect=(), fname="model.keras", compress=zipfile.ZIP_STORED):
        p = root / name / fname
        if isinstance(content_or_members, dict):
            _zip(p, content_or_members, compress)
        else:
            _write(p, content_or_members)
        out.append((name, p, list(expect)))
        return p

    case("zip_dotdot_member", {**members, "../evil.txt": b"escaped"}, ["../evil.txt"])
    case("zip_dotdot_deep_member", {**members, "assets/../../../tmp/evil.txt": b"escaped"}, ["outside"])
    case("zip_absolute_member", {**members, "/tmp/evil.txt": b"escaped"}, ["outside"])
    case("zip_drive_member", {**members, "C:\\evil.txt": b"escaped"}, ["outside"])
    case("keras_without_weights", {k: v for k, v in members.items() if k != "model.weights.h5"}, ["model.weights.h5"])
    case("keras_empty_zip", {})
    case("keras_weights_garbage", {**members, "model.weights.h5": random.Random(4).randbytes(4096)})
    case("keras_weights_empty", {**members, "model.weights.h5": b""})
    case("keras_config_not_json", {**members, "config.json": b"{not json"}, ["config.json"])
    case("keras_config_deep", {**members, "config.json": b"[" * 100_000 + b"]" * 100_000}, ["config.json"])
    case("keras_weights_deflated_truncated_member",
         {**members, "model.weights.h5": members["model.weights.h5"][:5000]}, compress=zipfile.ZIP_DEFLATED)
    raw = fixture.read_bytes()
    case("keras_truncated_half", raw[: len(raw) // 2])
    case("keras_truncated_tail", raw[:-10])
    case("keras_random_bytes", random.Random(5).randbytes(4096))
    case("keras_zip_magic_only", b"PK\x03\x04" + bytes(60))

    # zip bomb declaration: model.weights.h5 deflated, its sizes patched to
    # claim 4 GB from a few hundred bytes.
    p = case("zip_bomb_declared", {**members, "model.weights.h5": bytes(1 << 20)}, ["bomb"], compress=zipfile.ZIP_DEFLATED)
    _patch_zip_sizes(p, "model.weights.h5", 0xFFFF_0000)
    # config.json declaring more than the config cap (a real 70 MB of zeros, deflated)
    case("zip_bomb_config", {**members, "config.json": b" " * (70 * 1024 * 1024)}, ["config.json"],
         compress=zipfile.ZIP_DEFLATED)
    return out


def _patch_zip_sizes(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size of ``member`` in its local and central headers."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    pos = 0
    while True:
        pos = data.find(b"PK\x03\x04", pos)
        if pos < 0:
            break
        n, = struct.unpack_from("<H", data, pos + 26)
        if data[pos + 30 : pos + 30 + n] == name:
            struct.pack_into("<I", data, pos + 22, size)
        pos += 4
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        n, = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + n] == name:
            struct.pack_into("<I", data, pos + 24, size)
        pos += 4
    path.write_bytes(bytes(data))


# -- shard indexes ---------------------------------------------------------------------

def _valid_st_file() -> bytes:
    return st_bytes(_valid_st_header(), bytes(range(32)))


def _index_cases(root: Path) -> list[tuple[str, Path, list[str]]]:
    out = []

    def index(name, weight_map, fname="model.safetensors.index.json", sub="model", extra=None):
        d = root / name / sub
        d.mkdir(parents=True, exist_ok=True)
        p = d / fname
        body = {"metadata": {"total_size": 32}, "weight_map": weight_map} if extra is None else extra
        p.write_text(json.dumps(body))
        return d, p

    # a valid shard one folder up, reachable only by climbing out
    d, p = index("index_dotdot", {"a": "../x.safetensors", "b": "../x.safetensors"})
    _write(d.parent / "x.safetensors", _valid_st_file())
    out.append(("index_dotdot", p, ["../x.safetensors"]))

    d, p = index("index_absolute", {})
    target = _write(d.parent / "x.safetensors", _valid_st_file())
    p.write_text(json.dumps({"weight_map": {"a": str(target), "b": str(target)}}))
    out.append(("index_absolute", p, ["bare file name"]))

    d, p = index("index_subfolder", {"a": "sub/x.safetensors", "b": "sub/x.safetensors"})
    _write(d / "sub" / "x.safetensors", _valid_st_file())
    out.append(("index_subfolder", p, ["sub/x.safetensors"]))

    d, p = index("index_backslash", {"a": "..\\x.safetensors"})
    out.append(("index_backslash", p, []))

    d, p = index("index_tf_h5_dotdot", {"dense/kernel:0": "../tf_model-00001-of-00001.h5"}, fname="tf_model.h5.index.json")
    shutil.copyfile(FIXTURES / "tf" / "gpt2_sharded" / "tf_model-00001-of-00002.h5", d.parent / "tf_model-00001-of-00001.h5")
    out.append(("index_tf_h5_dotdot", p, ["../tf_model-00001-of-00001.h5"]))

    d, p = index("index_keras3_dotdot", {"layers/dense": ["../evil_00000.weights.h5"]}, fname="model.weights.json")
    out.append(("index_keras3_dotdot", p, ["../evil_00000.weights.h5"]))

    d, p = index("index_missing_shard", {"a": "model-00001-of-00002.safetensors"})
    out.append(("index_missing_shard", p, ["model-00001-of-00002.safetensors"]))

    d, p = index("index_no_weight_map", {}, extra={"metadata": {}})
    out.append(("index_no_weight_map", p, ["weight_map"]))

    d, p = index("index_not_object", {}, extra=[1, 2, 3])
    out.append(("index_not_object", p, []))

    d, p = index("index_shard_name_not_str", {"a": 7})
    out.append(("index_shard_name_not_str", p, []))

    d, p = index("index_deep_json", {})
    p.write_bytes(b'{"weight_map": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    out.append(("index_deep_json", p, []))

    d, p = index("index_lists_absent_tensor", {"a": "model-00001-of-00001.safetensors", "ghost": "model-00001-of-00001.safetensors"})
    _write(d / "model-00001-of-00001.safetensors", st_bytes({"a": _t("F32", [4], 0, 16)}, bytes(16)))
    out.append(("index_lists_absent_tensor", p, ["ghost"]))

    d, p = index("index_corrupt_shard", {"a": "model-00001-of-00001.safetensors"})
    _write(d / "model-00001-of-00001.safetensors", st_bytes({"a": _t("F32", [4], 0, 16)}, bytes(8)))
    out.append(("index_corrupt_shard", p, ["model-00001-of-00001.safetensors"]))
    return out


# -- folders -------------------------------------------------------------------------------

def _folder_cases(root: Path) -> list[tuple[str, Path, list[str]]]:
    out = []
    d = root / "folder_only_pytorch_bin"
    # protocol-2 pickle that would call os.system if unpickled; never is
    _write(d / "pytorch_model.bin", b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03.")
    _write(d / "config.json", b'{"model_type": "gpt2"}')
    out.append(("folder_only_pytorch_bin", d, ["pytorch_model.bin"]))

    d = root / "file_pytorch_bin"
    p = _write(d / "pytorch_model.bin", b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03.")
    out.append(("file_pytorch_bin", p, ["pickle"]))

    d = root / "folder_empty"
    d.mkdir(parents=True, exist_ok=True)
    out.append(("folder_empty", d, []))

    for name, cfg in (
        ("folder_config_deep_json", b"[" * 100_000 + b"]" * 100_000),
        ("folder_config_deep_json_300", b'{"a":' * 300 + b"1" + b"}" * 300),
        ("folder_config_not_object", b"[1, 2]"),
        ("folder_config_not_json", b"{'model_type': 'gpt2'}"),
        ("folder_config_not_utf8", b'{"model_type": "\xff\xfe"}'),
    ):
        d = root / name
        _write(d / "model.safetensors", _valid_st_file())
        _write(d / "config.json", cfg)
        out.append((name, d, ["config.json"]))

    d = root / "path_missing"
    d.mkdir(parents=True, exist_ok=True)
    out.append(("path_missing", d / "does_not_exist.safetensors", []))

    d = root / "random_no_extension"
    out.append(("random_no_extension", _write(d / "weights", random.Random(6).randbytes(2048)), []))
    d = root / "random_json"
    out.append(("random_json", _write(d / "model.safetensors.index.json", random.Random(7).randbytes(2048)), []))
    return out


# -- fuzzing: valid fixtures to mutate, mutations, and the check ---------------------------

#: reader -> (fixture folder or file, relative path to open, files that may be mutated)
FUZZ_TARGETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "safetensors": ("pt/gpt2/model.safetensors", "model.safetensors", ("model.safetensors",)),
    "keras2-h5": ("tf/gpt2/tf_model.h5", "tf_model.h5", ("tf_model.h5",)),
    "keras2-full-h5": ("keras2/full_model.h5", "full_model.h5", ("full_model.h5",)),
    "keras3-weights-h5": ("keras3/tied_revemb.weights.h5", "tied_revemb.weights.h5", ("tied_revemb.weights.h5",)),
    "keras3-archive": ("keras3/tied_revemb.keras", "tied_revemb.keras", ("tied_revemb.keras",)),
    "hf-tf-h5-sharded": (
        "tf/gpt2_sharded",
        "tf_model.h5.index.json",
        ("tf_model.h5.index.json", "tf_model-00001-of-00002.h5", "tf_model-00002-of-00002.h5"),
    ),
    "safetensors-sharded": (
        "pt/gpt2_sharded",
        "model.safetensors.index.json",
        ("model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
    ),
}

MUTATIONS = ("bitflip", "byteset", "truncate", "int64", "number", "delete", "insert", "splice")
SPECIAL_INTS = (0, 1, 2, 7, 8, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**63 - 1, 2**63, 2**64 - 1)


def setup_target(reader: str, dest) -> tuple[Path, dict[str, bytes]]:
    """Copy the fixture of ``reader`` into ``dest``: ``(path to open, {mutable file: bytes})``."""
    src, open_rel, mutable = FUZZ_TARGETS[reader]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    srcp = FIXTURES / src
    if srcp.is_dir():
        for f in mutable:
            shutil.copyfile(srcp / f, dest / f)
    else:
        shutil.copyfile(srcp, dest / open_rel)
    return dest / open_rel, {f: (dest / f).read_bytes() for f in mutable}


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One structural mutation of ``data``. Positions lean towards the first
    4 KB, where headers, superblocks and JSON live."""
    if not data:
        return data
    b = bytearray(data)

    def pos() -> int:
        return rng.randrange(min(len(b), 4096)) if rng.random() < 0.5 else rng.randrange(len(b))

    if kind == "bitflip":
        for _ in range(rng.choice((1, 1, 2, 4, 16))):
            i = pos()
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "byteset":
        for _ in range(rng.choice((1, 2, 8))):
            b[pos()] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x01, ord("-"), ord("9"), ord('"'), ord("{")))
    elif kind == "truncate":
        return bytes(b[: rng.randrange(len(b))])
    elif kind == "int64":
        i = pos()
        width = rng.choice((2, 4, 8))
        v = rng.choice(SPECIAL_INTS) % (1 << (8 * width))
        b[i : i + width] = v.to_bytes(width, "little")
    elif kind == "number":  # header edit: a decimal number in JSON text
        import re

        spans = [m.span() for m in re.finditer(rb"-?\d+", bytes(b[:65536]))]
        if not spans:
            return mutate(data, "bitflip", rng)
        lo, hi = rng.choice(spans)
        v = rng.choice(SPECIAL_INTS + (-1, -(2**63), 10**30, rng.randrange(-1000, 100000)))
        b[lo:hi] = str(v).encode()
    elif kind == "delete":
        i = pos()
        del b[i : i + rng.choice((1, 4, 64, 1024))]
    elif kind == "insert":
        i = pos()
        b[i:i] = rng.randbytes(rng.choice((1, 4, 64)))
    elif kind == "splice":  # copy one region over another
        n = rng.choice((8, 64, 512))
        i, j = rng.randrange(len(b)), pos()
        b[j : j + n] = b[i : i + n]
    return bytes(b)


def open_and_read_all(path) -> str | None:
    """Open ``path`` and read every tensor. Returns the class name of the
    tietool error that refused it, or None if it was accepted. Any other
    exception propagates: that is a bug in a reader."""
    import tietool
    from tietool.errors import TietoolError

    try:
        ckpt = tietool.open_checkpoint(path)
    except TietoolError as exc:
        return type(exc).__name__
    try:
        with ckpt:
            for name in list(ckpt.tensors):
                ckpt.read(name)
    except TietoolError as exc:
        return type(exc).__name__
    return None


def build_corpus(dirpath) -> list[tuple[str, str]]:
    """Write every case under ``dirpath``; ``[(case_name, path), ...]``."""
    root = Path(dirpath)
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    for builder in (_safetensors_cases, _h5_cases, _lambda_cases, _archive_cases, _index_cases, _folder_cases):
        for name, path, expect in builder(root):
            EXPECT_TEXT[name] = expect
            cases.append((name, str(path)))
    names = [c[0] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/hostile_corpus.py OUTDIR", file=sys.stderr)
        return 2
    for name, path in build_corpus(argv[0]):
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
