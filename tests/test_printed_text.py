"""Everything read from a file is escaped when printed, and every list is
bounded (issue 26): archive member names with CR, LF and escape sequences,
an archive of 100,000 members, and names in error lines."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tietool.cli.commands import cli
from tietool.textsafe import bounded, clipped

from helpers import fixture

HOSTILE_NAMES = ["notes\rFAKE: all good", "two\nlines.txt", "\x1b[2J\x1b[31mred.txt", "bell\x07.txt",
                 "rtl\u202etxt.exe", "x" * 5000]
RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b\u202e]")  # anything a terminal acts on (newline aside)
MAX_LINE = 2500


def archive_with(path: Path, extra: list[str]) -> Path:
    """fixtures' tied_revemb.keras plus empty members named ``extra``."""
    with zipfile.ZipFile(fixture("keras3/tied_revemb.keras")) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for n in extra:
            dst.writestr(n, b"")
    return path


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def assert_clean(text: str) -> None:
    assert not RAW.search(text), repr(RAW.search(text))
    assert max((len(line) for line in text.splitlines()), default=0) <= MAX_LINE


def test_member_names_escaped_in_convert_note(tmp_path):
    src = archive_with(tmp_path / "m.keras", HOSTILE_NAMES)
    code, out, err = run("convert", str(src), "--to", "h5", "-o", str(tmp_path / "m.h5"))
    assert code == 0, err
    assert_clean(out + err)
    note = next(line for line in out.splitlines() if "not carried" in line)
    assert "notes\\x0dFAKE: all good" in note and "two\\x0alines.txt" in note and "\\x1b[2J\\x1b[31mred.txt" in note
    assert "5,000 more characters" not in note and "4,800 more characters" in note  # one long name clipped
    assert json.loads(run("convert", str(src), "--to", "h5", "-o", str(tmp_path / "j.h5"), "--json")[1])


def test_hundred_thousand_members_bounded(tmp_path):
    src = archive_with(tmp_path / "many.keras", [f"junk/{i:06d}.bin" for i in range(100_000)])
    code, out, err = run("convert", str(src), "--to", "h5", "-o", str(tmp_path / "many.h5"))
    assert code == 0, err
    assert_clean(out + err)
    note = next(line for line in out.splitlines() if "not carried" in line)
    assert note.endswith("... and 99,992 more"), note[-80:]
    assert len(out) < 5000
    doc = json.loads(run("convert", str(src), "--to", "h5", "-o", str(tmp_path / "j.h5"), "--json")[1])
    assert all(len(n) < 1000 for n in doc["notes"])


@pytest.mark.parametrize("command", ["inspect", "verify-tie", "check"])
def test_other_commands_on_hostile_archive(tmp_path, command):
    src = archive_with(tmp_path / "m.keras", HOSTILE_NAMES + [f"junk/{i}" for i in range(2_000)])
    code, out, err = run(command, str(src))
    assert code in (0, 1), err
    assert_clean(out + err)


def test_error_line_escaped_and_bounded(tmp_path):
    """An archive without weights: the error lists its members, escaped and bounded, on one line."""
    p = tmp_path / "bad.keras"
    with zipfile.ZipFile(p, "w") as z:
        for n in HOSTILE_NAMES + [f"m{i}" for i in range(5_000)]:
            z.writestr(n, b"")
    code, out, err = run("inspect", str(p))
    assert code == 2
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "more" in lines[0], err[:300]
    assert_clean(err)


def test_bounded_and_clipped():
    assert bounded(["a", "b"]) == "a, b"
    assert bounded(range(100_000)) == "0, 1, 2, 3, 4, 5, 6, 7, ... and 99,992 more"
    assert clipped("x" * 205) == "x" * 200 + "... (5 more characters)"
