"""A server of the run's own, so that a scenario may SIGKILL and restart it.

The brokers on this machine are shared (other tests use them), so a scenario that kills
"the broker" gets a private one: the backend's server started from its
``Server.private_argv`` on a free loopback port, with its data in the run directory
(Redis with ``appendonly yes`` / ``appendfsync everysec``, NATS with JetStream file
storage). A server without ``private_argv`` (RabbitMQ here) gives a topology whose
``node_faults`` says why. The server runs in a session of its own watched by a
:class:`~baselines.servers.nodes.Reaper`, so it dies with the run even when the runner is
SIGKILLed. A server that exits at its start saying its port was taken starts again on a
fresh one (see ``baselines.servers.nodes.PORT_TAKEN``).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from baselines.servers.nodes import START_ATTEMPTS, Reaper, lost_port, port_open
from baselines.servers.topology import ServerStartError, Topology
from logqueue.local_cluster import free_ports

log = logging.getLogger(__name__)


def private_topology(backend: str, servers: Sequence) -> Topology:
    """A private server for a backend with one server that can run privately, else why not."""
    if len(servers) == 1 and servers[0].private_argv is not None:
        return PrivateServerTopology(servers[0])
    reasons = [s.no_private.format(backend=backend) for s in servers if s.private_argv is None]
    return Topology(servers, node_faults=reasons[0] if reasons else f"{backend} names no server to start privately")


class PrivateServerTopology(Topology):
    """The server ``server`` as this run's process (one node, named after the server)."""

    def __init__(self, server) -> None:
        super().__init__([server])
        self.server = server
        self.nodes = [server.name]
        self.node_faults = None
        self.port = free_ports(1)[0]
        self.proc: subprocess.Popen | None = None
        self.run_dir: Path | None = None
        self._log_offset = 0  # where the log of the server's latest start begins
        self._reaper: Reaper | None = None

    def start(self, run_dir: Path, links=None) -> None:
        super().start(run_dir, links)
        self.run_dir = run_dir
        self._reaper = Reaper()
        data = run_dir / f"{self.server.name}-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self.spawn(self.server.name)
                return
            except ServerStartError:
                if attempt == START_ATTEMPTS or not lost_port(self._log_path(), self._log_offset):
                    raise
                log.warning("private %s lost its port %d to another process; starting again on a fresh port "
                            "(attempt %d of %d)", self.server.name, self.port, attempt + 1, START_ATTEMPTS)
                self.port = free_ports(1)[0]

    def spawn(self, node=None, timeout_s: float = 15.0) -> int:
        """Start the server (again, on the same data); returns once it accepts connections."""
        assert self.run_dir is not None
        name = self.server.name
        with open(self._log_path(), "ab") as out:
            self._log_offset = out.seek(0, os.SEEK_END)
            self.proc = subprocess.Popen(self.server.private_argv(self.port, self.run_dir / f"{name}-data"),
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._reaper.watch(self.proc.pid)
        deadline = time.monotonic() + timeout_s
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(f"private {name} did not start (see {name}.log)")
            time.sleep(0.05)
        return self.proc.pid

    def _log_path(self) -> Path:
        return self.run_dir / f"{self.server.name}.log"

    def process(self, node=None) -> subprocess.Popen:
        assert self.proc is not None
        return self.proc

    def node_name(self, node) -> str:
        return node

    def server_of(self, node) -> str:
        return self.server.name

    def leader(self):
        """The one node, while it accepts connections."""
        return self.server.name if self.proc is not None and self.proc.poll() is None and port_open(self.port) else None

    def servers(self) -> dict[str, str]:
        return {self.server.name: f"127.0.0.1:{self.port}"}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reaper is not None:
            self._reaper.close()  # nothing of ours is left for it to kill
            self._reaper = None
