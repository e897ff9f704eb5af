"""The command line's plumbing, shared by every command: the group and command
classes that turn any error into one line ``Error: FILE: what is wrong`` and an
exit status (the statuses come from :mod:`tietool.cli.exits`, the one table),
``--json`` output (results and errors), and progress on stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from typing import Any, Callable

import click

from tietool.cli.exits import exit_code_for
from tietool.errors import TietoolError


def _debug_enabled(ctx: click.Context | None) -> bool:
    if os.environ.get("TIETOOL_DEBUG", "") not in ("", "0"):
        return True
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("debug")) or "--debug" in _command_line(ctx)


class TietoolGroup(click.Group):
    """Maps every error to one line on stderr and an exit status."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # The whole command line, for --json/--debug given after the command
        # name (read by _wants_json/_debug_enabled, even when the command's
        # own options fail to parse).
        ctx.meta["tietool.args"] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.Exit:
            raise
        except click.ClickException as exc:  # `tietool --zzz ... --json`
            json_error(ctx, exc.format_message(), None, exc.exit_code)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TietoolError as exc:
            if _debug_enabled(ctx):
                traceback.print_exc()
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            json_error(ctx, exc.message, exc.path, exit_code_for(exc))
            ctx.exit(exit_code_for(exc))
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as exc:  # usage errors: Click prints them
            json_error(ctx, exc.format_message(), None, exc.exit_code)
            raise
        except KeyboardInterrupt as exc:
            code = _interrupted(exc)
            json_error(ctx, "interrupted", None, code)
            ctx.exit(code)
        except BrokenPipeError:
            # `tietool inspect ... | head`: not an error worth a traceback
            sys.stderr.close()
            ctx.exit(exit_code_for(BrokenPipeError()))
        except MemoryError:
            ctx.exit(_out_of_memory(ctx))
        except Exception as exc:  # a bug in tietool, not bad input
            if _is_out_of_memory(exc):
                ctx.exit(_out_of_memory(ctx))
            if _debug_enabled(ctx):
                traceback.print_exc()
            message = (f"internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                       "(please report; --debug shows the traceback)")
            click.echo(f"Error: {message}", err=True)
            json_error(ctx, message, None, exit_code_for(exc))
            ctx.exit(exit_code_for(exc))


# -- errors for scripts ----------------------------------------------------------------

def _command_line(ctx: click.Context | None) -> list[str]:
    """The arguments given, up to a ``--`` (after which nothing is an option)."""
    root = ctx.find_root() if ctx else None
    args = list(root.meta.get("tietool.args", [])) if root else []
    return args[:args.index("--")] if "--" in args else args


def _wants_json(ctx: click.Context | None) -> bool:
    return "--json" in _command_line(ctx)


def json_error(ctx: click.Context | None, message: str, file: str | None, exit_code: int) -> None:
    """With --json, an error is also one JSON document on stdout:
    ``{"error": {"message", "file", "exit_code"}}`` (the text line still goes
    to stderr). Nothing else is on stdout then: results are printed only
    once complete."""
    if not _wants_json(ctx):
        return
    doc = {"error": {"message": _one_line(message), "file": file, "exit_code": exit_code}}
    with contextlib.suppress(OSError):  # a closed stdout: the stderr line is the report
        click.echo(json.dumps(doc, indent=2))


#: Characters of an error line kept (a name read from a file cannot make it any longer).
LINE_CHARS = 2000


def _one_line(text: str) -> str:
    try:
        from tietool.textsafe import clipped, printable
    except (MemoryError, ImportError):
        return repr(" ".join(text.split("\n")))[1:LINE_CHARS]
    return printable(clipped(" ".join(text.split("\n")), LINE_CHARS), backslash=False)


# -- signals and low memory: the error path imports and allocates nothing ----------------------

class TietoolCommand(click.Command):
    """Records the file a command works on (``ctx.meta["tietool.file"]``),
    for the errors that have no file of their own (out of memory)."""

    def invoke(self, ctx: click.Context) -> Any:
        from tietool.io.signals import forget_outputs

        ctx.meta["tietool.file"] = ctx.params.get("src") or ctx.params.get("path")
        forget_outputs()  # a stop reports only what this command put in place
        return super().invoke(ctx)


TietoolGroup.command_class = TietoolCommand


def _interrupted(exc: KeyboardInterrupt) -> int:
    """One line for SIGINT/SIGTERM/SIGHUP (``tietool.io.signals``); the exit status."""
    from tietool.io.signals import stop_line

    _stderr_line(stop_line(getattr(exc, "name", "SIGINT"), getattr(exc, "committed", None)))
    return exit_code_for(exc)


def _is_out_of_memory(exc: BaseException) -> bool:
    # a module that cannot be mapped under an address-space limit is an
    # ImportError; mmap/fork failures are OSError ENOMEM
    if isinstance(exc, OSError):
        return exc.errno == 12
    text = str(exc) if isinstance(exc, ImportError) else ""
    return "failed to map segment" in text or "Cannot allocate memory" in text


def _out_of_memory(ctx: click.Context) -> int:
    path = ctx.meta.get("tietool.file")
    _stderr_line(f"Error: {path}: out of memory" if path else "Error: out of memory")
    return exit_code_for(MemoryError())


def _stderr_line(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, MemoryError):
        pass


# -- shared options (decorators) -------------------------------------------------

def json_option(f: Callable) -> Callable:
    """--json, and a hidden --debug so that it works after the command name too."""
    f = click.option("--debug", is_flag=True, hidden=True, expose_value=False,
                     help="Show tracebacks of errors.")(f)
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")(f)


def output(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """The one place results are printed: JSON for scripts (a typed result's
    ``to_json()``), text for people. Rendering happens before anything is
    written, so output is all or nothing."""
    if as_json:
        doc = data.to_json() if hasattr(data, "to_json") else data
        text = json.dumps(doc, indent=2, default=_json_default)
    else:
        text = render(data)
    click.echo(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def progress_reporter(quiet: bool, large_only: bool = False):
    """A byte progress bar on stderr when it is a terminal and not --quiet
    (:mod:`tietool.cli.progress`), else None; ``large_only``: drawn only for
    phases past ``tietool.cli.progress.LARGE_BYTES`` (~100 MB)."""
    if quiet or not sys.stderr.isatty():
        return None
    from tietool.cli.progress import LARGE_BYTES, ByteProgress

    return ByteProgress(min_total=LARGE_BYTES if large_only else 0)


# -- commands ------------------------------------------------------------------------
#
# Every command's help follows one pattern (new commands too):
#
#   @cli.command("name", short_help="<= 50 characters, for the command list",
#                epilog=exit_status(...only the codes it returns...))
#   def name(...):
#       """One or two sentences: what it does and what it reads.
#
#       A short paragraph on what matters (exactness, what is written, ...).
#
#       Examples:
#
#       \b
#         tietool name fixtures/... --opt       # runnable from the repository root
#         tietool name fixtures/... --json
#       """
#
# The Examples block is a Click "\b" paragraph (kept verbatim); exit_status()
# gives 0, 2 and 3 and adds 1 only for commands that return it. Errors need nothing
# per command: TietoolGroup prints the line (and, with --json, json_error's
# document) for any TietoolError; give a command --json through json_option.
# What each exit status means for a command: tietool.cli.exits.COMMAND_EXITS.
