"""The command line: a thin layer over the library.

:mod:`~tietool.cli.commands` parses options and calls one library function per
command; :mod:`~tietool.cli.render` turns results into text; :mod:`~tietool.cli.exits`
is the one table of exit statuses; :mod:`~tietool.cli.progress` draws progress on stderr.

:func:`main` (the ``tietool`` console script) installs the signal handlers
before anything else is imported, so that a signal during start-up is the
same clean stop as one during the work (one line, 128 + the signal number),
not a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

__all__ = ["cli", "main"]


def main() -> None:
    from tietool.cli.exits import exit_code_for
    from tietool.io.signals import Interrupted, install, stop_line, stopping

    install(exit_code_for)
    try:
        from tietool.cli.commands import main as run
    except Interrupted as exc:
        sys.stderr.write(stop_line(exc.name, None) + "\n")
        sys.exit(exit_code_for(exc))
    try:
        run()
    except SystemExit as exc:
        if not stopping():
            raise
        # Stopped by a signal, everything cleaned up: end here, not through the interpreter's
        # finalisation (joining helper threads, libraries' exit handlers), which has nothing left to do
        # for us and is where a stop could still wait.
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else 1)


def __getattr__(name: str) -> Any:
    if name == "cli":
        from tietool.cli.commands import cli

        return cli
    raise AttributeError(name)
