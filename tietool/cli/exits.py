"""Exit statuses: the one table of what each error and each outcome exits with.

Two tables, both read by the CLI and nowhere else:

* :data:`ERROR_EXITS` maps an exception to an exit status (first match wins):
  every :class:`~tietool.errors.TietoolError` (bad input, unsafe or corrupt
  files, refused or failed output) and running out of memory are 2 with one
  line ``Error: FILE: what is wrong``; an interrupt is 130 (or 128 + the
  signal number, :mod:`tietool.io.signals`); a closed pipe is 0; anything else
  is a bug: 3. Click's own usage errors keep Click's status (2).
* :data:`COMMAND_EXITS` says what each status means per command, for the
  ``Exit status:`` block of ``--help`` (:func:`exit_status`): 0, 2 and 3
  always, 1 only for the commands that return it.

Nothing here imports a third-party module: it is read on the error path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tietool.errors import TietoolError

if TYPE_CHECKING:
    from tietool.audit.check import CheckReport

EXIT_OK = 0
#: verify-tie: not tied; check: a problem found; diff: a difference.
EXIT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

#: Exception -> exit status; the first class that matches decides.
ERROR_EXITS: tuple[tuple[type[BaseException], int], ...] = (
    (TietoolError, EXIT_BAD_INPUT),
    (KeyboardInterrupt, EXIT_INTERRUPTED),  # or 128 + the number of the signal that raised it
    (BrokenPipeError, EXIT_OK),  # `tietool inspect ... | head`
    (MemoryError, EXIT_BAD_INPUT),  # "Error: FILE: out of memory"
    (BaseException, EXIT_INTERNAL),
)


def exit_code_for(exc: BaseException) -> int:
    """The exit status for ``exc`` (:data:`ERROR_EXITS`)."""
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", None)  # tietool.io.signals.Interrupted
        return 128 + signum if isinstance(signum, int) else EXIT_INTERRUPTED
    return next(code for cls, code in ERROR_EXITS if isinstance(exc, cls))


def check_exit(report: CheckReport) -> int:
    """``check``'s status: 2 when a checkpoint could not be read, else 1 when
    one has a problem, else 0."""
    if report.unreadable:
        return EXIT_BAD_INPUT
    return EXIT_FOUND if report.with_problems else EXIT_OK


BAD_INPUT = 'bad input or usage: one line "Error: FILE: what is wrong" on stderr'
INTERNAL = "internal error (a bug; --debug or TIETOOL_DEBUG=1 shows the traceback)"

#: What the statuses mean in each command's help (None: ``tietool --help``).
#: A command not listed returns 0, 2 and 3 with the default meanings.
COMMAND_EXITS: dict[str | None, dict[int, str]] = {
    None: {EXIT_OK: "success (verify-tie: tied, every stored copy identical)",
           EXIT_FOUND: "verify-tie: not tied, a copy differs, or no output layer; check: a checkpoint has "
                       "a problem; diff: a tensor differs or is in one checkpoint only"},
    "verify-tie": {EXIT_OK: "tied, every stored copy identical",
                   EXIT_FOUND: "not tied, a copy differs, or no output layer"},
    "check": {EXIT_OK: "every checkpoint is consistent (config and weights agree)",
              EXIT_FOUND: "at least one checkpoint has a problem (each row says which, and the fix command)",
              EXIT_BAD_INPUT: "at least one checkpoint could not be read (the others are still checked and listed), "
                              "or bad usage"},
    "fix": {EXIT_OK: "repaired and verified, or nothing to fix (nothing written)",
            EXIT_BAD_INPUT: 'bad input or usage, or a repair that needs a choice (--prefer): one line '
                            '"Error: FILE: what is wrong"'},
    "diff": {EXIT_OK: "every tensor matched and is identical (within --atol/--rtol if given)",
             EXIT_FOUND: "a tensor differs, has another shape or dtype, or is in one checkpoint only"},
}

DEFAULT_MEANINGS = {EXIT_OK: "success", EXIT_BAD_INPUT: BAD_INPUT, EXIT_INTERNAL: INTERNAL}


def exit_status(command: str | None = None) -> str:
    """The ``Exit status:`` epilog of ``command``'s help (a Click ``\\b``
    paragraph, kept verbatim), listing only the statuses it returns."""
    import textwrap

    codes = {**DEFAULT_MEANINGS, **COMMAND_EXITS.get(command, {})}
    return "\b\nExit status:\n" + "\n".join(
        textwrap.fill(text, 100, initial_indent=f"  {code}  ", subsequent_indent="     ", break_long_words=False,
                      break_on_hyphens=False) for code, text in sorted(codes.items()))
