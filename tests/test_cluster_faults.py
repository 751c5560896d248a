"""Real `logqueue node` processes on real disks under faults (issue 3, item 5).

Each test checks that every acknowledged append is present exactly once, in the same
order, on every live node, and that the nodes' logs end identical (``check_logs``).
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import time

import pytest

from cluster_util import FAST_ELECTIONS, Load, check_logs, make_cluster, run_cli, wait_for  # noqa: F401
from logqueue.runtime import wire
from logqueue.runtime.node import NodeConfig

pytestmark = pytest.mark.slow

# An election with the default timeouts: a follower notices within the highest timeout;
# a split vote costs another one or two; plus a margin for a loaded 2-core machine.
ELECTION_BOUND_S = 3 * NodeConfig.election_timeout_ms[1] / 1000 + 2.0


def test_acceptance_leader_election_sigkill_failover_and_catch_up(make_cluster):
    # Default timeouts, as a user would start them.
    cluster = make_cluster(3, extra_args=())
    wait_for(lambda: all(cluster.status(i) for i in (1, 2, 3)), 15, "the nodes to answer")
    up = time.monotonic()
    first = cluster.leader(timeout=2 * ELECTION_BOUND_S)
    assert time.monotonic() - up < ELECTION_BOUND_S, f"no leader within {ELECTION_BOUND_S:g} s of the nodes being up"

    load = Load(list(cluster.addresses.values()))
    try:
        load.wait_acked(500)
        cluster.kill(first)
        killed = time.monotonic()
        others = [i for i in (1, 2, 3) if i != first]
        second = cluster.leader(among=others, timeout=2 * ELECTION_BOUND_S)
        failover = time.monotonic() - killed
        assert second != first and failover < ELECTION_BOUND_S, f"failover took {failover:.2f} s"
        before = len(load.acked)
        load.wait_acked(before + 500)  # appends continue on the new leader
        cluster.restart(first)
    finally:
        acked = load.stop()
    log = check_logs(cluster, [1, 2, 3], acked)
    assert len(log) >= len(acked) > 1000


def test_sigstop_a_follower_cut_off_a_node_then_sigkill_and_restart_everything(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    load = Load(list(cluster.addresses.values()))
    try:
        load.wait_acked(200)
        follower = next(i for i in (1, 2, 3) if i != leader)
        cluster.pause(follower)
        n = len(load.acked)
        load.wait_acked(n + 300)  # a majority keeps committing
        cluster.resume(follower)

        victim = cluster.leader()  # cut the leader itself off: the others elect a new one
        cluster.isolate(victim)
        others = [i for i in (1, 2, 3) if i != victim]
        wait_for(lambda: any(cluster.status(i)["role"] == "leader" for i in others), 10, "a new leader")
        n = len(load.acked)
        load.wait_acked(n + 300)
        cluster.isolate(victim, False)
        n = len(load.acked)
        load.wait_acked(n + 100)
    finally:
        acked = load.stop()
    check_logs(cluster, [1, 2, 3], acked)

    # Whole-cluster crash: nothing acknowledged may be lost.
    for i in (1, 2, 3):
        cluster.kill(i)
    for i in (1, 2, 3):
        cluster.start(i)
    cluster.leader()
    check_logs(cluster, [1, 2, 3], acked)


def test_status_shows_each_peers_links_and_on_the_leader_its_replication(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    killed, live = (i for i in (1, 2, 3) if i != leader)

    def peers(node: int) -> dict[int, dict]:
        return {row["id"]: row for row in cluster.status(node)["peers"]}

    cluster.client.append([b"before"])
    last = cluster.status(leader)["last_index"]
    wait_for(lambda: all(p["connected"] and p["state"] == "replicate" and p["match"] == last
                         for p in peers(leader).values()), 10, "both followers to replicate the last entry")
    assert set(peers(leader)) == {killed, live}
    assert all("state" not in p for p in peers(live).values()), "a follower has no replication of its own to show"
    cluster.kill(killed)
    cluster.client.append([b"after"])
    wait_for(lambda: not peers(leader)[killed]["connected"] and peers(leader)[killed]["state"] == "probe", 10,
             "the leader to show the killed follower's links down and probe it")
    rows = peers(leader)
    assert rows[killed]["match"] == last and rows[live]["state"] == "replicate" and rows[live]["match"] > last, rows


def test_a_node_far_behind_catches_up_by_install_snapshot(make_cluster):
    cluster = make_cluster(3, extra_args=FAST_ELECTIONS + ("--snapshot-every", "300", "--retain-entries", "0"))
    leader = cluster.leader()
    lagger = next(i for i in (1, 2, 3) if i != leader)
    cluster.kill(lagger)
    acked = cluster.client.append([b"snap-%d" % k for k in range(2000)])
    # The leader compacts what the lagger would need once its snapshot is on disk (written off the loop).
    wait_for(lambda: cluster.status(leader)["first_index"] > 300, 30, "the leader to compact its log")
    cluster.restart(lagger)
    cluster.wait_applied([lagger], acked[-1])
    # The core counts a snapshot applied once it accepts it; the node installs it (and logs so)
    # after the disk thread has written it: the status can show the index a moment earlier.
    wait_for(lambda: "installed a snapshot" in cluster.log_text(lagger), 10, "the lagger to install a snapshot")
    # What the lagger holds after its snapshot matches the others, entry for entry.
    cluster.client.append([b"after"])
    top = cluster.status(leader)["commit_index"]
    cluster.wait_applied([1, 2, 3], top)
    tails = [cluster.read_log(i) for i in (1, 2, 3)]
    start = max(t[0]["index"] for t in tails)
    trimmed = [[r for r in t if r["index"] >= start] for t in tails]
    assert trimmed[0] == trimmed[1] == trimmed[2] and trimmed[0][-1]["data"] == "after"


def test_membership_three_to_five_and_back_while_appending(make_cluster):
    cluster = make_cluster(3, spare=2)
    cluster.leader()
    for i in (4, 5):
        cluster.start(i, join=True)
    load = Load([cluster.addresses[i] for i in (1, 2, 3, 4, 5)])
    spec = ",".join(cluster.addresses.values())
    try:
        load.wait_acked(100)
        for i in (4, 5):
            r = run_cli("member", "add", "--cluster", spec, "--id", str(i), "--address", cluster.addresses[i])
            assert r.returncode == 0, r.stderr
        assert '"voters": [1, 2, 3, 4, 5]' in r.stdout
        n = len(load.acked)
        load.wait_acked(n + 100)
        for i in (1, 2):
            r = run_cli("member", "remove", "--cluster", spec, "--id", str(i))
            assert r.returncode == 0, r.stderr
        assert '"voters": [3, 4, 5]' in r.stdout
        n = len(load.acked)
        load.wait_acked(n + 100)
    finally:
        acked = load.stop()
    check_logs(cluster, [3, 4, 5], acked)
    leader = cluster.leader(among=[3, 4, 5])
    assert cluster.status(leader)["voters"] == [3, 4, 5]


def test_garbage_input_never_crashes_a_node(make_cluster):
    cluster = make_cluster(3)
    cluster.leader()
    host, port = cluster.addresses[1].split(":")
    junk = [os.urandom(65536), struct.pack(">IB", 0xFFFFFFFF, 1) + b"x" * 100, b"\x00" * 10,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
    for data in junk:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            try:
                s.sendall(data)
                while s.recv(65536):
                    pass
            except OSError:
                pass  # the node reset the connection: fine
    # An authenticated client sending a valid frame of an unknown type.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.recv(1024)
        s.sendall(wire.frame([wire.AUTH, "client", 0, "", b""]) + wire.frame([200, 1, 2, 3]))
        while s.recv(1024):
            pass
    assert cluster.alive(1)
    assert cluster.client.append([b"still fine"])[0] > 0
    assert "closing connection" in cluster.log_text(1)
    assert "Traceback" not in cluster.log_text(1)


def test_sigterm_stops_a_node_cleanly(make_cluster):
    cluster = make_cluster(3)
    cluster.leader()
    cluster.kill(2, signal.SIGTERM)
    assert cluster.procs[2].returncode == 0
