"""A follower cut off its replication links falls behind while it still serves, and
``catching_up`` says so from the system's own account of its data (Redis: the replica's
replication offset; NATS: the stream leader's report of the replica; RabbitMQ: the quorum
queue member's own log index) -- not from "it serves again" -- until the links heal.

The Redis replicas dial their primary from loopback addresses of their own, through per-link
proxies that Sentinel hands out; NATS routes go through per-route proxies; RabbitMQ's nodes run
in network namespaces of the run's own, where ``isolate`` drops the peers' packets.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import time

import pytest

from baselines import registry
from baselines.nats_jetstream import stream_of
from baselines.servers import netns
from conftest import IN_CI, RABBITMQ_CLUSTERS
from experiments.faults.proxy import ProxyHub

pytestmark = RABBITMQ_CLUSTERS

# Replication takes milliseconds; the bound is for a loaded machine, and for RabbitMQ's
# quorum_status, which waits 5 s for each member that does not answer (two, asked of the cut-off node).
CATCH_UP_S = 60.0
# While cut off, the follower must stay behind for at least this long (it has no way to catch up).
HOLD_S = 2.0
WRITES = 50
QUEUE = "lq-catchup"  # RabbitMQ's quorum queue; NATS's stream is stream_of(QUEUE); Redis has one primary


def start_topology(backend: str, tmp_path, hub: ProxyHub):
    cls = registry.get(backend)
    reason = cls.probe()
    if reason:
        (pytest.fail if IN_CI else pytest.skip)(reason)
    topology = cls.topology()
    topology.start(tmp_path, hub)
    topology.use_queue(QUEUE)  # as a run names its queue: the one whose leader and replicas are asked about
    return topology


def write_redis(topology, leader: int) -> None:
    import redis

    with redis.Redis(port=topology.node(leader).port) as r:
        for i in range(WRITES):
            r.xadd("catch-up", {"i": i})


def write_nats(topology, leader: int) -> None:
    import nats

    async def publish() -> None:
        nc = await nats.connect(f"nats://{topology.node(leader).address}")
        try:
            js = nc.jetstream()
            for i in range(WRITES):
                await js.publish(stream_of(QUEUE), str(i).encode())
        finally:
            await nc.close()

    asyncio.run(publish())


def direct_routes(cluster) -> list[str]:
    """The servers' established connections to a route port itself, not through a proxy (``ss``): a route the
    servers learned by gossip and dialled directly would carry a pair's traffic past the cut."""
    pids, ports = {n.pid for n in cluster.nodes.values()}, set(cluster.route_ports.values())
    rows = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True, check=True).stdout
    return [row for row in rows.splitlines()
            if (pid := re.search(r"pid=(\d+)", row)) and int(pid.group(1)) in pids
            and int(row.split()[3].rsplit(":", 1)[1]) in ports]


def declare_nats(topology) -> None:
    from nats.js.api import StorageType

    stream = stream_of(QUEUE)
    topology.cluster.ask(lambda js: js.add_stream(name=stream, subjects=[stream], num_replicas=3,
                                                  storage=StorageType.FILE))
    assert direct_routes(topology.cluster) == []  # every route goes through its proxy, so the cut is one


def declare_rabbitmq(topology) -> None:
    import pika

    why = netns.unavailable()
    if why:  # paused instead of cut off: it would not serve
        (pytest.fail if IN_CI else pytest.skip)(f"no network namespaces here: {why}")
    host, port = topology.node(1).address.split(":")
    with pika.BlockingConnection(pika.ConnectionParameters(host, int(port))) as conn:
        conn.channel().queue_declare(QUEUE, durable=True, arguments={
            "x-queue-type": "quorum", "x-quorum-initial-group-size": 3})


def write_rabbitmq(topology, leader: int) -> None:
    import pika

    host, port = topology.node(leader).address.split(":")
    with pika.BlockingConnection(pika.ConnectionParameters(host, int(port))) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for i in range(WRITES):
            channel.basic_publish("", QUEUE, str(i).encode(), pika.BasicProperties(delivery_mode=2))


CASES = {
    "redis-sentinel": (lambda topology: None, write_redis),
    "nats-jetstream-cluster": (declare_nats, write_nats),
    "rabbitmq-quorum-cluster": (declare_rabbitmq, write_rabbitmq),
}


def wait(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("backend", list(CASES))
def test_a_cut_off_follower_serves_but_has_not_caught_up_until_its_links_heal(backend, tmp_path):
    declare, write = CASES[backend]
    with ProxyHub() as hub:
        topology = start_topology(backend, tmp_path, hub)
        try:
            declare(topology)
            leader = topology.wait_leader(30.0)
            follower = next(n for n in topology.nodes if n != leader)
            _, caught_up = topology.catching_up(follower)
            assert wait(caught_up, CATCH_UP_S), "the follower was not level before the cut"
            # Only its peer links (the proxied ones, and what isolate cuts besides): its clients may still reach it.
            hub.set_many(topology.peer_links(follower), "blackhole")
            topology.isolate(follower)
            write(topology, leader)
            # The system counts what it lacks (its unit: topology.lag_unit); just after the cut its
            # API may not answer for the node yet (None: NATS's stream info did so in a CI run).
            assert wait(lambda: (topology.catching_up(follower)[0] or 0) > 0, CATCH_UP_S)
            _, caught_up = topology.catching_up(follower)
            assert topology.node(follower).up()  # it serves...
            assert not wait(caught_up, HOLD_S)  # ...but does not have the data
            topology.rejoin(follower)
            hub.set_many(topology.peer_links(follower), "heal")
            assert wait(caught_up, CATCH_UP_S), \
                f"not caught up {CATCH_UP_S:g} s after the heal: lacks {topology.catching_up(follower)[0]} {topology.lag_unit}"
            assert topology.node(follower).up()
        finally:
            topology.close()
