"""SIGINT, SIGTERM and SIGHUP as exceptions, for the command line.

:func:`install` (called by ``tietool.cli.commands.main``, never at import) makes each
of these signals raise :class:`Interrupted`, a ``KeyboardInterrupt``, so that
the code unwinding the stack (``atomic_output``) removes a temporary output
and leaves any previous output as it was. Once one arrived, the others are
ignored: the clean-up is not cut short. The CLI exits with 128 + the signal
number (130, 143, 129), as a shell reports a process killed by it
(:func:`tietool.cli.exits.exit_code_for`).
"""

from __future__ import annotations

import signal

NAMES = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupted(KeyboardInterrupt):
    """A signal asked tietool to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.committed: str | None = None  # an output that was complete and in place when it arrived


def _raise(signum: int, frame: object) -> None:
    for name in NAMES:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Interrupted(signum)


def install() -> None:
    for name in NAMES:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise)
