"""Writing an output so that nothing of the user's is ever lost.

* :func:`check_output` refuses, before any work, an output path that is a
  source file or holds one (symlinks, ``..`` and hard links resolved), a
  single-file output onto a folder, a folder output onto a file, and a
  ``force`` that would remove files tietool does not write (an existing
  output folder is replaced only when every entry in it is something a
  checkpoint folder holds or this run writes).
* :func:`atomic_output` writes into a temporary beside the target whose name
  carries the writer's process id (``.NAME.tietool-tmp-PID-XXXX``), removes
  temporaries left by processes that no longer exist (a SIGKILL, a power cut;
  logged as a warning on the ``tietool`` logger, which the CLI shows on
  stderr), fsyncs every written file and the folder, and renames into place
  with SIGINT/SIGTERM/SIGHUP held off, so the target is always either the
  previous output or the complete new one. On any error or interrupt the
  temporary is removed; a write error (disk full, quota, read-only file
  system, permission denied) becomes one :class:`~tietool.errors.UsageError`
  naming the output and the cause in plain words.
* A source that changes while it is read: :mod:`tietool.io.sourceguard`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import sys
from typing import Iterable, Iterator

from tietool.errors import CorruptCheckpointError, OutputError, OutputExistsError, TietoolError, UsageError
from tietool.io import signals
from tietool.io.sourceguard import CHANGED, SourceChanged, SourceGuard
from tietool.textsafe import printable

TMP_MARK = ".tietool-tmp-"
OLD_MARK = ".tietool-old-"  # a previous output folder moved aside while the new one is put in place
_TMP_RE = re.compile(r"^\.(.+)(" + re.escape(TMP_MARK) + "|" + re.escape(OLD_MARK) + r")(\d+)-[0-9a-f]+$")
#: errno values that mean "this output cannot be written", in plain words.
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "file name too long",
}

#: What a checkpoint folder holds (besides what this run writes): an existing
#: output folder holding only such files may be replaced with ``force``.
CHECKPOINT_SUFFIXES = (".safetensors", ".h5", ".hdf5", ".keras", ".weights.json", ".index.json", ".msgpack")
CHECKPOINT_NAMES = frozenset({
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "tokenizer.model",
    "sentencepiece.bpe.model", "preprocessor_config.json", "chat_template.json", "chat_template.jinja",
    "metadata.json", "pytorch_model.bin",
})

log = logging.getLogger("tietool")


def write_error(exc: OSError, target: str) -> OutputError | None:
    """The one-line error for an OSError met while writing ``target``, or
    None when it is not a write failure."""
    words = WRITE_ERRNOS.get(exc.errno or 0)
    if words is None:
        return None
    return OutputError(f"cannot write ({words})", target, exc.errno)


def read_error(exc: OSError, path: str) -> CorruptCheckpointError:
    words = WRITE_ERRNOS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
    return CorruptCheckpointError(f"cannot read ({words})", path)


# -- before the work: is this output path safe? ------------------------------------------

def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output(target: str, sources: Iterable[str], *, folder: bool, force: bool,
                 writes: Iterable[str] = ()) -> str:
    """Refuse ``target`` unless writing it (and, with ``force``, replacing
    what is there) cannot touch any of ``sources`` (every file and folder
    read) nor anything tietool does not write. ``writes``: the names this
    run puts in an output folder. Returns the absolute target."""
    shown = os.fspath(target)  # errors name the path as the user gave it
    if not folder and shown.endswith(tuple(s for s in (os.sep, os.altsep, "/") if s)):
        raise UsageError("ends in a path separator, which names a folder, but this output is one file: "
                         "give a file path (nothing written)", shown)
    target = os.path.abspath(shown)
    remove_stale(os.path.dirname(target))  # first: it may put a previous output back in place
    real = os.path.realpath(target)
    inodes: dict[tuple[int, int], str] = {}
    for s in sources:
        s = os.fspath(s)
        rs = os.path.realpath(s)
        if rs == real:
            what = "" if os.path.abspath(s) == target else f" {s}"
            raise UsageError(f"output would overwrite the source{what}: refused (nothing written)", shown)
        if rs.startswith(real.rstrip(os.sep) + os.sep):
            raise UsageError(f"output folder holds the source {s}: refused (nothing written)", shown)
        ino = _inode(s)
        if ino is not None:
            inodes.setdefault(ino, s)
    if not os.path.lexists(target):
        return target
    same = inodes.get(_inode(target) or (-1, -1))
    if same is not None:
        raise UsageError(f"output would overwrite the source {same} (the same file): refused (nothing written)", shown)
    if not force:
        raise OutputExistsError("output exists (use --force to overwrite)", shown)
    if os.path.islink(target):
        return target  # --force replaces the link itself, never what it points to
    if os.path.isdir(target):
        if not folder:
            raise UsageError("is a folder and this output is one file: give a file path (nothing written)", shown)
        writes = set(writes)
        try:
            names = sorted(os.listdir(target))
        except OSError as exc:
            raise write_error(exc, shown) or UsageError(f"cannot list ({exc.strerror})", shown) from None
        for n in names:
            p = os.path.join(target, n)
            ino = _inode(p)
            if ino in inodes:
                raise UsageError(f"output folder holds the source {inodes[ino]} (as {n}): refused (nothing written)",
                                 shown)
            if os.path.isdir(p) or os.path.islink(p) or not _checkpoint_file(n, writes):
                raise UsageError(f"--force replaces only checkpoint files, and this folder holds {n}: "
                                 "remove it or choose another output (nothing written)", shown)
    elif folder:
        raise UsageError("is a file and this output is a folder: remove it or choose another output "
                         "(nothing written)", shown)
    return target


def _checkpoint_file(name: str, writes: set[str]) -> bool:
    return (name in writes or name in CHECKPOINT_NAMES or name.endswith(CHECKPOINT_SUFFIXES)
            or _TMP_RE.match(name) is not None)


# -- stale temporaries --------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale(folder: str) -> list[str]:
    """Remove tietool temporaries in ``folder`` whose writing process no
    longer exists; return their paths."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for n in names:
        m = _TMP_RE.match(n)
        if m is None:
            continue
        pid = int(m.group(3))
        if pid == os.getpid() or _alive(pid):
            continue
        p = os.path.join(folder, n)
        if m.group(2) == OLD_MARK:
            home = os.path.join(folder, m.group(1))
            if not os.path.lexists(home):
                # the writer was killed between moving the previous output aside and putting the new one in place
                try:
                    os.rename(p, home)
                except OSError:
                    continue
                log.warning("tietool: put back %s (moved aside by process %d, which no longer exists)",
                            printable(home), pid)
                continue
        _remove(p)
        if not os.path.lexists(p):
            removed.append(p)
            log.warning("tietool: removed stale temporary %s (its process %d no longer exists)", printable(p), pid)
    return removed


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):  # a folder of ours whose write permission was taken: give it back
                for dirpath, _, _ in os.walk(path):
                    os.chmod(dirpath, 0o700)
                shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


# -- durability ------------------------------------------------------------------------------

def fsync_path(path: str) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """fsync every file under ``path`` (or the file), then the folders."""
    if os.path.isdir(path):
        for dirpath, _, filenames in os.walk(path):
            for n in filenames:
                fsync_path(os.path.join(dirpath, n))
            fsync_path(dirpath)
    else:
        fsync_path(path)


# -- the atomic write -------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_name(parent: str, base: str, mark: str = TMP_MARK) -> str:
    return os.path.join(parent, f".{base}{mark}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def temporary_beside(path: str) -> Iterator[str]:
    """A name for a writer's own intermediate file beside ``path`` (itself
    a temporary), removed on the way out: marked with this process's id, so
    that a run that finds it after this process died removes it
    (:func:`remove_stale`), and registered with the signal watchdog."""
    tmp = f"{path}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    signals.register(tmp)
    try:
        yield tmp
    finally:
        with signals.held():
            _remove(tmp)
        signals.unregister(tmp)


@contextlib.contextmanager
def atomic_output(target: str, *, folder: bool, force: bool, sources: Iterable[str] = (),
                  writes: Iterable[str] = (), fsync: bool = True,
                  guard: SourceGuard | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``target``; when the body returns, fsync
    it and rename it to ``target``. ``guard``: the sources as they were when
    the command started reading them (:class:`~tietool.io.sourceguard.SourceGuard`;
    default: as they are now): one that changed before the output is in place
    is an error, and nothing is written; an error met while a source changed
    is reported as that change. ``force`` allows replacing an existing
    target (see :func:`check_output`, applied here with ``sources`` and
    ``writes``). ``fsync=False`` (``--no-fsync``) leaves writing the data to
    disk to the kernel, as ``cp`` does: the output still appears whole or not
    at all while the system runs, but a crash or power cut before the kernel
    has written it back (seconds to ~30 s) can leave it missing, empty or
    truncated, and a replaced previous output lost."""
    shown = os.fspath(target)
    sources = [os.fspath(s) for s in sources]
    target = check_output(target, sources, folder=folder, force=force, writes=writes)
    guard = guard if guard is not None else SourceGuard()
    guard.add(sources)
    parent = os.path.dirname(target)
    base = os.path.basename(target)
    if not os.path.isdir(parent):
        raise UsageError("cannot write: its folder does not exist or is not a folder", shown)
    tmp = _tmp_name(parent, base)
    committed = False
    signals.register(tmp)  # removed by the signal watchdog if the orderly stop is late
    try:
        try:
            if folder:
                os.mkdir(tmp, 0o700)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise (write_error(exc, shown) or UsageError(f"cannot write ({exc.strerror})", shown)) from None
        yield tmp
        guard.check()
        if os.path.lexists(target) and not force:
            raise OutputExistsError("output appeared while converting; not overwritten (use --force)", shown)
        os.chmod(tmp, (0o755 if folder else 0o644) & ~_umask())
        if fsync:
            fsync_tree(tmp)
        with signals.held():
            committed = _commit(tmp, target, parent, base, fsync)
            signals.note_in_place(target)
    except BaseException as exc:
        if committed and isinstance(exc, KeyboardInterrupt):
            exc.committed = target  # type: ignore[attr-defined]  # a signal held off until the output was in place
            raise
        with signals.held():  # a second signal does not cut the clean-up short
            _remove(tmp)
        err = _as_the_user_sees_it(exc, guard, tmp, target, shown)
        if err is not exc:
            raise err from None
        raise
    finally:
        signals.unregister(tmp)


def _as_the_user_sees_it(exc: BaseException, guard: SourceGuard, tmp: str, target: str, shown: str) -> BaseException:
    """The error to report for ``exc``, met while writing ``tmp`` (the
    temporary of ``target``, which the user named ``shown``): a source that
    changed meanwhile, a write failure in plain words, or ``exc`` naming
    what the user named."""
    if isinstance(exc, Exception) and not isinstance(exc, SourceChanged):
        changed = guard.changed()
        if changed is not None:  # what went wrong went wrong because a source changed: say that
            return SourceChanged(CHANGED, changed)
    if isinstance(exc, OSError) and not hasattr(exc, "message") and _about_output(exc, tmp, target):
        err = write_error(exc, shown)
        if err is not None:
            return err
    if isinstance(exc, Exception):
        name_for_user(exc, {tmp: shown})
    return exc


def name_for_user(exc: BaseException, names: dict[str, str]) -> None:
    """Make ``exc`` name what the user named: each key of ``names`` (an
    internal temporary, or a file's name within an output) found as the
    error's path, file name or in its message becomes its value (the
    user's ``-o``, or the file under it). A temporary's own temporaries
    (``TMP.tietool-tmp-weights.h5``) are the same output. Changed in place."""
    if not names:
        return
    keys = sorted(names, key=len, reverse=True)
    pattern = re.compile("|".join(f"{re.escape(k)}(?:{re.escape(TMP_MARK)}[^'\"\\s,;)]*)?" for k in keys))

    def user(text):
        if not isinstance(text, str):
            return text
        if text in names:
            return names[text]
        return pattern.sub(lambda m: names[next(k for k in keys if m.group(0).startswith(k))], text)

    if isinstance(exc, TietoolError):
        exc.path = user(exc.path)
        exc.message = user(exc.message)
        exc.args = (exc.message,)
    if isinstance(exc, OSError):
        if isinstance(exc, TietoolError):
            exc.filename = exc.path
            exc.strerror = exc.message
        else:
            exc.filename, exc.filename2 = user(exc.filename), user(exc.filename2)
    elif not isinstance(exc, TietoolError):  # another library's error quoting the temporary (h5py: "name = '...'")
        exc.args = tuple(user(a) for a in exc.args)


def _about_output(exc: OSError, tmp: str, target: str) -> bool:
    """Whether an OSError is about the output (not a source file read)."""
    names = [f for f in (exc.filename, exc.filename2) if f]
    if not names:
        return True
    return any(os.path.abspath(os.fspath(f)).startswith((tmp, target)) for f in names)


def _commit(tmp: str, target: str, parent: str, base: str, fsync: bool = True) -> bool:
    """Put ``tmp`` in place of ``target``. A folder replaces a folder in one
    atomic exchange (``renameat2(RENAME_EXCHANGE)``) where the system has it;
    elsewhere the old folder is renamed aside first, and a run that finds it
    aside with no output in its place (the writer killed in between) puts it
    back (:func:`remove_stale`)."""
    old = None
    if os.path.isdir(target) and not os.path.islink(target):
        if _exchange(tmp, target):
            if fsync:
                fsync_path(parent)
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous output
            return True
        old = _tmp_name(parent, base, OLD_MARK)
        os.rename(target, old)
    elif os.path.isdir(tmp) and os.path.lexists(target):
        os.unlink(target)  # a symlink (check_output refused a plain file)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if fsync:
        fsync_path(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return True


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the
    system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, ImportError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), b)


def copy_side_file(src: str, dst: str) -> None:
    """Copy a source folder's non-weight file; a read failure names ``src``
    (a write failure is the output's, raised as the OSError it is)."""
    try:
        fsrc = open(src, "rb")  # noqa: SIM115
    except OSError as exc:
        raise read_error(exc, src) from None
    with fsrc, open(dst, "wb") as fdst:
        while True:
            try:
                block = fsrc.read(1 << 20)
            except OSError as exc:
                raise read_error(exc, src) from None
            if not block:
                break
            fdst.write(block)
