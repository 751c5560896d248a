"""The servers a backend needs, and the private servers and clusters it can start for a run.

A :class:`Server` says where a client finds one kind of server (an environment variable,
else a loopback default) and how a user starts it; where the runner may start a private
one (so that a scenario can SIGKILL and restart it), ``private_argv`` gives its command
line. Each adapter names its servers in ``Backend.servers``; the topologies of a run
(:mod:`baselines.servers.topology`, :mod:`baselines.servers.private`,
:mod:`baselines.servers.logqueue_cluster`) are built from them.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baselines.servers.topology import ServerStartError, Topology

__all__ = ["Server", "RABBITMQ", "REDIS", "NATS", "SHARED", "ServerStartError", "Topology"]


@dataclass(frozen=True)
class Server:
    """One kind of server.

    Attributes:
        name: the key of its address in ``BackendConfig.addresses`` (``"redis"``, ...).
        env: the environment variable with its ``host:port`` (or URL).
        default: the loopback address used when ``env`` is unset.
        start: how a user starts it, for the one-line "cannot reach" error.
        private_argv: ``(port, data_dir) -> argv`` of a private server for one run, or
            ``None`` when the runner cannot start one (then ``no_private`` says why).
        no_private: why no private server is started, formatted with ``backend``.
    """

    name: str
    env: str
    default: str
    start: str
    private_argv: Callable[[int, Path], list[str]] | None = None
    no_private: str = "{backend} names no server the runner can start privately"


def _redis_argv(port: int, data: Path) -> list[str]:
    # Durable the way an experienced user runs Redis for a work queue.
    return [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data)]


def _nats_argv(port: int, data: Path) -> list[str]:
    return [shutil.which("nats-server") or "/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", str(port),
            "-js", "-sd", str(data)]


RABBITMQ = Server(
    "rabbitmq", "LOGQUEUE_RABBITMQ_URL", "127.0.0.1:5672", "rabbitmq-server -detached (or: make services)",
    no_private="{backend} needs RabbitMQ, and the only RabbitMQ here is the shared server other tests use; "
               "a private node would take an Erlang distribution setup this runner does not do, so it is not restarted")
REDIS = Server("redis", "LOGQUEUE_REDIS_URL", "127.0.0.1:6379", "redis-server --daemonize yes (or: make services)",
               private_argv=_redis_argv)
NATS = Server("nats", "LOGQUEUE_NATS_URL", "127.0.0.1:4222", "nats-server -js -a 127.0.0.1 -p 4222 & (or: make services)",
              private_argv=_nats_argv)

# The shared brokers of this machine (and of docker-compose): BackendConfig's default addresses.
SHARED = (RABBITMQ, REDIS, NATS)
