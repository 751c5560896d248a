"""The proxied local logqueue cluster the scenarios run on: leader isolation, crash and restart."""
from __future__ import annotations

import struct
import time

import msgpack
import pytest

from baselines.servers.logqueue_cluster import ClusterTopology, peers_only
from experiments.faults.proxy import ProxyHub


def frame(body) -> bytes:
    data = msgpack.packb(body, use_bin_type=True)
    return struct.pack(">IB", len(data), 1) + data


def test_peers_only_admits_peer_handshakes_and_nothing_else():
    peer = frame([2, "peer", 1, "127.0.0.1:1", b""])
    client = frame([2, "client", 0, "", b""])
    assert peers_only(peer[:3]) is None and peers_only(peer[:-1]) is None
    assert peers_only(peer) is True
    assert peers_only(client) is False
    assert peers_only(struct.pack(">IB", 2, 1) + b"\xc1\xc1") is False  # not msgpack


@pytest.fixture
def cluster(tmp_path):
    topology, hub = ClusterTopology(), ProxyHub()
    topology.start(tmp_path, hub)
    topology.ready()
    yield topology
    topology.close()
    hub.close()


def test_cutting_the_leaders_links_elects_another_and_heal_rejoins(cluster):
    leader = cluster.wait_leader(10.0)
    cluster.hub.set_many(cluster.peer_links(leader), "blackhole")
    successor = cluster.wait_leader(10.0, exclude=leader)
    assert successor != leader
    cluster.hub.set_many(cluster.peer_links(leader), "heal")
    # After the heal the old leader learns the higher term and follows.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        roles = {s["id"]: s["role"] for s in cluster.status()}
        if roles.get(leader) == "follower":
            break
        time.sleep(0.05)
    assert roles.get(leader) == "follower"


def test_killed_leader_is_replaced_and_restarts_on_its_data(cluster):
    from logqueue.client import Client

    leader = cluster.wait_leader(10.0)
    with Client(list(cluster.listen.values()), timeout=10.0) as client:
        acked = client.append([b"kept-%d" % k for k in range(20)])
    cluster.kill(leader)
    assert cluster.wait_leader(10.0, exclude=leader) != leader
    # Cut it off its peers before it starts: whatever it has now came from its own disk.
    cluster.hub.set_many(cluster.peer_links(leader), "blackhole")
    cluster.spawn(leader)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and leader not in {s["id"] for s in cluster.status()}:
        time.sleep(0.05)
    (own,) = [s for s in cluster.status() if s["id"] == leader]
    assert own["last_index"] >= acked[-1]  # its log, read back from its WAL, has every acked entry
