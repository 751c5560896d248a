"""Unit tests of the Raft core (logqueue.raft): the Ready contract, configuration checks,
refusals, batching and the in-flight window, and restarts from persisted state.

Multi-node tests drive real cores with the scripted-test cluster (tests/raft_script.py).
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logqueue.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    NotLeader,
    ProposalDropped,
    Raft,
    ReadyNotAdvanced,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    SnapshotMeta,
)
from logqueue.raft.progress import State
from raft_script import Cluster, execute

VOTERS = ConfState(frozenset({1, 2, 3}))


def make(node_id: int = 2, **kw) -> Raft:
    return Raft(node_id, Config(election_ticks=(10, 10), heartbeat_ticks=1), random.Random(node_id), bootstrap=VOTERS, **kw)


def cluster(*lines: str, **cfg) -> Cluster:
    c = Cluster()
    for line in lines:
        execute(c, line)
    return c


def elected(n: int = 3, options: str = "") -> Cluster:
    return cluster(f"new {n} {options}", "campaign 1", "stabilize")


# --- persist before send -----------------------------------------------------------------
def test_a_granted_vote_is_in_the_hard_state_of_the_same_ready() -> None:
    r = make()
    r.step(RequestVote(term=1, src=1, dst=2, last_log_index=0, last_log_term=0))
    rd = r.ready()
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert rd.messages == [RequestVoteResponse(1, 2, 1, granted=True)]


def test_a_restarted_node_remembers_its_vote() -> None:
    r = make()
    r.step(RequestVote(1, 1, 2, 0, 0))
    hs = r.ready().hard_state
    again = make(hard_state=hs)  # reboot from what was persisted
    again.step(RequestVote(1, 3, 2, 0, 0))
    assert again.ready().messages == [RequestVoteResponse(1, 2, 3, granted=False)]


def test_a_granted_pre_vote_persists_nothing_and_keeps_the_term() -> None:
    r = make()
    r.step(RequestVote(5, 1, 2, 0, 0, pre_vote=True))
    rd = r.ready()
    assert rd.hard_state is None and r.term == 0 and r.vote is None
    assert rd.messages == [RequestVoteResponse(5, 2, 1, granted=True, pre_vote=True)]


def test_an_acknowledged_append_is_in_the_entries_of_the_same_ready() -> None:
    r = make()
    entries = (Entry(1, 1, b"", EntryKind.NOOP), Entry(1, 2, b"x"))
    r.step(AppendEntries(1, 1, 2, 0, 0, entries, commit=1))
    rd = r.ready()
    assert rd.entries == list(entries)
    assert rd.hard_state == HardState(1, None, 1)
    assert rd.messages == [AppendEntriesResponse(1, 2, 1, True, 2)]
    assert rd.committed == [entries[0]]
    r.advance(rd)
    assert not r.has_ready() and r.ready().empty()


def test_a_second_ready_before_advance_is_refused_and_loses_nothing() -> None:
    # etcd's RawNode: a Ready is accepted by Advance; asking again first is a runtime bug.
    r = make()
    r.step(AppendEntries(1, 1, 2, 0, 0, (Entry(1, 1, b"x"),), commit=1))
    rd = r.ready()
    with pytest.raises(ReadyNotAdvanced):
        r.ready()
    r.step(AppendEntries(1, 1, 2, 1, 1, (Entry(1, 2, b"y"),), commit=2))  # work arriving meanwhile
    r.advance(rd)
    with pytest.raises(ReadyNotAdvanced):
        r.advance(rd)  # accepted once only
    nxt = r.ready()
    assert [e.index for e in nxt.entries] == [2] and [e.index for e in nxt.committed] == [2]
    assert nxt.messages == [AppendEntriesResponse(1, 2, 1, True, 2)]


def test_heartbeats_of_a_durable_term_may_leave_while_a_ready_is_persisted() -> None:
    # The runtime persists a Ready in a thread; meanwhile only heartbeats (and answers) in
    # a term already durable may be sent: nothing else, nothing of a term being persisted.
    r = make()
    assert r.take_heartbeats() == []  # no Ready outstanding: everything goes through ready()
    r.step(Heartbeat(1, 1, 2, 0, 7))  # a new term: its hard state is in this Ready
    rd = r.ready()
    r.step(Heartbeat(1, 1, 2, 0, 8))
    assert r.take_heartbeats() == []  # term 1 is not durable yet
    r.advance(rd)
    rd = r.ready()
    assert rd.messages == [HeartbeatResponse(1, 2, 1, 8, last_index=0)]
    r.advance(rd)
    r.step(AppendEntries(1, 1, 2, 0, 0, (Entry(1, 1, b"x"),), commit=0))
    rd = r.ready()
    r.step(Heartbeat(1, 1, 2, 0, 9))
    r.step(AppendEntries(1, 1, 2, 1, 1, (Entry(1, 2, b"y"),), commit=0))  # its answer needs entry 2 durable
    assert r.take_heartbeats() == [HeartbeatResponse(1, 2, 1, 9, last_index=1)]
    assert r.take_heartbeats() == []  # taken once
    r.advance(rd)
    assert r.ready().messages == [AppendEntriesResponse(1, 2, 1, True, 2)]


def test_heartbeat_now_sends_a_leaders_heartbeats_before_the_heartbeat_tick() -> None:
    # The runtime calls it after its loop could not tick for a while: a follower's timer
    # ran on meanwhile, so the leader must not wait for its next heartbeat tick.
    c = elected(3)
    leader = c.nodes[1].raft
    leader.heartbeat_now()
    rd = leader.ready()
    assert sorted(m.dst for m in rd.messages if isinstance(m, Heartbeat)) == [2, 3]
    leader.advance(rd)
    follower = c.nodes[2].raft
    follower.heartbeat_now()
    assert not follower.has_ready()


def test_a_ready_with_a_snapshot_continues_it() -> None:
    # One Ready may hold a snapshot, entries and committed entries: the entries and the
    # committed entries follow the snapshot, so persisting and applying in the documented
    # order (snapshot first) rebuilds the right state.
    r = make(entries=log_of(2))
    snap = Snapshot(SnapshotMeta(5, 1, VOTERS), b"image")
    r.step(InstallSnapshot(1, 1, 2, snap))
    r.step(AppendEntries(1, 1, 2, 5, 1, (Entry(1, 6, b"f"), Entry(1, 7, b"g")), commit=6))
    rd = r.ready()
    assert rd.snapshot == snap
    assert [e.index for e in rd.entries] == [6, 7]
    assert [e.index for e in rd.committed] == [6]
    assert [m.match_index for m in rd.messages] == [5, 7]


Action = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 3), st.integers(1, 12)),
    st.tuples(st.just("deliver"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("deliver-all"), st.just(0), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("propose"), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("crash-restart"), st.integers(1, 3), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(Action, min_size=5, max_size=60), st.booleans())
def test_every_ready_persists_what_its_messages_depend_on(actions, pre_vote: bool) -> None:
    """Under any schedule, a Ready's messages never get ahead of what is persisted: a
    granted vote, the term of a message, the entries an append acknowledges; committed
    entries handed out for applying are persisted. Checked after each Ready is carried out."""
    c = cluster(f"new 3 {'pre-vote' if pre_vote else ''}")

    def check(node, rd) -> None:
        disk = node.disk
        hs = disk.load().hard_state
        last = disk.last_index()  # the snapshot's index when no entry follows it
        for m in rd.messages:
            pre = getattr(m, "pre_vote", False)
            if not pre:
                assert m.term == hs.term, f"{m} sent before its term was persisted ({hs})"
            if isinstance(m, RequestVoteResponse) and m.granted and not pre:
                assert hs.vote == m.dst, f"vote for {m.dst} sent before it was persisted ({hs})"
            if isinstance(m, AppendEntriesResponse) and m.success:
                assert m.match_index <= last, f"{m} acknowledges entries not on disk (last {last})"
        for e in rd.committed:
            assert e.index <= last
        assert not node.raft.has_ready()  # a Ready takes all the work there is

    c.ready_hooks.append(check)
    for kind, a, b in actions:
        if kind == "tick":
            execute(c, f"tick {a} {b}")
        elif kind == "deliver" and c.queue:
            m = c.queue[a % len(c.queue)]
            execute(c, f"deliver {m.src}->{m.dst}")
        elif kind == "deliver-all":
            execute(c, "deliver")
        elif kind == "drop" and c.queue:
            m = c.queue[a % len(c.queue)]
            execute(c, f"drop {m.src}->{m.dst}")
        elif kind == "propose" and c.node(a).alive:
            execute(c, f"propose {a} p")
        elif kind == "crash-restart":
            execute(c, f"crash {a}")
            execute(c, f"restart {a}")


# --- configuration -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(election_ticks=(0, 5)), "election_ticks"),
        (dict(election_ticks=(10, 5)), "election_ticks"),
        (dict(heartbeat_ticks=0), "heartbeat_ticks"),
        (dict(election_ticks=(3, 5), heartbeat_ticks=4), "heartbeat_ticks"),
        (dict(max_inflight=0), "max_inflight"),
        (dict(max_entries_per_msg=0), "max_entries_per_msg"),
        (dict(max_bytes_per_msg=0), "max_bytes_per_msg"),
        (dict(max_inflight_bytes=0), "max_inflight_bytes"),
    ],
)
def test_config_refuses_unworkable_values_with_a_one_line_error(kw, words) -> None:
    with pytest.raises(ValueError, match=words) as err:
        Config(**kw)
    assert "\n" not in str(err.value)


def test_config_accepts_a_fixed_timeout_and_the_defaults() -> None:
    Config()
    Config(election_ticks=(10, 10), heartbeat_ticks=10, max_inflight=1, max_entries_per_msg=1, max_bytes_per_msg=1)


# --- refusals ----------------------------------------------------------------------------
def test_a_follower_refuses_requests_and_names_the_leader() -> None:
    c = elected()
    follower = c.node(2).raft
    # (A follower forwards read_index to its leader: see read_index_follower.txt.)
    for call in (lambda: follower.propose(b"x"),
                 lambda: follower.transfer_leadership(3), lambda: follower.propose_conf_change(frozenset({2, 3}))):
        with pytest.raises(NotLeader) as err:
            call()
        assert err.value.leader_id == 1
    for call in (lambda r: r.propose(b"x"), lambda r: r.read_index(1)):
        with pytest.raises(NotLeader) as err:
            call(make())  # no leader known yet
        assert err.value.leader_id is None


def test_the_leader_refuses_a_second_membership_change_and_pointless_ones() -> None:
    leader = elected().node(1).raft
    with pytest.raises(ProposalDropped, match="at least one voter"):
        leader.propose_conf_change(frozenset())
    with pytest.raises(ProposalDropped, match="already has exactly"):
        leader.propose_conf_change(frozenset({1, 2, 3}))
    leader.propose_conf_change(frozenset({1, 2}))
    with pytest.raises(ProposalDropped, match="in progress"):
        leader.propose_conf_change(frozenset({1, 2, 3}))


def test_proposals_are_refused_during_a_transfer_and_accepted_after_it_times_out() -> None:
    c = elected()
    leader = c.node(1).raft
    with pytest.raises(ProposalDropped, match="not a voter"):
        leader.transfer_leadership(7)
    execute(c, "crash 3")  # the target never answers
    leader.transfer_leadership(3)
    with pytest.raises(ProposalDropped, match="transferred to 3"):
        leader.propose(b"x")
    execute(c, "tick 1 10")
    execute(c, "stabilize")
    assert leader.role is Role.LEADER
    assert leader.propose(b"x") == leader.last_index


# --- batching and the in-flight window ---------------------------------------------------
def apps_to(c: Cluster, dst: int) -> list[AppendEntries]:
    return [m for m in c.queue if isinstance(m, AppendEntries) and m.dst == dst]


def test_appends_carry_at_most_max_entries_per_msg() -> None:
    c = elected(2, "max-entries=3")
    execute(c, "crash 2")
    c.node(1).raft.propose_batch([b"e%d" % i for i in range(10)])
    execute(c, "drop")
    execute(c, "restart 2")
    sizes = []
    c.ready_hooks.append(lambda node, rd: sizes.extend(len(m.entries) for m in rd.messages if isinstance(m, AppendEntries)))
    for _ in range(3):
        execute(c, "tick 1")
        execute(c, "stabilize")
    assert max(sizes) == 3
    assert c.node(2).raft.log.entries == c.node(1).raft.log.entries


def test_appends_carry_at_most_max_bytes_per_msg_but_at_least_one_entry() -> None:
    c = elected(2, "max-bytes=100")
    execute(c, "crash 2")
    leader = c.node(1).raft
    leader.propose_batch([b"a" * 40] * 5 + [b"b" * 150] + [b"c" * 40])
    execute(c, "drop")
    execute(c, "restart 2")
    sent: list[AppendEntries] = []
    c.ready_hooks.append(lambda node, rd: sent.extend(m for m in rd.messages if isinstance(m, AppendEntries) and m.entries))
    for _ in range(4):
        execute(c, "tick 1")
        execute(c, "stabilize")
    sizes = [sum(len(e.data) for e in m.entries) for m in sent]
    assert all(s <= 100 or len(m.entries) == 1 for s, m in zip(sizes, sent)), sizes
    assert 150 in sizes and 80 in sizes
    assert c.node(2).raft.log.entries == leader.log.entries


def test_a_commit_advance_rides_on_the_append_already_queued_one_message_per_peer() -> None:
    c = elected(3)
    leader = c.node(1).raft
    leader.propose(b"x")
    c.process()
    execute(c, "deliver 1->*")
    acks = c.take((None, 1))  # held back
    leader.propose(b"y")  # queues appends of y carrying commit 1
    leader.step(acks[0])  # a majority for x: commit 2, in the same Ready
    rd = leader.ready()
    assert sorted(m.dst for m in rd.messages) == [2, 3]
    assert all(isinstance(m, AppendEntries) and m.commit == 2 and m.entries for m in rd.messages)


def test_followers_learn_each_commit_in_the_ready_that_advanced_it() -> None:
    c = elected(3)
    seen: list[tuple[int, set[int]]] = []

    def record(node, rd) -> None:
        if node.id == 1:
            seen.append((node.raft.commit_index, {m.dst for m in rd.messages if getattr(m, "commit", 0) >= node.raft.commit_index}))

    c.ready_hooks.append(record)
    before = c.node(1).raft.commit_index
    for i in range(3):
        execute(c, f"propose 1 v{i}")
        execute(c, "stabilize")
    advanced = [dsts for (commit, dsts), (prev, _) in zip(seen[1:], seen) if commit > prev]
    assert c.node(1).raft.commit_index == before + 3 and len(advanced) == 3
    assert all(dsts == {2, 3} for dsts in advanced), advanced
    assert {n.raft.commit_index for n in c.nodes.values()} == {before + 3}  # no heartbeat needed


def test_the_in_flight_window_bounds_unanswered_appends() -> None:
    c = elected(2, "max-inflight=2")
    leader = c.node(1).raft
    for i in range(5):
        leader.propose(b"p%d" % i)
    c.process()
    assert len(apps_to(c, 2)) == 2  # the window is full: the rest waits for answers
    execute(c, "stabilize")
    assert c.node(2).raft.last_index == leader.last_index == leader.commit_index


def test_the_in_flight_window_bounds_unanswered_bytes_but_lets_one_large_append_go() -> None:
    c = elected(2, "max-bytes=100 max-inflight-bytes=150")
    leader = c.node(1).raft
    for data in (b"a" * 100, b"b" * 100, b"c" * 400, b"d" * 10):
        leader.propose(data)
    c.process()
    assert [sum(len(e.data) for e in m.entries) for m in apps_to(c, 2)] == [100, 100]  # 200 >= 150: paused
    execute(c, "stabilize")
    assert c.node(2).raft.last_index == leader.last_index == leader.commit_index  # the 400 went alone


def test_lost_appends_do_not_stall_a_full_window() -> None:
    c = elected(2, "max-inflight=2")
    leader = c.node(1).raft
    for i in range(5):
        leader.propose(b"p%d" % i)
    execute(c, "drop")  # both appends in the window are lost
    for _ in range(5):
        execute(c, "tick 1")
        execute(c, "stabilize")
    assert c.node(2).raft.last_index == leader.last_index == leader.commit_index


def test_the_slowest_follower_counts_a_probed_follower_only_where_the_runtime_says_so() -> None:
    """A leader keeps entries for its slowest follower; one it probes counts only among
    `probing` (the runtime's connected peers: slow, not gone)."""
    c = elected(3)
    leader = c.node(1).raft
    leader.propose(b"p")
    execute(c, "stabilize")
    slow_match = leader.progress[3].match
    execute(c, "partition 1 2 | 3")
    for i in range(3):
        leader.propose(b"q%d" % i)
    execute(c, "stabilize")
    leader.report_unreachable(3)  # the transport dropped appends to it: probe
    assert leader.progress[3].state is State.PROBE and leader.progress[2].match > slow_match
    assert leader.slowest_follower() == leader.progress[2].match
    assert leader.slowest_follower(probing={3}) == slow_match
    assert c.node(2).raft.slowest_follower(probing={1, 3}) is None  # a follower keeps nothing for others


# --- restarts ----------------------------------------------------------------------------
def log_of(n: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, b"d%d" % i) for i in range(1, n + 1)]


def test_a_restart_reapplies_committed_entries_from_index_1() -> None:
    r = make(hard_state=HardState(1, 1, commit=3), entries=log_of(5))
    assert (r.applied_index, r.commit_index) == (0, 3)
    assert r.ready().committed == log_of(3)


def test_a_restart_reapplies_from_the_snapshot() -> None:
    snap = Snapshot(SnapshotMeta(3, 1, VOTERS), b"image")
    r = make(hard_state=HardState(1, 1, commit=5), entries=log_of(5)[3:], snapshot=snap)
    assert r.applied_index == 3
    rd = r.ready()
    assert rd.snapshot is None  # the runtime loads its own snapshot at boot
    assert rd.committed == log_of(5)[3:]


def test_a_crashed_node_rebuilds_the_same_state_machine() -> None:
    c = elected()
    for i in range(4):
        execute(c, f"propose 1 v{i}")
    execute(c, "stabilize")
    execute(c, "tick 1")
    execute(c, "stabilize")
    before = list(c.node(2).applied)
    execute(c, "crash 2")
    execute(c, "restart 2")
    assert c.node(2).applied == []  # nothing snapshotted: it starts empty ...
    execute(c, "tick 1")
    execute(c, "stabilize")
    assert c.node(2).applied == before  # ... and re-applies from index 1


def test_a_transfer_started_late_in_the_check_quorum_window_still_completes() -> None:
    # Regression: the transfer used to be dropped when the CheckQuorum window closed,
    # which could be one tick after it started.
    c = elected(3, "check-quorum")
    leader = c.node(1).raft
    execute(c, "tick 1 9")
    execute(c, "stabilize")
    execute(c, "propose 1 x")
    execute(c, "drop 1->3")  # node 3 must be caught up first
    execute(c, "stabilize")
    leader.transfer_leadership(3)
    execute(c, "tick 1")
    execute(c, "stabilize")
    assert c.node(3).raft.role is Role.LEADER


# --- compaction keeping recent entries ----------------------------------------------------
@pytest.mark.parametrize("retain, by_snapshot", [(0, True), (10, True), (20, False)])
def test_compaction_retaining_entries_lets_a_lagging_follower_catch_up_from_the_log(retain, by_snapshot) -> None:
    c = elected(3)
    execute(c, "partition 1 2 | 3")
    for k in range(15):
        execute(c, f"propose 1 e{k}")
    execute(c, "stabilize")
    leader = c.node(1)
    snap = leader.raft.compact(leader.applied_index, leader.state_data(), retain=retain)
    leader.disk.save_snapshot(snap)
    assert leader.raft.log.snapshot == snap
    # The log now starts `retain` entries before the snapshot (node 3 lacks all 15 entries:
    # retaining 10 is not enough for it, retaining 20 keeps everything it needs).
    assert leader.raft.log.snap_index == max(0, snap.meta.index - retain)
    c.out.clear()
    execute(c, "heal")
    execute(c, "tick 1 1")  # a heartbeat: node 3 answers, the leader finds it behind
    execute(c, "stabilize")
    sent_snapshot = any(" Snapshot " in line for line in c.out)
    assert sent_snapshot is by_snapshot
    assert c.node(3).raft.last_index == leader.raft.last_index
    assert c.node(3).raft.commit_index == leader.raft.commit_index


@pytest.mark.parametrize("restarts", [True, False])
def test_stepping_down_restarts_the_election_timer_only_when_configured(restarts: bool) -> None:
    """A newer term from a candidate it refuses (its log is shorter): etcd restarts the
    timer (the default), the Raft paper's Figure 2 keeps it running."""
    cfg = Config(election_ticks=(10, 10), heartbeat_ticks=1, pre_vote=False, check_quorum=False,
                 step_down_restarts_timer=restarts)
    r = Raft(2, cfg, random.Random(2), hard_state=HardState(1, None, 0), entries=[Entry(1, 1)], bootstrap=VOTERS)
    for _ in range(6):
        r.tick()
    r.step(RequestVote(term=2, src=1, dst=2, last_log_index=0, last_log_term=0))
    assert r.ready().messages == [RequestVoteResponse(2, 2, 1, granted=False)] and r.term == 2
    for _ in range(4):
        r.tick()
    # Kept running: 6 + 4 ticks is the timeout. Restarted: 4 ticks into a new one.
    assert r.role is (Role.FOLLOWER if restarts else Role.CANDIDATE)
    for _ in range(6):
        r.tick()
    assert r.role is Role.CANDIDATE
