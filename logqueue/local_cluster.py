"""Run N ``logqueue node`` processes on loopback: free ports, each node's argv, start/wait/stop.

One place for what ``logqueue cluster up``, ``python -m logqueue.bench``, the experiments
and the tests all do::

    with LocalCluster(3, fsync="batch") as cluster:   # a temporary directory, removed after
        cluster.wait_leader(30.0)
        use(cluster.spec)                            # "127.0.0.1:p1,127.0.0.1:p2,..."

Node *i* (ids 1..N) keeps its data in ``ROOT/node-<i>`` and, unless told otherwise, writes
its output to ``ROOT/node-<i>.log``. The nodes die with the process that started them,
even when it is SIGKILLed (``logqueue.lifetime``). Stopping sends SIGTERM, waits up to ``grace_s`` and
then SIGKILLs what is left; a node paused with SIGSTOP is continued first, so it can die.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from logqueue.lifetime import child_env


def free_ports(n: int) -> list[int]:
    """``n`` currently free loopback ports (bound together, so they are distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def peer_spec(addresses: Mapping[int, str]) -> str:
    """``--peers`` value for these nodes: ``"1=h:p,2=h:p,..."``."""
    return ",".join(f"{i}={a}" for i, a in addresses.items())


def node_argv(node_id: int, listen: str, peers: str | Mapping[int, str], data_dir: str | os.PathLike, *,
              fsync: str | None = None, election_timeout_ms: tuple[int, int] | None = None,
              heartbeat_ms: int | None = None, tick_ms: int | None = None, log_level: str | None = None,
              extra_args: Sequence[str] = ()) -> list[str]:
    """The command line of one ``python -m logqueue node``; an option left ``None`` is the node's default."""
    if not isinstance(peers, str):
        peers = peer_spec(peers)
    argv = [sys.executable, "-m", "logqueue", "node", "--id", str(node_id), "--listen", listen,
            "--peers", peers, "--data-dir", str(data_dir)]
    if fsync is not None:
        argv += ["--fsync", fsync]
    if election_timeout_ms is not None:
        low, high = election_timeout_ms
        argv += ["--election-timeout-ms", f"{low}-{high}"]
    if heartbeat_ms is not None:
        argv += ["--heartbeat-ms", str(heartbeat_ms)]
    if tick_ms is not None:
        argv += ["--tick-ms", str(tick_ms)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    return argv + list(extra_args)


class LocalCluster:
    """Node processes with ids ``1..nodes`` on loopback; every process it starts is stopped by ``close``.

    ``root``: where the nodes' data goes (default: a temporary directory, removed by
    ``close``). ``ports``: the ports to listen on (default: free ones), ``nodes + spare``
    of them; the ``spare`` ids (``nodes+1..``) have an address but are not members, for a
    node added later with ``start(i, join=True)``. ``peers``: each node's ``--peers``
    value (default: every member's real address; the experiments put proxies in between).
    ``logs``: the directory for ``node-<i>.log`` (default ``root``), or ``False`` for the
    nodes to write to this process's stdout and stderr. ``own_session``: run each node in
    its own session, so a Ctrl-C at the terminal reaches only this process. Further
    keyword arguments (``fsync``, ``election_timeout_ms``, ``heartbeat_ms``, ``tick_ms``,
    ``log_level``, ``extra_args``) go to :func:`node_argv`.
    """

    def __init__(self, nodes: int = 3, root: str | os.PathLike | None = None, *, spare: int = 0,
                 ports: Sequence[int] | None = None, peers: Mapping[int, str] | None = None,
                 logs: str | os.PathLike | bool = True, own_session: bool = False,
                 prefix: str = "logqueue-cluster-", **options) -> None:
        ports = list(ports) if ports is not None else free_ports(nodes + spare)
        if len(ports) != nodes + spare:
            raise ValueError(f"{nodes + spare} ports needed, {len(ports)} given")
        self._temporary = root is None
        self.root = Path(tempfile.mkdtemp(prefix=prefix) if root is None else root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.addresses = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        self.members = list(range(1, nodes + 1))
        members = peer_spec({i: self.addresses[i] for i in self.members})
        self.peers = dict(peers) if peers is not None else dict.fromkeys(self.addresses, members)
        self.log_dir = None if logs is False else self.root if logs is True else Path(logs)
        self.own_session = own_session
        self.options = options
        self.procs: dict[int, subprocess.Popen] = {}

    def __enter__(self) -> "LocalCluster":
        return self.start_all()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def spec(self) -> str:
        """The members' addresses, ``"h:p,h:p,..."``: what a ``Client`` takes."""
        return ",".join(self.addresses[i] for i in self.members)

    @property
    def pids(self) -> dict[int, int]:
        return {i: p.pid for i, p in self.procs.items()}

    def data_dir(self, i: int) -> Path:
        return self.root / f"node-{i}"

    def log_path(self, i: int) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"node-{i}.log"

    def argv(self, i: int, join: bool = False) -> list[str]:
        argv = node_argv(i, self.addresses[i], self.peers[i], self.data_dir(i), **self.options)
        return argv + (["--join"] if join else [])

    # --- processes -------------------------------------------------------------------------

    def start(self, i: int, join: bool = False) -> int:
        """Start node ``i`` (again, on the same data); returns its PID."""
        log = self.log_path(i)
        if log is None:
            self.procs[i] = subprocess.Popen(self.argv(i, join), env=child_env(), start_new_session=self.own_session)
        else:
            with open(log, "ab") as out:
                self.procs[i] = subprocess.Popen(self.argv(i, join), stdout=out, stderr=subprocess.STDOUT,
                                                 env=child_env(), start_new_session=self.own_session)
        return self.procs[i].pid

    def start_all(self) -> "LocalCluster":
        for i in self.members:
            self.start(i)
        return self

    def alive(self, i: int) -> bool:
        return i in self.procs and self.procs[i].poll() is None

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``i``; for SIGKILL and SIGTERM, wait (up to 10 s) for it to exit."""
        p = self.procs[i]
        p.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.wait(10)

    def restart(self, i: int) -> int:
        """SIGKILL node ``i`` if it runs, then start it again on its data; returns the new PID."""
        if self.alive(i):
            self.kill(i)
        return self.start(i)

    def wait_leader(self, timeout_s: float) -> dict:
        """The leader's status, once the members have elected one (``ClientError`` after ``timeout_s``)."""
        from logqueue.client import Client

        with Client(self.spec, timeout=timeout_s) as client:
            return client.status()  # the leader's: waits for the first election

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every running node, wait up to ``grace_s`` in all, then SIGKILL the rest (0: SIGKILL at once)."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGCONT)  # a paused node would not act on SIGTERM
            if grace_s > 0:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in live:
            if grace_s > 0:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                    continue
                except subprocess.TimeoutExpired:
                    pass
            p.kill()
            p.wait()

    def close(self, grace_s: float = 10.0) -> None:
        """``stop``, and remove the data when the directory was a temporary one."""
        self.stop(grace_s)
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
