"""The README's console examples run as written from the repository root and
print what the README shows.

Every fenced block with ``$ tietool ...`` lines is one transcript: its commands
run in order (in-process, Click's CliRunner) in a fresh folder that looks like
the repository root (``fixtures/`` in it), so outputs of one command feed the
next. What the README shows after a command must match what it prints (stdout
and stderr as a terminal shows them; ``; echo $?`` adds the exit status), with
these placeholders, and only these:

* a line ``...`` stands for any number of lines, and ``...`` inside a line for
  any text (the README shortens long output so);
* timings (``0.06 s``) match any timing.
"""

from __future__ import annotations

import re
import shlex

import pytest

from helpers import FIXTURES, ROOT, invoke, timeless

README = ROOT / "README.md"


def transcripts() -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """[(id, [(command line, expected lines)])] for each console block."""
    out = []
    heading, in_block, block, lang = "top", False, [], ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if in_block:
                if lang == "" and any(x.startswith("$ tietool ") for x in block):
                    out.append((heading, block))
                in_block, block = False, []
            else:
                in_block, lang = True, line[3:].strip()
            continue
        if in_block:
            block.append(line)
        elif line.startswith("#"):
            heading = re.sub(r"[^a-z0-9]+", "-", line.lstrip("#").strip().lower()).strip("-")
    result, seen = [], {}
    for heading, lines in out:
        seen[heading] = seen.get(heading, 0) + 1
        steps: list[tuple[str, list[str]]] = []
        for line in lines:
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                assert steps, f"README block under {heading} does not start with a command"
                steps[-1][1].append(line)
        result.append((f"{heading}-{seen[heading]}", steps))
    return result


TRANSCRIPTS = transcripts()


def _pattern(expected: list[str]) -> re.Pattern:
    parts = []
    for line in expected:
        line = timeless(line.rstrip())
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts))


def _run(command: str) -> str:
    echo_status = command.rstrip().endswith("; echo $?")
    command = command.rstrip().removesuffix("; echo $?")
    args = shlex.split(command, comments=True)
    assert args[0] == "tietool", command
    r = invoke(*args[1:])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    text = r.output + (f"{r.exit_code}\n" if echo_status else "")
    return text


def _marks(steps) -> list:
    if any(shlex.split(c, comments=True)[1] == "run" for c, _ in steps):
        return [pytest.mark.interop, pytest.mark.tf_kernels]  # `tietool run` needs TensorFlow
    return []


@pytest.mark.parametrize("steps", [pytest.param(s, id=i, marks=_marks(s)) for i, s in TRANSCRIPTS])
def test_readme_transcript(steps, tmp_path, monkeypatch):
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    for command, expected in steps:
        actual = timeless(_run(command))
        actual = "".join(line.rstrip() + "\n" for line in actual.splitlines())
        assert _pattern(expected).fullmatch(actual), (
            f"$ {command}\n--- README shows:\n" + "\n".join(expected) + "\n--- tietool prints:\n" + actual)


def test_every_console_block_found():
    commands = [c for _, steps in TRANSCRIPTS for c, _ in steps]
    assert len(commands) == sum(1 for line in README.read_text().splitlines() if line.startswith("$ tietool "))
    assert len(TRANSCRIPTS) >= 10


def test_readme_library_example(tmp_path, monkeypatch):
    """The README's Library example runs as written from the repository root
    (the last line, which imports TensorFlow for the layer, is left out)."""
    text = README.read_text()
    start = text.index("```python", text.index("## Library")) + len("```python")
    code = text[start:text.index("```", start)]
    assert "tietool.verify_tie" in code and "SharedEmbeddings" in code.strip().splitlines()[-1]
    code = "\n".join(line for line in code.splitlines() if "SharedEmbeddings" not in line)
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Library)", "exec"), {})  # noqa: S102 - our own README
    assert (tmp_path / "t5-st" / "model.safetensors").exists()
