"""A broker of the run's own, so that a scenario may SIGKILL and restart it.

The brokers on this machine are shared (other tests use them), so ``broker-restart``
starts a private Redis or NATS server on a free port with its data in the run directory,
configured for durability the way an experienced user runs it for a work queue:
Redis with ``appendonly yes`` / ``appendfsync everysec``, NATS with JetStream file
storage. RabbitMQ is not started privately (see :data:`PRIVATE`).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from experiments.faults import process as procfaults
from experiments.scenarios.base import Topology

# backend -> the server it uses; backends not listed cannot get a private broker here.
PRIVATE = {
    "redis-list": "redis",
    "redis-streams": "redis",
    "celery-redis": "redis",
    "nats-jetstream": "nats",
}
NO_PRIVATE_REASON = (
    "{backend} needs RabbitMQ, and the only RabbitMQ here is the shared server other tests use; "
    "a private node would take an Erlang distribution setup this runner does not do, so it is not restarted"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class PrivateBrokerTopology(Topology):
    """The shared brokers, except ``server`` (redis or nats), which is the run's own process."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.run_dir: Path | None = None

    def argv(self, data: Path) -> list[str]:
        if self.server == "redis":
            return [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data)]
        return [shutil.which("nats-server") or "/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", str(self.port),
                "-js", "-sd", str(data)]

    def start(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        data = run_dir / f"{self.server}-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        self.spawn()

    def spawn(self, timeout_s: float = 15.0) -> int:
        """Start the server (again, on the same data); returns once it accepts connections."""
        assert self.run_dir is not None
        with open(self.run_dir / f"{self.server}.log", "ab") as log:
            self.proc = subprocess.Popen(self.argv(self.run_dir / f"{self.server}-data"), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private {self.server} did not start (see {self.server}.log)")
            time.sleep(0.05)
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        procfaults.kill(self.proc.pid)
        self.proc.wait()

    def servers(self) -> dict[str, str]:
        return {**super().servers(), self.server: f"127.0.0.1:{self.port}"}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
