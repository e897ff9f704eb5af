"""SIGINT, SIGTERM and SIGHUP: a stop within :data:`STOP_SECONDS`, temporaries removed.

:func:`install` (called by ``tietool.cli.commands.main``, never at import) makes each
of these signals raise :class:`Interrupted`, a ``KeyboardInterrupt``, in the
main thread, so that the code unwinding the stack (``atomic_output``) removes
a temporary output and leaves any previous output as it was. Once one arrived,
the others are ignored: the clean-up is not cut short. The CLI exits with
128 + the signal number (130, 143, 129), as a shell reports a process killed
by it (:func:`tietool.cli.exits.exit_code_for`).

Bounded, whatever the process is doing when the signal comes:

* :func:`held` sections (the renames that commit an output) defer the
  signal to their end, whichever thread the kernel delivered it to (a
  signal mask alone holds off only the thread that set it).
* Helper threads block these signals (:func:`block_in_this_thread`, their
  first call), so the kernel delivers them to the main thread, whose waits
  (joins, locks) the signal then interrupts; the waits on helper threads poll
  with a timeout as well, for threads that libraries start (BLAS).
* The handler starts a watchdog thread that, if the process is still alive
  :data:`STOP_SECONDS` later (an interrupt swallowed, a wait that never
  ends, a thread that does not stop), removes every registered temporary
  (:func:`register`), prints the one line and ends the process with the
  signal's status (``os._exit``: nothing waits on a thread, a lock or an
  fsync). It waits for a :func:`held` section to end first. What it cannot
  bound: a single system call of the main thread that does not return
  (the handler runs after it), e.g. an ``fsync`` of a very slow disk; the
  copies are made in steps of at most 64 MB for that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from typing import Callable, Iterator

NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
SIGNALS = tuple(getattr(signal, n) for n in NAMES if hasattr(signal, n))
#: From the signal's arrival to the end of the process, at most (the issue's bound is 5 s).
STOP_SECONDS = 3.5
#: How often a wait on a helper thread wakes to let a signal be handled.
POLL_SECONDS = 0.1

_lock = threading.Lock()
_temporaries: set[str] = set()
_held = 0
_pending: int | None = None
_reported = False
_installed = False
_in_place: list[str] = []
_stopping = False
_status: Callable[[BaseException], int] = lambda exc: 1  # noqa: E731  # set by install(): the CLI's table


class Interrupted(KeyboardInterrupt):
    """A signal asked tietool to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.committed: str | None = None  # an output that was complete and in place when it arrived


def note_in_place(path: str) -> None:
    """An output of this command is complete and in place (a later stop says so)."""
    _in_place.append(path)


def forget_outputs() -> None:
    """A new command starts (in-process callers run several)."""
    _in_place.clear()


def stop_line(name: str, committed: str | None) -> str:
    """The one line a stopped command prints (the CLI, or the watchdog):
    ``committed``, or the last output this command put in place, was
    written in full; else nothing was."""
    global _reported
    _reported = True
    committed = committed or (_in_place[-1] if _in_place else None)
    tail = f"after {committed} was written in full" if committed else "nothing written"
    return f"Error: interrupted by {name}: {tail}"


# -- temporaries the watchdog removes ------------------------------------------------------------

def register(path: str) -> None:
    """``path`` (a file or folder) is a temporary of this process until :func:`unregister`."""
    with _lock:
        _temporaries.add(os.path.abspath(path))


def unregister(path: str) -> None:
    with _lock:
        _temporaries.discard(os.path.abspath(path))


def _remove_registered() -> None:
    with _lock:
        paths = sorted(_temporaries, key=len, reverse=True)
    for p in paths:
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)


# -- held sections ---------------------------------------------------------------------------------

@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP off for the duration: one that arrives
    meanwhile raises :class:`Interrupted` at the end (after the body)."""
    global _held, _pending
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS) if _can_mask() else None
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if not _held and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


def _can_mask() -> bool:
    return hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()


def block_in_this_thread() -> None:
    """Called first in a helper thread: the signals go to the main thread."""
    if hasattr(signal, "pthread_sigmask"):
        with contextlib.suppress(OSError, ValueError):
            signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def join(thread: threading.Thread, timeout: float | None = None) -> None:
    """``thread.join(timeout)`` that lets a signal be handled meanwhile
    (woken every :data:`POLL_SECONDS`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while thread.is_alive():
        left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
        if left <= 0:
            return
        thread.join(left)


# -- the handler and the watchdog ---------------------------------------------------------------------

def stopping() -> bool:
    """Whether a signal asked this process to stop."""
    return _stopping


def _raise(signum: int, frame: object) -> None:
    global _pending, _stopping
    _stopping = True
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _start_watchdog(signum)
    if _held:
        _pending = signum
        return
    raise Interrupted(signum)


def _start_watchdog(signum: int) -> None:
    """The deadline: a daemon thread started when the signal is handled (not
    before: a thread started before numpy is imported makes OpenBLAS fail
    under an address-space limit), with a small stack."""
    old = threading.stack_size(256 * 1024)
    try:
        threading.Thread(target=_watch, args=(signum,), name="tietool-watchdog", daemon=True).start()
    except (RuntimeError, MemoryError, ValueError):  # no thread to be had: the orderly stop alone
        pass
    finally:
        threading.stack_size(old)


def _watch(signum: int) -> None:
    block_in_this_thread()
    time.sleep(STOP_SECONDS)
    while _held:  # an output being put in place: its renames are never cut in half
        time.sleep(0.01)
    _remove_registered()
    if not _reported:
        with contextlib.suppress(OSError):
            os.write(2, (stop_line(signal.Signals(signum).name, None) + "\n").encode())
    os._exit(_status(Interrupted(signum)))


def install(status: Callable[[BaseException], int]) -> None:
    """Install the handlers (the main thread only; once). ``status``: the
    CLI's exit status for an error (the watchdog's, for :class:`Interrupted`)."""
    global _installed, _status
    if _installed:
        return
    _installed, _status = True, status
    for s in SIGNALS:
        signal.signal(s, _raise)
