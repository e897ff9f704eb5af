"""CLI behaviour that depends on the environment: progress on a terminal, and
`run` without TensorFlow."""

import os
import pty
import subprocess
import sys

from conftest import fixture


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


def test_convert_progress_on_a_terminal_and_quiet(tmp_path):
    code, out, err = _run_with_tty_stderr(
        ["convert", fixture("tf/bert_mlm/tf_model.h5"), "--to", "safetensors", "-o", tmp_path / "a.safetensors"], tmp_path)
    assert code == 0, err
    assert "%" in err and "MB" in err  # progress went to the terminal
    assert "%" not in out
    code, out, err = _run_with_tty_stderr(
        ["convert", fixture("tf/bert_mlm/tf_model.h5"), "--to", "safetensors", "-o", tmp_path / "b.safetensors",
         "--quiet"], tmp_path)
    assert code == 0 and "%" not in err


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tietool", "convert", str(fixture("tf/bert_mlm/tf_model.h5")),
                        "--to", "safetensors", "-o", str(tmp_path / "c.safetensors")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == ""


def test_run_without_tensorflow_says_how_to_install():
    """As on a machine without the `tf` extra: importing keras/tensorflow fails."""
    code = (
        "import sys; sys.modules['keras'] = None; sys.modules['tensorflow'] = None\n"
        "from tietool.cli import main\n"
        f"sys.argv = ['tietool', 'run', {str(fixture('tf/gpt2'))!r}, '--mode', 'embedding', '--ids', '1,2']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "pip install" in lines[0] and "tf" in lines[0]
