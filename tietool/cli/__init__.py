"""The command line: a thin layer over the library.

:mod:`~tietool.cli.commands` parses options and calls one library function per
command; :mod:`~tietool.cli.render` turns results into text; :mod:`~tietool.cli.exits`
is the one table of exit statuses; :mod:`~tietool.cli.progress` draws progress on stderr.
"""

from tietool.cli.commands import cli, main

__all__ = ["cli", "main"]
