"""What the core proves, shown on real ``logqueue node`` processes (issue 17, part 1).

Persist before send (through ``--test-hooks``' audited storage, logqueue/runtime/audit.py),
idempotent enqueue across a leader SIGKILL, peers with a wrong secret, a partitioned old
leader's linearizable reads, and malformed Raft bodies on an authenticated peer link.
"""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
import uuid

import pytest

from cluster_util import FAST_ELECTIONS, Load, make_cluster, wait_for  # noqa: F401
from logqueue.client import Client, ClientError, Producer
from logqueue.local_cluster import LocalCluster, free_ports, node_argv
from logqueue.raft import types as t
from logqueue.runtime import wire
from logqueue.runtime.audit import DURABLE_FILE, HOOKS_DIR, VIOLATIONS_FILE
from logqueue.runtime.transport import dial

pytestmark = pytest.mark.slow

ELECTION_HIGH_S = 0.3  # FAST_ELECTIONS: 150-300 ms


def test_a_node_never_sends_what_it_has_not_made_durable(make_cluster):
    """Appends, a leader SIGKILL (new votes, new leader, followers truncating) and a restart:
    no node sends a message whose term, vote or entries are not durable yet."""
    cluster = make_cluster(3)
    first = cluster.leader()
    load = Load(list(cluster.addresses.values()))
    try:
        load.wait_acked(300)
        cluster.kill(first)
        cluster.leader(among=[i for i in (1, 2, 3) if i != first])
        load.wait_acked(len(load.acked) + 300)
        cluster.restart(first)
        top = max(cluster.status(i)["commit_index"] for i in (1, 2, 3) if i != first)
        cluster.wait_applied([first], top)
        load.wait_acked(len(load.acked) + 100)
    finally:
        load.stop()
    checked = 0
    for i in (1, 2, 3):
        hooks = cluster.data_dir(i) / HOOKS_DIR
        violations = hooks / VIOLATIONS_FILE
        assert not violations.exists(), f"node {i}: {violations.read_text()[:2000]}"
        record = json.loads((hooks / DURABLE_FILE).read_text())
        # The count is as of the node's last durable point (a restart starts it again).
        assert record["checked"] > 0 and record["last_index"] > 700, (i, record)
        checked += record["checked"]
    assert checked >= 50  # the check ran on many messages, not on a few


def test_a_producer_enqueuing_through_a_leader_sigkill_lands_every_job_once_in_order(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    sent: dict[str, list[bytes]] = {}
    errors: list[str] = []
    stop = threading.Event()

    def produce(name: str) -> None:
        with Client(list(cluster.addresses.values()), timeout=30, attempt_timeout=1.0) as client:
            producer = Producer(client, queue, batch=20, window=4)
            k = 0
            while not stop.is_set():
                batch = [f"{name}-{k + j}".encode() for j in range(20)]
                try:
                    producer.enqueue_many(batch)  # the session retries across the failover
                except ClientError as exc:
                    errors.append(f"{name}: {exc}")
                    return
                sent[name] += batch
                k += 20

    names = ["p1", "p2"]
    for name in names:
        sent[name] = []
    threads = [threading.Thread(target=produce, args=(n,), daemon=True) for n in names]
    for th in threads:
        th.start()
    try:
        wait_for(lambda: all(len(sent[n]) >= 200 for n in names), 30, "200 jobs from each producer")
        cluster.kill(leader)  # mid-stream: batches are in flight
        cluster.leader(among=[i for i in (1, 2, 3) if i != leader], timeout=20)
        marks = {n: len(sent[n]) for n in names}
        wait_for(lambda: all(len(sent[n]) >= marks[n] + 200 for n in names), 30, "200 more jobs each")
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not errors, errors
    with Client(list(cluster.addresses.values()), timeout=30) as client:
        rows, start = [], 0
        while True:
            page = client.query("read", queue=queue, from_offset=start, max_count=1000)
            rows += page
            if len(page) < 1000:
                break
            start = page[-1][0] + 1
    payloads = [bytes(p) for _, p in rows]
    assert len(payloads) == len(set(payloads)), "a job was enqueued twice"
    for name in names:
        mine = [p for p in payloads if p.startswith(name.encode() + b"-")]
        assert set(sent[name]) <= set(mine), f"{name}: acknowledged jobs are missing"
        assert mine == sorted(mine, key=lambda p: int(p.split(b"-")[1])), f"{name}: jobs out of order"
        assert mine[:len(sent[name])] == sent[name]


def test_a_peer_with_a_wrong_secret_is_refused_and_logged_and_the_cluster_keeps_working(tmp_path):
    secret, wrong = tmp_path / "secret", tmp_path / "wrong"
    secret.write_text("the-right-cluster-secret\n")
    wrong.write_text("a-wrong-cluster-secret!!\n")
    with LocalCluster(3, tmp_path / "c", extra_args=("--secret-file", str(secret), *FAST_ELECTIONS)) as cluster, \
            Client(cluster.spec, secret=b"the-right-cluster-secret", timeout=20) as client:
        client.append([b"before"])
        term = client.status()["term"]
        # An impostor claims to be member 2, on its own port, with the wrong secret.
        (port,) = free_ports(1)
        peers = {1: cluster.addresses[1], 2: f"127.0.0.1:{port}", 3: cluster.addresses[3]}
        with open(tmp_path / "impostor.log", "wb") as out:
            impostor = subprocess.Popen(node_argv(2, peers[2], peers, tmp_path / "impostor",
                                                  extra_args=("--secret-file", str(wrong), *FAST_ELECTIONS)),
                                        stdout=out, stderr=subprocess.STDOUT)
        try:
            refused = re.compile(r"closing connection from unauthenticated .*authentication failed for peer 2: "
                                 r"wrong cluster secret")
            wait_for(lambda: all(refused.search(cluster.log_path(i).read_text()) for i in (1, 3)), 20,
                     "nodes 1 and 3 to log the refused impostor")
            for k in range(20):
                client.append([b"during-%d" % k])
            assert client.status()["term"] == term  # no election was disturbed
            assert "refused us" in (tmp_path / "impostor.log").read_text()
        finally:
            impostor.kill()
            impostor.wait()


def test_a_partitioned_old_leader_never_answers_a_linearizable_read(make_cluster):
    cluster = make_cluster(3)
    old = cluster.leader()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    Producer(cluster.client, queue).enqueue(b"before")
    assert cluster.client.query("stats", queue=queue, group="g")["backlog"] == 1
    cluster.isolate(old)
    new = cluster.leader(among=[i for i in (1, 2, 3) if i != old], timeout=20)
    with Client([cluster.addresses[new]], timeout=20) as majority:
        Producer(majority, queue).enqueue(b"after")  # committed by the majority only
        assert majority.query("stats", queue=queue, group="g")["backlog"] == 2
    with Client([cluster.addresses[old]], timeout=5, attempt_timeout=5) as cut_off:
        for _ in range(3):
            # Any answer from the old leader would be stale (backlog 1): it must not answer.
            with pytest.raises(ClientError):
                cut_off.call(cluster.addresses[old], "query",
                             {"name": "stats", "args": {"queue": queue, "group": "g"}, "stale": False})
        stale = cut_off.call(cluster.addresses[old], "query",
                             {"name": "stats", "args": {"queue": queue, "group": "g"}, "stale": True})
        assert stale["backlog"] == 1  # what it would have said: its own, lagging state
    cluster.isolate(old, on=False)


def _heartbeat(term: int, src: int, dst: int) -> list:
    return wire.encode_message(t.Heartbeat(term, src, dst, 0))


MALFORMED = {
    "unknown frame type": lambda term, src, dst: [99, 1, 2],
    "a client request": lambda term, src, dst: [wire.REQUEST, 1, "status", {}],
    "too few fields": lambda term, src, dst: _heartbeat(term, src, dst)[:3],
    "a negative term": lambda term, src, dst: [_heartbeat(term, src, dst)[0], -1, *_heartbeat(term, src, dst)[2:]],
    "a mistyped entry": lambda term, src, dst: [*wire.encode_message(
        t.AppendEntries(term, src, dst, 0, 0, (t.Entry(term, 1, b"x"),), 0))[:-1], [[term, "not bytes", 0]]],
}


@pytest.mark.parametrize("what", list(MALFORMED) + ["a message from another node"])
def test_malformed_raft_bodies_on_a_peer_link_close_that_link_only(make_cluster, what):
    cluster = make_cluster(3)
    leader = cluster.leader()
    term = cluster.status(leader)["term"]
    before = cluster.client.append([b"before"])[-1]
    host, port = cluster.addresses[leader].rsplit(":", 1)
    peer = next(i for i in (1, 2, 3) if i != leader)
    if what == "a message from another node":
        other = next(i for i in (1, 2, 3) if i not in (leader, peer))
        body = wire.encode_message(t.HeartbeatResponse(term, other, leader))
    else:
        body = MALFORMED[what](term, peer, leader)

    async def send_malformed() -> None:
        lost = asyncio.Event()
        conn = await dial(host, int(port), secret=None, kind="peer", peer_id=peer, on_lost=lost.set)
        conn.write(wire.frame(body))
        await asyncio.wait_for(lost.wait(), 10)  # the node closed this link

    asyncio.run(send_malformed())
    wait_for(lambda: f"closing connection from peer {peer}" in cluster.log_text(leader), 10, "the leader to log it")
    # Nothing else changed: the same leader, the same term, and it still replicates to the peer.
    after = cluster.client.append([b"after"])[-1]
    assert after > before
    assert cluster.status(leader)["role"] == "leader" and cluster.status(leader)["term"] == term
    cluster.wait_applied([1, 2, 3], after, timeout=10)
    assert all(cluster.alive(i) for i in (1, 2, 3))
