"""The byte-range primitives of tietool.io.fastio: copy and compare across block
boundaries, every flipped byte detected, short reads and short files."""

from __future__ import annotations

import os
import threading

import pytest

from tietool.errors import CorruptCheckpointError
from tietool.io import fastio, rawio

from helpers import Calls

SIZE = 3 * 4096 + 123  # not a multiple of any block size used below
DATA = bytes((i * 131 + 7) % 251 for i in range(SIZE))


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "src.bin"
    p.write_bytes(DATA)
    fd = os.open(p, os.O_RDONLY)
    yield fd
    os.close(fd)


def _out(tmp_path, name="out.bin"):
    return os.open(tmp_path / name, os.O_RDWR | os.O_CREAT, 0o600)


def test_equal():
    a = bytearray(DATA)
    assert fastio.equal(a, DATA) and fastio.equal(b"", b"")
    assert not fastio.equal(DATA, DATA[:-1])
    for pos in (0, 1, 7, 8, 4095, 4096, SIZE - 9, SIZE - 1):
        b = bytearray(DATA)
        b[pos] ^= 0x01
        assert not fastio.equal(a, b), pos
        assert not fastio.equal(memoryview(a)[pos:], memoryview(b)[pos:]), pos
        assert fastio.equal(memoryview(a)[:pos], memoryview(b)[:pos]), pos


@pytest.mark.parametrize("buf_size", [1, 7, 4096, 5000, SIZE * 2])
@pytest.mark.parametrize("src_off,dst_off,n", [(0, 0, SIZE), (0, 4096, SIZE), (5, 17, SIZE - 5), (4096 + 3, 3, 4096),
                                               (SIZE - 1, 100, 1), (10, 0, 0)])
def test_copy_range(tmp_path, src, buf_size, src_off, dst_off, n):
    out = _out(tmp_path)
    try:
        os.pwrite(out, b"\xee" * (dst_off + n + 10), 0)
        calls = []
        fastio.copy_range(src, src_off, out, dst_off, n, memoryview(bytearray(buf_size)), "src", calls.append)
        got = os.pread(out, dst_off + n + 10, 0)
    finally:
        os.close(out)
    assert got[dst_off:dst_off + n] == DATA[src_off:src_off + n]
    assert got[:dst_off] == b"\xee" * dst_off and got[dst_off + n:] == b"\xee" * 10
    assert sum(calls) == n


def test_copy_range_short_source(tmp_path, src):
    out = _out(tmp_path)
    try:
        with pytest.raises(CorruptCheckpointError, match="unexpected end of file"):
            fastio.copy_range(src, 100, out, 3, SIZE, memoryview(bytearray(64)), "src")
        with pytest.raises(CorruptCheckpointError, match="unexpected end of file"):
            fastio.copy_range(src, 4096, out, 0, SIZE, memoryview(bytearray(64)), "src")  # aligned path
    finally:
        os.close(out)


def test_copy_range_without_copy_file_range(tmp_path, src, monkeypatch):
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    out = _out(tmp_path)
    try:
        fastio.copy_range(src, 0, out, 0, SIZE, memoryview(bytearray(1000)), "src")
        assert os.pread(out, SIZE, 0) == DATA
    finally:
        os.close(out)


@pytest.mark.parametrize("first,block", [(1, 3), (16, 4096), (64 * 1024, 8 * 1024 * 1024)])
def test_same_range(tmp_path, src, first, block):
    bufs = fastio.Buffers(block)
    assert fastio.same_range(src, 0, src, 0, SIZE, bufs, "a", "b", first_block=first)
    p = tmp_path / "shifted.bin"
    p.write_bytes(b"x" * 37 + DATA)
    other = os.open(p, os.O_RDWR)
    try:
        done = []
        assert fastio.same_range(src, 0, other, 37, SIZE, bufs, "a", "b", done.append, first_block=first)
        assert sum(done) == SIZE
        assert fastio.same_range(src, 1000, other, 1037, 200, bufs, "a", "b", first_block=first)
        assert not fastio.same_range(src, 0, other, 36, SIZE, bufs, "a", "b", first_block=first)
        # every position of one flipped byte is found, across the block boundaries
        for pos in sorted({0, 1, 2, 3, 15, 16, 17, 4095, 4096, 8191, 8192, SIZE // 2, SIZE - 2, SIZE - 1}):
            os.pwrite(other, bytes([DATA[pos] ^ 0x80]), 37 + pos)
            assert not fastio.same_range(src, 0, other, 37, SIZE, bufs, "a", "b", first_block=first), pos
            os.pwrite(other, DATA[pos:pos + 1], 37 + pos)
        assert fastio.same_range(src, 0, other, 37, SIZE, bufs, "a", "b", first_block=first)
        with pytest.raises(CorruptCheckpointError, match="unexpected end of file"):
            fastio.same_range(src, 0, other, 37, SIZE + 1, bufs, "a", "b", first_block=first)  # equal up to the end
    finally:
        os.close(other)


def test_same_range_large_blocks_overlapped(tmp_path):
    """Blocks of 1 MB and more read the second side on the helper thread."""
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "a").write_bytes(data)
    flipped = bytearray(data)
    flipped[-2] ^= 1
    (tmp_path / "b").write_bytes(flipped)
    fa, fb = os.open(tmp_path / "a", os.O_RDONLY), os.open(tmp_path / "b", os.O_RDONLY)
    try:
        bufs = fastio.Buffers(2 * 1024 * 1024)
        assert fastio.same_range(fa, 0, fa, 0, len(data), bufs, "a", "a")
        assert fastio.same_range(fa, 0, fb, 0, len(data) - 2, bufs, "a", "b")
        assert not fastio.same_range(fa, 0, fb, 0, len(data), bufs, "a", "b")
    finally:
        os.close(fa)
        os.close(fb)


def test_short_reads(src, monkeypatch):
    """preadv returning fewer bytes than asked is continued, not taken as the end."""
    real = os.preadv

    def dribble(fd, bufs, offset):
        view = memoryview(bufs[0])
        return real(fd, [view[:min(len(view), 5)]], offset)

    monkeypatch.setattr(os, "preadv", dribble)
    view = memoryview(bytearray(100))
    rawio.read_into(src, view, 10, "src")
    assert bytes(view) == DATA[10:110]
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        rawio.read_into(src, memoryview(bytearray(100)), SIZE - 50, "src")


def test_short_writes(tmp_path, monkeypatch):
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, off: real(fd, memoryview(data)[:3], off))
    out = _out(tmp_path)
    try:
        fastio.write_all(out, memoryview(DATA[:100]), 5)
        assert os.pread(out, 105, 0)[5:] == DATA[:100]
    finally:
        os.close(out)


def test_run_concurrently_order_and_errors():
    assert fastio.run_concurrently([lambda check, i=i: (check(), i)[1] for i in range(7)], workers=3) == list(range(7))
    assert fastio.run_concurrently([lambda check: 1], workers=1) == [1]
    assert fastio.run_concurrently([]) == []

    started = threading.Event()
    stopped = []

    def slow(check):
        started.set()
        try:
            for _ in range(2000):
                check()
                threading.Event().wait(0.005)
        except fastio.Stopped:
            stopped.append(True)
            raise
        return "finished"

    def bad(check):
        started.wait(5)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fastio.run_concurrently([slow, bad], workers=2)
    assert stopped == [True]


# -- shards written and verified concurrently: the same files as one at a time ----------------

def _tree(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("source,kwargs", [
    ("tf/gpt2_sharded", {"to": "safetensors", "shard_size": "4KB"}),
    ("tf/gpt2", {"names": "pt", "shard_size": "4KB"}),
    ("tf/bert_mlm", {"names": "pt", "shard_size": "4KB"}),
])
def test_shards_concurrently_same_output(tmp_path, monkeypatch, source, kwargs):
    from tietool.convert import convert

    src = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", source)
    outs = {}
    for cpus in (1, 4):
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        with Calls(run=fastio.run_concurrently) as calls:
            result = convert(src, out=str(tmp_path / f"out{cpus}"), **kwargs)
        assert result.verified
        assert len([f for f in result.files if f.endswith(".safetensors")]) > 2
        assert calls["run"]  # the shards went through run_concurrently (write and verify)
        outs[cpus] = _tree(tmp_path / f"out{cpus}")
    assert outs[1] == outs[4]


def test_shard_failure_stops_and_leaves_nothing(tmp_path, monkeypatch):
    from tietool.convert import convert

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    seen = []

    def failing(phase, done, total):  # the fifth report of bytes written, from any shard's thread
        seen.append(phase)
        if seen.count("write") == 5:
            raise OSError(28, "No space left on device")

    src = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "tf", "gpt2_sharded")
    with pytest.raises(Exception, match="space"):
        convert(src, to="safetensors", out=str(tmp_path / "out"), shard_size="4KB", progress=failing)
    assert os.listdir(tmp_path) == []


def test_writeback_counts_the_whole_file(monkeypatch):
    """Early writeback is per output file: many small writes (tensors under
    WRITEBACK_STEP) start it once their sum passes the step, and finish()
    starts the rest; nothing is started for a file with nothing pending."""
    started = []
    wb = fastio.Writeback(7, start=started.append)
    small = fastio.WRITEBACK_STEP // 8
    for _ in range(7):
        wb.wrote(small)
    assert started == []
    wb.wrote(small)
    assert started == [7]
    wb.wrote(1)
    wb.finish()
    wb.finish()
    assert started == [7, 7]
