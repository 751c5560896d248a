"""A private server or cluster node whose port was taken between ``free_ports`` picking it and the
server binding it (another process got there first) makes its launcher start again on fresh
ports, with one log line saying so, instead of failing the run."""
from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

import pytest

from baselines.servers import REDIS
from baselines.servers.nats_cluster import NatsCluster
from baselines.servers.private import PrivateServerTopology
from baselines.servers.rabbitmq_cluster import RabbitMQCluster
from conftest import IN_CI, RABBITMQ_CLUSTERS
from logqueue.local_cluster import free_ports
from test_private_clusters import processes_under, started

pytestmark = RABBITMQ_CLUSTERS


@pytest.fixture
def taken_port():
    """A loopback port some other socket holds, bound but not listening: as an outgoing connection's
    ephemeral port does (``free_ports`` picks from that range). (One that listened would answer the
    launcher's check that the node accepts connections.)"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def hand_out_first(monkeypatch, module: str, port: int, index: int) -> list[list[int]]:
    """Make ``module``'s ``free_ports`` put ``port`` at ``index`` of the first list it returns; returns the lists."""
    handed: list[list[int]] = []

    def first_taken(n: int) -> list[int]:
        ports = free_ports(n)
        if not handed:
            ports[index] = port
        handed.append(ports)
        return ports

    monkeypatch.setattr(f"{module}.free_ports", first_taken)
    return handed


def one_retry_line(caplog) -> str:
    [line] = [r.getMessage() for r in caplog.records if "lost its port" in r.getMessage()]
    return line


# (cluster class, its module, which of the ports it asks for is taken): NATS's first client port;
# RabbitMQ's first distribution port (seen in a run: dist_port_already_used).
CLUSTERS = {"nats": (NatsCluster, "baselines.servers.nats_cluster", 0),
            "rabbitmq": (RabbitMQCluster, "baselines.servers.rabbitmq_cluster", 1)}


@pytest.mark.parametrize("system", list(CLUSTERS))
def test_a_cluster_whose_node_lost_its_port_starts_on_fresh_ports(system, taken_port, tmp_path, monkeypatch, caplog):
    cls, module, index = CLUSTERS[system]
    handed = hand_out_first(monkeypatch, module, taken_port, index)
    cluster = cls(tmp_path)
    caplog.set_level(logging.WARNING)
    try:
        started(cluster)
        assert len(handed) == 2 and all(n.up() for n in cluster.nodes.values())
        assert taken_port not in [n.port for n in cluster.nodes.values()]
        assert "starting again on fresh ports (attempt 2 of 3)" in one_retry_line(caplog)
    finally:
        cluster.stop()
    assert processes_under(tmp_path) == []


def test_a_private_server_that_lost_its_port_starts_on_a_fresh_one(taken_port, tmp_path: Path, monkeypatch, caplog):
    if not shutil.which("redis-server"):
        (pytest.fail if IN_CI else pytest.skip)("redis-server is not installed (apt-get install redis-server)")
    hand_out_first(monkeypatch, "baselines.servers.private", taken_port, 0)
    caplog.set_level(logging.WARNING)
    topology = PrivateServerTopology(REDIS)
    try:
        topology.start(tmp_path)
        assert topology.port != taken_port and topology.leader() == REDIS.name
        assert f"lost its port {taken_port}" in one_retry_line(caplog)
    finally:
        topology.close()
    assert processes_under(tmp_path) == []
