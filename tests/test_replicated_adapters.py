"""What the replicated adapters add to their single-node versions, checked on the session's private clusters:
the queue really is replicated, and redis-sentinel's confirm waits for a replica."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from baselines import registry
from baselines.base import AckError, BackendConfig, BackendError
from test_baselines_contract import _closed_port, make  # noqa: F401 (make: the contract suite's fixture)


def test_quorum_queue_has_a_member_on_every_node(rabbitmq_quorum_cluster, make):
    b = make("rabbitmq-quorum-cluster")
    rows = json.loads(rabbitmq_quorum_cluster.ctl(rabbitmq_quorum_cluster.node_names[0], "list_queues", "name", "type",
                                                  "members", "--formatter", "json", "-q"))
    [row] = [r for r in rows if r["name"] == b.config.queue]
    assert row["type"] == "quorum" and sorted(row["members"]) == sorted(rabbitmq_quorum_cluster.node_names)


def test_jetstream_streams_have_three_replicas(nats_cluster, make):
    b = make("nats-jetstream-cluster")
    for stream in (b.stream, b.dead_stream):
        info = nats_cluster.ask(lambda js, s=stream: js.stream_info(s))
        assert info.config.num_replicas == 3
        assert info.cluster.leader in nats_cluster.nodes and len(info.cluster.replicas) == 2


def test_redis_confirm_waits_for_a_replica(redis_sentinel_cluster, make):
    b = make("redis-sentinel")
    b.enqueue(b"replicated")  # both replicas up: WAIT 1 is met
    replicas = [n for n in redis_sentinel_cluster.nodes if n != redis_sentinel_cluster.leader()]
    for n in replicas:
        redis_sentinel_cluster.pause(n)
    try:
        with pytest.raises(BackendError, match="received by 0 replica"):
            b.enqueue(b"not replicated")
    finally:
        for n in replicas:
            redis_sentinel_cluster.resume(n)


def test_redis_clients_dial_the_primary_through_their_routes(monkeypatch):
    import redis.sentinel

    from baselines.redis_sentinel import RoutedSentinel, parse_routes

    routes = parse_routes("127.0.0.1:1000=127.0.0.1:2000,127.0.0.1:1001=127.0.0.1:2001")
    assert routes == {"127.0.0.1:1000": "127.0.0.1:2000", "127.0.0.1:1001": "127.0.0.1:2001"}
    sentinel = RoutedSentinel([("127.0.0.1", 1)], routes)
    # What the Sentinels name (stubbed: no Sentinel runs here); the mapping is what RoutedSentinel adds.
    monkeypatch.setattr(redis.sentinel.Sentinel, "discover_master", lambda self, name: ("127.0.0.1", 1001))
    assert sentinel.discover_master("lq") == ("127.0.0.1", 2001)
    monkeypatch.setattr(redis.sentinel.Sentinel, "discover_master", lambda self, name: ("127.0.0.1", 1500))
    assert sentinel.discover_master("lq") == ("127.0.0.1", 1500)  # not routed: dialled as named


def test_redis_ack_that_cannot_reach_the_primary_is_an_ack_error(redis_sentinel_cluster, make):
    """A settle Redis refuses (primary gone, NOREPLICAS while replicas resync) must not kill the worker loop."""
    import redis

    b = make("redis-sentinel")
    b.enqueue(b"job")
    c = b.consumer("w")
    live = c._r
    try:
        d = c.receive(5)
        dead = redis.Redis(port=_closed_port(), socket_connect_timeout=1)  # the primary vanished under it
        c._r, b.settle_script.registered_client = dead, dead
        with pytest.raises(AckError, match="stays pending and is redelivered"):
            d.ack()
        assert isinstance(c.ack_many([d])[0], AckError)
    finally:
        c._r, b.settle_script.registered_client = live, b._r
        c.close()


def test_a_jetstream_worker_started_while_the_cluster_has_no_meta_leader_waits_for_one(tmp_path):
    """A worker restarted during a node fault (the nemesis does that) declares once JetStream can take it,
    instead of dying on the timeouts (or 503s) of a cluster without a meta leader."""
    import threading

    from baselines.servers.nats_cluster import NatsCluster
    from baselines.servers.nodes import wait_for

    cluster = NatsCluster(tmp_path)
    try:
        cluster.start()
        names = list(cluster.nodes)
        config = BackendConfig(queue=f"t-meta-{uuid.uuid4().hex[:8]}", addresses={"nats-cluster": cluster.spec})
        # The run declared the queue while every node was up, as the runner does before any fault:
        # a new R3 stream needs three peers, and with a node down JetStream may refuse it with a
        # 400 (seen in a CI run, once the meta leader had counted the dead node offline).
        first = registry.get("nats-jetstream-cluster")(config)
        first.connect()
        first.close()
        for name in names[1:]:  # one of three: no majority, no meta leader
            cluster.kill(name)
        backend = registry.get("nats-jetstream-cluster")(config)
        errors: list[BaseException] = []

        def connect() -> None:
            try:
                backend.connect()
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=connect)
        thread.start()
        try:
            # It has asked JetStream (and had no answer) before the majority is back.
            wait_for(lambda: not thread.is_alive() or backend.js is not None, 30.0, "the worker did not connect")
            time.sleep(2.0)
            assert thread.is_alive() and not errors
            cluster.restart(names[1])
            thread.join(90.0)
            assert not thread.is_alive() and not errors, errors
            assert backend.enqueue(b"after the election")
        finally:
            thread.join(90.0)
            backend.close()
    finally:
        cluster.stop()
