"""Node processes that die with the process that launched them, even when it is SIGKILLed.

A launcher runs the child with ``child_env()`` (its own pid in ``LOGQUEUE_PARENT_PID``);
the child calls ``die_with_parent()`` first: Linux's ``PR_SET_PDEATHSIG`` then SIGKILLs
it when the launcher exits, however it exits, and a child whose launcher is already gone
(it died before the child got this far) exits at once. Linux sends the signal when the
launching *thread* ends: launch from a thread that lives as long as the children (every
launcher in this project starts nodes from its main thread). Elsewhere than Linux this
is a no-op.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "LOGQUEUE_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) plus this process as the child's parent to die with."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """When started through ``child_env``: die (SIGKILL) when the launcher does; exit now if it already has."""
    parent = os.environ.pop(PARENT_ENV, None)  # not inherited by this process's own children
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(parent):
        os._exit(1)  # the launcher died before the signal was armed
