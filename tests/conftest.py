"""Shared test helpers.

Tests that need a local server call ``require_server``: locally they skip with a clear
reason when it is down; with ``CI`` set to ``true``, ``1`` or ``yes`` they fail instead, so CI
never passes by skipping.
"""
from __future__ import annotations

import contextlib
import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

SERVERS = {
    "rabbitmq": ("127.0.0.1", 5672, "rabbitmq-server -detached"),
    "redis": ("127.0.0.1", 6379, "redis-server --daemonize yes --port 6379 --save '' --appendonly no"),
    "nats": ("127.0.0.1", 4222, "nats-server -a 127.0.0.1 -p 4222 -js &"),
    "postgres": ("127.0.0.1", 5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
}


# In two pytest-xdist workers (`pytest -n 2 --dist loadgroup -m "not alone"`, see the Makefile), a
# module's tests stay in one worker (its module fixtures start once), and the modules marked
# RABBITMQ_CLUSTERS, which start, cut and kill RabbitMQ clusters of their own (three Erlang VMs each),
# share one: two never run at once on two cores. (The session's cluster, idle between the contract
# suite's calls, is not among them.)
RABBITMQ_CLUSTERS = pytest.mark.xdist_group("rabbitmq-clusters")
# There, the tests marked ALONE run after the others (`pytest -m alone`), on the idle machine: those
# whose system under test fails under load in a way that is not ours to fix (see their module).
ALONE = pytest.mark.alone


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


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


@contextlib.contextmanager
def private_cluster(cluster):
    """Start ``cluster`` (a ``baselines.servers`` cluster) for the block and stop it after.

    Skips locally, fails under ``CI=true``, when a server binary is not installed."""
    from baselines.servers.nodes import ClusterUnavailable

    try:
        cluster.start()
    except ClusterUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


def export(env: dict[str, str], monkeypatch) -> None:
    """Set ``env`` (a cluster's client addresses; worker processes inherit it) for this test only,
    so that no test sees what another left in the environment."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def for_this_test(cluster, env: dict[str, str], monkeypatch):
    """A session's private ``cluster`` with every node serving again (a node an earlier test killed
    or paused is restarted or resumed) and ``env`` exported for this test only."""
    for name, node in cluster.nodes.items():
        if node.paused:
            cluster.resume(name)
        if not node.alive():
            cluster.restart(name)
    export(env, monkeypatch)
    return cluster


@pytest.fixture(scope="session")
def rabbitmq_session_cluster(tmp_path_factory):
    """A private 3-node RabbitMQ cluster, started once for the session."""
    from baselines.servers.rabbitmq_cluster import RabbitMQCluster

    with private_cluster(RabbitMQCluster(tmp_path_factory.mktemp("rabbitmq-cluster"))) as cluster:
        yield cluster


@pytest.fixture
def rabbitmq_quorum_cluster(rabbitmq_session_cluster, monkeypatch):
    """The session's RabbitMQ cluster, exported for ``rabbitmq-quorum-cluster`` clients for this test."""
    from baselines.rabbitmq_quorum_cluster import client_env

    return for_this_test(rabbitmq_session_cluster, client_env(rabbitmq_session_cluster), monkeypatch)


@pytest.fixture(scope="session")
def nats_session_cluster(tmp_path_factory):
    """A private 3-node NATS JetStream cluster, started once for the session."""
    from baselines.servers.nats_cluster import NatsCluster

    with private_cluster(NatsCluster(tmp_path_factory.mktemp("nats-cluster"))) as cluster:
        yield cluster


@pytest.fixture
def nats_cluster(nats_session_cluster, monkeypatch):
    """The session's NATS cluster, exported for ``nats-jetstream-cluster`` clients for this test."""
    from baselines.nats_jetstream_cluster import client_env

    return for_this_test(nats_session_cluster, client_env(nats_session_cluster), monkeypatch)


@pytest.fixture(scope="session")
def redis_sentinel_session_cluster(tmp_path_factory):
    """A private Redis primary + 2 replicas + 3 Sentinels, started once for the session."""
    from baselines.servers.redis_sentinel import RedisSentinelCluster

    with private_cluster(RedisSentinelCluster(tmp_path_factory.mktemp("redis-sentinel"))) as cluster:
        yield cluster


@pytest.fixture
def redis_sentinel_cluster(redis_sentinel_session_cluster, monkeypatch):
    """The session's Redis Sentinel cluster, exported for ``redis-sentinel`` clients for this test."""
    from baselines.redis_sentinel import client_env

    return for_this_test(redis_sentinel_session_cluster, client_env(redis_sentinel_session_cluster), monkeypatch)


@pytest.fixture
def logqueue_cluster(logqueue_session_cluster, monkeypatch):
    """The session's cluster, with its addresses exported as ``LOGQUEUE_CLUSTER`` (the logqueue
    backend's default, also inherited by worker processes) for this test only. Yields the
    ``cluster_util.Cluster``."""
    export({"LOGQUEUE_CLUSTER": ",".join(logqueue_session_cluster.addresses.values())}, monkeypatch)
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
