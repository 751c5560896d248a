"""A private RabbitMQ cluster whose nodes run in network namespaces of its own: a node cut off
its peers there (iptables inside its namespace) loses the lead of a quorum queue while the
other two keep confirming, lacks what they confirmed, and catches up after the heal; nothing
of the namespaces is left once the cluster stops."""
from __future__ import annotations

import subprocess

import pytest

from baselines.servers import netns
from baselines.servers.nodes import wait_for
from baselines.servers.rabbitmq_cluster import RabbitMQCluster
from conftest import ALONE, IN_CI
from test_private_clusters import QUEUE, declare_quorum_queue, processes_under, started

# Alone: beside another test process it failed 2 runs in 6 (and 3 in 11 with pause_minority, or with
# the peers dropping and rejoining the node in one step), never on an idle machine. After the heal the
# cut node restarts and rejoins while its peers reconnect to it seconds apart; Erlang's `global` sees
# overlapping partitions, and RabbitMQ 3.10's "Global hang workaround" sends it nodedown/nodeup messages
# that OTP 25's `global` ignores: the node hangs in its boot, waiting for Mnesia tables.
pytestmark = ALONE

# A cut-off leader's followers elect another once aten suspects its node (seconds); the
# distribution itself declares the node down within 1.25 tick times, and only then do publishes
# through the others get confirms. The test's cluster ticks every 10 s, not OTP's 60 s (the
# mechanism is the same; the wait is a minute shorter); the bound keeps the margin it had at 60 s.
TICKTIME_S = 10
FAILOVER_S = 120.0
WRITES = 20


def require_namespaces() -> None:
    why = netns.unavailable()
    if why:
        (pytest.fail if IN_CI else pytest.skip)(why)


def publish(address: str, count: int) -> bool:
    """Whether ``count`` persistent messages to ``QUEUE`` through ``address`` were all confirmed."""
    import pika

    host, port = address.split(":")
    conn = pika.BlockingConnection(pika.ConnectionParameters(host, int(port)))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for i in range(count):
            channel.basic_publish("", QUEUE, str(i).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
        return True
    except pika.exceptions.NackError:
        return False
    finally:
        conn.close()


def leftovers(cluster: RabbitMQCluster) -> list[str]:
    """The cluster's namespaces and links still on the machine."""
    network = cluster.network
    names = [network.namespace(i) for i in (1, 2, 3)] + [network.host_link(i) for i in (1, 2, 3)]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [n for n in names if n in listed or f" {n}@" in links or f" {n}:" in links]


def test_a_node_cut_off_in_its_namespace_loses_the_lead_and_catches_up_after_the_heal(tmp_path):
    require_namespaces()
    cluster = RabbitMQCluster(tmp_path, namespaces=True, net_ticktime_s=TICKTIME_S)
    try:
        started(cluster)
        assert all(not n.address.startswith("127.") for n in cluster.nodes.values())
        for name in cluster.node_names:  # the servers tick as configured, and the CLI (ticking alike) reaches them
            assert cluster.ctl(name, "eval", "net_kernel:get_net_ticktime().").strip() == str(TICKTIME_S)
        declare_quorum_queue(cluster)
        leader = cluster.wait_leader(30.0, QUEUE)
        cluster.cut(leader)
        successor = cluster.wait_leader(FAILOVER_S, QUEUE, exclude=leader)
        # The other two serve: confirms come once the queue's record names the new leader (until every
        # node has seen the old one's node go down, a publish is nacked).
        wait_for(lambda: publish(cluster.nodes[successor].address, WRITES), FAILOVER_S,
                 f"{successor} confirmed nothing", poll_s=0.5)
        level = cluster.members(QUEUE)[successor]["commit_index"]
        # The cut-off node still answers the run's rabbitmqctl, about its own member: it lacks those entries.
        own = cluster.members(QUEUE, ask=leader)[leader]
        assert own["log_index"] is not None and own["log_index"] < level
        cluster.heal(leader)

        def caught_up() -> bool:  # a member again, as follower or -- elected once level -- as leader
            member = cluster.members(QUEUE).get(leader, {})
            return member.get("state") in ("follower", "leader") and (member.get("log_index") or 0) >= level

        wait_for(caught_up, FAILOVER_S, f"{leader} did not catch up after the heal", poll_s=0.5)
        assert "DROP" not in cluster.network.rules(cluster.node_names.index(leader) + 1)
    finally:
        cluster.stop()
    assert processes_under(tmp_path) == []
    assert leftovers(cluster) == []
