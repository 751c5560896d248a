"""What every private cluster shares: node processes, a reaper, node faults, timing.

A :class:`PrivateCluster` starts N server processes of one system on free loopback
ports, with every file under its run directory, and never touches the machine's shared
servers. Each node runs in a process group of its own (``start_new_session``), so a
Ctrl-C at the terminal does not reach it and ``stop`` kills the whole group. A
:class:`Reaper` -- a small watchdog process told the group of every node -- SIGKILLs
those groups when its launcher's end of the pipe closes, which is also what happens when
the launcher is SIGKILLed: no broker process outlives the run that started it (nor a
network namespace of the run's, ``baselines.servers.netns``). A start whose node exits
saying its port was taken (``PORT_TAKEN``: another process bound it after ``free_ports``
picked it) starts again on fresh ports, ``START_ATTEMPTS`` times at most.

Node faults are by node name: ``kill`` (SIGKILL, waits until the process is gone),
``restart`` (start again on the same data and ports), ``pause`` / ``resume``
(SIGSTOP / SIGCONT). ``leader()`` asks the system itself which node leads; a node cut off its
peers (``Node.cut_off``, where a cluster can do that) is not asked.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

POLL_S = 0.05
# What a server logs when a port it was to listen on is taken (Redis, NATS, RabbitMQ's AMQP
# listener and its distribution port, Python): between ``free_ports`` picking a port and the
# server binding it, another process may take it. A launcher then starts again on fresh ports,
# at most this many times in all.
PORT_TAKEN = re.compile(rb"address already in use|eaddrinuse|dist_port_already_used", re.IGNORECASE)
START_ATTEMPTS = 3

log = logging.getLogger(__name__)

# The reaper's script (see its docstring): kills the groups and removes the network namespaces it was told of.
_REAPER = str(Path(__file__).with_name("reaper.py"))


class ClusterUnavailable(RuntimeError):
    """A cluster cannot be started here; ``str()`` is one line (e.g. the Debian package to install)."""


class ClusterError(RuntimeError):
    """A started cluster did not do what it should (no leader in time, a node that did not come up)."""


def require_binary(system: str, binary: str, package: str, path: str | None = None) -> str:
    """The path of ``binary`` (or ``path`` when it exists), else ``ClusterUnavailable`` naming ``package``."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(binary)
    if not found:
        raise ClusterUnavailable(f"{system}: {binary} is not installed (install the Debian package: apt-get install {package})")
    return found


def process_state(pid: int) -> bytes:
    """The state letter of ``pid`` in /proc (``R``, ``S``, ``T`` stopped, ``Z``...), ``b""`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b""


def lost_port(log_path: Path, offset: int) -> bool:
    """Whether the server that logs to ``log_path`` said, past ``offset``, that its port was taken."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            return PORT_TAKEN.search(f.read()) is not None
    except OSError:
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = POLL_S):
    """Poll ``condition()`` until it returns something truthy (returned); ``ClusterError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} within {timeout_s:g} s")
        time.sleep(poll_s)


class Reaper:
    """A watchdog process that SIGKILLs the process groups it was told about once its launcher is gone."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, _REAPER], stdin=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def _send(self, line: str) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def watch_namespace(self, namespace: str, host_link: str) -> None:
        """Remove network namespace ``namespace`` and the veth ``host_link`` into it at the end."""
        self._send(f"+net:{namespace},{host_link}")

    def forget_namespace(self, namespace: str, host_link: str) -> None:
        self._send(f"-net:{namespace},{host_link}")

    def close(self) -> None:
        """Close the pipe: the reaper kills what is still listed and exits."""
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.proc.stdin.close()
        self.proc.wait()


class Node:
    """One server process: how to start it and the process while it runs."""

    def __init__(self, name: str, port: int, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 host: str = "127.0.0.1") -> None:
        self.name, self.port, self.argv, self.log_path, self.env, self.host = name, port, argv, log_path, env, host
        self.proc: subprocess.Popen | None = None
        self.log_offset = 0  # where the log of the process's latest start begins
        self.paused = False
        self.cut_off = False  # isolated from its peers (see PrivateCluster.live_nodes)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def up(self) -> bool:
        """Running, not paused, and accepting connections."""
        return self.alive() and not self.paused and port_open(self.port, self.host)

    def lost_port(self) -> bool:
        """Exited, having said its port was taken."""
        return self.proc is not None and self.proc.poll() is not None and lost_port(self.log_path, self.log_offset)


class PrivateCluster(abc.ABC):
    """N nodes of one system, started under ``run_dir``; subclasses say how to start and ask them.

    ``start_seconds`` is how long ``start`` took (also written to ``run_dir/start.txt``).
    """

    system: str = ""
    # Longest a single node may take to accept connections after it is started.
    node_start_s: float = 60.0

    def __init__(self, run_dir: str | os.PathLike, nodes: int = 3) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.run_dir = Path(run_dir)
        self.size = nodes
        self.nodes: dict[str, Node] = {}
        self.start_seconds: float | None = None
        self._reaper: Reaper | None = None

    # --- what subclasses provide ----------------------------------------------------------

    @abc.abstractmethod
    def prepare(self) -> None:
        """Check the binaries (``ClusterUnavailable``), write the files, fill ``self.nodes`` (the reaper runs:
        ``self._reaper``)."""

    @abc.abstractmethod
    def form(self) -> None:
        """After every node process was started: make them one cluster and wait until it serves."""

    @abc.abstractmethod
    def leader(self, queue: str | None = None) -> str | None:
        """The name of the node that leads (``queue``'s replica group where that matters), as the system says."""

    def release(self) -> None:
        """After every node was killed at ``stop``: free what ``prepare`` took besides processes (nothing here)."""

    def await_node(self, node: Node) -> None:
        """Return once a (re)started ``node`` serves; the default waits for its client port."""
        wait_for(lambda: node.up() or self._died(node), self.node_start_s, f"{self.system}: {node.name} did not come up")
        self._died(node, fail=True)

    def settled(self) -> bool:
        """Whether the cluster serves as one again after node faults (every node up; subclasses say more)."""
        return all(node.up() for node in self.nodes.values())

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "PrivateCluster":
        """Start the nodes and form the cluster; on fresh ports again when a node lost its port to another
        process (see ``PORT_TAKEN``)."""
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._reaper = Reaper()
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                self.prepare()
                try:
                    self.launch()
                    break
                except ClusterError:
                    lost = [n.name for n in self.processes() if n.lost_port()]
                    if not lost or attempt == START_ATTEMPTS:
                        raise
                    log.warning("%s: %s lost its port to another process; starting again on fresh ports "
                                "(attempt %d of %d)", self.system, ", ".join(lost), attempt + 1, START_ATTEMPTS)
                    self.discard()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        (self.run_dir / "start.txt").write_text(f"{self.system}: {self.size} nodes up in {self.start_seconds:.1f} s\n")
        return self

    def launch(self) -> None:
        """Start every node prepared, wait until each serves, form the cluster."""
        for node in self.nodes.values():
            self.spawn(node)
        for node in self.nodes.values():
            self.await_node(node)
        self.form()

    def processes(self) -> list[Node]:
        """Every process of the cluster: its nodes (and whatever else a subclass runs)."""
        return list(self.nodes.values())

    def discard(self) -> None:
        """Kill every process of a start that failed, and forget the nodes (``prepare`` makes them again)."""
        for node in self.processes():
            self._kill_group(node)
        self.nodes = {}

    def spawn(self, node: Node) -> None:
        """Start ``node``'s process in a process group of its own, watched by the reaper, in the run
        directory (where whatever a server writes to its working directory -- an Erlang crash dump,
        ``MnesiaCore.*`` -- lands)."""
        with open(node.log_path, "ab") as out:
            node.log_offset = out.seek(0, os.SEEK_END)
            env = None if node.env is None else {**os.environ, **node.env}
            node.proc = subprocess.Popen(node.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.run_dir)
        node.paused = False
        self._reaper.watch(node.proc.pid)

    def _died(self, node: Node, fail: bool = False) -> bool:
        if node.proc is not None and node.proc.poll() is not None:
            if fail:
                raise ClusterError(f"{self.system}: {node.name} exited with status {node.proc.returncode} "
                                   f"(see {node.log_path})")
            return True
        return False

    def stop(self) -> None:
        """SIGKILL every process's group and wait for them; safe to call twice."""
        for node in self.processes():
            self._kill_group(node)
        self.release()
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None

    def _kill_group(self, node: Node) -> None:
        if node.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        if self._reaper is not None:
            self._reaper.forget(node.proc.pid)
        node.paused = False

    def __enter__(self) -> "PrivateCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what clients use -----------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        """Every node's client address, ``host:port``, in node order."""
        return [n.address for n in self.nodes.values()]

    @property
    def spec(self) -> str:
        return ",".join(self.addresses)

    def node_of(self, address: str) -> str | None:
        """The name of the node whose client address is ``address``."""
        return next((n.name for n in self.nodes.values() if n.address == address), None)

    def live_nodes(self) -> list[Node]:
        """The nodes that run, are not paused and not cut off their peers (so may speak for the cluster)."""
        return [n for n in self.nodes.values() if n.alive() and not n.paused and not n.cut_off]

    def wait_leader(self, timeout_s: float, queue: str | None = None, exclude: str | None = None) -> str:
        """The leader's name once there is one (other than ``exclude``); ``ClusterError`` after ``timeout_s``."""
        def found() -> str | None:
            leader = self.leader(queue)
            return leader if leader is not None and leader != exclude else None

        other = "" if exclude is None else f" other than {exclude}"
        return wait_for(found, timeout_s, f"{self.system}: no leader{other}", poll_s=0.2)

    # --- node faults ----------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (its whole process group) and return once it is gone."""
        self._kill_group(self.nodes[name])

    def restart(self, name: str) -> int:
        """Start node ``name`` again on its data (SIGKILLing it first if it runs); returns once it serves."""
        node = self.nodes[name]
        if node.alive():
            self.kill(name)
        self.spawn(node)
        self.await_node(node)
        return node.proc.pid

    def pause(self, name: str) -> None:
        """SIGSTOP node ``name``'s group and return once it is stopped: its sockets stay open, it answers nothing."""
        node = self.nodes[name]
        os.killpg(node.proc.pid, signal.SIGSTOP)
        node.paused = True
        wait_for(lambda: process_state(node.proc.pid) in (b"T", b"t"), 5.0, f"{self.system}: {name} did not stop")

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        os.killpg(node.proc.pid, signal.SIGCONT)
        node.paused = False
