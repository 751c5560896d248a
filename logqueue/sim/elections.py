"""The Raft paper's election-timing experiment (§9.3, Figure 16): the simulator's measurement.

``python -m experiments sim-elections`` runs it and writes the experiment's format
(``experiments.election_results``). For each election-timeout range, one simulated
cluster of real Raft cores on a simulated network, configured by a ``Setup``: ``PAPER``
(no PreVote or CheckQuorum, the election timer kept running when a node steps down, the
followers' logs of different lengths) or ``LOGQUEUE`` (the core as ``logqueue node`` runs
it). One tick is 1 ms. Every message takes a delay drawn uniformly from ``delay_ms``. The
leader's heartbeat interval is half the minimum election timeout, as in the paper. Each
trial waits for a stable leader (every node follows it in its term), staggers the logs
(``PAPER``), waits for the leader's heartbeat broadcast and crashes it a uniformly random
number of ticks into its heartbeat interval, counts the ticks until another node becomes
leader, and restarts the crashed node. A trial that finds no leader within ``max_ms`` is
recorded as timed out.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from logqueue.raft import RAFT_VARIANTS, AppendEntries, Config, ConfState, Message, Role

from .node import SimNode


# --- the simulation --------------------------------------------------------------------------


class NoStableLeader(RuntimeError):
    """A cluster found no leader every node follows within the limit (one-line reason)."""


class _Links:
    """Every message arrives after a delay drawn uniformly from [low, high] ticks.

    ``withheld`` holds (leader, follower) pairs whose appends carrying entries are dropped:
    the follower's log stays shorter while it still hears the leader's heartbeats.
    """

    def __init__(self, rng: random.Random, delay: tuple[int, int]) -> None:
        self.rng = rng
        self.delay = delay
        self.withheld: set[tuple[int, int]] = set()
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0

    def send(self, now: int, msg: Message) -> None:
        if isinstance(msg, AppendEntries) and msg.entries and (msg.src, msg.dst) in self.withheld:
            return
        self._seq += 1
        heapq.heappush(self._queue, (now + self.rng.randint(*self.delay), self._seq, msg))

    def due(self, now: int) -> list[Message]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        return out


@dataclass(frozen=True)
class Setup:
    """What the experiment configures besides the timeouts and the network."""

    raft_variant: str  # a key of RAFT_VARIANTS, the core's configuration (``logqueue node --raft-variant``)
    staggered_logs: bool  # the followers' logs of different lengths at the crash


# §9.3 of the paper: Raft as in its Figure 2 (LogCabin: stepping down keeps the election
# timer running), "the servers in each trial had different log lengths, so some candidates
# were not eligible to become leader".
PAPER = Setup(raft_variant="paper", staggered_logs=True)
# As ``logqueue node`` runs, every log caught up.
LOGQUEUE = Setup(raft_variant="logqueue", staggered_logs=False)
SETUPS = {"paper": PAPER, "logqueue": LOGQUEUE}


@dataclass
class ElectionCluster:
    """A simulated cluster for one timeout range; ``trial()`` crashes its leader once."""

    nodes: int
    election_ms: tuple[int, int]
    heartbeat_ms: int
    delay_ms: tuple[int, int]
    max_ms: int
    rng: random.Random
    setup: Setup = PAPER

    def __post_init__(self) -> None:
        s = self.setup
        cfg = Config(election_ticks=self.election_ms, heartbeat_ticks=self.heartbeat_ms, **RAFT_VARIANTS[s.raft_variant])
        voters = ConfState(frozenset(range(1, self.nodes + 1)))
        self.members = {i: SimNode(i, cfg, random.Random(self.rng.random()), voters) for i in voters.voters}
        self.links = _Links(random.Random(self.rng.random()), self.delay_ms)
        self.now = 0  # ticks = ms

    def step(self) -> None:
        """One tick: tick every live node, deliver due messages, carry out the Readies."""
        self.now += 1
        live = [n for n in self.members.values() if n.alive]
        for n in live:
            n.raft.tick()
        for msg in self.links.due(self.now):
            n = self.members[msg.dst]
            if n.alive:  # a crashed node's messages are lost
                n.raft.step(msg)
        for n in live:
            rd, sent = n.process_ready()
            if rd is not None and sent:
                for m in rd.messages:
                    self.links.send(self.now, m)

    def leader(self) -> SimNode | None:
        leaders = [n for n in self.members.values() if n.alive and n.raft.role is Role.LEADER]
        return max(leaders, key=lambda n: n.raft.term) if leaders else None

    def _stable_leader(self) -> SimNode | None:
        lead = self.leader()
        if lead is None:
            return None
        for n in self.members.values():
            if not n.alive or n.raft.term != lead.raft.term or n.raft.leader_id != lead.id:
                return None
            if n.raft.commit_index < lead.raft.commit_index:
                return None
        return lead

    def settle(self, limit_ticks: int) -> SimNode:
        """Run until every node follows one leader in its term; ``NoStableLeader`` after ``limit_ticks``."""
        for _ in range(limit_ticks):
            lead = self._stable_leader()
            if lead is not None:
                return lead
            self.step()
        raise NoStableLeader(f"{self.election_ms[0]}-{self.election_ms[1]} ms: no stable leader within {limit_ticks} "
                             "simulated ms (the candidates stay in step)")

    def _stagger_logs(self, lead: SimNode) -> None:
        """Leave the followers with logs of different lengths (a random order; the paper's
        "so some candidates were not eligible to become leader"): with F followers the leader
        appends F-1 entries one by one, the k-th reaching only the first F-k followers; the others
        keep hearing heartbeats but get no entries until the crash."""
        followers = [i for i in sorted(self.members) if i != lead.id]
        self.rng.shuffle(followers)
        for j in range(len(followers) - 1, 0, -1):
            self.links.withheld = {(lead.id, f) for f in followers[j:]}
            index = lead.raft.propose(b"")
            deadline = self.now + 100 * self.election_ms[1]
            while any(self.members[f].raft.last_index < index for f in followers[:j]):
                if self.now >= deadline:
                    raise NoStableLeader(f"entry {index} did not reach followers {followers[:j]} by {deadline} simulated ms")
                self.step()

    def trial(self) -> dict:
        """Crash the leader at a random point of its heartbeat interval; ``{"ms", "terms", "crash_ms"}``.

        ``ms`` is the number of ticks from the crash to the tick in which another node
        became leader (``None`` after ``max_ms``); ``terms`` how many terms that took;
        ``crash_ms`` how many ticks after its heartbeat broadcast the leader crashed.
        """
        lead = self.settle(limit_ticks=1000 * self.election_ms[1] + self.max_ms)
        if self.setup.staggered_logs:
            self._stagger_logs(lead)
        # Wait for the tick in which the leader broadcasts a heartbeat, then a uniform
        # number of ticks of its interval: the crash point is uniform within the interval.
        while True:
            self.step()
            if lead.raft.role is not Role.LEADER:  # lost leadership while settling: start over
                self.links.withheld.clear()
                return self.trial()
            if lead.raft.heartbeat_elapsed == 0:
                break
        into_interval = self.rng.randrange(self.heartbeat_ms)
        for _ in range(into_interval):
            self.step()
        old_term = lead.raft.term
        lead.crash()
        self.links.withheld.clear()
        crashed_at = self.now
        elected = None
        while self.now - crashed_at < self.max_ms:
            self.step()
            new = self.leader()
            if new is not None and new.raft.term > old_term:
                elected = new
                break
        terms = max(n.raft.term for n in self.members.values() if n.alive) - old_term
        if elected is not None:
            terms = elected.raft.term - old_term
        lead.restart()
        return {"ms": float(self.now - crashed_at) if elected is not None else None, "terms": terms,
                "crash_ms": into_interval}


def simulate(ranges: list[tuple[int, int]], *, nodes: int, trials: int, delay_ms: tuple[int, int],
             heartbeat_ms: int | None, max_ms: int, seed: int, setup: Setup = PAPER, progress=None) -> list[dict]:
    """Run the experiment: per range ``{"low", "high", "heartbeat_ms", "trials": [{"ms", "terms"}, ...]}``.

    ``progress(range_text, done, total)`` is called after every trial when given.
    """
    rng = random.Random(seed)
    out = []
    for low, high in ranges:
        hb = heartbeat_ms or max(1, low // 2)
        cluster = ElectionCluster(nodes, (low, high), hb, delay_ms, max_ms, random.Random(rng.random()), setup)
        results = []
        for k in range(trials):
            results.append(cluster.trial())
            if progress is not None:
                progress(f"{low}-{high}", k + 1, trials)
        out.append({"low": low, "high": high, "heartbeat_ms": hb, "trials": results})
    return out
