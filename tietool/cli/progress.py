"""Progress of byte-counted work (convert, verify-tie) on a terminal.

Drawn by Click's ``progressbar`` (percent, time left) with bytes done of
the total and the rate as its item text; one bar per phase ("write",
"verify", "compare", "read"). The CLI creates one only when stderr is a
terminal and --quiet is not given (for ``run``, only past
:data:`LARGE_BYTES`); the library only calls ``progress(phase, done,
total)``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

#: Commands that only read (``run``) show progress past this many bytes.
LARGE_BYTES = 100_000_000
#: Redraw at most this often (seconds); the last update of a phase always draws.
REDRAW_SECONDS = 0.1


def _mb(n: float) -> str:
    if n < 1e6:
        return f"{n / 1e3:.1f} KB"
    if n < 1e9:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e9:.2f} GB"


class ByteProgress:
    """``progress(phase, done, total)`` for the library; ``close()`` when done."""

    def __init__(self, file=None, clock=time.monotonic, min_total: int = 0) -> None:
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.min_total = min_total  # phases smaller than this draw nothing
        self.phase: str | None = None
        self.bar: Any = None
        self.shown = 0  # bytes the bar has been told about
        self.done = 0
        self.total = 0
        self.start = self.last_call = clock()  # a phase's work began when the previous one ended
        self.last_draw = 0.0

    def _info(self, _item) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        return f"{_mb(self.done)} of {_mb(self.total)}, {_mb(self.done / elapsed)}/s"

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self._finish(fill=True)
            self.phase, self.total, self.done, self.shown = phase, max(total, 1), 0, 0
            self.start = self.last_call
            if total < self.min_total:
                return
            self.bar = click.progressbar(length=self.total, label=f"{phase:<7}", file=self.file, width=24,
                                         show_eta=True, show_percent=True, item_show_func=self._info)
            self.bar.__enter__()
        self.done = done
        now = self.last_call = self.clock()
        if self.bar is None:
            return
        if done >= self.total or now - self.last_draw >= REDRAW_SECONDS:
            self.last_draw = now
            step = min(done, self.total) - self.shown
            if step > 0:
                self.shown += step
                self.bar.update(step, current_item=phase)

    def _finish(self, fill: bool) -> None:
        if self.bar is not None:
            if fill and self.shown < self.total:
                self.bar.update(self.total - self.shown, current_item=self.phase)
            self.bar.__exit__(None, None, None)
            self.bar = None

    def close(self) -> None:
        """End the current bar where it stands (a failed run does not show 100%)."""
        if self.bar is not None and self.shown < min(self.done, self.total):
            self.bar.update(min(self.done, self.total) - self.shown, current_item=self.phase)
            self.shown = min(self.done, self.total)
        self._finish(fill=False)
        self.phase = None
