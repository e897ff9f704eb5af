"""CLI behaviour that depends on the environment: progress on a terminal, and
`run` without TensorFlow."""

import os
import pty
import re
import subprocess
import sys

from helpers import fixture, invoke


def _run_with_tty_stderr(args, cwd):
    """Run tietool with stderr on a pseudo-terminal; return (code, stdout, stderr)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tietool", *map(str, args)], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read()
        proc.wait(timeout=120)
        return proc.returncode, out, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def _final_bars(err: str) -> list[str]:
    """The last drawing of each progress bar (Click redraws a line with \\r)."""
    lines = [chunk.split("\r")[-1] for chunk in err.replace("\x1b[?25l", "").replace("\x1b[?25h", "").split("\r\n")]
    return [line.rstrip() for line in lines if line.strip()]


BAR = r"\[#{{24}}\]  100%  {size} of {size}, [\d.]+ (KB|MB|GB)/s"


def test_convert_progress_on_a_terminal_and_quiet(tmp_path):
    code, out, err = _run_with_tty_stderr(
        ["convert", fixture("tf/bert_mlm/tf_model.h5"), "--to", "safetensors", "-o", tmp_path / "a.safetensors"],
        tmp_path)
    assert code == 0, err
    bars = _final_bars(err)  # through Click's progressbar: bytes done of the total and the rate
    assert len(bars) == 2, bars
    assert re.fullmatch("write    " + BAR.format(size=r"16\.8 KB"), bars[0]), bars
    assert re.fullmatch("verify   " + BAR.format(size=r"16\.8 KB"), bars[1]), bars
    assert "%" not in out and "\r" not in out
    code, out, err = _run_with_tty_stderr(
        ["convert", fixture("tf/bert_mlm/tf_model.h5"), "--to", "safetensors", "-o", tmp_path / "b.safetensors",
         "--quiet"], tmp_path)
    assert code == 0 and err == ""


def test_verify_tie_progress_on_a_terminal_and_quiet(tmp_path):
    code, out, err = _run_with_tty_stderr(["verify-tie", fixture("tf/t5")], tmp_path)
    assert code == 0, err
    bars = _final_bars(err)
    assert len(bars) == 1 and re.fullmatch("compare  " + BAR.format(size=r"12\.3 KB"), bars[0]), bars
    assert out.endswith("\nTIED\n")
    code, out, err = _run_with_tty_stderr(["verify-tie", fixture("tf/t5"), "--quiet"], tmp_path)
    assert code == 0 and err == ""


def test_progress_shows_rate_and_time_left():
    """ByteProgress with a clock we drive: 100 MB written at 25 MB/s."""
    import io
    import time
    from unittest import mock

    from tietool.cli.progress import ByteProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    now = [1000.0]
    screen = Terminal()
    with mock.patch.object(time, "time", lambda: now[0]):  # Click's clock, for its time left
        bar = ByteProgress(file=screen, clock=lambda: now[0])
        for i in range(1, 6):
            now[0] += 0.4
            bar("write", i * 10_000_000, 100_000_000)
        bar.close()  # stopped half way (an error): the bar stays where it was
    drawn = [line.rstrip() for line in screen.getvalue().replace("\x1b[?25l", "").replace("\x1b[?25h", "").split("\r")]
    assert drawn[1:] == [
        "write    [------------------------]    0%  0.0 KB of 100.0 MB, 0.0 KB/s",
        "write    [##----------------------]   10%  10.0 MB of 100.0 MB, 25.0 MB/s",
        "write    [####--------------------]   20%  20.0 MB of 100.0 MB, 25.0 MB/s",
        "write    [#######-----------------]   30%  30.0 MB of 100.0 MB, 25.0 MB/s",
        "write    [#########---------------]   40%  00:00:01  40.0 MB of 100.0 MB, 25.0 MB/s",
        "write    [############------------]   50%  00:00:01  50.0 MB of 100.0 MB, 25.0 MB/s",
    ]


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    # in-process: CliRunner's stderr is not a terminal
    r = invoke("convert", fixture("tf/bert_mlm/tf_model.h5"), "--to", "safetensors", "-o", tmp_path / "c.safetensors")
    assert r.exit_code == 0 and r.stderr == ""
    r = invoke("verify-tie", fixture("tf/t5"))
    assert r.exit_code == 0 and r.stderr == ""


def test_run_without_tensorflow_says_how_to_install():
    """As on a machine without the `tf` extra: importing keras/tensorflow fails."""
    code = (
        "import sys; sys.modules['keras'] = None; sys.modules['tensorflow'] = None\n"
        "from tietool.cli.commands import main\n"
        f"sys.argv = ['tietool', 'run', {str(fixture('tf/gpt2'))!r}, '--mode', 'embedding', '--ids', '1,2']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "pip install" in lines[0] and "tf" in lines[0]


def test_run_says_tensorflow_is_loading_on_a_terminal(tmp_path):
    """`run` spends seconds importing TensorFlow: on a terminal, one line on
    stderr says so (after the inputs are checked); not with --quiet, not
    when stderr is not a terminal."""
    import pytest

    pytest.importorskip("tensorflow")
    args = ["run", fixture("tf/gpt2"), "--mode", "embedding", "--ids", "1,2"]
    code, out, err = _run_with_tty_stderr(args, tmp_path)
    assert code == 0, err
    assert [line for line in err.splitlines() if line.strip()] == ["loading TensorFlow (a few seconds) ..."]
    assert "loading" not in out
    code, out, err = _run_with_tty_stderr([*args, "--quiet"], tmp_path)
    assert code == 0 and err == ""
    code, out, err = _run_with_tty_stderr(["run", fixture("tf/gpt2"), "--mode", "embedding", "--ids", "999"], tmp_path)
    assert code == 2 and "loading" not in err  # a bad input is refused before TensorFlow is loaded
    r = invoke(*args)  # stderr not a terminal
    assert r.exit_code == 0 and r.stderr == ""

