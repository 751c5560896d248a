"""The Raft protocol as a pure state machine (sans-I/O, in the style of etcd's raft).

Everything that affects the protocol's state lives in this module. Input: `tick()`,
`step(msg)`, `propose*()`, `transfer_leadership()`, `read_index()`, `compact()`,
`report_unreachable()`, `forget_leader()`.
Output: `ready()` -> a `Ready` batch the runtime must carry out in order (persist, send,
apply), then `advance(ready)`, which accepts it; exactly one Ready is outstanding at a time. No sockets, files or clocks; time is ticks; randomness comes
only from the injected `random.Random`.

Roles dispatch through one step function each (`_step_leader`, `_step_candidate`,
`_step_follower`); transitions are `_become_*`; helpers that may do nothing are `_maybe_*`.
"""
from __future__ import annotations

import random
from collections.abc import Container
from dataclasses import dataclass, replace

from . import quorum
from .log import RaftLog, SafetyError
from .progress import Progress, State
from .types import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndex,
    ReadIndexResponse,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)

__all__ = ["RAFT_VARIANTS", "Config", "NotLeader", "ProposalDropped", "Raft", "ReadyNotAdvanced", "SafetyError"]


@dataclass(frozen=True)
class Config:
    """Protocol tunables, in ticks and counts.

    election_ticks: (low, high) inclusive range of the randomized election timeout;
    `low` is also the CheckQuorum window and the leader-lease for ignoring disruptive votes.
    """

    election_ticks: tuple[int, int] = (10, 20)
    heartbeat_ticks: int = 2
    max_inflight: int = 256  # unanswered appends per follower (pipelining window)
    max_entries_per_msg: int = 1024
    max_bytes_per_msg: int = 1 << 20
    max_inflight_bytes: int = 8 << 20  # unanswered append payload bytes per follower (one append always may go)
    pre_vote: bool = True
    check_quorum: bool = True
    # A candidate or follower that steps down (a newer term seen, or a lost candidacy)
    # restarts its election timer, as etcd does. False: only a leader's message, a granted
    # vote and starting an election restart it (the Raft paper's Figure 2, LogCabin).
    # Timing only: no guarantee depends on it.
    step_down_restarts_timer: bool = True
    # A learner may become a voter once it holds all but at most this many committed
    # entries (0: every one).
    max_learner_lag: int = 0

    def __post_init__(self) -> None:
        low, high = self.election_ticks
        if not 0 < low <= high:
            raise ValueError(f"election_ticks must be 0 < low <= high, got {self.election_ticks}")
        if not 0 < self.heartbeat_ticks <= low:
            raise ValueError("heartbeat_ticks must be positive and at most the election timeout")
        # Zero would stall replication for good (or, for max_inflight, break the window).
        for name in ("max_inflight", "max_entries_per_msg", "max_bytes_per_msg", "max_inflight_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_learner_lag < 0:
            raise ValueError(f"max_learner_lag must not be negative, got {self.max_learner_lag}")


# Named core configurations (``logqueue node --raft-variant``): "logqueue", the defaults
# above; "paper", the servers of the Raft paper's §9.3 election experiments (no PreVote, no
# CheckQuorum, its Figure 2 timer rule) -- for experiments: without PreVote and CheckQuorum a
# partitioned node's rising term disrupts the leader when it comes back.
RAFT_VARIANTS: dict[str, dict[str, bool]] = {
    "logqueue": {},
    "paper": {"pre_vote": False, "check_quorum": False, "step_down_restarts_timer": False},
}


class NotLeader(Exception):
    """This node cannot accept the request; `leader_id` is the leader it knows, if any."""

    def __init__(self, leader_id: int | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


class ReadyNotAdvanced(RuntimeError):
    """The runtime broke the Ready/Advance pairing (a Ready would be lost or done twice)."""


class ProposalDropped(Exception):
    """The leader refuses the proposal now (transfer in progress, conf change pending)."""


@dataclass
class _PendingRead:
    seq: int  # heartbeat round that confirms it
    origin: int  # the node whose client asked (the leader itself, or a follower)
    request: int
    index: int
    acks: set[int]


class Raft:
    def __init__(
        self,
        node_id: int,
        config: Config,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        entries: list[Entry] | None = None,
        snapshot: Snapshot | None = None,
        bootstrap: ConfState | None = None,
    ) -> None:
        self.id = node_id
        self.cfg = config
        self.rng = rng
        hs = hard_state or HardState()
        self.log = RaftLog(snapshot, list(entries or ()), bootstrap)
        self.term = hs.term
        self.vote = hs.vote
        self.log.commit_to(hs.commit)
        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.transferee: int | None = None
        self.transfer_elapsed = 0  # ticks since transfer_leadership(); it gives up after `low`
        self.read_seq = 0
        self.campaigns = 0  # elections (pre-votes included) this node has started, for monitoring
        self.pending_reads: list[_PendingRead] = []
        self.reads_awaiting_commit: list[tuple[int, int]] = []  # (origin, request), before a commit in our term
        self.read_states: list[ReadState] = []
        self.msgs: list[Message] = []
        self._persisted_hs = HardState(hs.term, hs.vote, self.log.committed)
        self._outstanding: Ready | None = None  # returned by ready(), not yet advanced
        self._reset_election_timer()

    # --- read-only view ----------------------------------------------------------------
    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index

    @property
    def conf(self) -> ConfState:
        return self.log.conf

    def slowest_follower(self, probing: Container[int] = ()) -> int | None:
        """A leader's lowest match among the followers it streams to (REPLICATE: live and
        in step) and those of `probing` it probes; None on a follower or when there is none."""
        matches = [pr.match for peer, pr in self.progress.items()
                   if pr.state is State.REPLICATE or (pr.state is State.PROBE and peer in probing)]
        return min(matches) if self.role is Role.LEADER and matches else None

    def promotable(self) -> bool:
        """May this node campaign? Only voters of the configuration in effect may."""
        return self.id in self.log.conf.voting()

    # --- input -------------------------------------------------------------------------
    def tick(self) -> None:
        self.election_elapsed += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        elif self.election_elapsed >= self.randomized_timeout and self.promotable():
            self._campaign(pre_vote=self.cfg.pre_vote)

    def propose(self, data: bytes) -> int:
        """Append one application entry; returns its index."""
        return self.propose_batch([data])

    def propose_batch(self, datas: list[bytes]) -> int:
        """Append application entries in order; returns the index of the first."""
        self._check_can_propose()
        first = self.log.last_index + 1
        self._append_as_leader([(EntryKind.NORMAL, d) for d in datas])
        return first

    def propose_conf_change(self, voters: frozenset[int], learners: frozenset[int] | None = None) -> int:
        """Change the members to `voters` and `learners` (default: today's learners that do
        not become voters); returns the index of the first configuration entry.

        A change of voters goes through joint consensus (C_old,new, then C_new); a change
        of learners alone is one entry. A node becomes a voter only as a learner that has
        caught up (`caught_up`), so no voter set ever holds a member lacking the committed
        log (Raft thesis §4.2.1; etcd adds members as learners first)."""
        self._check_can_propose()
        conf = self.log.conf
        if conf.joint or self._uncommitted_conf():
            raise ProposalDropped("a membership change is already in progress")
        voters = frozenset(voters)
        learners = conf.learners - voters if learners is None else frozenset(learners)
        if not voters:
            raise ProposalDropped("a configuration needs at least one voter")
        if voters & learners:
            raise ProposalDropped(f"nodes {sorted(voters & learners)} cannot be both voter and learner")
        if (voters, learners) == (conf.voters, conf.learners):
            raise ProposalDropped("the configuration already has exactly these members")
        for peer in sorted(voters - conf.voters):
            if peer not in conf.learners or not self.caught_up(peer):
                raise ProposalDropped(f"node {peer} must first be a learner that has caught up")
        index = self.log.last_index + 1
        if voters == conf.voters:
            change = ConfState(voters, learners=learners)
        else:
            change = ConfState(voters, conf.voters, learners)
        self._append_as_leader([(EntryKind.CONFIG, change.encode())])
        return index

    def caught_up(self, peer: int) -> bool:
        """Does the follower hold the committed entries but for at most
        `max_learner_lag` of them (a learner ready to vote)?"""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        pr = self.progress.get(peer)
        return pr is not None and pr.match > 0 and pr.match + self.cfg.max_learner_lag >= self.log.committed

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to `target` (Raft §3.10): catch it up, then send TimeoutNow."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if target == self.id:
            return
        if target not in self.log.conf.voters:
            raise ProposalDropped(f"node {target} is not a voter")
        self.transferee = target  # cleared by _tick_leader if not done within an election timeout
        self.transfer_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.log.last_index:
            self._send(TimeoutNow(self.term, self.id, target))
        else:
            self._maybe_send_append(target)

    def read_index(self, request: int) -> None:
        """Ask for a linearizable read; a ReadState(request, index) appears in a later Ready.

        A follower forwards the request to its leader and waits for the leader's read
        index (Raft §6.4 follower reads, etcd's MsgReadIndex); its client may read once
        this node has applied that index. A lost request is never answered: the runtime
        times out and asks again."""
        if self.role is Role.LEADER:
            self._read_for(self.id, request)
        elif self.role is Role.FOLLOWER and self.leader_id is not None:
            self._send(ReadIndex(self.term, self.id, self.leader_id, request))
        else:
            raise NotLeader(self.leader_id)

    def _read_for(self, origin: int, request: int) -> None:
        if self.log.term_at(self.log.committed) != self.term:
            # The leader does not know the commit index until it commits in its own term.
            self.reads_awaiting_commit.append((origin, request))
            return
        self._start_read(origin, request)

    def heartbeat_now(self) -> None:
        """A leader sends its heartbeats now rather than at the next heartbeat tick: the
        runtime could not tick for a while (its process was held), and its followers'
        election timers ran on meanwhile. Nothing for a follower or a candidate."""
        if self.role is Role.LEADER:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.read_seq)

    def report_unreachable(self, peer: int) -> None:
        """The runtime could not reach `peer` (etcd's ReportUnreachable): a leader stops
        streaming appends into the void and probes it with one append at a time."""
        pr = self.progress.get(peer) if self.role is Role.LEADER else None
        if pr is not None and pr.state is State.REPLICATE:
            pr.become_probe()

    def forget_leader(self) -> None:
        """The runtime knows the leader is gone (etcd's ForgetLeader): a follower forgets
        it, so it may vote at once instead of waiting out the leader lease. Term, vote and
        log stay; a message from a live leader makes it the leader again."""
        if self.role is Role.FOLLOWER:
            self.leader_id = None

    def snapshot_for(self, index: int, data: bytes) -> Snapshot:
        """Describe an application snapshot taken with everything up to `index` applied."""
        term = self.log.term_at(index)
        if term is None or index > self.log.applied:
            raise SafetyError(f"cannot snapshot at {index}: not applied or already compacted")
        return Snapshot(SnapshotMeta(index, term, self.log.conf_at(index)), data)

    def compact(self, index: int, data: bytes, retain: int = 0) -> Snapshot:
        """Drop log entries up to `index`, kept now by the application's snapshot `data`,
        except the last `retain` of them (for followers slightly behind)."""
        snap = self.snapshot_for(index, data)
        self.log.compact(snap, retain)
        return snap

    def step(self, msg: Message) -> None:
        """Feed one message from a peer."""
        voting = self.log.conf.voting()
        if isinstance(msg, RequestVote) and voting and msg.src not in voting:
            # Not a voter of our configuration (removed, or a learner): its campaign must
            # not disturb us; the runtime refuses such messages too. (An empty
            # configuration: we wait to be added and know nothing yet.)
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote) and not msg.transfer and self._in_leader_lease():
                return  # a leader is alive: ignore disruptive (e.g. removed) servers
            if isinstance(msg, RequestVote) and msg.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                pass  # granted pre-votes carry the term we would campaign in
            else:
                leader = msg.src if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)) else None
                self._become_follower(msg.term, leader)
        elif msg.term < self.term:
            if isinstance(msg, (AppendEntries, Heartbeat)) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # Tell a stale leader about the newer term, so it steps down even when our
                # own campaigns are held back by pre-vote.
                self._send(AppendEntriesResponse(self.term, self.id, msg.src, False, 0))
            elif isinstance(msg, RequestVote) and msg.pre_vote:
                self._send(RequestVoteResponse(self.term, self.id, msg.src, False, pre_vote=True))
            return

        if isinstance(msg, RequestVote):
            self._handle_vote_request(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(msg)
        else:
            self._step_follower(msg)

    # --- output ------------------------------------------------------------------------
    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def has_ready(self) -> bool:
        hs = self._persisted_hs
        return bool(
            self.msgs
            or self.read_states
            or self.log.pending_snapshot
            or self.log.unstable <= self.log.last_index
            or self.log.applied < self.log.committed
            or (hs.term, hs.vote) != (self.term, self.vote)
            or (self.role is Role.LEADER and any(map(self._commit_unsent, self.progress.values())))
        )

    def ready(self) -> Ready:
        """Collect the work for the runtime; see `Ready` for the order it must be done in.

        Nothing is taken yet: `advance(rd)` accepts the Ready once it is carried out (as
        etcd's RawNode). A second `ready()` before that raises `ReadyNotAdvanced`."""
        if self._outstanding is not None:
            raise ReadyNotAdvanced("ready() called again before advance() of the previous Ready")
        if self.role is Role.LEADER:
            self._send_commit()
        rd = Ready(role=self.role, leader=self.leader_id, term=self.term)
        hs = self._hard_state()
        # Commit is only a hint (recovered from the leader), so it alone does not force a
        # hard-state write: one atomic write per term/vote change, not per commit.
        if (hs.term, hs.vote) != (self._persisted_hs.term, self._persisted_hs.vote):
            rd.hard_state = hs
        rd.snapshot = self.log.pending_snapshot
        rd.entries = self.log.unstable_entries()
        rd.messages = list(self.msgs)
        rd.committed = self.log.entries_to_apply()
        rd.read_states = list(self.read_states)
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime has carried out `rd` (persisted, sent, applied): accept it. Work
        that arose after `ready()` stays for the next Ready."""
        if rd is not self._outstanding:
            raise ReadyNotAdvanced("advance() of a Ready that is not the one last returned by ready()")
        self._outstanding = None
        if rd.hard_state is not None:
            self._persisted_hs = rd.hard_state
        if rd.snapshot is not None and self.log.pending_snapshot is rd.snapshot:
            self.log.pending_snapshot = None
        if rd.entries:
            self.log.stable_to(rd.entries[-1].index, rd.entries[-1].term)
        if rd.committed:
            self.log.applied_to(rd.committed[-1].index)
        del self.msgs[: len(rd.messages)]
        del self.read_states[: len(rd.read_states)]

    def take_heartbeats(self) -> list[Message]:
        """While a Ready is outstanding (being persisted): take the heartbeats and their
        answers queued since `ready()` in a term already durable, for the runtime to send
        at once. They depend on no entry and on no term or vote not yet persisted, so a
        leader persisting large entries keeps its followers' election timers quiet
        (etcd sends its heartbeats apart from the entries, too)."""
        rd = self._outstanding
        if rd is None:
            return []
        start, term = len(rd.messages), self._persisted_hs.term
        taken, kept = [], []
        for m in self.msgs[start:]:
            (taken if isinstance(m, (Heartbeat, HeartbeatResponse)) and m.term == term else kept).append(m)
        if taken:
            self.msgs[start:] = kept
        return taken

    # --- transitions -------------------------------------------------------------------
    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        low, high = self.cfg.election_ticks
        self.randomized_timeout = self.rng.randint(low, high)

    def _reset(self, term: int, restart_timer: bool = True) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader_id = None
        self.votes = {}
        self.heartbeat_elapsed = 0
        self.transferee = None
        self.pending_reads = []
        self.reads_awaiting_commit = []
        if restart_timer:
            self._reset_election_timer()

    def _become_follower(self, term: int, leader: int | None) -> None:
        # A leader stepping down always starts a timer: it had none running.
        self._reset(term, restart_timer=self.cfg.step_down_restarts_timer or self.role is Role.LEADER)
        self.role = Role.FOLLOWER
        self.leader_id = leader

    def _become_pre_candidate(self) -> None:
        # A pre-candidate keeps its term and vote: it only asks whether it could win.
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.leader_id = None
        self._reset_election_timer()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        self.progress = {}
        self._sync_progress(self.log.last_index + 1)
        # A no-op of the new term lets the leader commit (and learn) everything before it.
        self._append_as_leader([(EntryKind.NOOP, b"")])

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        self.campaigns += 1
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        self.votes = {self.id: True}
        if self._tally(pre_vote):
            return
        for peer in sorted(self.log.conf.voting() - {self.id}):
            self._send(
                RequestVote(term, self.id, peer, self.log.last_index, self.log.last_term, pre_vote, transfer)
            )

    def _tally(self, pre_vote: bool) -> bool:
        """Act on the votes so far; True if the election is decided."""
        conf = self.log.conf
        if quorum.has_quorum(conf, [p for p, yes in self.votes.items() if yes]):
            if pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return True
        if quorum.has_quorum(conf, [p for p, yes in self.votes.items() if not yes]):
            self._become_follower(self.term, None)
            return True
        return False

    # --- vote handling (every role) ----------------------------------------------------
    def _in_leader_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.leader_id is not None
            and self.election_elapsed < self.cfg.election_ticks[0]
        )

    def _handle_vote_request(self, msg: RequestVote) -> None:
        can_vote = (
            self.vote == msg.src
            or (self.vote is None and self.leader_id is None)
            or (msg.pre_vote and msg.term > self.term)
        )
        granted = can_vote and self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if granted and not msg.pre_vote:
            self.vote = msg.src  # persisted (hard state) before the response is sent
            self._reset_election_timer()
        # A granted pre-vote answers in the candidate's future term; a refusal in ours.
        term = msg.term if granted and msg.pre_vote else self.term
        self._send(RequestVoteResponse(term, self.id, msg.src, granted, msg.pre_vote))

    # --- follower ------------------------------------------------------------------------
    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            self.leader_id = msg.src
            self.election_elapsed = 0
            if isinstance(msg, AppendEntries):
                self._handle_append(msg)
            elif isinstance(msg, Heartbeat):
                self.log.commit_to(msg.commit)
                self._send(HeartbeatResponse(self.term, self.id, msg.src, msg.context, self.log.last_index))
            else:
                self._handle_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            if self.promotable():
                self._campaign(pre_vote=False, transfer=True)
        elif isinstance(msg, ReadIndexResponse):
            self.read_states.append(ReadState(msg.context, msg.index))

    def _handle_append(self, msg: AppendEntries) -> None:
        log = self.log
        if msg.prev_index < log.committed:
            # Everything up to our commit index matches the leader's log already.
            entries = [e for e in msg.entries if e.index > log.committed]
            if not entries or log.term_at(entries[0].index - 1) is None:
                self._send(AppendEntriesResponse(self.term, self.id, msg.src, True, log.committed))
                return
            prev = entries[0].index - 1
            msg = AppendEntries(msg.term, msg.src, msg.dst, prev, log.term_at(prev), tuple(entries), msg.commit)
        prev_term = log.term_at(msg.prev_index)
        if prev_term != msg.prev_term:
            # etcd's hint: our last index that may still match, i.e. the largest index
            # <= prev_index whose term is <= the leader's prev_term (a shorter log hints
            # at its end, with the term there), so one rejection suffices.
            hint_index, hint_term = log.find_conflict_by_term(msg.prev_index, msg.prev_term)
            self._send(
                AppendEntriesResponse(self.term, self.id, msg.src, False, msg.prev_index, hint_index, hint_term)
            )
            return
        # Skip entries we already have; truncate only at a real conflict (Log Matching).
        new = msg.entries
        for k, e in enumerate(msg.entries):
            if log.term_at(e.index) != e.term:
                new = msg.entries[k:]
                break
        else:
            new = ()
        if new:
            if new[0].index <= log.last_index:
                log.truncate_and_append(list(new))
            else:
                log.append(list(new))
        last_new = msg.prev_index + len(msg.entries)
        log.commit_to(min(msg.commit, last_new))
        self._send(AppendEntriesResponse(self.term, self.id, msg.src, True, last_new))

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        meta = msg.snapshot.meta
        log = self.log
        if meta.index <= log.committed:
            match = log.committed
        elif log.term_at(meta.index) == meta.term:
            log.commit_to(meta.index)  # we already hold the snapshot's entries
            match = meta.index
        else:
            log.restore(msg.snapshot)
            match = meta.index
        self._send(AppendEntriesResponse(self.term, self.id, msg.src, True, match))

    # --- candidate -----------------------------------------------------------------------
    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, RequestVoteResponse):
            pre = self.role is Role.PRE_CANDIDATE
            if msg.pre_vote == pre:
                self.votes.setdefault(msg.src, msg.granted)
                self._tally(pre)
        elif isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            # A leader of our term exists (or of a newer term: handled in step()).
            self._become_follower(msg.term, msg.src)
            self._step_follower(msg)

    # --- leader --------------------------------------------------------------------------
    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks[0]:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = [p for p, pr in self.progress.items() if pr.recent_active] + [self.id]
                for pr in self.progress.values():
                    pr.recent_active = False
                if not quorum.has_quorum(self.log.conf, active):
                    self._become_follower(self.term, None)
                    return
        if self.transferee is not None:
            # Counted apart from the CheckQuorum window, which may be about to close.
            self.transfer_elapsed += 1
            if self.transfer_elapsed >= self.cfg.election_ticks[0]:
                self.transferee = None  # the transfer did not finish within an election timeout
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.read_seq)

    def _step_leader(self, msg: Message) -> None:
        pr = self.progress.get(msg.src)
        if pr is None:
            return  # not (or no longer) a member
        pr.recent_active = True
        if isinstance(msg, HeartbeatResponse) and pr.state is State.SNAPSHOT:
            pr.become_probe()  # the snapshot (or its answer) was lost: probe again
        if isinstance(msg, AppendEntriesResponse):
            self._handle_append_response(msg, pr)
        elif isinstance(msg, HeartbeatResponse):
            if pr.state is State.REPLICATE and len(pr.inflight) >= self.cfg.max_inflight:
                pr.free_oldest()  # a lost append must not stall the pipeline forever
            pr.probe_sent = False
            if msg.last_index is not None and msg.last_index < pr.match:
                # The follower lost entries it had acknowledged (its data was wiped, or
                # fsync was off): replicate again from its end, by snapshot if need be.
                # Responses come in order on one link, so this is never a stale answer.
                pr.restart_from(msg.last_index)
            if pr.match < self.log.last_index:
                self._maybe_send_append(msg.src, send_empty=True)
            if msg.context:
                self._ack_reads(msg.src, msg.context)
        elif isinstance(msg, ReadIndex):
            self._read_for(msg.src, msg.context)

    def _handle_append_response(self, msg: AppendEntriesResponse, pr: Progress) -> None:
        if not msg.success:
            rejected = msg.match_index
            stale = rejected <= pr.match if pr.state is State.REPLICATE else rejected != pr.next - 1
            if stale or pr.state is State.SNAPSHOT:
                return
            # The follower's log may match ours up to its hint; ours may match the
            # follower's only up to our largest index whose term is <= the hint's term.
            hint = msg.conflict_index
            if msg.conflict_term:
                hint, _ = self.log.find_conflict_by_term(hint, msg.conflict_term)
            pr.become_probe()
            pr.next = max(pr.match + 1, min(hint + 1, rejected))
            self._maybe_send_append(msg.src)
            return
        news = pr.acknowledge(msg.match_index)
        if pr.state is State.SNAPSHOT and pr.match + 1 >= self.log.first_index:
            # etcd: whatever snapshot (or append) the follower applied, once its match
            # lets the log catch it up, replicate -- do not wait for the pending one.
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is State.PROBE and (news or pr.match == msg.match_index):
            pr.become_replicate()
        if news and self._maybe_commit():
            self._broadcast_append()
        else:
            self._maybe_send_append(msg.src)
        if self.role is Role.LEADER and msg.src == self.transferee and pr.match == self.log.last_index:
            self._send(TimeoutNow(self.term, self.id, msg.src))
        if self.role is Role.LEADER and msg.src not in self.log.conf.members():
            self._maybe_forget_departed(msg.src)

    def _maybe_commit(self) -> bool:
        index = quorum.committed_index(self.log.conf, self._match_of)
        # Figure 8: only entries of the current term are committed by counting replicas.
        if index > self.log.committed and self.log.term_at(index) == self.term:
            self.log.commit_to(index)
            self._after_commit()
            return True
        return False

    def _match_of(self, peer: int) -> int:
        return self.log.last_index if peer == self.id else self.progress[peer].match

    def _after_commit(self) -> None:
        if self.reads_awaiting_commit and self.log.term_at(self.log.committed) == self.term:
            waiting, self.reads_awaiting_commit = self.reads_awaiting_commit, []
            for origin, request in waiting:
                self._start_read(origin, request)
        conf = self.log.conf
        last_conf_index = self.log.conf_entries[-1][0] if self.log.conf_entries else 0
        if last_conf_index > self.log.committed:
            return
        if conf.joint:
            # C_old,new is committed: move on to C_new.
            self._append_as_leader([(EntryKind.CONFIG, ConfState(conf.voters, learners=conf.learners).encode())])
        elif self.id not in conf.voters and last_conf_index:
            # C_new without us is committed: a removed leader steps down (Raft §6), once
            # it has told the others (they learn the commit in this Ready).
            self._send_commit()
            self._become_follower(self.term, None)

    def _uncommitted_conf(self) -> bool:
        return bool(self.log.conf_entries) and self.log.conf_entries[-1][0] > self.log.committed

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.transferee}")

    def _append_as_leader(self, items: list[tuple[EntryKind, bytes]]) -> None:
        first = self.log.last_index + 1
        term = self.term
        self.log.append([Entry(term, first + k, data, kind) for k, (kind, data) in enumerate(items)])
        if any(kind is EntryKind.CONFIG for kind, _ in items):
            # New members are sent these entries at once (they reject and are probed back).
            self._sync_progress(first)
        # A lone voter commits at once; otherwise followers' acknowledgements will.
        self._maybe_commit()
        self._broadcast_append()

    def _sync_progress(self, next_index: int) -> None:
        members = self.log.conf.members() - {self.id}
        for peer in list(self.progress):
            if peer not in members:
                self._maybe_forget_departed(peer)
        for peer in members:
            if peer not in self.progress:
                pr = Progress(next_index)
                pr.recent_active = True  # give new members one CheckQuorum window
                self.progress[peer] = pr

    def _maybe_forget_departed(self, peer: int) -> None:
        """Stop replicating to a removed member once it holds the configuration that
        removed it (then it knows, and no longer campaigns); until then it is sent the log
        and heartbeats like a learner, counting in nothing (issue: removed members must
        learn their removal, or without pre-vote and check-quorum they depose leaders)."""
        last_conf_index = self.log.conf_entries[-1][0] if self.log.conf_entries else 0
        if self.progress[peer].match >= last_conf_index:
            del self.progress[peer]

    def _broadcast_append(self) -> None:
        if self.role is not Role.LEADER:
            return  # a removed leader may just have stepped down
        for peer in self.progress:
            self._maybe_send_append(peer)

    def _broadcast_heartbeat(self, context: int) -> None:
        for peer, pr in self.progress.items():
            commit = min(self.log.committed, pr.match)
            self._send(Heartbeat(self.term, self.id, peer, commit, context))
            pr.sent_commit = max(pr.sent_commit, commit)

    def _maybe_send_append(self, peer: int, send_empty: bool = False) -> None:
        pr = self.progress[peer]
        if pr.paused(self.cfg.max_inflight, self.cfg.max_inflight_bytes):
            return
        log = self.log
        prev = pr.next - 1
        prev_term = log.term_at(prev)
        if prev_term is None and prev < log.snap_index:
            self._send_snapshot(peer, pr)
            return
        if prev_term is None:  # next is beyond our log: probe from our end
            pr.next = log.last_index + 1
            prev, prev_term = log.last_index, log.last_term
        hi = min(log.last_index + 1, pr.next + self.cfg.max_entries_per_msg)
        entries = log.slice(pr.next, hi)
        size = 0
        for k, e in enumerate(entries):
            size += len(e.data)
            if size > self.cfg.max_bytes_per_msg and k > 0:
                entries = entries[:k]
                break
        if not entries and not send_empty:
            return
        self._send(AppendEntries(self.term, self.id, peer, prev, prev_term, tuple(entries), log.committed))
        pr.sent(prev + len(entries), bool(entries), log.committed, sum(len(e.data) for e in entries))

    def _send_commit(self) -> None:
        """Tell every follower the commit index in the Ready that advanced it, not at the
        next heartbeat (etcd's Progress.CanBumpCommit), one message per peer: a message
        already queued for a peer carries the current commit, else an empty append does."""
        committed = self.log.committed
        queued: dict[int, int] = {}
        for k, m in enumerate(self.msgs):
            if isinstance(m, (AppendEntries, Heartbeat)) and m.term == self.term:
                queued[m.dst] = k
        for peer, pr in self.progress.items():
            k = queued.get(peer)
            if k is None:
                if self._commit_unsent(pr):
                    self._maybe_send_append(peer, send_empty=True)
                continue
            m = self.msgs[k]
            # Safe: a follower commits at most up to the entries it matched, and a
            # heartbeat carries no more than the follower's acknowledged match.
            commit = committed if isinstance(m, AppendEntries) else min(committed, pr.match)
            if m.commit < commit:
                self.msgs[k] = replace(m, commit=commit)
            pr.sent_commit = max(pr.sent_commit, commit)

    def _commit_unsent(self, pr: Progress) -> bool:
        cfg = self.cfg
        return pr.can_bump_commit(self.log.committed) and not pr.paused(cfg.max_inflight, cfg.max_inflight_bytes)

    def _send_snapshot(self, peer: int, pr: Progress) -> None:
        snap = self.log.snapshot
        if snap is None:
            raise SafetyError("entries were compacted but no snapshot is known")
        self._send(InstallSnapshot(self.term, self.id, peer, snap))
        pr.become_snapshot(snap.meta.index)

    # --- ReadIndex (Raft §6.4) ------------------------------------------------------------
    def _start_read(self, origin: int, request: int) -> None:
        self.read_seq += 1
        read = _PendingRead(self.read_seq, origin, request, self.log.committed, {self.id})
        self.pending_reads.append(read)
        self._release_reads()
        if self.pending_reads:
            self._broadcast_heartbeat(self.read_seq)

    def _ack_reads(self, peer: int, context: int) -> None:
        # An answer to round `context` confirms leadership for every read of a round <= it.
        for read in self.pending_reads:
            if read.seq <= context:
                read.acks.add(peer)
        self._release_reads()

    def _release_reads(self) -> None:
        conf = self.log.conf
        while self.pending_reads and quorum.has_quorum(conf, self.pending_reads[0].acks):
            read = self.pending_reads.pop(0)
            if read.origin == self.id:
                self.read_states.append(ReadState(read.request, read.index))
            else:
                self._send(ReadIndexResponse(self.term, self.id, read.origin, read.request, read.index))

    def _send(self, msg: Message) -> None:
        self.msgs.append(msg)
