"""The log is the store (issue 13), on real node processes and disks.

Payloads and results stay in the WAL; a node's state machine keeps only locators, so:
a restart on its data re-applies only what follows its snapshot; a follower wiped and
restarted gets the metadata by snapshot and the segments its jobs read by backfill;
retention deletes whole segments, so the WAL stays bounded while jobs flow.

Nodes run with tiny segments and frequent snapshots, and keep no entries in memory
behind their snapshot, so every path above is taken with a few thousand jobs.
"""
from __future__ import annotations

import shutil
import time

import pytest

from cluster_util import FAST_ELECTIONS, make_cluster, wait_for  # noqa: F401
from logqueue.queue import commands as c

pytestmark = pytest.mark.slow

Q, G = "store", "g"
SEGMENT = 64 * 1024
SMALL = FAST_ELECTIONS + ("--snapshot-every", "20", "--retain-entries", "0", "--segment-bytes", str(SEGMENT))


def payload(i: int) -> bytes:
    return b"job-%06d:" % i + b"x" * 200


def enqueue(cluster, first: int, n: int, batch: int = 20) -> None:
    for lo in range(first, first + n, batch):
        answers = cluster.client.submit([c.enqueue(Q, payload(i), "p", i) for i in range(lo, min(lo + batch, first + n))])
        assert all("offset" in a for a in answers), answers


def read_all(cluster, node: int, n: int) -> list[bytes]:
    """Every payload from offset 0, as ``node`` itself reads them (a log-mode replay)."""
    out: list[bytes] = []
    while len(out) < n:
        rows = cluster.client.query("read", stale=True, node=cluster.addresses[node], queue=Q,
                                    from_offset=len(out), max_count=500)
        assert rows, f"node {node} read nothing at offset {len(out)}"
        assert rows[0][0] == len(out)
        out += [p for _, p in rows]
    return out


def caught_up(cluster, node: int, timeout: float = 20.0) -> dict:
    leader = cluster.leader()
    top = cluster.status(leader)["commit_index"]
    cluster.wait_applied([node], top, timeout=timeout)
    return cluster.status(node)


def follower_with(cluster, n: int) -> int:
    """A follower that has applied the enqueue of jobs 0..n-1."""
    leader = cluster.leader()
    enqueue(cluster, 0, n)
    follower = next(i for i in (1, 2, 3) if i != leader)
    cluster.wait_applied([follower], cluster.status(leader)["commit_index"])
    return follower


def test_a_restart_on_its_data_rebuilds_from_the_snapshot_and_reads_payloads_from_segments(make_cluster):
    cluster = make_cluster(3, extra_args=SMALL)
    follower = follower_with(cluster, 3000)
    before = cluster.status(follower)
    assert before["snapshot_index"] > 100 and before["wal_segments"] > 3
    assert before["retained_offsets"] == 3000
    cluster.kill(follower)
    cluster.restart(follower)
    after = caught_up(cluster, follower, timeout=5)
    # only the entries after its snapshot were applied again, not the history
    assert after["replayed_at_start"] <= 2 * 20 < before["applied_index"]
    assert read_all(cluster, follower, 3000) == [payload(i) for i in range(3000)]


def test_a_wiped_follower_catches_up_by_snapshot_and_segments_then_serves_the_jobs(make_cluster):
    cluster = make_cluster(3, extra_args=SMALL)
    leader = cluster.leader()
    enqueue(cluster, 0, 2000)
    lagger = next(i for i in (1, 2, 3) if i != leader)
    cluster.kill(lagger)
    shutil.rmtree(cluster.data_dir(lagger))
    enqueue(cluster, 2000, 1000)
    cluster.restart(lagger)
    status = caught_up(cluster, lagger)
    wait_for(lambda: not cluster.status(lagger)["backfilling"], 20, "the backfill")
    text = cluster.log_text(lagger)
    assert "installed a snapshot" in text and "log entries behind its snapshot" in text
    assert status["snapshot_index"] > 0
    assert read_all(cluster, lagger, 3000) == [payload(i) for i in range(3000)]
    # It leads and hands out the jobs whose payloads only its backfilled segments hold.
    assert cluster.client.transfer_leader(lagger) == lagger
    seen = {}
    while len(seen) < 3000:
        jobs = cluster.client.submit([c.claim(Q, G, "w", 500, 60_000)])[0]["jobs"]
        assert jobs
        done = cluster.client.submit([c.complete(Q, G, off, tok, b"r%d" % off) for off, tok, _, _ in jobs])
        assert done == [{"ok": True}] * len(jobs)
        seen.update((off, p) for off, _, p, _ in jobs)
    assert [seen[i] for i in range(3000)] == [payload(i) for i in range(3000)]
    results = cluster.client.query("results", queue=Q, group=G, from_offset=2990)
    assert [(r["offset"], r["result"]) for r in results] == [(i, b"r%d" % i) for i in range(2990, 3000)]


# The WAL keeps one segment behind the snapshot beside what retained jobs need, and the core
# no entries in memory: a wiped follower is sent a snapshot, one that keeps up is not.
COMPACTING = FAST_ELECTIONS + ("--snapshot-every", "20", "--segment-bytes", str(SEGMENT), "--retain-bytes",
                               str(SEGMENT), "--memory-entries", "0", "--retention-jobs", "200")


def test_a_backfill_whose_entries_every_member_compacted_takes_a_members_newer_snapshot(make_cluster):
    """A wiped follower installs a snapshot and backfills what its retained jobs read. Held
    up meanwhile (a test hook), it finds those jobs settled and dropped, their segments
    deleted on every member: it must take a member's newer snapshot and go on from what
    that state needs (it used to ask for the deleted entries forever, holding every commit
    back)."""
    cluster = make_cluster(3, extra_args=COMPACTING)
    leader = cluster.leader()
    enqueue(cluster, 0, 1000)
    rows = cluster.client.read_log(cluster.addresses[leader], 1, 100)["entries"]
    first_enqueue = next(r["index"] for r in rows if r.get("kind") == "queue")
    lagger = next(i for i in (1, 2, 3) if i != leader)
    sources = [i for i in (1, 2, 3) if i != lagger]
    cluster.kill(lagger)
    shutil.rmtree(cluster.data_dir(lagger))
    hold = cluster.data_dir(lagger) / "test-hooks" / "hold-backfill"
    hold.parent.mkdir(parents=True)
    hold.touch()
    cluster.restart(lagger)
    wait_for(lambda: cluster.status(lagger)["backfilling"], 20, "the lagger to start its backfill")
    # Settle every job and add as many: retention drops the first 1800, and the members'
    # snapshots delete their segments.
    enqueue(cluster, 1000, 1000)
    for _ in range(4):
        jobs = cluster.client.submit([c.claim(Q, G, "w", 500, 60_000)])[0]["jobs"]
        done = cluster.client.submit([c.complete(Q, G, off, tok, b"ok") for off, tok, _, _ in jobs])
        assert done == [{"ok": True}] * len(jobs)
    for i in sources:  # a snapshot now, at the state that retains only the last 200 jobs
        cluster.client.run(cluster.client.aio.call(cluster.addresses[i], "snapshot", timeout=30))
    wait_for(lambda: min(cluster.status(i)["first_index"] for i in sources) > first_enqueue, 20,
             "every member to delete the segment of the first enqueue")
    assert cluster.status(lagger)["backfilling"]
    hold.unlink()
    caught_up(cluster, lagger)
    wait_for(lambda: not cluster.status(lagger)["backfilling"], 20, "the backfill")
    assert "'s snapshot at index" in cluster.log_text(lagger)  # taken from a member, not installed by Raft
    first = cluster.client.query("stats", queue=Q, group=G)["first_retained"]
    assert 1000 < first < 2000
    rows = cluster.client.query("read", stale=True, node=cluster.addresses[lagger], queue=Q,
                                from_offset=first, max_count=1000)
    assert [(o, p) for o, p in rows] == [(i, payload(i)) for i in range(first, 2000)]


def test_an_idle_leader_repairs_a_follower_wiped_after_it_had_acknowledged_everything(make_cluster):
    cluster = make_cluster(3, extra_args=SMALL)
    lagger = follower_with(cluster, 1000)
    cluster.kill(lagger)
    shutil.rmtree(cluster.data_dir(lagger))
    cluster.restart(lagger)
    # nothing is proposed any more: the leader learns from the heartbeat answers
    caught_up(cluster, lagger)
    wait_for(lambda: not cluster.status(lagger)["backfilling"], 20, "the backfill")
    assert read_all(cluster, lagger, 1000) == [payload(i) for i in range(1000)]


def test_retention_keeps_the_wal_bounded_while_jobs_flow(make_cluster):
    cluster = make_cluster(3, extra_args=SMALL + ("--retention-jobs", "200"))
    cluster.leader()
    rounds, per_round = 100, 100
    peak = 0
    for r in range(rounds):
        enqueue(cluster, r * per_round, per_round, batch=per_round)
        jobs = cluster.client.submit([c.claim(Q, G, "w", per_round, 60_000)])[0]["jobs"]
        assert [p for _, _, p, _ in jobs] == [payload(r * per_round + k) for k in range(per_round)]
        cluster.client.submit([c.complete(Q, G, off, tok, b"ok") for off, tok, _, _ in jobs])
        if r % 10 == 9:
            peak = max(peak, max(s["wal_bytes"] for s in cluster.client.cluster_status()))
    written = rounds * per_round * len(payload(0))
    # 200 retained jobs + 20 entries between snapshots + the open segment: a few segments
    assert peak <= 8 * SEGMENT < written / 4, (peak, written)
    stats = cluster.client.query("stats", queue=Q, group=G)
    assert stats["completed"] == rounds * per_round and stats["first_retained"] >= rounds * per_round - 400


SLOW_SNAPSHOT_MS = 2000


def test_snapshots_are_written_off_the_event_loop(make_cluster):
    # Each snapshot write takes SLOW_SNAPSHOT_MS longer: were it written on the loop, a
    # loop turn (and every tick behind it) would last at least that long.
    cluster = make_cluster(3, extra_args=SMALL + ("--test-slow-snapshot-ms", str(SLOW_SNAPSHOT_MS)))
    leader = cluster.leader()
    enqueue(cluster, 0, 2000)
    # the leader wrote a snapshot (its WAL was compacted behind it), so did the followers
    wait_for(lambda: all(cluster.status(i)["first_index"] > 1 for i in (1, 2, 3)), 30, "snapshots written")
    for i in (1, 2, 3):
        status = cluster.status(i)
        assert status["snapshot_index"] > 0
        assert status["longest_turn_ms"] < SLOW_SNAPSHOT_MS and status["longest_stall_ms"] < SLOW_SNAPSHOT_MS, (i, status)
    # a snapshot request is answered once its snapshot is durable
    enqueue(cluster, 2000, 1)
    top = cluster.status(leader)["applied_index"]
    started = time.monotonic()
    answer = cluster.client.run(cluster.client.aio.call(cluster.addresses[leader], "snapshot", timeout=30))
    assert answer["index"] >= top and time.monotonic() - started >= SLOW_SNAPSHOT_MS / 1000


CHUNK = 512


def test_a_snapshot_streams_to_a_wiped_follower_in_bounded_chunks(make_cluster):
    cluster = make_cluster(3, extra_args=SMALL + ("--snapshot-chunk-bytes", str(CHUNK)))
    leader = cluster.leader()
    enqueue(cluster, 0, 2000)
    # pending claims make the snapshot carry per-offset slots: many chunks of it
    cluster.client.submit([c.claim(Q, G, "w", 2000, 600_000)])
    lagger = next(i for i in (1, 2, 3) if i != leader)
    cluster.kill(lagger)
    shutil.rmtree(cluster.data_dir(lagger))
    enqueue(cluster, 2000, 500)
    cluster.restart(lagger)
    caught_up(cluster, lagger)
    wait_for(lambda: not cluster.status(lagger)["backfilling"], 20, "the backfill")
    status = cluster.status(lagger)
    assert "installed a snapshot" in cluster.log_text(lagger)
    assert status["largest_snapshot_chunk"] == CHUNK  # every chunk at most CHUNK bytes, some exactly
    assert status["snapshot_chunks_received"] >= status["snapshot_bytes"] // CHUNK >= 4, status
    assert read_all(cluster, lagger, 2500) == [payload(i) for i in range(2500)]


def flow(cluster, rounds: int, per_round: int = 100) -> None:
    """``rounds`` times: enqueue ``per_round`` jobs in one entry, claim and complete them."""
    for r in range(rounds):
        enqueue(cluster, r * per_round, per_round, batch=per_round)
        jobs = cluster.client.submit([c.claim(Q, G, "w", per_round, 60_000)])[0]["jobs"]
        cluster.client.submit([c.complete(Q, G, off, tok, b"ok") for off, tok, _, _ in jobs])
    cluster.wait_applied([1, 2, 3], cluster.status(cluster.leader())["commit_index"])


RETAINED = FAST_ELECTIONS + ("--segment-bytes", str(SEGMENT), "--retention-jobs", "200")


def test_the_wal_keeps_retain_entries_behind_the_snapshot_not_more(make_cluster):
    retain, every = 60, 20
    cluster = make_cluster(3, extra_args=RETAINED + ("--snapshot-every", str(every), "--retain-entries", str(retain)))
    flow(cluster, 100)
    # every job is settled and the last 200 are retained: only retain_entries bind; a
    # segment holds at most 3 entries of enqueues (21 KB each), so whole-segment
    # deletion keeps at most a segment's entries (<= 3 rounds of 3) more
    slack = 3 * 3
    for i in (1, 2, 3):
        status = cluster.status(i)
        assert status["applied_index"] > 3 * (retain + every)  # 3 entries a round
        kept = status["applied_index"] - status["first_index"] + 1
        assert kept <= retain + every + slack + 1, (i, status)


def test_the_wal_keeps_at_most_retain_bytes_behind_the_snapshot(make_cluster):
    # the default --retain-entries (100000) would keep the whole WAL: the bytes bind
    retain_bytes, every, per_round, rounds = 4 * SEGMENT, 20, 100, 100
    cluster = make_cluster(3, extra_args=RETAINED + ("--snapshot-every", str(every), "--retain-bytes", str(retain_bytes)))
    flow(cluster, rounds, per_round)
    written = rounds * per_round * len(payload(0))
    # + the entries since the last snapshot (at most `every` enqueues) + two partial segments
    bound = retain_bytes + every * per_round * len(payload(0)) + 2 * SEGMENT
    for i in (1, 2, 3):
        status = cluster.status(i)
        assert status["first_index"] > 1 and status["wal_bytes"] <= bound < written / 2, (i, status, bound)
