"""Shared test helpers.

Tests that need a local server call ``require_server``: locally they skip with a clear
reason when it is down; with ``CI`` set to ``true``, ``1`` or ``yes`` they fail instead, so CI
never passes by skipping.
"""
from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

SERVERS = {
    "rabbitmq": ("127.0.0.1", 5672, "rabbitmq-server -detached"),
    "redis": ("127.0.0.1", 6379, "redis-server --daemonize yes --port 6379 --save '' --appendonly no"),
    "nats": ("127.0.0.1", 4222, "nats-server -a 127.0.0.1 -p 4222 -js &"),
}


def server_up(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_server(name: str) -> None:
    """Skip (locally) or fail (in CI) when the named server is not reachable."""
    host, port, start = SERVERS[name]
    if server_up(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port} (start it with: {start})"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def logqueue_session_cluster(tmp_path_factory):
    """A real 3-node logqueue cluster on free loopback ports, shared by the whole session."""
    from cluster_util import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("logqueue-cluster"), 3)
    cluster.root.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start_all()
        cluster.leader(timeout=20)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def logqueue_cluster(logqueue_session_cluster, monkeypatch):
    """The session's cluster, with its addresses exported as ``LOGQUEUE_CLUSTER`` (the logqueue
    backend's default, also inherited by worker processes) for this test only, so no test
    sees what another left in the environment. Yields the ``cluster_util.Cluster``."""
    monkeypatch.setenv("LOGQUEUE_CLUSTER", ",".join(logqueue_session_cluster.addresses.values()))
    return logqueue_session_cluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        help="rewrite the expected outputs of scripted tests (tests/raft_scripts) with the actual ones",
    )


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    """True when pytest runs with --rewrite: scripted tests write their actual output back."""
    return request.config.getoption("--rewrite")
