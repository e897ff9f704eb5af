"""Walking a JSON value (a config) iteratively: no recursion limit to hit on hostile nesting."""

from __future__ import annotations

from typing import Any, Iterator


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (json-path, node) in a JSON value, iteratively."""
    stack = [(path, value)]
    while stack:
        p, v = stack.pop()
        yield p, v
        if isinstance(v, dict):
            stack.extend((f"{p}.{k}" if p else str(k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((f"{p}[{i}]", x) for i, x in reversed(list(enumerate(v))))
