"""Structure-aware fuzzing of tietool's own records and of HDF5 link graphs (issue 26).

Byte-level mutation (tests/hostile_corpus.py) rarely produces a record that
still parses as JSON with the wrong content; this module mutates what the
records *mean*. Bases are files tietool itself converted (so they carry the
records ``tietool.layout``, ``tietool.names``, ``tietool.config``,
``tietool.keras_metadata``, ``tietool.safetensors`` and safetensors aliases);
a case parses one or more records, mutates their JSON tree (types changed,
keys dropped, renamed or added, values replaced by hostile file names,
references to tensors that are not stored, deep nesting, huge numbers,
lists duplicated), writes them back and converts the file (the conversion
that reads the record: back to HDF5 or ``.keras``, or to safetensors).
HDF5 cases are link graphs built with h5py: groups hard-linking to each
other (cycles, fan-outs), soft links (dangling, cyclic), external links,
Keras attributes naming them.

A case fails when the conversion raises anything but a
``tietool.errors.TietoolError`` or ``MemoryError`` (the CLI's exit 3), takes
longer than :data:`CASE_SECONDS` (a hang), or leaves any file outside the
output it was given (or a temporary inside it).

    run_cases(workdir, n, seed) -> Summary
    python bench/fuzz.py --records N
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import os
import random
import shutil
import signal
import struct
import traceback
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: A case taking longer than this is a hang.
CASE_SECONDS = 20.0

HOSTILE_STRINGS = [
    "../x.h5", "../../etc/passwd", "/tmp/abs.h5", "/", "a/b.h5", "a\\b.h5", "c:x.h5", "C:\\x.h5", "", ".", "..",
    ".hidden.h5", "x\x00y.h5", "x\ny.h5", "\x1b[2Jx.h5", "con", "CON.h5", "nul.txt", "a" * 300 + ".h5",
    "é" * 200 + ".h5", "model.safetensors", "tf_model.h5", "config.json", "x.h5 ", "x.h5.", "\u202eh5.exe",
    "tf_model.h5/", "~", "$HOME", "%s%s%n", "x" * 5000,
]
HOSTILE_VALUES = [
    None, True, False, 0, -1, 1, 2**31, 2**64, -(2**63) - 1, 1e308, -0.0, 1.5, [], {}, [[[[[[[[1]]]]]]]],
    {"a": {"b": {"c": {}}}}, ["x"] * 50, {"": ""}, "[]", "{}", "null", "NaN",
]


def _paths(node, here=()) -> list[tuple]:
    """Every position in a JSON tree (as a key path)."""
    out = [here]
    if isinstance(node, dict):
        for k, v in list(node.items())[:200]:
            out += _paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:200]):
            out += _paths(v, (*here, i))
    return out


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def _set(root, path, value):
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _hostile(rng: random.Random, tree) -> object:
    pick = rng.random()
    if pick < 0.45:
        return rng.choice(HOSTILE_STRINGS)
    if pick < 0.8:
        return copy.deepcopy(rng.choice(HOSTILE_VALUES))
    # a value from elsewhere in the same record (a tensor name where a file name goes, a tree where a name goes)
    return copy.deepcopy(_get(tree, rng.choice(_paths(tree))))


def mutate_json(tree, rng: random.Random):
    """One structural change somewhere in ``tree`` (a copy is changed and returned)."""
    tree = copy.deepcopy(tree)
    paths = _paths(tree)
    # the fields that become file names or choose the layout, more often than their share of a large tree
    named = [p for p in paths if p and p[-1] in ("name", "file", "index", "source_format", "text", "files", "tietool")]
    path = rng.choice(named if named and rng.random() < 0.4 else paths)
    node = _get(tree, path)
    op = rng.randrange(8)
    if op == 0 or not path:
        return _set(tree, path, _hostile(rng, tree))
    parent = _get(tree, path[:-1])
    if op == 1:  # drop
        del parent[path[-1]]
    elif op == 2 and isinstance(parent, dict):  # a key renamed to something hostile
        parent[str(rng.choice(HOSTILE_STRINGS + ["name", "tree", "files", "tietool", "source_format"]))] = \
            parent.pop(path[-1])
    elif op == 3 and isinstance(parent, list):  # duplicated
        parent.insert(path[-1], copy.deepcopy(node))
    elif op == 4:  # type changed
        if isinstance(node, str):
            _set(tree, path, [node] if rng.random() < 0.5 else len(node))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            _set(tree, path, str(node) if rng.random() < 0.5 else -node - 1)
        elif isinstance(node, dict):
            _set(tree, path, list(node.values()))
        elif isinstance(node, list):
            _set(tree, path, {str(i): v for i, v in enumerate(node)})
    elif op == 5 and isinstance(node, str) and node:  # a name that differs by a little
        _set(tree, path, node + rng.choice(["/..", "/", "\\", "\x00", ".h5", "_x"]))
    elif op == 6:  # deep nesting
        deep: object = node
        for _ in range(rng.choice((70, 150))):
            deep = [deep]
        _set(tree, path, deep)
    else:
        _set(tree, path, _hostile(rng, tree))
    return tree


# -- bases ------------------------------------------------------------------------------------------

@dataclass
class Base:
    name: str
    path: Path  # a file (or a folder) tietool wrote
    to: tuple[str, ...]  # conversions that read its records
    weights: str | None = None  # a folder's weights file, the one mutated


def build_bases(root: Path) -> list[Base]:
    """Files converted by tietool itself (in-process), carrying every kind of record."""
    from tietool.convert import convert

    root.mkdir(parents=True, exist_ok=True)
    made = [
        ("layout-h5", FIXTURES / "tf/gpt2/tf_model.h5", "safetensors", "gpt2.safetensors", ("h5",)),
        ("layout-keras", FIXTURES / "keras3/tied_revemb.keras", "safetensors", "k.safetensors", ("keras", "h5")),
        ("aliases", FIXTURES / "tf/t5/tf_model.h5", "safetensors", "t5.safetensors", ("h5",)),
        ("origin", FIXTURES / "pt/gpt2/model.safetensors", "h5", "gpt2.h5", ("safetensors",)),
        # a folder whose layout record names two HDF5 shards and their index: converting back writes them
        ("layout-shards", FIXTURES / "tf/gpt2_sharded", "safetensors", "gpt2-sharded", ("h5",)),
    ]
    bases = []
    for name, src, to, out, back in made:
        path = root / out
        if not path.exists():
            convert(src, to, path)
        bases.append(Base(name, path, back, "model.safetensors" if path.is_dir() else None))
    return bases


def _st_read(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _st_write(path: Path, header: dict, data: bytes) -> None:
    head = json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass")
    head += b" " * (-(8 + len(head)) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def mutate_safetensors(src: Path, dst: Path, rng: random.Random) -> str:
    header, data = _st_read(src)
    meta = header.setdefault("__metadata__", {})
    tensors = [k for k in header if k != "__metadata__"]
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        keys = [k for k in meta if k.startswith("tietool.")] or ["tietool.layout"]
        pick = rng.random()
        if pick < 0.15:  # an alias: {removed: kept}
            removed = rng.choice(tensors + HOSTILE_STRINGS[:6])
            kept = rng.choice(tensors + list(meta) + HOSTILE_STRINGS[:6] + ["nowhere"])
            meta[str(removed)] = str(kept)
            done.append("alias")
            continue
        key = rng.choice(keys)
        text = meta.get(key, "{}")
        text = text if isinstance(text, str) else json.dumps(text)
        try:
            tree = json.loads(text)
        except (ValueError, RecursionError):
            tree = text
        if rng.random() < 0.1:  # not JSON any more, or not a string at all (safetensors wants strings)
            meta[key] = rng.choice([text[: len(text) // 2], text + "}", 7, ["x"], None, text.replace('"', "'"),
                                    "[" * 5000 + text + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000])
            done.append(f"{key}:raw")
        else:
            for _ in range(rng.choice((1, 1, 2, 4))):
                tree = mutate_json(tree, rng)
            meta[key] = json.dumps(tree, ensure_ascii=rng.random() < 0.5)
            done.append(key)
    _st_write(dst, header, data)
    return "+".join(done)


def mutate_h5_origin(src: Path, dst: Path, rng: random.Random) -> str:
    import h5py
    import numpy as np

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        text = f.attrs.get("tietool.safetensors", "{}")
        text = text.decode() if isinstance(text, bytes) else str(text)
        tree = json.loads(text)
        for _ in range(rng.choice((1, 2, 3))):
            tree = mutate_json(tree, rng)
        how = rng.random()
        del f.attrs["tietool.safetensors"]
        if how < 0.7:
            f.attrs["tietool.safetensors"] = json.dumps(tree)
        elif how < 0.8:
            f.attrs["tietool.safetensors"] = np.bytes_(json.dumps(tree).encode())
        elif how < 0.9:
            f.attrs["tietool.safetensors"] = np.arange(rng.randrange(1, 5), dtype="i4")
        else:
            f.attrs.create("tietool.safetensors", [json.dumps(tree)] * 3, dtype=h5py.string_dtype())
        if rng.random() < 0.2 and "layer_names" in f.attrs:
            names = list(f.attrs["layer_names"])
            f.attrs["layer_names"] = np.array(names + [rng.choice(HOSTILE_STRINGS[:10]).encode()], dtype="S")
    return "origin"


def link_graph(dst: Path, rng: random.Random) -> str:
    """An HDF5 file of groups linking to each other: hard links (cycles,
    fan-outs that repeat), soft links (dangling, cyclic), external links,
    Keras ``layer_names``/``weight_names`` naming them."""
    import h5py
    import numpy as np

    n = rng.randrange(2, 9)
    kinds = collections.Counter()
    with h5py.File(dst, "w") as f:
        groups = [f.create_group(f"g{i}") for i in range(n)]
        for i, g in enumerate(groups):
            if rng.random() < 0.7:
                g.create_dataset(f"w{i}:0", data=np.full((4, 3), i, dtype="<f4"))
        for _ in range(rng.randrange(1, 4 * n)):
            a = rng.choice(groups)
            name = f"l{kinds.total()}"
            pick = rng.random()
            if pick < 0.55:
                a[name] = rng.choice([*groups, f])  # hard link: a graph, cycles through the root too
                kinds["hard"] += 1
            elif pick < 0.8:
                a[name] = h5py.SoftLink(rng.choice(["/g0", f"/g{rng.randrange(n)}/{name}", "/nowhere", "/",
                                                    f"/g{rng.randrange(n)}/l0/l1/l0"]))
                kinds["soft"] += 1
            else:
                a[name] = h5py.ExternalLink(rng.choice(["/etc/passwd", "../x.h5", str(dst)]), "/")
                kinds["external"] += 1
        if rng.random() < 0.8:  # Keras 2 attributes naming layers and weights through the links
            layers = rng.sample([g.name.lstrip("/") for g in groups], k=rng.randrange(1, n + 1))
            f.attrs["layer_names"] = np.array([x.encode() for x in layers], dtype="S")
            f.attrs["backend"] = "tensorflow"
            for lay in layers:
                weights = [f"{lay}/w{i}:0" for i in range(n)] + [f"{lay}/l{j}/w0:0" for j in range(3)]
                f[lay].attrs["weight_names"] = np.array([w.encode() for w in rng.sample(weights, k=3)], dtype="S")
    return "graph:" + ",".join(f"{k}{v}" for k, v in sorted(kinds.items()))


# -- running ------------------------------------------------------------------------------------------

@dataclass
class Summary:
    cases: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang()


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_case(i: int, bases: list[Base], work: Path, rng: random.Random) -> tuple[str, str]:
    """(what the case was, its outcome); raises AssertionError on a failure."""
    from tietool.convert import convert
    from tietool.errors import TietoolError

    case = work / "case"
    if case.exists():
        shutil.rmtree(case)
    (case / "out").mkdir(parents=True)
    k = i % (len(bases) + 1)  # every base in turn, then a link graph
    if k == len(bases):
        src = case / "graph.h5"
        what = link_graph(src, rng)
        to = "safetensors"
    else:
        base = bases[k]
        src = case / base.path.name
        if base.weights:  # a folder: its weights file mutated, the rest copied
            shutil.copytree(base.path, src)
            what = mutate_safetensors(base.path / base.weights, src / base.weights, rng)
        else:
            what = (mutate_h5_origin if base.path.suffix == ".h5" else mutate_safetensors)(base.path, src, rng)
        what = f"{base.name}:{what}"
        to = rng.choice(base.to)
    before = _listing(case)
    out = case / "out" / ("result" if src.is_dir() else f"result.{to if to != 'safetensors' else 'st'}")
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        convert(str(src), to, str(out))
        outcome = "converted"
    except TietoolError as exc:
        outcome = type(exc).__name__
    except MemoryError:
        outcome = "MemoryError"
    except _Hang:
        raise AssertionError(f"[{i}] {what} -> {to}: HANG (> {CASE_SECONDS} s)") from None
    except Exception as exc:  # noqa: BLE001 - the point: anything else is exit 3
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        raise AssertionError(f"[{i}] {what} -> {to}: {type(exc).__name__}: {str(exc)[:300]}\n"
                             f"{''.join(tb[-3:])}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    after = _listing(case)
    allowed = {str(Path("out") / out.name)}
    new = sorted(p for p in after - before if p != "out" and not any(p == a or p.startswith(a + os.sep)
                                                                      for a in allowed))
    if new:
        raise AssertionError(f"[{i}] {what} -> {to}: {outcome}, but wrote outside its output: {new[:5]}")
    return f"{what} -> {to}", outcome


def run_cases(work: Path, n: int, seed: int = 0, stop_at_first: bool = True) -> Summary:
    bases = build_bases(work / "bases")
    rng = random.Random(seed)
    summary = Summary()
    outside = work.parent
    seen_outside = {p.name for p in outside.iterdir()}
    for i in range(n):
        try:
            _, outcome = one_case(i, bases, work, rng)
        except AssertionError as exc:
            summary.failures.append(str(exc))
            outcome = "FAILED"
            if stop_at_first:
                summary.cases += 1
                summary.outcomes[outcome] += 1
                break
        summary.cases += 1
        summary.outcomes[outcome] += 1
    with contextlib.suppress(OSError):
        extra = {p.name for p in outside.iterdir()} - seen_outside
        if extra:
            summary.failures.append(f"files appeared beside the fuzz folder: {sorted(extra)[:5]}")
    return summary
