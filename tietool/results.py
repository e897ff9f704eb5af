"""The base of tietool's typed results (frozen dataclasses with ``to_json()``)."""

from __future__ import annotations

from typing import Any, Iterator


class JsonResult:
    """A result whose JSON document is ``to_json()``: the dict the CLI prints
    with ``--json``.

    Read access by key (``report["tied"]``) goes to that document, so code
    written when these results were plain dicts keeps working; new code reads
    the typed attributes."""

    def to_json(self) -> dict:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()

    def keys(self):
        return self.to_json().keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())
