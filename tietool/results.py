"""The base of tietool's typed results (frozen dataclasses with ``to_json()``)."""

from __future__ import annotations


class JsonResult:
    """A result whose JSON document is ``to_json()``: the dict the CLI prints
    with ``--json``. Code reads the typed attributes."""

    def to_json(self) -> dict:
        raise NotImplementedError
