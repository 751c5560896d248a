"""One seeded run of N real Raft cores over a simulated network and disk.

Phases: a fault phase (client proposals throughout; message loss, delay, reordering and
duplication; symmetric and asymmetric partitions; crashes -- some in the middle of a
Ready -- and restarts; membership changes through learners and leadership transfers), then everything is
healed and liveness is checked: within `liveness_ticks` a leader must exist and a fresh
proposal must be applied by a majority of the voters. The five guarantees are checked
after every step. Everything is derived from the one seed.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import IO

from logqueue.raft import Config, ConfState, NotLeader, ProposalDropped, Raft, Role

from .invariants import Invariants, Violation
from .network import Network, NetworkFaults
from .node import CrashPoint, SimNode


@dataclass
class Stats:
    elections: int = 0
    committed: int = 0  # highest index applied anywhere
    faults: int = 0
    messages: int = 0


@dataclass
class SimResult:
    seed: int
    stats: Stats
    violation: Violation | None = None
    tick: int = 0


@dataclass
class Figure8:
    """State of the Figure 8 nemesis (see `Simulation._figure8_step`)."""

    first: int  # the leader cut off with one follower
    term: int
    second: int = 0  # the leader elected meanwhile, crashed after persisting its no-op
    third: int = 0  # the leader after healing, crashed right after its first commit
    stage: int = 0
    commit_seen: int = 0
    ticks: int = 0


@dataclass
class SimOptions:
    nodes: int = 5
    ticks: int = 3000
    liveness_ticks: int = 600
    raft_cls: type = Raft
    trace: IO[str] | None = None
    # Fault intensity per tick during the fault phase.
    fault_rate: float = 0.02
    propose_rate: float = 0.3


class Simulation:
    def __init__(self, seed: int, opts: SimOptions) -> None:
        self.seed = seed
        self.opts = opts
        self.rng = random.Random(seed)
        rng = self.rng
        # Each seed draws its own weather: some calm, some stormy, some prone to split votes.
        self.fault_rate = opts.fault_rate * rng.choice([2, 5, 10])
        self.restart_rate = rng.choice([0.02, 0.1, 0.5])
        # Chance that a freshly elected leader crashes in the middle of its first Readies.
        self.leader_flap = rng.choice([0.0, 0.2, 0.4])
        self.figure8: Figure8 | None = None
        self.cfg = Config(
            election_ticks=rng.choice([(10, 20), (10, 12), (10, 11)]),
            heartbeat_ticks=2,
            max_inflight=rng.choice([1, 4, 64]),
            max_entries_per_msg=rng.choice([1, 2, 8, 64]),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            step_down_restarts_timer=seed % 2 == 0,  # not drawn: keeps the seed's fault stream
        )
        voters = frozenset(range(1, opts.nodes + 1))
        # One spare node outside the configuration takes part in membership changes.
        ids = sorted(voters | {opts.nodes + 1})
        self.nodes = {
            i: SimNode(i, self.cfg, random.Random(rng.random()), ConfState(voters) if i in voters else None, opts.raft_cls)
            for i in ids
        }
        self.net = Network(random.Random(rng.random()))
        self.net.faults = self._random_network_faults()
        self.inv = Invariants()
        self.stats = Stats()
        self.now = 0
        self.faulting = True
        self.bouncing: set[int] = set()
        self.proposed = 0
        self.compact_every = rng.choice([20, 50, 200])
        self.compact_retain = (0, 10, 100)[seed % 3]  # not drawn: keeps the seed's fault stream

    # --- tracing -------------------------------------------------------------------
    def _trace(self, node: int, ev: str, **fields) -> None:
        if self.opts.trace is not None:
            rec = {"seed": self.seed, "tick": self.now, "node": node, "ev": ev, **fields}
            self.opts.trace.write(json.dumps(rec) + "\n")

    def _crash(self, node: SimNode) -> None:
        node.crash()
        self._trace(node.id, "crash")

    def _restart(self, node: SimNode) -> None:
        node.restart()
        self._trace(node.id, "restart")
        if node.disk.snapshot is not None:
            self._trace(node.id, "snapshot_restore", index=node.disk.snapshot.meta.index)

    # --- driving -------------------------------------------------------------------
    def run(self) -> SimResult:
        try:
            fault_end = self.opts.ticks - self.opts.liveness_ticks
            while self.now < fault_end:
                self._inject_faults()
                self._client_load()
                self._step()
            self.faulting = False
            self._heal_all()
            self._check_liveness()
        except Violation as v:
            return SimResult(self.seed, self.stats, v, self.now)
        self.stats.messages = self.net.sent
        return SimResult(self.seed, self.stats, None, self.now)

    def _step(self) -> None:
        """One tick: tick every live node, deliver due messages, process Readies."""
        self.now += 1
        live = [n for n in self.nodes.values() if n.alive]
        for n in live:
            n.raft.tick()
        for msg in self.net.due(self.now):
            n = self.nodes[msg.dst]
            if n.alive:
                n.raft.step(msg)
        self._drain()

    def _drain(self) -> None:
        inv = self.inv
        self._on_new_leaders()
        for n in self.nodes.values():
            if not n.alive:
                continue
            rd, sent = n.process_ready()
            if rd is None:
                continue
            if rd.entries and (n.alive or n.crash_point is None):
                inv.on_persist(n.raft, rd.entries, rd.term if rd.role is Role.LEADER else None)
            if sent:
                for m in rd.messages:
                    self.net.send(self.now, m)
            if not n.alive:
                self.stats.faults += 1
                self._trace(n.id, "crash")
                continue
            if rd.snapshot is not None:
                self._trace(n.id, "snapshot_restore", index=rd.snapshot.meta.index)
            for e in rd.committed:
                inv.on_apply(n.id, e)
                if self.opts.trace is not None:
                    self._trace(n.id, "apply", index=e.index, term=e.term, digest=hashlib.sha256(e.data).hexdigest())
            if rd.committed:
                self.stats.committed = max(self.stats.committed, rd.committed[-1].index)
            n.maybe_compact(self.compact_every, self.compact_retain)

    def _on_new_leaders(self) -> None:
        """Check and record leaders elected since the last step, before their first Ready
        (so a crash can still be armed between persisting their no-op and sending it)."""
        for raft in self.inv.check_roles([n.raft for n in self.nodes.values() if n.alive]):
            self.stats.elections += 1
            self.inv.on_new_leader(raft)
            self._trace(raft.id, "leader", term=raft.term, last_index=raft.last_index)
            if not self.faulting:
                continue
            node = self.nodes[raft.id]
            f = self.figure8
            if f is not None and f.stage == 1 and raft.id != f.first and raft.term > f.term:
                node.crash_point = CrashPoint.AFTER_PERSIST
                f.second, f.term, f.stage = raft.id, raft.term, 2
            elif self.rng.random() < self.leader_flap:
                node.crash_point = self.rng.choice(list(CrashPoint))

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.alive and n.raft.role is Role.LEADER]
        return max(leaders, key=lambda n: n.raft.term) if leaders else None

    def _propose(self, data: bytes) -> bool:
        leader = self._leader()
        if leader is None:
            return False
        try:
            leader.raft.propose(data)
        except (NotLeader, ProposalDropped):
            return False
        return True

    def _client_load(self) -> None:
        if self.rng.random() < self.opts.propose_rate:
            self.proposed += 1
            self._propose(b"%d:%d" % (self.seed, self.proposed))

    # --- faults --------------------------------------------------------------------
    def _inject_faults(self) -> None:
        rng = self.rng
        for n in self.nodes.values():  # crashed nodes come back after a while
            if not n.alive and (n.id in self.bouncing or rng.random() < self.restart_rate):
                self.bouncing.discard(n.id)
                self._restart(n)
        if self.figure8 is not None:
            self._figure8_step()
            return
        if rng.random() >= self.fault_rate:
            return
        self.stats.faults += 1
        faults, weights = zip(*self.FAULTS_WEIGHTED)
        rng.choices(faults, weights)[0](self)

    def _fault_crash(self) -> None:
        """Crash a node (the leader half of the time), possibly in the middle of a Ready."""
        rng = self.rng
        victim = self.nodes[rng.choice(sorted(self.nodes))]
        if rng.random() < 0.5:
            victim = self._leader() or victim
        if victim.alive:
            victim.crash_point = rng.choice([None, *CrashPoint])
            if victim.crash_point is None:
                self._crash(victim)

    def _fault_bounce(self) -> None:
        """Crash right after the next Ready (or the next granted vote) is sent and come back
        at once, as under a supervisor: whatever was only in memory is gone."""
        victim = self.nodes[self.rng.choice(sorted(self.nodes))]
        if victim.alive:
            if self.rng.random() < 0.5:
                victim.crash_point = CrashPoint.AFTER_SEND
            else:
                victim.crash_after_vote = True
            self.bouncing.add(victim.id)

    def _fault_figure8(self) -> None:
        leader = self._leader()
        if leader is not None:
            self.figure8 = Figure8(leader.id, leader.raft.term)

    def _fault_isolate_leader(self) -> None:
        """Cut the leader off with at most one follower."""
        leader = self._leader()
        if leader is not None:
            ids = sorted(self.nodes)
            others = [i for i in ids if i != leader.id]
            side = {leader.id, *self.rng.sample(others, self.rng.randint(0, 1))}
            self.net.partition([side, set(ids) - side])

    def _fault_partition(self) -> None:
        ids = sorted(self.nodes)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) // 2)
        self.net.partition([set(ids[:cut]), set(ids[cut:])])

    def _fault_one_way(self) -> None:
        ids = sorted(self.nodes)
        self.net.isolate_one_way(self.rng.choice(ids), set(ids), outgoing=self.rng.random() < 0.5)

    def _fault_heal(self) -> None:
        self.net.heal()

    def _fault_weather(self) -> None:
        self.net.faults = self._random_network_faults()

    def _fault_transfer(self) -> None:
        leader = self._leader()
        if leader is not None:
            target = self.rng.choice(sorted(leader.raft.conf.voters))
            try:
                leader.raft.transfer_leadership(target)
            except (NotLeader, ProposalDropped):
                pass

    def _figure8_step(self) -> None:
        """Drive the Figure 8 schedule one step: old-term entries on a minority, a leader
        elsewhere that persists its no-op and crashes, heal, then the next leader crashes
        right after its first commit."""
        f = self.figure8
        ids = sorted(self.nodes)
        if f.stage == 0:
            others = [i for i in ids if i != f.first]
            side = {f.first, self.rng.choice(others)}
            self.net.partition([side, set(ids) - side])
            f.stage = 1
        elif f.stage == 2:  # (stage 1 -> 2 happens in _on_new_leaders)
            if not self.nodes[f.second].alive:
                self.net.heal()
                f.stage = 3
        elif f.stage == 3:
            leader = self._leader()
            if leader is not None and leader.raft.term > f.term:
                f.third, f.commit_seen, f.stage = leader.id, leader.raft.commit_index, 4
        elif f.stage == 4:
            third = self.nodes[f.third]
            if not third.alive or third.raft.role is not Role.LEADER:
                self.figure8 = None
            elif third.raft.commit_index > f.commit_seen:
                # Its first commit is applied; crash before followers learn more.
                self._crash(third)
                self._restart(self.nodes[f.second])
                self.figure8 = None
        if self.figure8 is not None:
            f.ticks += 1
            if f.ticks > 300:
                self.figure8 = None  # the schedule did not play out; back to random faults

    def _random_network_faults(self) -> NetworkFaults:
        rng = self.rng
        return NetworkFaults(
            loss=rng.choice([0.0, 0.01, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.01, 0.05]),
            max_delay=rng.choice([1, 2, 5, 10]),
        )

    def _fault_membership(self) -> None:
        """Membership changes as an operator makes them: the node outside the
        configuration joins as a learner; a learner replaces a voter (one joint change,
        refused by the core until the learner has caught up) or, now and then, leaves."""
        leader = self._leader()
        if leader is None:
            return
        raft, rng = leader.raft, self.rng
        conf = raft.conf
        outside = sorted(set(self.nodes) - conf.members())
        try:
            if outside:
                raft.propose_conf_change(conf.voters, conf.learners | {outside[0]})
            elif conf.learners:
                learner = min(conf.learners)
                if rng.random() < 0.2:
                    raft.propose_conf_change(conf.voters, conf.learners - {learner})
                else:
                    removed = rng.choice(sorted(conf.voters))
                    raft.propose_conf_change(conf.voters - {removed} | {learner})
        except (NotLeader, ProposalDropped):
            pass

    def _heal_all(self) -> None:
        """End every fault, including armed ones that would fire later."""
        self.net.heal()
        self.net.faults = NetworkFaults(max_delay=2)
        self.figure8 = None
        self.bouncing.clear()
        for n in self.nodes.values():
            n.crash_point = None
            n.crash_after_vote = False
            if not n.alive:
                self._restart(n)

    def _check_liveness(self) -> None:
        """After healing, a leader is elected and a new proposal commits, within bounds."""
        deadline = self.now + self.opts.liveness_ticks
        marker = b"liveness:%d" % self.seed
        proposed_at: int | None = None
        while self.now < deadline:
            self._step()
            leader = self._leader()
            if leader is None:
                continue
            # Re-propose if an earlier attempt was lost with a leader that stepped down.
            if proposed_at is None or self.now - proposed_at > 4 * self.cfg.election_ticks[1]:
                if self._propose(marker):
                    proposed_at = self.now
            if proposed_at is not None and self._applied_by_majority(marker, leader.raft.conf.voters):
                return
        raise Violation("Liveness", f"no proposal committed within {self.opts.liveness_ticks} ticks after healing")

    def _applied_by_majority(self, marker: bytes, voters: frozenset[int]) -> bool:
        indexes = [i for i, (_, d) in self.inv.applied.items() if i > self.stats.committed - 64 and d == marker]
        if not indexes:
            return False
        first = min(indexes)
        applied = [n for n in self.nodes.values() if n.id in voters and n.applied_index >= first]
        return 2 * len(applied) > len(voters)

    # Relative frequency of each fault kind in the fault phase.
    FAULTS_WEIGHTED = [
        (_fault_crash, 20),
        (_fault_bounce, 8),
        (_fault_figure8, 3),
        (_fault_isolate_leader, 4),
        (_fault_partition, 7),
        (_fault_one_way, 8),
        (_fault_heal, 15),
        (_fault_weather, 15),
        (_fault_membership, 10),
        (_fault_transfer, 10),
    ]
