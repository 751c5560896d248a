"""Nodes in one process over real loopback TCP: replication, redirects, sessions,
garbage input, authentication, membership, transfer, snapshots, reads.

Each test runs its own event loop; every node it starts is stopped in ``finally``.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import pytest

from logqueue.client import AsyncClient, ClientError
from logqueue.local_cluster import free_ports
from logqueue.queue import commands
from logqueue.runtime import Node, NodeConfig, wire

FAST = dict(election_timeout_ms=(150, 300), heartbeat_ms=30)


async def poll(predicate, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def cluster(n: int = 3, spare: int = 0, **overrides):
    ports = free_ports(n + spare)
    addrs = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    members = {i: addrs[i] for i in range(1, n + 1)}
    nodes: dict[int, Node] = {}

    async def start(i: int, join: bool = False, peers=None) -> Node:
        cfg = NodeConfig(i, addrs[i], dict(peers or members), **{**FAST, **overrides}, join=join, test_hooks=True)
        nodes[i] = Node(cfg)
        await nodes[i].start()
        return nodes[i]

    for i in members:
        await start(i)
    client = AsyncClient(list(members.values()), timeout=10, attempt_timeout=1.0, secret=overrides.get("secret"))
    env = type("Env", (), {"nodes": nodes, "addrs": addrs, "client": client, "start": staticmethod(start)})
    try:
        yield env
    finally:
        await client.close()
        for node in nodes.values():
            await node.stop()


def leader_of(nodes: dict[int, Node]) -> Node | None:
    leaders = [n for n in nodes.values() if n.raft.role.value == "leader" and not n.stopped.is_set()]
    return leaders[0] if len(leaders) == 1 else None


def records(node: Node) -> list[tuple[int, bytes]]:
    """(index, data) of the committed, non-duplicate records of a node."""
    from logqueue.runtime import envelope

    out = []
    for e in node.storage.entries(1, node.raft.applied_index + 1):
        env = envelope.decode(e.data) if e.kind.value == 0 else None
        if env and env[0] == envelope.RECORD and e.index not in node.machine.duplicates:
            out.append((e.index, env[4]))
    return out


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def test_replicates_appends_to_every_node_and_followers_redirect():
    async def main():
        async with cluster() as env:
            idx = await env.client.append([b"r%d" % k for k in range(500)])
            assert idx == sorted(idx) and len(set(idx)) == 500
            leader = leader_of(env.nodes)
            follower = next(n for n in env.nodes.values() if n is not leader)
            with pytest.raises(ClientError) as err:
                await env.client.call(follower.cfg.listen, "append", {"c": 1, "recs": [[1, b"x"]]})
            assert err.value.code == "not_leader"
            await poll(lambda: all(n.raft.applied_index >= idx[-1] for n in env.nodes.values()), 5, "apply")
            logs = [records(n) for n in env.nodes.values()]
            assert logs[0] == logs[1] == logs[2]
            assert [d for _, d in logs[0]] == [b"r%d" % k for k in range(500)]
            # A client that knows only a follower follows the redirect to the leader.
            lone = AsyncClient([follower.cfg.listen], timeout=5)
            try:
                assert (await lone.append([b"redirected"]))[0] > idx[-1]
            finally:
                await lone.close()

    run(main())


def test_a_retried_request_is_answered_from_the_session_and_never_appended_twice():
    async def main():
        async with cluster() as env:
            await env.client.append([b"warm-up"])
            leader = leader_of(env.nodes)
            args = {"c": 77, "low": 1, "recs": [[1, b"once"], [2, b"twice?"]]}
            # Two copies in the same loop turn, then one after they were applied.
            first, second = await asyncio.gather(env.client.call(leader.cfg.listen, "append", dict(args)),
                                                 env.client.call(leader.cfg.listen, "append", dict(args)))
            third = await env.client.call(leader.cfg.listen, "append", dict(args))
            assert first == second == third
            datas = [d for _, d in records(leader)]
            assert datas.count(b"once") == 1 and datas.count(b"twice?") == 1
            # Queue commands: the same (client, seq) enqueues once.
            sub = {"c": 78, "seq": 1, "low": 1, "cmds": [commands.enqueue("q", b"job")]}
            a = await env.client.call(leader.cfg.listen, "submit", dict(sub))
            b = await env.client.call(leader.cfg.listen, "submit", dict(sub))
            assert a == b
            stats = await env.client.query("stats", queue="q", group="g")
            assert stats["enqueued"] == 1

    run(main())


def test_linearizable_and_stale_queries():
    async def main():
        async with cluster() as env:
            res = await env.client.submit([commands.enqueue("jobs", b"p%d" % k) for k in range(3)])
            assert [r["offset"] for r in res] == [0, 1, 2]
            assert await env.client.query("read", queue="jobs", from_offset=0, max_count=10) == [
                [0, b"p0"], [1, b"p1"], [2, b"p2"]]
            leader = leader_of(env.nodes)
            follower = next(n for n in env.nodes.values() if n is not leader)
            with pytest.raises(ClientError) as err:  # linearizable reads are the leader's
                await env.client.call(follower.cfg.listen, "query",
                                      {"name": "stats", "args": {"queue": "jobs", "group": "g"}})
            assert err.value.code == "not_leader"
            await poll(lambda: follower.raft.applied_index >= leader.raft.applied_index, 5, "follower apply")
            stale = await env.client.query("stats", stale=True, node=follower.cfg.listen, queue="jobs", group="g")
            assert stale["enqueued"] == 3
            with pytest.raises(ClientError) as err:
                await env.client.query("drop_everything")
            assert err.value.code == "bad_request"

    run(main())


def test_garbage_on_the_port_closes_only_that_connection():
    async def main():
        async with cluster() as env:
            host, port = env.addrs[1].split(":")
            payloads = [
                os.urandom(4096),  # random bytes before any handshake
                struct.pack(">IB", 0xFFFFFFF0, wire.PROTOCOL_VERSION),  # a huge length prefix
            ]
            for data in payloads:
                r, w = await asyncio.open_connection(host, int(port))
                w.write(data)
                await w.drain()
                assert await asyncio.wait_for(r.read(), 5) is not None  # the node closes it
                w.close()
            # Authenticated, then a valid frame of an unknown type.
            r, w = await asyncio.open_connection(host, int(port))
            dec = wire.FrameDecoder()
            hello = []
            while not hello:
                hello = dec.feed(await r.read(1024))
            w.write(wire.frame([wire.AUTH, "client", 0, "", b""]) + wire.frame([250, "what"]))
            await w.drain()
            while await asyncio.wait_for(r.read(1024), 5):
                pass  # WELCOME, then EOF when the node closes the connection
            w.close()
            assert (await env.client.append([b"still serving"]))[0] > 0
            assert (await env.client.status(env.addrs[1]))["id"] == 1

    run(main())


def test_unknown_operation_and_bad_arguments_get_error_answers():
    async def main():
        async with cluster() as env:
            await env.client.append([b"x"])
            leader = leader_of(env.nodes)
            for op, args in (("explode", {}), ("append", {"c": "x", "recs": []}), ("append", {"c": 1, "recs": [[1]]})):
                with pytest.raises(ClientError) as err:
                    await env.client.call(leader.cfg.listen, op, args)
                assert err.value.code == "bad_request"

    run(main())


def test_cluster_secret_is_required_from_clients_and_peers():
    secret = b"correct horse battery staple"

    async def main():
        async with cluster(secret=secret) as env:
            assert (await env.client.append([b"authenticated"]))[0] > 0
            outsider = AsyncClient([env.addrs[1]], secret=b"wrong secret, wrong secret", timeout=2)
            with pytest.raises(ClientError) as err:
                await outsider.status(env.addrs[1])
            assert err.value.code in ("auth", "unavailable")
            anonymous = AsyncClient([env.addrs[1]], timeout=2)
            with pytest.raises(ClientError):
                await anonymous.status(env.addrs[1])
            await outsider.close()
            await anonymous.close()

    run(main())


def test_messages_from_non_members_are_refused():
    from logqueue.raft import types as t
    from logqueue.runtime.transport import dial

    async def main():
        async with cluster() as env:
            await env.client.append([b"x"])
            leader = leader_of(env.nodes)
            term = leader.raft.term
            host, port = leader.cfg.listen.split(":")
            # "Node 9" (no member) claims leadership of a newer term: it must change nothing.
            conn = await dial(host, int(port), secret=None, kind="peer", peer_id=9)
            bogus = [t.AppendEntries(term + 5, 9, leader.node_id, 0, 0, (), 0),
                     t.RequestVote(term + 5, 9, leader.node_id, 10**6, term + 5)]
            conn.write(b"".join(wire.frame(wire.encode_message(m)) for m in bogus))
            await poll(lambda: 9 in leader._refused, 5, "the refusal")
            assert leader.raft.term == term and leader.raft.role.value == "leader"
            # A member's link cannot speak for another node either.
            conn2 = await dial(host, int(port), secret=None, kind="peer", peer_id=2)
            conn2.write(wire.frame(wire.encode_message(t.Heartbeat(term + 5, 3, leader.node_id, 0))))
            await poll(lambda: conn2.closed, 5, "the link to be closed")
            assert leader.raft.term == term
            conn.close()

    run(main())


def test_membership_three_to_five_and_back_while_appending():
    async def main():
        async with cluster(spare=2) as env:
            await env.client.append([b"before"])
            for i in (4, 5):
                await env.start(i, join=True)
            stop = asyncio.Event()
            acked: list[bytes] = []

            async def load():
                k = 0
                while not stop.is_set():
                    batch = [b"m%d" % (k + j) for j in range(20)]
                    await env.client.append(batch)
                    acked.extend(batch)
                    k += 20

            task = asyncio.create_task(load())
            assert await env.client.member_add(4, env.addrs[4]) == [1, 2, 3, 4]
            assert await env.client.member_add(5, env.addrs[5]) == [1, 2, 3, 4, 5]
            await poll(lambda: env.nodes[5].raft.applied_index > 0, 5, "node 5 to catch up")
            assert await env.client.member_remove(1) == [2, 3, 4, 5]
            assert await env.client.member_remove(2) == [3, 4, 5]
            await asyncio.sleep(0.2)
            stop.set()
            await task
            assert len(acked) > 0
            live = [env.nodes[i] for i in (3, 4, 5)]
            last = max(n.raft.applied_index for n in live)
            await poll(lambda: all(n.raft.applied_index >= last for n in live), 5, "apply")
            logs = [records(n) for n in live]
            assert logs[0] == logs[1] == logs[2]
            datas = [d for _, d in logs[0]]
            assert sorted(set(datas)) == sorted(datas)  # no record twice
            assert set(acked) <= set(datas)
            assert leader_of({i: env.nodes[i] for i in (3, 4, 5)}).raft.conf.voters == frozenset({3, 4, 5})

    run(main())


def test_leadership_transfer():
    async def main():
        async with cluster() as env:
            await env.client.append([b"x"])
            old = leader_of(env.nodes)
            target = next(i for i in env.nodes if i != old.node_id)
            assert await env.client.transfer_leader(target) == target
            await poll(lambda: leader_of(env.nodes) is env.nodes[target], 5, "the new leader")
            assert (await env.client.append([b"after transfer"]))[0] > 0

    run(main())


def test_a_cut_off_follower_catches_up_by_install_snapshot():
    async def main():
        async with cluster(snapshot_every=200, retain_entries=0) as env:
            await env.client.append([b"x"])
            leader = leader_of(env.nodes)
            lagger = next(n for n in env.nodes.values() if n is not leader)
            lagger.set_isolated(True)
            acked = await env.client.append([b"s%d" % k for k in range(1000)])
            # the entries it needs are gone (the disk thread compacts behind each snapshot)
            await poll(lambda: leader.storage.first_index() > lagger.raft.last_index + 1, 10, "compaction")
            lagger.set_isolated(False)
            await poll(lambda: lagger.raft.applied_index >= acked[-1], 10, "catch-up")
            assert lagger._snap_index > 1
            # The snapshot carried the client sessions: a retry is still answered once.
            last_seq = env.client._next_seq - 1
            assert lagger.machine.answer(env.client.client_id, last_seq) == (True, acked[-1])

    run(main())


def test_restart_on_the_same_data_recovers_the_log(tmp_path):
    async def main():
        ports = free_ports(1)
        cfg = NodeConfig(1, f"127.0.0.1:{ports[0]}", {}, data_dir=str(tmp_path / "solo"), **FAST)
        node = Node(cfg)
        await node.start()
        solo = AsyncClient([cfg.listen], timeout=10)
        try:
            idx = await solo.append([b"a", b"b", b"c"])
        finally:
            await node.stop()
        node = Node(cfg)
        await node.start()
        try:
            await poll(lambda: node.raft.applied_index >= idx[-1], 5, "replay")
            assert [d for _, d in records(node)] == [b"a", b"b", b"c"]
            # The session survived: the same request gets the same indexes.
            again = await solo.call(cfg.listen, "append",
                                    {"c": solo.client_id, "low": 1, "recs": [[1, b"a"], [2, b"b"], [3, b"c"]]})
            assert again["indexes"] == idx
        finally:
            await solo.close()
            await node.stop()

    run(main())


def test_a_lost_peer_is_reported_to_the_core():
    # The transport tells the core (etcd's ReportUnreachable / ForgetLeader): the leader
    # probes a follower it lost instead of streaming to it, and followers that lose the
    # leader forget it at once -- long before an election timeout would let them vote.
    async def main():
        async with cluster(election_timeout_ms=(4000, 5000)) as env:
            await poll(lambda: leader_of(env.nodes) is not None, 15, "a leader")
            await env.client.append([b"x"])
            leader = leader_of(env.nodes)
            follower, other = [n for n in env.nodes.values() if n is not leader]
            await poll(lambda: leader.raft.progress[follower.node_id].state.value == "replicate", 5, "replicate")
            await follower.stop()
            await poll(lambda: leader.raft.progress[follower.node_id].state.value == "probe", 2, "probing")
            assert other.raft.leader_id == leader.node_id
            await leader.stop()
            await poll(lambda: other.raft.leader_id is None, 2, "the leader to be forgotten")
            assert other.raft.role.value == "follower"  # forgotten, not an election

    run(main())
