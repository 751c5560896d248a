"""Real `logqueue node` processes: learners and linearizable log reads (issue 18).

Membership grows through learners (a node is promoted only once it holds the committed
log), the leader is replaced by a new member, and `log read --consistency linearizable`
never misses an append acknowledged before the read began -- from the leader, from a
follower, and across a SIGKILL of the leader.
"""
from __future__ import annotations

import json
import time

import pytest

from cluster_util import Load, check_logs, make_cluster, run_cli, wait_for  # noqa: F401
from logqueue.client import ClientError

pytestmark = pytest.mark.slow


def member(cluster, *args: str) -> dict:
    r = run_cli("member", *args, "--cluster", ",".join(cluster.addresses.values()))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_learner_grows_the_cluster_from_three_to_four_while_appending(make_cluster):
    cluster = make_cluster(3, spare=1)
    cluster.leader()
    cluster.start(4, join=True)
    load = Load([cluster.addresses[i] for i in (1, 2, 3)])
    try:
        load.wait_acked(100)
        assert member(cluster, "add", "--learner", "--id", "4", "--address", cluster.addresses[4]) == {
            "voters": [1, 2, 3], "learners": [4]}
        wait_for(lambda: cluster.status(4)["learners"] == [4], 10, "node 4 to know it is a learner")
        r = run_cli("status", "--cluster", ",".join(cluster.addresses.values()))
        assert r.returncode == 0 and "learner" in r.stdout, r.stdout
        load.wait_acked(len(load.acked) + 100)
        committed_before = cluster.status(cluster.leader())["commit_index"]
        assert member(cluster, "promote", "--id", "4") == {"voters": [1, 2, 3, 4], "learners": []}
        # Promoted only once it held the committed log: everything committed before the
        # promotion was asked for is on node 4 now.
        assert cluster.status(4)["last_index"] >= committed_before
        load.wait_acked(len(load.acked) + 100)
    finally:
        acked = load.stop()
    check_logs(cluster, [1, 2, 3, 4], acked)


def test_the_leader_is_replaced_by_a_new_member(make_cluster):
    cluster = make_cluster(3, spare=1)
    old = cluster.leader()
    cluster.start(4, join=True)
    load = Load([cluster.addresses[i] for i in (1, 2, 3, 4)])
    try:
        load.wait_acked(100)
        # `member add` joins as a learner and promotes it once caught up.
        assert member(cluster, "add", "--id", "4", "--address", cluster.addresses[4])["voters"] == [1, 2, 3, 4]
        assert cluster.status(4)["commit_index"] > 0
        rest = sorted({1, 2, 3, 4} - {old})
        assert member(cluster, "remove", "--id", str(old))["voters"] == rest
        load.wait_acked(len(load.acked) + 100)
    finally:
        acked = load.stop()
    check_logs(cluster, rest, acked)
    assert cluster.status(cluster.leader(among=rest))["voters"] == rest


def read_all(cluster, i: int, consistency: str) -> set[bytes]:
    """Every record node i returns for one read (all pages)."""
    rows, start = [], 1
    while True:
        page = cluster.client.read_log(cluster.addresses[i], start, 10_000, consistency=consistency)
        rows += [r for r in page["entries"] if "kind" not in r]
        if page["next"] > page["applied_index"]:
            return {r["data"].encode() for r in rows}
        start = page["next"]


def test_a_linearizable_log_read_never_misses_an_acknowledged_append(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    other = next(i for i in (1, 2, 3) if i not in (leader, follower))
    load = Load(list(cluster.addresses.values()), batch=20)
    reads = {"leader": 0, "follower": 0, "after kill": 0}
    try:
        load.wait_acked(100)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            for who, node in (("leader", leader), ("follower", follower)):
                before = list(load.acked)  # acknowledged before the read began
                missing = set(before) - read_all(cluster, node, "linearizable")
                assert not missing, f"a read from the {who} missed {len(missing)} acknowledged appends"
                reads[who] += 1
        cluster.kill(leader)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            before = list(load.acked)
            try:
                got = read_all(cluster, follower, "linearizable")
            except ClientError:
                continue  # no leader yet: a linearizable read is refused, never stale
            assert not set(before) - got, "a read after the leader's SIGKILL missed acknowledged appends"
            reads["after kill"] += 1
    finally:
        load.stop()
    assert all(reads.values()), reads
    assert cluster.status(other)["role"] in ("leader", "follower")
