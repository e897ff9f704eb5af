"""The README is a tested transcript (as sqlite-utils checks its docs with cog):
every example runs as written, in the order a reader meets it, twice, from a
copy of the repository root, and leaves that copy as clean as git sees it.

What counts as an example, anywhere in README.md (every section, whoever wrote
it, is picked up without registering it here):

* a fenced block with lines starting ``$ tietool ``: each such line is a
  command (run in-process through Click's CliRunner, stdout then stderr as a
  terminal shows them); the lines after it, up to the next ``$ ``, are what it
  prints. ``; echo $?`` at the end adds the exit status as a last line.
  Without it, the command must exit 0, or 2 when what it prints starts with
  ``Error:``. A ``# comment`` after the command is ignored.
* a fenced ``python`` block: run as it stands (a fresh namespace per block,
  the repository root as the working folder); it must not raise. A block that
  imports ``transformers`` runs in the torch + transformers 5 interpreter
  (``TIETOOL_PT_PYTHON``, or the one the tests build), on the first pass only.

What the README shows must match what tietool prints, with these placeholders
and only these:

* a line ``...`` stands for any number of lines, ``...`` inside a line for any
  text (the README shortens long output so);
* a timing (``0.06 s``) matches any timing;
* in what ``tietool run`` prints (numbers TensorFlow computed, whose last digits
  depend on the CPU's kernels), a number matches one within one unit of its
  last printed digit.

Examples write under ``out/``, a folder the repository ships with a
``.gitignore`` of its own that ignores everything in it, so a second run needs
``--force`` where it replaces an output, and ``git status`` stays clean.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import FLOAT, ROOT, invoke, timeless, within_last_digit

README = ROOT / "README.md"
NUMBER = FLOAT.pattern  # decimals only: integers (shapes, token ids, counts) stay exact


@dataclass
class Step:
    kind: str  # "console" or "python"
    where: str  # README.md:LINE (section)
    command: str = ""
    expected: list[str] = field(default_factory=list)
    code: str = ""

    @property
    def needs_transformers5(self) -> bool:
        return self.kind == "python" and re.search(r"^\s*(from|import) transformers\b", self.code, re.M) is not None


def readme_steps(text: str | None = None) -> list[Step]:
    """Every example of the README, in order."""
    text = README.read_text() if text is None else text
    steps: list[Step] = []
    heading, lang, start, block = "top", None, 0, None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if block is None:
                lang, start, block = line[3:].strip(), lineno, []
                continue
            where = f"README.md:{start} ({heading})"
            if lang == "python":
                steps.append(Step("python", where, code="\n".join(block) + "\n"))
            elif any(x.startswith("$ tietool ") for x in block):
                steps.extend(_console_steps(block, where, start))
            block = None
            continue
        if block is not None:
            block.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return steps


def _console_steps(block: list[str], where: str, start: int) -> list[Step]:
    out: list[Step] = []
    for offset, line in enumerate(block, 1):
        if line.startswith("$ "):
            assert line.startswith("$ tietool "), f"{where}: only tietool commands are run: {line}"
            out.append(Step("console", f"README.md:{start + offset} ({where.split(' (', 1)[1]}",
                            command=line[2:]))
        else:
            assert out, f"{where}: the block does not start with a command"
            out[-1].expected.append(line)
    return out


STEPS = readme_steps()


# -- matching what the README shows ----------------------------------------------------------

def _line_pattern(line: str, numbers: bool) -> str:
    pieces = []
    for piece in line.split("..."):
        if numbers:
            parts = re.split(f"({NUMBER})", piece)
            pieces.append("".join(f"({NUMBER})" if i % 2 else re.escape(p) for i, p in enumerate(parts)))
        else:
            pieces.append(re.escape(piece))
    return ".*?".join(pieces) + r"\n"


def shows(expected: list[str], actual: str, numbers: bool = False) -> bool:
    """Whether ``actual`` is what the README shows (the placeholders above)."""
    lines = [timeless(x.rstrip()) for x in expected]
    pattern = "".join(r"(?:[^\n]*\n)*?" if x.strip() == "..." else _line_pattern(x, numbers) for x in lines)
    m = re.fullmatch(pattern, actual)
    if m is None:
        return False
    if numbers:
        want = [n for x in lines if x.strip() != "..." for p in x.split("...") for n in re.findall(NUMBER, p)]
        return all(within_last_digit(w, g) for w, g in zip(want, m.groups(), strict=True))
    return True


# -- running ---------------------------------------------------------------------------------

def run_console(step: Step) -> None:
    command = step.command.rstrip()
    echo_status = command.endswith("; echo $?")
    args = shlex.split(command.removesuffix("; echo $?"), comments=True)
    r = invoke(*args[1:])
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{step.where}: {r.exception!r}"
    text = r.output + (f"{r.exit_code}\n" if echo_status else "")
    actual = "".join(line.rstrip() + "\n" for line in timeless(text).splitlines())
    if not shows(step.expected, actual, numbers=args[1] == "run"):
        raise AssertionError(f"{step.where}\n$ {step.command}\n--- README shows:\n" + "\n".join(step.expected)
                             + "\n--- tietool prints:\n" + actual)
    want = 2 if step.expected and step.expected[0].startswith("Error:") else 0
    if not echo_status and r.exit_code != want:
        raise AssertionError(f"{step.where}: $ {step.command}: exit {r.exit_code}, the README implies {want}")


def run_python(step: Step, pt_python) -> None:
    if step.needs_transformers5:
        res = subprocess.run([pt_python(), "-c", step.code], capture_output=True, text=True, timeout=600,
                             env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
        assert res.returncode == 0, f"{step.where}:\n{step.code}\n{res.stderr[-3000:]}"
        return
    exec(compile(step.code, step.where, "exec"), {"__name__": "__readme__"})  # noqa: S102 - our own README


@pytest.mark.interop  # `tietool run` and the layer example import TensorFlow; one block needs transformers 5
@pytest.mark.tf_kernels
def test_readme_runs_in_order_twice_and_leaves_the_tree_clean(fresh_clone, request):
    def pt_python() -> str:
        return request.getfixturevalue("pt_python")

    failures: dict[str, str] = {}  # every example that fails, not only the first (each pass runs them all)
    for second in (False, True):
        for step in STEPS:
            try:
                if step.kind == "console":
                    run_console(step)
                elif not (second and step.needs_transformers5):
                    run_python(step, pt_python)
            except AssertionError as exc:
                failures.setdefault(step.where, ("second run: " if second else "") + str(exc))
    assert not failures, f"{len(failures)} README example(s) fail:\n\n" + "\n\n".join(failures.values())
    status = subprocess.run(["git", "status", "--porcelain"], cwd=fresh_clone, capture_output=True, text=True,
                            check=True).stdout
    assert status == "", f"the examples leave files git sees (write under out/):\n{status}"


def test_every_example_found():
    text = README.read_text()
    assert sum(1 for s in STEPS if s.kind == "console") == sum(
        1 for line in text.splitlines() if line.startswith("$ tietool "))
    assert sum(1 for s in STEPS if s.kind == "python") == text.count("```python")
    assert len(STEPS) >= 25


def test_out_folder_ignored_but_shipped():
    assert (ROOT / "out" / ".gitignore").read_text().split() == ["*", "!.gitignore"]


# -- the harness itself: each placeholder can fail -----------------------------------------------

@pytest.mark.parametrize("expected,actual,numbers,ok", [
    (["a", "...", "c"], "a\nb\nb\nc\n", False, True),
    (["a", "...", "c"], "a\nb\n", False, False),
    (["x ... y"], "x 1 2 y\n", False, True),
    (["x ... y"], "x 1 2 z\n", False, False),
    (["took 0.06 s"], "took <T> s\n", False, True),
    (["preview 0.0844564, -0.118762"], "preview 0.0844565, -0.118761\n", True, True),
    (["preview 0.0844564"], "preview 0.0844566\n", True, False),
    (["46:0.1683  23:0.1113"], "46:0.1684  23:0.1113\n", True, True),
    (["46:0.1683  23:0.1113"], "47:0.1683  23:0.1113\n", True, False),
    (["46:0.1683"], "46:0.1684\n", False, False),
    (["output shape  [2, 5, 64]"], "output shape  [2, 5, 65]\n", True, False),
])
def test_matching_rules(expected, actual, numbers, ok):
    assert shows(expected, timeless(actual), numbers) is ok


def test_steps_parsed_from_any_section():
    text = ("# A\n\n```\n$ tietool inspect x; echo $?\nError: x\n2\n```\n\n## B\n\n```python\nprint(1)\n```\n"
            "```console\n$ tietool check y\n...\n```\n")
    steps = readme_steps(text)
    assert [(s.kind, s.command, s.expected) for s in steps] == [
        ("console", "tietool inspect x; echo $?", ["Error: x", "2"]), ("python", "", []),
        ("console", "tietool check y", ["..."])]
    assert steps[0].where == "README.md:4 (A)" and steps[1].code == "print(1)\n"


def test_python_blocks_that_need_transformers_5_are_recognised():
    assert [s.needs_transformers5 for s in STEPS if s.kind == "python"].count(True) >= 1
