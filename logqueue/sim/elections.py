"""The Raft paper's election-timing experiment (§9.3, Figure 16): the simulator's measurement.

``python -m experiments sim-elections`` runs it and writes the experiment's format
(``experiments.election_results``). For each election-timeout range, one simulated
cluster of real Raft cores (``Config`` with ``pre_vote`` and ``check_quorum`` on, as
``logqueue node`` runs them; ``plain`` turns both off, as in the paper) on a simulated
network. One tick is 1 ms. Every message takes a delay drawn uniformly from
``delay_ms`` (5-10 ms by default one way, so a request and its answer take about 15 ms:
the paper's broadcast time). The leader's heartbeat interval is half the minimum
election timeout, as in the paper. Each trial waits for a stable leader (every node
follows it in its term), then crashes it at a uniformly random tick of its heartbeat
interval, counts the ticks until another node becomes leader, and restarts the crashed
node. A trial that finds no leader within ``max_ms`` is recorded as timed out.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from logqueue.raft import Config, ConfState, Message, Role

from .node import SimNode


# --- the simulation --------------------------------------------------------------------------


class _Links:
    """Every message arrives after a delay drawn uniformly from [low, high] ticks."""

    def __init__(self, rng: random.Random, delay: tuple[int, int]) -> None:
        self.rng = rng
        self.delay = delay
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0

    def send(self, now: int, msg: Message) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (now + self.rng.randint(*self.delay), self._seq, msg))

    def due(self, now: int) -> list[Message]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        return out


@dataclass
class ElectionCluster:
    """A simulated cluster for one timeout range; ``trial()`` crashes its leader once."""

    nodes: int
    election_ms: tuple[int, int]
    heartbeat_ms: int
    delay_ms: tuple[int, int]
    max_ms: int
    rng: random.Random
    plain: bool = False  # the paper's algorithm: no PreVote, no CheckQuorum

    def __post_init__(self) -> None:
        cfg = Config(election_ticks=self.election_ms, heartbeat_ticks=self.heartbeat_ms,
                     pre_vote=not self.plain, check_quorum=not self.plain)
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
        """Run until every node follows one leader in its term; ``RuntimeError`` after ``limit_ticks``."""
        for _ in range(limit_ticks):
            lead = self._stable_leader()
            if lead is not None:
                return lead
            self.step()
        raise RuntimeError(f"no stable leader within {limit_ticks} simulated ms")

    def trial(self) -> dict:
        """Crash the leader at a random point of its heartbeat interval; ``{"ms", "terms"}``.

        ``ms`` is the number of ticks from the crash to the tick in which another node
        became leader (``None`` after ``max_ms``); ``terms`` how many terms that took.
        """
        lead = self.settle(limit_ticks=100 * self.election_ms[1] + self.max_ms)
        # Wait for the tick in which the leader broadcasts a heartbeat, then a uniform
        # number of ticks of its interval: the crash point is uniform within the interval.
        while True:
            self.step()
            if lead.raft.role is not Role.LEADER:  # lost leadership while settling: start over
                return self.trial()
            if lead.raft.heartbeat_elapsed == 0:
                break
        for _ in range(self.rng.randrange(self.heartbeat_ms)):
            self.step()
        old_term = lead.raft.term
        lead.crash()
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
        return {"ms": float(self.now - crashed_at) if elected is not None else None, "terms": terms}


def simulate(ranges: list[tuple[int, int]], *, nodes: int, trials: int, delay_ms: tuple[int, int],
             heartbeat_ms: int | None, max_ms: int, seed: int, plain: bool = False, progress=None) -> list[dict]:
    """Run the experiment: per range ``{"low", "high", "heartbeat_ms", "trials": [{"ms", "terms"}, ...]}``.

    ``progress(range_text, done, total)`` is called after every trial when given.
    """
    rng = random.Random(seed)
    out = []
    for low, high in ranges:
        hb = heartbeat_ms or max(1, low // 2)
        cluster = ElectionCluster(nodes, (low, high), hb, delay_ms, max_ms, random.Random(rng.random()), plain)
        results = []
        for k in range(trials):
            results.append(cluster.trial())
            if progress is not None:
                progress(f"{low}-{high}", k + 1, trials)
        out.append({"low": low, "high": high, "heartbeat_ms": hb, "trials": results})
    return out
