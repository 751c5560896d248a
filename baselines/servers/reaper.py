"""The reaper's process (started by :class:`baselines.servers.nodes.Reaper` as a script: it imports
nothing of the project, so it runs whatever the launcher's ``sys.path`` was).

It reads lines from stdin: ``+PGID`` / ``-PGID`` (a process group to kill at the end / not any
more) and ``+net:NAMESPACE,HOSTLINK`` / ``-net:...`` (a network namespace of the run, and the
veth end in the launcher's namespace that leads into it). At end of input -- the launcher closed
the pipe, or died -- it SIGKILLs every group still listed, then removes every namespace still
listed (:func:`remove_namespace`).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


def remove_namespace(namespace: str, host_link: str) -> None:
    """SIGKILL every process in ``namespace`` (epmd daemons included), delete it, and delete
    ``host_link`` (the kernel would only delete it once the namespace is gone, which it does
    asynchronously). Quiet where something is already gone."""
    found = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in found.stdout.split():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
    subprocess.run(["ip", "link", "delete", host_link], capture_output=True)


def main() -> None:
    groups: set[int] = set()
    networks: set[str] = set()
    for line in sys.stdin:
        sign, item = line[0], line[1:].strip()
        listed, value = (networks, item[4:]) if item.startswith("net:") else (groups, int(item))
        (listed.add if sign == "+" else listed.discard)(value)
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    for network in networks:
        remove_namespace(*network.split(","))


if __name__ == "__main__":
    main()
