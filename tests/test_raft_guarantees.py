"""One test per guarantee of the Raft paper (Figure 3).

For each guarantee: (a) the checker in `logqueue.sim.invariants` flags a hand-made
violation (and accepts the legal history next to it); (b) a targeted run of the real
core holds it, while the same run on a core with one deliberate bug is caught -- so the
run could fail. A last test drives real cores through random schedules with every check on.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from logqueue.raft import AppendEntries, Config, ConfState, Entry, HardState, Raft, Role
from logqueue.sim.bugs import CommitPreviousTerm, ForgetVoteOnRestart, VoteWithoutLogCheck
from logqueue.sim.invariants import Invariants, Violation
from raft_script import Cluster, execute, run_script

SCRIPTS = Path(__file__).parent / "raft_scripts"
VOTERS = ConfState(frozenset({1, 2, 3}))


def node(node_id: int, terms: list[int], term: int | None = None) -> Raft:
    """A core holding a log of the given terms (entry i has data b"<i>.<term>")."""
    entries = [Entry(t, i, f"{i}.{t}".encode()) for i, t in enumerate(terms, start=1)]
    hs = HardState(term if term is not None else max(terms, default=0))
    return Raft(node_id, Config(), random.Random(0), hard_state=hs, entries=entries, bootstrap=VOTERS)


def play(cluster: Cluster, *lines: str) -> Cluster:
    for line in lines:
        execute(cluster, line)
    return cluster


# --- Election Safety: at most one leader can be elected in a given term. ---------------
def test_election_safety_checker() -> None:
    inv = Invariants()
    inv.on_leader(1, 3)
    inv.on_leader(1, 3)  # the same leader seen again
    inv.on_leader(2, 4)  # another leader of another term
    with pytest.raises(Violation, match="Election Safety"):
        inv.on_leader(3, 4)


VOTE_TWICE = [
    "new 3", "campaign 1", "drop 1->2", "deliver 1->3",  # node 3 votes for node 1 in term 1
    "crash 3", "restart 3",
    "campaign 2", "deliver 2->3", "deliver 3->1", "deliver 3->2",  # node 2 asks node 3 in term 1
]


def test_election_safety_holds_when_a_voter_restarts_mid_term() -> None:
    c = play(Cluster(), *VOTE_TWICE)
    assert [n.raft.role for n in c.nodes.values()].count(Role.LEADER) == 1
    with pytest.raises(Violation, match="Election Safety"):
        play(Cluster(ForgetVoteOnRestart), *VOTE_TWICE)


# --- Leader Append-Only: a leader never overwrites or deletes entries in its log. -------
def test_leader_append_only_checker() -> None:
    inv = Invariants()
    leader = node(1, [1, 1, 2], term=2)
    inv.on_persist(leader, leader.log.entries[2:], was_leader_term=2)
    inv.on_persist(leader, [Entry(2, 4, b"x")], was_leader_term=2)
    inv.on_persist(leader, [Entry(1, 3, b"y")], was_leader_term=None)  # as a follower: may truncate
    with pytest.raises(Violation, match="Leader Append-Only"):
        inv.on_persist(leader, [Entry(2, 4, b"z")], was_leader_term=2)


class LeaderOverwritesTail(Raft):
    """Bug: merges a proposal into the leader's last uncommitted entry, rewriting it."""

    def propose_batch(self, datas: list[bytes]) -> int:
        self._check_can_propose()
        last = self.log.last_index
        if last > self.log.committed and self.log.term_at(last) == self.term:
            self.log.truncate_and_append([Entry(self.term, last, b"".join(datas))])
            self._broadcast_append()
            return last
        return super().propose_batch(datas)


def test_leader_append_only_holds_in_figure_7() -> None:
    # Followers (c) and (d) hold longer logs than the leader; it repairs theirs, never its own.
    c = Cluster()
    run_script(SCRIPTS / "figure7.txt", c)
    leader = c.node(1).raft
    assert [e.term for e in leader.log.entries] == [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]
    play(c, "propose 1 x", "propose 1 y")
    assert [e.data for e in leader.log.entries[-2:]] == [b"x", b"y"]
    with pytest.raises(Violation, match="Leader Append-Only"):
        play(Cluster(LeaderOverwritesTail), "new 3", "campaign 1", "stabilize", "propose 1 x", "propose 1 y")


# --- Log Matching: equal (index, term) means equal logs up to that index. -------------
def test_log_matching_checker() -> None:
    inv = Invariants()
    a, b = node(1, [1, 2]), node(2, [1, 3])
    inv.on_persist(a, [Entry(2, 3, b"x")], None)
    inv.on_persist(b, [Entry(3, 3, b"x")], None)  # same index, another term: allowed
    with pytest.raises(Violation, match="Log Matching"):
        inv.on_persist(node(3, [1, 2]), [Entry(2, 3, b"other data")], None)
    with pytest.raises(Violation, match="Log Matching"):
        inv.on_persist(node(4, [1, 1]), [Entry(2, 3, b"x")], None)  # same entry, other history


class AppendWithoutConsistencyCheck(Raft):
    """Bug: a follower accepts an append whatever the term of its entry at prev_index."""

    def _handle_append(self, msg: AppendEntries) -> None:
        have = self.log.term_at(msg.prev_index)
        super()._handle_append(dataclasses.replace(msg, prev_term=have) if have is not None else msg)


def test_log_matching_holds_in_figure_7() -> None:
    c = Cluster()
    run_script(SCRIPTS / "figure7.txt", c)
    logs = [n.raft.log.entries for n in c.nodes.values()]
    assert all(log == logs[0] for log in logs)
    with pytest.raises(Violation, match="Log Matching"):
        run_script(SCRIPTS / "figure7.txt", Cluster(AppendWithoutConsistencyCheck))


# --- Leader Completeness: a leader holds every entry committed in earlier terms. -------
def test_leader_completeness_checker() -> None:
    inv = Invariants()
    inv.on_apply(1, Entry(1, 1, b"1.1"))
    inv.on_apply(1, Entry(2, 2, b"2.2"))
    inv.on_new_leader(node(2, [1, 2, 2], term=3))  # holds both
    with pytest.raises(Violation, match="Leader Completeness"):
        inv.on_new_leader(node(3, [1, 1], term=3))


def test_leader_completeness_holds_in_figure_8_e() -> None:
    # S5, whose log lacks the committed entries, must not become leader.
    c = Cluster()
    run_script(SCRIPTS / "figure8_commit.txt", c)
    assert c.node(2).raft.role is Role.LEADER and c.node(5).raft.log.term_at(2) == 2
    with pytest.raises(Violation, match="Leader Completeness"):
        run_script(SCRIPTS / "figure8_commit.txt", Cluster(VoteWithoutLogCheck))


# --- State Machine Safety: no two servers apply different entries at one index. -------
def test_state_machine_safety_checker() -> None:
    inv = Invariants()
    inv.on_apply(1, Entry(2, 5, b"x"))
    inv.on_apply(2, Entry(2, 5, b"x"))  # the same entry applied elsewhere
    with pytest.raises(Violation, match="State Machine Safety"):
        inv.on_apply(3, Entry(3, 5, b"x"))


class SafetyOnly(Invariants):
    """Checks State Machine Safety alone, so a run is not stopped earlier by another check."""

    def on_new_leader(self, raft: Raft) -> None:
        pass


def test_state_machine_safety_holds_in_figure_8() -> None:
    # The overwrite of index 2 in (d) is safe because nobody applied it; a core that
    # commits the old-term entry by counting replicas applies it, then sees it replaced.
    c = Cluster()
    run_script(SCRIPTS / "figure8.txt", c)
    applied = {n.id: n.applied for n in c.nodes.values() if n.alive}
    assert len({tuple(a) for a in applied.values()}) == 1 and "3/2 noop" in applied[5]
    with pytest.raises(Violation, match="State Machine Safety"):
        run_script(SCRIPTS / "figure8.txt", Cluster(CommitPreviousTerm, SafetyOnly))


# --- all five under random schedules ------------------------------------------------------
# Kinds repeated to weight them: mostly message traffic, proposals and elections.
KINDS = ["tick", "campaign", "campaign", "deliver", "deliver", "deliver-round", "deliver-round", "stabilize",
         "drop", "propose", "propose", "propose", "crash", "partition", "heal", "compact"]
Step = st.tuples(st.sampled_from(KINDS), st.sets(st.integers(1, 5), min_size=1, max_size=2), st.integers(0, 99))
@settings(max_examples=80, deadline=None)
@given(st.lists(Step, min_size=20, max_size=120), st.sampled_from(["", "pre-vote", "pre-vote check-quorum"]))
def test_the_five_guarantees_hold_under_random_schedules(steps, options: str) -> None:
    """Five real cores, a random interleaving of ticks, campaigns, deliveries, losses,
    proposals, crashes and restarts, partitions and compactions: the checker, run after
    every Ready, never finds a violation, and once healed the cluster commits again."""
    c = play(Cluster(), f"new 5 election=10-20 max-inflight=2 max-entries=2 {options}", "campaign 1", "stabilize")
    for kind, ids, k in steps:
        a = min(ids)
        if kind == "tick":
            play(c, f"tick {','.join(map(str, sorted(ids)))} {k % 12 + 1}")
        elif kind == "campaign" and c.node(a).alive and c.node(a).raft.role is not Role.LEADER:
            play(c, f"campaign {a}")
        elif kind in ("deliver", "drop") and c.queue:
            m = c.queue[k % len(c.queue)]
            play(c, f"{kind} {m.src}->{m.dst}")
        elif kind == "deliver-round":
            play(c, "deliver")
        elif kind == "stabilize":
            play(c, "stabilize")
        elif kind == "propose":
            for n in c.nodes.values():
                if n.alive and n.raft.role is Role.LEADER:  # every node that thinks it leads
                    play(c, f"propose {n.id} v{k}")
        elif kind == "crash":  # or restart, if it is down
            play(c, f"{'crash' if c.node(a).alive else 'restart'} {a}")
        elif kind == "partition":
            rest = " ".join(str(i) for i in range(1, 6) if i not in ids)
            play(c, f"partition {' '.join(map(str, sorted(ids)))} | {rest}")
        elif kind == "heal":
            play(c, "heal")
        elif kind == "compact" and c.node(a).alive and c.node(a).applied_index > c.node(a).raft.log.snap_index:
            play(c, f"compact {a} {c.node(a).applied_index}")
    event(f"committed during the faults: {max(n.raft.commit_index for n in c.nodes.values()) > 1}")
    event(f"terms reached: {'>= 3' if max(n.raft.term for n in c.nodes.values()) >= 3 else '< 3'}")
    # Liveness: healed and left to run (every node ticking, randomized timeouts), the
    # cluster elects a leader that commits a new proposal.
    play(c, "heal", *(f"restart {n.id}" for n in c.nodes.values() if not n.alive))
    proposed = None
    for _ in range(300):
        play(c, "tick all", "stabilize")
        if proposed and proposed[0].role is not Role.LEADER:
            proposed = None  # lost with its leader: propose again to the next one
        leaders = [n.raft for n in c.nodes.values() if n.raft.role is Role.LEADER]
        if proposed is None and leaders:
            leader = max(leaders, key=lambda r: r.term)
            proposed = (leader, leader.propose(b"last"))
        if proposed and proposed[0].commit_index >= proposed[1]:
            break
    else:
        pytest.fail("no leader committed a proposal within 300 ticks of healing")
