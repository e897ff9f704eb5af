"""Convert between Keras HDF5 and safetensors, losslessly: ``tietool convert``.

What goes where
---------------
A file in gives a file out; a folder in gives a folder out (every non-weight
file - config.json, generation_config.json, tokenizer files... - copied
unchanged). Without ``out``: beside the source, the weights file renamed
with the new extension (``tf_model.h5`` <-> ``model.safetensors``,
``x.weights.h5`` -> ``x.safetensors``, ``full_model.h5`` -> ``full_model.safetensors``);
a folder ``DIR`` gives ``DIR-safetensors`` / ``DIR-h5``. When the output is
several files (``shard_size``, or an H5 checkpoint that was sharded) it is a
folder.

HDF5 -> safetensors
-------------------
One safetensors tensor per stored HDF5 dataset (one per set of verified
identical copies), bytes and dtype unchanged (Keras' 2-byte opaque bfloat16
becomes ``BF16``). Names: for a transformers ``tf_model.h5`` (a Keras 2 file
with a transformers config), the names transformers' TF
``save_pretrained(safe_serialization=True)`` gives the same variables
(``transformer/wte/embeddings:0``), so that transformers TF loads the output
as it is; otherwise, or when two kept tensors would get one such name, the
full dataset path (``layers/reversible_embedding/vars/0``).
``__metadata__`` (str -> str):

* ``format``: ``"tf"`` for Keras 2 / transformers TF sources, ``"keras"`` for
  Keras 3 ones. (Tensor names are HDF5 paths, not transformers' TF
  safetensors names: load the file after converting it back to HDF5.)
* ``tietool.layout``: JSON ``{"tietool": 1, "source_format": <reader format>,
  "files": [{"name": <HDF5 file name>, "tree": <tree>}, ...],
  "index": {"name": ..., "text": ...} | null}``. One ``files`` entry per HDF5
  file (several for a sharded checkpoint, whose index file is kept verbatim
  in ``index``). A tree lists every group with its attributes and every
  dataset with its attributes, each attribute with its HDF5 type; see
  :mod:`tietool.writers.h5_writer`. So ``layer_names``, ``weight_names`` (and
  order), ``backend``, ``keras_version``, ``model_config``,
  ``training_config``, Keras 3 ``vars`` ``name`` and the bfloat16 ``dtype``
  markers all come back.
* ``tietool.names``: JSON ``{dataset path: tensor name}`` when the names are
  transformers' TF names (absent: every tensor is named by its path).
* ``tietool.config``: the checkpoint's config as a JSON string (config.json
  of an HF folder/file, ``model_config`` of a full-model H5, ``config.json``
  of a ``.keras`` archive as its exact text), when there is one. Readers take
  it as the file's config (:mod:`tietool.formats.carried`).
* ``tietool.keras_metadata``: a ``.keras`` archive's ``metadata.json`` text;
  ``tietool.layout`` then also records the archive's members (``archive``:
  name and timestamp, in order).
* ``<removed name>: <kept name>`` for each deduplicated copy (safetensors'
  ``save_model`` convention), see Ties.

safetensors -> HDF5
-------------------
* A file with ``tietool.layout`` gets its HDF5 file(s) back exactly as
  described: same groups, dataset paths, attributes, dtypes and bytes; each
  removed copy is written again from the tensor it names. A ``.keras``
  source comes back as ``<stem>.weights.h5`` plus root attributes
  ``tietool.config`` and ``tietool.keras_metadata`` (the archive's
  config.json and metadata.json), as does ``.keras --to h5``.

safetensors or .weights.h5 -> .keras (``to="keras"``)
-----------------------------------------------------
From a file that records a ``.keras`` archive (converted from one, or its
weights extracted with ``--to h5``): the archive's members in their order
and with their timestamps, ``config.json`` and ``metadata.json`` as the
recorded text, ``model.weights.h5`` written from the recorded layout
(:mod:`tietool.writers.keras_writer`).

Without ``to``: :func:`infer_target`.
* Any other safetensors file gives transformers' TF shard layout: root
  attribute ``layer_names`` = every tensor name in file order, one dataset per
  tensor at its name (``/`` in a name makes groups), bfloat16 as Keras does
  (2-byte opaque + ``dtype="bfloat16"`` attribute), plus a root attribute
  ``tietool.safetensors`` = JSON ``{"metadata": <__metadata__>, "file": <name>}``.
  Converting that back gives the same names, dtypes, shapes, bytes and
  ``__metadata__`` (no dedupe happens on that way back). Aliases recorded in
  ``__metadata__`` are kept there, not written as datasets.

Ties
----
``ties="dedupe"`` (default, safetensors output): candidate copies are the
tie groups of :func:`tietool.ties.find_ties` of kind ``duplicate-copies`` /
``shared-storage`` (when that module is present), HDF5 hard links, and the
same Keras 2 variable stored under two layer groups (the same weight name
after the group: BERT's ``bert/...`` and ``mlm___cls/...``, T5's
``shared``/``encoder``/``decoder``). Each candidate is compared with the first
of its group bit by bit, streamed; only bit-identical copies are merged
(written once, the others recorded as aliases). ``ties="keep"`` writes every
stored tensor. HDF5 output always stores every copy the layout lists.

Safety
------
The source is only read. An existing output is replaced only with
``force``. Everything is written to a temporary file/folder beside the target
and renamed into place when complete and verified (every tensor of the
re-opened output compared byte for byte with its source, unless
``verify=False``); on any error or interrupt the temporary is removed. What
``force`` may replace, refusing outputs that are or hold the source, fsync,
write errors and stale temporaries: :mod:`tietool.writers.safe_output`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

from .config import is_hf_config
from .errors import CorruptCheckpointError, UsageError
from .formats import open_checkpoint
from .formats.carried import CONFIG_KEY, KERAS_METADATA_KEY, LAYOUT_KEY, NAMES_KEY
from .model import Checkpoint, TensorInfo
from .writers import SourceFiles, SourceGuard, atomic_output, copy_side_file, phase_ticker, run_each, same_tensor_bytes
from .writers.safe_output import check_output

TARGETS = ("safetensors", "h5", "keras")
TIES = ("dedupe", "keep")
H5_FORMATS = {"keras2-h5", "keras2-full-h5", "hf-tf-h5-sharded", "hf-tf-h5-shard", "keras3-weights-h5",
              "keras3-weights-sharded", "keras3-archive"}
ST_FORMATS = {"safetensors", "safetensors-sharded"}
KERAS2_FORMATS = {"keras2-h5", "keras2-full-h5"}
KERAS_TARGET_FORMATS = {"keras3-archive", "keras3-weights-h5"}  # with a recorded config.json
ST_ORIGIN_ATTR = "tietool.safetensors"
SUFFIXES = (".safetensors.index.json", ".h5.index.json", ".weights.json", ".weights.h5", ".safetensors",
            ".hdf5", ".h5", ".keras", ".json")

ProgressFn = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)


def parse_size(text: str | int | None) -> int | None:
    """``"500MB"`` -> 500_000_000, ``"2GiB"`` -> 2*2**30, plain ints as bytes."""
    if text is None or isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "K": 10**3,
             "M": 10**6, "G": 10**9, "B": 1}
    for u, mult in units.items():
        if s.endswith(u):
            num = s[: -len(u)]
            break
    else:
        num, mult = s, 1
    try:
        value = int(float(num) * mult)
    except ValueError:
        raise UsageError(f"bad size {text!r} (use e.g. 500MB, 5GB, 2GiB)") from None
    if value <= 0:
        raise UsageError(f"bad size {text!r}: must be positive")
    return value


def _stem(name: str) -> str:
    for suf in SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return os.path.splitext(name)[0] or name


def _weights_path(ckpt: Checkpoint) -> str:
    """The file the reader started from (index, archive or weights file)."""
    return ckpt.path if os.path.isfile(ckpt.path) else ckpt.files[0]


# -- dedupe ---------------------------------------------------------------------------

def _keras2_suffix(ckpt: Checkpoint, t: TensorInfo) -> str | None:
    if ckpt.format not in KERAS2_FORMATS or not t.layer:
        return None
    for prefix in ("", "model_weights/"):
        p = f"{prefix}{t.layer}/"
        if t.name.startswith(p):
            return t.name[len(p):]
    return None


def _ties_groups(ckpt: Checkpoint) -> list[list[str]]:
    """Stored copies of the tied matrix that tie detection names (their bytes
    are compared before anything is merged)."""
    from .ties import DUPLICATE, SHARED, find_ties

    out = []
    for g in find_ties(ckpt):
        if g.kind in (DUPLICATE, SHARED):
            names = [m.name for m in g.members if m.stored and not m.transposed]
            if len(names) > 1:
                out.append(names)
    return out


def _same_bytes(ckpt_a: Checkpoint, a: TensorInfo, ckpt_b: Checkpoint, b: TensorInfo, files: SourceFiles,
                tick: Callable[[int], None] | None = None) -> bool:
    return same_tensor_bytes(ckpt_a, a, ckpt_b, b, files, tick)  # perf: fastio.same_range for raw ranges


def find_copies(ckpt: Checkpoint, files: SourceFiles) -> dict[str, str]:
    """``{removed: kept}`` for every stored tensor that is a verified
    bit-identical copy of an earlier one."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    def union(names: list[str]) -> None:
        for n in names:
            parent.setdefault(n, n)
        base = root(names[0])
        for n in names[1:]:
            r = root(n)
            if r != base:
                parent[r] = base

    buckets: dict = {}
    for t in ckpt:
        if t.storage_key is not None:
            buckets.setdefault(("storage", t.storage_key), []).append(t.name)
        suffix = _keras2_suffix(ckpt, t)
        if suffix is not None:
            buckets.setdefault(("suffix", suffix), []).append(t.name)
    groups = [g for g in buckets.values() if len(g) > 1] + _ties_groups(ckpt)
    for g in groups:
        union(g)
    members: dict[str, list[str]] = {}
    order = {n: i for i, n in enumerate(ckpt.tensors)}
    for n in parent:
        members.setdefault(root(n), []).append(n)
    removed: dict[str, str] = {}
    for names in members.values():
        names = sorted(set(names), key=order.__getitem__)
        pending = names
        while len(pending) > 1:
            kept, rest = pending[0], pending[1:]
            k = ckpt.tensors[kept]
            left = []
            for n in rest:
                t = ckpt.tensors[n]
                same = t.shape == k.shape and t.dtype == k.dtype and (
                    (t.storage_key is not None and t.storage_key == k.storage_key)
                    or _same_bytes(ckpt, k, ckpt, t, files))
                if same:
                    removed[n] = kept
                else:
                    left.append(n)
            pending = left
    return removed


# -- plans ----------------------------------------------------------------------------

class Plan:
    """What to write: ``outputs`` = list of (file name in the output folder or
    '' for the single output file, kind, payload)."""

    def __init__(self) -> None:
        self.tf_names = False  # safetensors names are transformers' TF names, not dataset paths
        self.outputs: list[tuple[str, str, dict]] = []
        self.aliases: dict[str, str] = {}
        self.multi = False


def _h5_layout(ckpt: Checkpoint) -> dict:
    store = ckpt.store
    h5files = getattr(store, "files", None)
    if not h5files:
        raise CorruptCheckpointError("no HDF5 file to describe", ckpt.path)
    from .writers.h5_writer import describe_h5

    files = []
    for h5 in h5files:
        if ckpt.format == "keras3-archive":
            name = _stem(os.path.basename(ckpt.files[0])) + ".weights.h5"
        else:
            name = os.path.basename(h5.label)
        files.append({"name": name, "tree": describe_h5(h5)})
    index = None
    if ckpt.format in ("hf-tf-h5-sharded", "keras3-weights-sharded"):
        index_path = ckpt.files[0]
        with open(index_path, encoding="utf-8") as fh:
            index = {"name": os.path.basename(index_path), "text": fh.read()}
    out = {"tietool": 1, "source_format": ckpt.format, "files": files, "index": index}
    if ckpt.format == "keras3-archive":
        out["archive"] = ckpt.layout.get("archive")
    return out


def _config_text(ckpt: Checkpoint) -> str | None:
    """The config as stored: a .keras archive's config.json text, the text
    tietool recorded, else the config re-encoded as JSON."""
    stored = ckpt.layout.get("member_texts", {}).get("config.json")
    if stored is not None:
        return stored
    value = ckpt.metadata.get(CONFIG_KEY)
    if isinstance(value, str) and (ckpt.config is None or (ckpt.config_source or "").endswith(CONFIG_KEY)):
        return value
    if ckpt.config is not None:
        return json.dumps(ckpt.config, ensure_ascii=False)
    return None


def _keras_metadata_text(ckpt: Checkpoint) -> str | None:
    """A .keras archive's metadata.json text, or the text tietool recorded."""
    stored = ckpt.layout.get("member_texts", {}).get("metadata.json")
    if stored is not None:
        return stored
    value = ckpt.metadata.get(KERAS_METADATA_KEY)
    return value if isinstance(value, str) else None


def _str_attr(value: str) -> dict:
    """An HDF5 root attribute spec (see :mod:`tietool.writers.h5_writer`) for a text."""
    return {"type": "str", "vlen": True, "cset": "utf8", "size": None, "space": "scalar", "shape": None, "value": value}


OUTPUT_SUFFIXES = ((".keras", "keras"), (".safetensors", "safetensors"), (".h5", "h5"), (".hdf5", "h5"))


def infer_target(ckpt: Checkpoint, names: str = "keras", out: str | None = None) -> tuple[str, str]:
    """``(target, why)`` when ``--to`` is not given: ``--names pt`` writes
    safetensors; an output file name ending in .keras, .safetensors or .h5
    says it; HDF5 (and .keras) becomes safetensors; safetensors goes back to
    the format tietool recorded it came from (.keras or HDF5), else HDF5."""
    if names == "pt":
        return "safetensors", "--names pt writes safetensors"
    for suffix, target in OUTPUT_SUFFIXES:
        if out is not None and os.fspath(out).endswith(suffix) and not os.path.isdir(ckpt.path):
            return target, f"the output name ends in {suffix}"
    if ckpt.format == "keras3-archive":
        return "safetensors", "the source is a .keras archive"
    if ckpt.format not in ST_FORMATS:
        return "safetensors", "the source is HDF5"
    origin = ckpt.origin_format
    if origin == "keras3-archive":
        return "keras", "the source was converted from a .keras archive"
    if origin in H5_FORMATS:
        return "h5", f"the source was converted from {origin}"
    return "h5", "the source is safetensors"


def _tf_safetensors_names(ckpt: Checkpoint, kept: list[TensorInfo], removed: dict[str, str]) -> dict[str, str] | None:
    """``{dataset path: name}`` with the names transformers' TF
    ``save_pretrained(safe_serialization=True)`` gives the same variables
    (``strip_model_name_and_prefix`` of the variable name), so that
    transformers 4.57 TF loads the file as it is. None, and dataset paths are
    kept, unless this is a transformers ``tf_model.h5`` whose kept tensors get
    distinct names that no removed path shadows."""
    if ckpt.format != "keras2-h5" or not is_hf_config(ckpt.config):
        return None
    from .ptnames import tf_variable_name

    names = {}
    for t in kept:
        try:
            var = tf_variable_name(ckpt, t)
        except UsageError:
            return None
        names[t.name] = var if "model." in var or "/" not in var else var.split("/", 1)[1]
    used = set(names.values())
    if len(used) != len(names) or used & set(removed) or used & {"format", LAYOUT_KEY, NAMES_KEY, CONFIG_KEY,
                                                                 KERAS_METADATA_KEY}:
        return None
    return names


def _plan_to_safetensors(ckpt: Checkpoint, ties: str, shard_size: int | None, files: SourceFiles,
                         src_name: str) -> Plan:
    plan = Plan()
    origin = ckpt.metadata.get(ST_ORIGIN_ATTR)
    if isinstance(origin, str):
        # an HDF5 file tietool wrote from safetensors: give the original back
        try:
            rec = json.loads(origin)
            metadata = {str(k): str(v) for k, v in rec.get("metadata", {}).items()}
            name = rec.get("file") or "model.safetensors"
        except (ValueError, AttributeError):
            raise CorruptCheckpointError(f"root attribute {ST_ORIGIN_ATTR} is not valid JSON", ckpt.path) from None
        entries = [(t.name, t) for t in ckpt]
    else:
        removed = find_copies(ckpt, files) if ties == "dedupe" else {}
        kept = [t for t in ckpt if t.name not in removed]
        names = _tf_safetensors_names(ckpt, kept, removed) if ties == "dedupe" else None
        plan.tf_names = names is not None
        names = names or {t.name: t.name for t in kept}
        plan.aliases = {k: names[v] for k, v in removed.items()}
        metadata = {"format": "keras" if ckpt.format.startswith("keras3") else "tf"}
        metadata[LAYOUT_KEY] = json.dumps(_h5_layout(ckpt), ensure_ascii=False, separators=(",", ":"))
        if plan.tf_names:
            metadata[NAMES_KEY] = json.dumps(names, ensure_ascii=False, separators=(",", ":"))
        cfg = _config_text(ckpt)
        if cfg is not None:
            metadata[CONFIG_KEY] = cfg
        keras_meta = _keras_metadata_text(ckpt)
        if keras_meta is not None:
            metadata[KERAS_METADATA_KEY] = keras_meta
        metadata.update(plan.aliases)
        entries = [(names[t.name], t) for t in kept]
        stem = _stem(src_name)
        name = ("model" if stem == "tf_model" else stem) + ".safetensors"
    if shard_size is None:
        plan.outputs.append((name, "safetensors", {"entries": entries, "metadata": metadata}))
        return plan
    shards: list[list] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e[1].nbytes > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e[1].nbytes
    if len(shards) == 1:
        plan.outputs.append((name, "safetensors", {"entries": entries, "metadata": metadata}))
        return plan
    plan.multi = True
    stem = _stem(name)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        sname = f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        plan.outputs.append((sname, "safetensors", {"entries": shard, "metadata": metadata}))
        for n, _ in shard:
            weight_map[n] = sname
    index = {"metadata": {"total_size": sum(e[1].nbytes for e in entries)}, "weight_map": weight_map}
    plan.outputs.append((f"{stem}.safetensors.index.json", "text", {"text": json.dumps(index, indent=2) + "\n"}))
    return plan


def _recorded_files(ckpt: Checkpoint, plan: Plan) -> tuple[list[tuple[str, dict, dict]], dict | None, dict]:
    """The HDF5 file(s) ``tietool.layout`` records: ``[(name, tree, data)]``,
    the shard index and the layout itself. Removed copies are written again
    from the tensor their alias names (recorded in ``plan.aliases``)."""
    md = ckpt.metadata
    try:
        layout = json.loads(md[LAYOUT_KEY])
        files = layout["files"]
        index = layout.get("index")
        names = json.loads(md.get(NAMES_KEY, "{}"))
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise ValueError(NAMES_KEY)
        out = []
        for f in files:
            tree = f["tree"]
            data = {}
            for dpath in tree["datasets"]:
                name = names.get(dpath, dpath)
                if name not in ckpt.tensors:  # a removed copy: its alias names the kept tensor
                    name = md.get(dpath)
                    if name in ckpt.tensors:
                        plan.aliases[dpath] = name
                if name not in ckpt.tensors:
                    raise CorruptCheckpointError(f"layout lists dataset {dpath!r} but no tensor (or alias) holds it",
                                                 ckpt.path)
                data[dpath] = ckpt.tensors[name]
            out.append((f["name"], tree, data))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CorruptCheckpointError(f"__metadata__ {LAYOUT_KEY} is not a tietool layout", ckpt.path) from None
    return out, index, layout


def _archive_weights(ckpt: Checkpoint) -> tuple[dict, dict]:
    """The tree and data of a .keras archive's model.weights.h5."""
    from .writers.h5_writer import describe_h5

    return describe_h5(ckpt.store.files[0]), {t.name: t for t in ckpt}


def _plan_to_h5(ckpt: Checkpoint, src_name: str) -> Plan:
    from .writers.h5_writer import flat_tree

    plan = Plan()
    md = ckpt.metadata
    if ckpt.format == "keras3-archive":
        # the archive's weights, with its config.json and metadata.json recorded
        tree, data = _archive_weights(ckpt)
        _record_keras_texts(ckpt, tree)
        plan.outputs.append((_stem(src_name) + ".weights.h5", "h5", {"tree": tree, "data": data}))
        return plan
    if LAYOUT_KEY in md:
        recorded, index, layout = _recorded_files(ckpt, plan)
        for name, tree, data in recorded:
            if layout.get("source_format") == "keras3-archive":
                _record_keras_texts(ckpt, tree)
            plan.outputs.append((name, "h5", {"tree": tree, "data": data}))
        if index:
            plan.outputs.append((index["name"], "text", {"text": index["text"]}))
        plan.multi = len(plan.outputs) > 1
        return plan
    names = list(ckpt.tensors)
    origin = json.dumps({"metadata": md, "file": src_name if src_name.endswith(".safetensors") else
                         _stem(src_name) + ".safetensors"}, ensure_ascii=False)
    tree = flat_tree(names, {ST_ORIGIN_ATTR: _str_attr(origin)})
    stem = _stem(src_name)
    name = ("tf_model" if stem == "model" and md.get("format") == "tf" else stem) + ".h5"
    plan.outputs.append((name, "h5", {"tree": tree, "data": {n: ckpt.tensors[n] for n in names}}))
    return plan


def _record_keras_texts(ckpt: Checkpoint, tree: dict) -> None:
    """Root attributes ``tietool.config`` / ``tietool.keras_metadata``: the
    archive's config.json and metadata.json, so the H5 can become a .keras
    archive again and ``inspect`` shows its config."""
    root = tree["groups"].setdefault("", {})
    for key, text in ((CONFIG_KEY, _config_text(ckpt)), (KERAS_METADATA_KEY, _keras_metadata_text(ckpt))):
        if text is not None:
            root[key] = _str_attr(text)


def _plan_to_keras(ckpt: Checkpoint, src_name: str) -> Plan:
    """A .keras archive from a checkpoint that records one: a safetensors
    file converted from .keras, or a .weights.h5 extracted from one."""
    plan = Plan()
    origin = ckpt.origin_format
    if origin not in KERAS_TARGET_FORMATS or _config_text(ckpt) is None:
        raise UsageError("--to keras needs a .keras archive converted by tietool (a safetensors file or .weights.h5 "
                         "that records the archive's config.json); use --to h5", ckpt.path)
    members = None
    if ckpt.format in ST_FORMATS:
        recorded, _index, layout = _recorded_files(ckpt, plan)
        if len(recorded) != 1:
            raise UsageError("--to keras needs a single Keras 3 weights file, not a sharded one; use --to h5",
                             ckpt.path)
        _name, tree, data = recorded[0]
        members = layout.get("archive")
    else:
        from .writers.h5_writer import describe_h5

        tree, data = describe_h5(ckpt.store.files[0]), {t.name: t for t in ckpt}
    root = tree["groups"].setdefault("", {})
    for key in (CONFIG_KEY, KERAS_METADATA_KEY):
        root.pop(key, None)  # recorded for the way back, not part of Keras' weights file
    texts = {"config.json": _config_text(ckpt)}
    meta = _keras_metadata_text(ckpt)
    if meta is not None:
        texts["metadata.json"] = meta
    if members is not None:
        members = [m for m in members if isinstance(m, dict) and m.get("name") in (*texts, "model.weights.h5")]
    plan.outputs.append((_stem(src_name) + ".keras", "keras",
                         {"tree": tree, "data": data, "texts": texts, "members": members}))
    return plan


# -- main -----------------------------------------------------------------------------

NAMES = ("keras", "pt")


def convert(src, to: str | None = None, out=None, ties: str = "dedupe", shard_size=None, force: bool = False,
            verify: bool = True, progress: ProgressFn | None = None, names: str = "keras",
            head: str | None = None) -> dict:
    """Convert ``src`` (anything :func:`tietool.formats.open_checkpoint`
    reads) to ``to`` (``"safetensors"``, ``"h5"`` or ``"keras"``; None: see
    :func:`infer_target`). Returns a summary; ``to_inferred`` says why the
    target was chosen when ``to`` was None. Paths in the summary are as
    given (``out``, or beside ``src``).

    ``names="pt"``: a transformers TF checkpoint to a folder PyTorch
    transformers loads (:func:`tietool.convert_pt.convert_to_pt`)."""
    if names not in NAMES:
        raise UsageError(f"--names must be one of {', '.join(NAMES)} (got {names!r})")
    if head is not None and (names != "pt" or head not in ("explicit", "implicit")):
        raise UsageError("--head explicit|implicit goes with --names pt")
    if names == "pt":
        if to not in (None, "safetensors"):
            raise UsageError("--names pt writes safetensors: use --to safetensors")
        if ties != "dedupe":
            raise UsageError("--names pt always writes each stored matrix once (no --ties keep)")
        from .convert_pt import convert_to_pt

        result = convert_to_pt(src, out=out, shard_size=shard_size, force=force, verify=verify, progress=progress,
                               head=head)
        result["to_inferred"] = "--names pt writes safetensors" if to is None else None
        return result
    t0 = time.monotonic()
    if to is not None and to not in TARGETS:
        raise UsageError(f"--to must be one of {', '.join(TARGETS)} (got {to!r})")
    if ties not in TIES:
        raise UsageError(f"--ties must be one of {', '.join(TIES)} (got {ties!r})")
    shard_bytes = parse_size(shard_size)
    if shard_bytes is not None and to not in (None, "safetensors"):
        raise UsageError("--shard-size is only supported for safetensors output")
    src = os.fspath(src)
    src_is_dir = os.path.isdir(src)
    files = SourceFiles()
    inferred = None
    with open_checkpoint(src) as ckpt:
        guard = SourceGuard(ckpt.files)
        try:
            if to is None:
                to, inferred = infer_target(ckpt, names, out)
                if shard_bytes is not None and to != "safetensors":
                    raise UsageError(f"--shard-size is only supported for safetensors output (this converts to {to})")
            if to == "safetensors" and ckpt.format in ST_FORMATS:
                raise UsageError("source is already safetensors", src)
            if to == "h5" and ckpt.format in H5_FORMATS - {"keras3-archive"}:
                raise UsageError("source is already HDF5", src)
            if to == "keras" and ckpt.format == "keras3-archive":
                raise UsageError("source is already a .keras archive", src)
            notes = []
            src_file = _weights_path(ckpt)
            src_name = os.path.basename(src_file)
            if to == "safetensors":
                plan = _plan_to_safetensors(ckpt, ties, shard_bytes, files, src_name)
                if plan.tf_names:
                    notes.append("names as transformers' TF save_pretrained(safe_serialization=True) writes them: "
                                 "transformers TF loads this folder; PyTorch transformers 5 needs --names pt")
                elif is_hf_config(ckpt.config):
                    # Names no transformers loader expects: say so rather than
                    # leave a folder that would load at random.
                    notes.append("tensor names are the HDF5 dataset paths (lossless, for converting back with --to h5); "
                                 "for PyTorch transformers 5 use --names pt")
            elif to == "keras":
                plan = _plan_to_keras(ckpt, src_name)
            else:
                plan = _plan_to_h5(ckpt, src_name)
            if ckpt.format == "keras3-archive":
                carried = {"config.json", "metadata.json", "model.weights.h5"}
                left = sorted(set(ckpt.layout.get("members", [])) - carried)
                if left:
                    notes.append(f"archive member(s) not carried: {', '.join(left)}")
            as_folder = src_is_dir or plan.multi
            if out is None:  # beside the source, in the user's own spelling of its path
                if src_is_dir:
                    out = src.rstrip(os.sep) + f"-{to}"
                elif plan.multi:
                    out = os.path.join(os.path.dirname(src_file), f"{_stem(src_name)}-{to}")
                else:
                    out = os.path.join(os.path.dirname(src_file), plan.outputs[0][0])
            out = os.fspath(out)
            extra = _side_files(src, ckpt, plan) if src_is_dir else []
            sources = [src, *ckpt.files, *(os.path.join(src, n) for n in extra)]
            writes = [n for n, _, _ in plan.outputs] + extra
            check_output(out, sources, folder=as_folder, force=force, writes=writes)  # before the work
            guard.add(sources)
            total = sum(info.nbytes for _, kind, p in plan.outputs if kind == "safetensors" for _, info in p["entries"])
            total += sum(info.nbytes for _, kind, p in plan.outputs if kind in ("h5", "keras")
                         for info in p["data"].values())
            tick = phase_ticker(progress, total)

            written: list[str] = []
            copied: list[str] = []
            with atomic_output(out, folder=as_folder, force=force, sources=sources, writes=writes) as tmp, \
                    guard.watching():
                _write_outputs(plan, tmp, as_folder, ckpt, files, tick("write"))  # perf: shards concurrently
                written += [os.path.join(out, name) if as_folder else out for name, _, _ in plan.outputs]
                for n in extra:
                    copy_side_file(os.path.join(src, n), os.path.join(tmp, n))
                    copied.append(os.path.join(out, n))
                if verify:
                    _verify(ckpt, plan, tmp, as_folder, files, tick("verify"))
        finally:
            files.close()
    out_tensors = sum(len(p["entries"]) for _, k, p in plan.outputs if k == "safetensors") + \
        sum(len(p["data"]) for _, k, p in plan.outputs if k in ("h5", "keras"))
    return {
        "source": src,
        "source_format": ckpt.format,
        "names": "keras",
        "to": to,
        "to_inferred": inferred,
        "output": out,
        "files": written,
        "copied_files": copied,
        "tensors": out_tensors,
        "bytes": total,
        "file_bytes": sum(os.path.getsize(p) for p in written),
        "aliases": dict(plan.aliases),
        "aliases_recorded": len(plan.aliases),
        "verified": bool(verify),
        "seconds": round(time.monotonic() - t0, 3),
        "notes": notes,
    }


def _side_files(src: str, ckpt: Checkpoint, plan: Plan) -> list[str]:
    """Names of the source folder's non-weight files copied unchanged."""
    skip = {n for n, _, _ in plan.outputs} | set(ckpt.metadata.get("other_weight_files") or [])
    extra = list(ckpt.layout.get("folder_files", []))
    cfg = ckpt.config_source
    if cfg and os.path.isfile(cfg) and os.path.dirname(os.path.abspath(cfg)) == os.path.abspath(src):
        extra.insert(0, os.path.basename(cfg))
    return [n for n in extra if n not in skip and not (n.startswith(".") and ".tietool-tmp-" in n)]


def _write_one(kind: str, path: str, ckpt: Checkpoint, payload: dict, files: SourceFiles, tick) -> None:
    if kind == "safetensors":
        from .writers.safetensors_writer import write_safetensors

        write_safetensors(path, ckpt, payload["entries"], payload["metadata"], files, tick)
    elif kind == "h5":
        from .writers.h5_writer import write_h5

        write_h5(path, ckpt, payload["tree"], payload["data"], files, tick)
    elif kind == "keras":
        from .writers.keras_writer import write_keras

        write_keras(path, ckpt, payload["tree"], payload["data"], payload["texts"], payload["members"], files, tick)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(payload["text"])


def _concurrently(plan: Plan, files: SourceFiles, tick, one: Callable) -> None:
    """perf: ``one(name, kind, payload, files, tick)`` for every output: the
    safetensors files (shards) concurrently (:func:`tietool.writers.run_each`),
    the others in order, in this thread."""
    shards = [o for o in plan.outputs if o[1] == "safetensors"]
    for o in plan.outputs:
        if o[1] != "safetensors":
            one(*o, files, tick)
    run_each(shards, lambda o, own, count: one(*o, own, count), files, tick)


def _write_outputs(plan: Plan, tmp: str, as_folder: bool, ckpt: Checkpoint, files: SourceFiles, tick) -> None:
    def one(name: str, kind: str, payload: dict, files: SourceFiles, tick) -> None:
        _write_one(kind, os.path.join(tmp, name) if as_folder else tmp, ckpt, payload, files, tick)
    _concurrently(plan, files, tick, one)


def _verify(src: Checkpoint, plan: Plan, tmp: str, as_folder: bool, files: SourceFiles, tick) -> None:
    """Re-open every written weights file and compare each tensor with its
    source, byte for byte (perf: the shards concurrently)."""
    def one(name: str, kind: str, payload: dict, files: SourceFiles, tick) -> None:
        if kind != "text":
            _verify_one(src, name, kind, payload, os.path.join(tmp, name) if as_folder else tmp, files, tick)
    _concurrently(plan, files, tick, one)


def _verify_one(src: Checkpoint, name: str, kind: str, payload: dict, path: str, files: SourceFiles, tick) -> None:
    from .formats import keras_h5, safetensors_format

    label = name  # perf: the former loop body of _verify, unchanged
    if kind == "safetensors":
        got = safetensors_format.open_file(path)
        expected = {n: info for n, info in payload["entries"]}
        if got.metadata != payload["metadata"]:
            raise CorruptCheckpointError("verification failed: __metadata__ differs from what was written", label)
    elif kind == "keras":
        got = keras_h5.open_keras_archive(path)
        expected = payload["data"]
        texts = got.layout.get("member_texts", {})
        if texts != payload["texts"]:
            got.close()
            raise CorruptCheckpointError("verification failed: config.json or metadata.json differs from the "
                                         "recorded text", label)
    else:
        got = keras_h5.open_h5(path)
        expected = payload["data"]
    with got:
        if set(got.tensors) != set(expected):
            missing = sorted(set(expected) - set(got.tensors))[:3]
            extra = sorted(set(got.tensors) - set(expected))[:3]
            raise CorruptCheckpointError(
                f"verification failed: tensors differ (missing {missing}, unexpected {extra})", label)
        for n, info in expected.items():
            g = got.tensors[n]
            if g.shape != tuple(info.shape) or g.dtype != info.dtype:
                raise CorruptCheckpointError(
                    f"verification failed: {n!r} is {g.dtype}{list(g.shape)}, source {info.dtype}{list(info.shape)}", label)
            if not _same_bytes(src, info, got, g, files, tick):
                raise CorruptCheckpointError(f"verification failed: bytes of {n!r} differ from the source", label)

