"""Process faults by PID: SIGKILL, SIGSTOP / SIGCONT, and restart through a re-spawn callback.

A fault names the process by PID, so it works the same on a worker, a Celery worker, a
logqueue node or a broker started by the runner. Every function raises
:class:`ProcessFaultError` (one line) when the PID is gone instead of a bare OSError.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable


class ProcessFaultError(RuntimeError):
    """A process fault could not be applied (e.g. no such process)."""


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise ProcessFaultError(f"cannot send {sig.name} to pid {pid}: no such process") from None
    except PermissionError:
        raise ProcessFaultError(f"cannot send {sig.name} to pid {pid}: permission denied") from None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The state is the field after the parenthesised command name.
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in (b"Z", b"X")


def wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    """Poll until ``pid`` is gone (or a zombie); raises :class:`ProcessFaultError` on timeout."""
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            raise ProcessFaultError(f"pid {pid} still alive after {timeout_s:g}s")
        time.sleep(0.01)


def kill(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL ``pid`` and return once it is gone: a crash, with no chance to clean up."""
    _signal(pid, signal.SIGKILL)
    wait_gone(pid, timeout_s)


def pause(pid: int) -> None:
    """SIGSTOP ``pid``: it keeps its sockets open but runs nothing (a frozen process / GC pause)."""
    _signal(pid, signal.SIGSTOP)


def resume(pid: int) -> None:
    """SIGCONT a paused ``pid``."""
    _signal(pid, signal.SIGCONT)


def restart(pid: int, respawn: Callable[[], int], timeout_s: float = 10.0) -> int:
    """SIGKILL ``pid``, wait for it to go, then call ``respawn()``; returns the new PID.

    ``respawn`` starts the replacement the same way the original was started (same
    data directory, same ports), so a restart shows what survives a crash.
    """
    kill(pid, timeout_s)
    return respawn()
