"""Minimal edits of JSON text: change or add one key, keep every other byte.

A config edited by ``tietool fix`` keeps its other keys, their order, its
indentation and its number formatting: only the value of the edited key
changes (or one line is added, indented like its neighbours).
"""

from __future__ import annotations

import json
import re

from tietool.errors import CorruptCheckpointError

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|NaN|-?Infinity")


class _Obj:
    def __init__(self, start: int):
        self.start = start  # position of "{"
        self.end = -1  # position of "}"
        self.members: dict[str, tuple[int, int, int]] = {}  # key -> (key start, value start, value end)
        self.children: dict[str, _Obj] = {}


def _skip_ws(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not JSON whitespace."""
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _parse(text: str, pos: int, label: str) -> tuple[int, _Obj | None]:
    """Parse one value at ``pos``; return (end, object spans if an object)."""
    pos = _skip_ws(text, pos)
    if pos >= len(text):
        raise CorruptCheckpointError("invalid JSON (unexpected end)", label)
    ch = text[pos]
    if ch == "{":
        obj = _Obj(pos)
        pos = _skip_ws(text, pos + 1)
        if text[pos:pos + 1] == "}":
            obj.end = pos
            return pos + 1, obj
        while True:
            pos = _skip_ws(text, pos)
            m = _STRING.match(text, pos)
            if not m:
                raise CorruptCheckpointError(f"invalid JSON at offset {pos}", label)
            key = json.loads(m.group(0))
            kstart = pos
            pos = _skip_ws(text, m.end())
            if text[pos:pos + 1] != ":":
                raise CorruptCheckpointError(f"invalid JSON at offset {pos}", label)
            vstart = _skip_ws(text, pos + 1)
            pos, child = _parse(text, vstart, label)
            obj.members[key] = (kstart, vstart, pos)
            if child is not None:
                obj.children[key] = child
            pos = _skip_ws(text, pos)
            if text[pos:pos + 1] == ",":
                pos += 1
                continue
            if text[pos:pos + 1] == "}":
                obj.end = pos
                return pos + 1, obj
            raise CorruptCheckpointError(f"invalid JSON at offset {pos}", label)
    if ch == "[":
        pos = _skip_ws(text, pos + 1)
        if text[pos:pos + 1] == "]":
            return pos + 1, None
        while True:
            pos, _ = _parse(text, pos, label)
            pos = _skip_ws(text, pos)
            if text[pos:pos + 1] == ",":
                pos += 1
                continue
            if text[pos:pos + 1] == "]":
                return pos + 1, None
            raise CorruptCheckpointError(f"invalid JSON at offset {pos}", label)
    m = _STRING.match(text, pos) if ch == '"' else _SCALAR.match(text, pos)
    if not m:
        raise CorruptCheckpointError(f"invalid JSON at offset {pos}", label)
    return m.end(), None


def _line_indent(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    line = text[line_start:pos]
    return line[:len(line) - len(line.lstrip(" \t"))]


def _object_at(text: str, path: tuple[str, ...], label: str, not_object: str) -> _Obj:
    """The object holding the last key of ``path``."""
    _, root = _parse(text, 0, label)
    if root is None:
        raise CorruptCheckpointError(not_object, label)
    obj = root
    for key in path[:-1]:
        if key not in obj.children:
            raise CorruptCheckpointError(f"no object {key!r} to edit", label)
        obj = obj.children[key]
    return obj


def set_value(text: str, path: tuple[str, ...], value: object, label: str = "config.json") -> str:
    """``text`` with the key at ``path`` (object keys from the root) set to
    ``value`` (JSON-encoded); a missing last key is added after the object's
    last member, on its own line when the object is laid out one member per line."""
    obj = _object_at(text, path, label, "config is not a JSON object")
    encoded = json.dumps(value)
    key = path[-1]
    if key in obj.members:
        _k, v0, v1 = obj.members[key]
        return text[:v0] + encoded + text[v1:]
    entry = json.dumps(key) + ": " + encoded
    if not obj.members:
        return text[:obj.start + 1] + entry + text[obj.end:]
    last_k, _v0, last_end = max(obj.members.values(), key=lambda m: m[2])
    between = text[obj.members[min(obj.members, key=lambda k: obj.members[k][0])][0]:last_k]
    if "\n" in text[obj.start:last_k]:
        sep = ",\n" + _line_indent(text, last_k)
    else:
        sep = ", " if ", " in between or len(obj.members) == 1 else ","
    return text[:last_end] + sep + entry + text[last_end:]


def delete_key(text: str, path: tuple[str, ...], label: str = "config.json") -> str:
    """``text`` without the key at ``path`` (and the comma that separated it)."""
    obj = _object_at(text, path, label, "not a JSON object")
    if path[-1] not in obj.members:
        return text
    k0, _v0, v1 = obj.members[path[-1]]
    ordered = sorted(obj.members.values())
    i = ordered.index(obj.members[path[-1]])
    if i + 1 < len(ordered):  # cut from this key to the next key
        return text[:k0] + text[ordered[i + 1][0]:]
    if i > 0:  # the last member: cut from the end of the previous value
        return text[:ordered[i - 1][2]] + text[v1:]
    return text[:obj.start + 1] + text[obj.end:]
