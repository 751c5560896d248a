"""``nemesis``: a seeded random schedule of the catalogue's faults over a longer run (Jepsen's nemesis).

The load runs for ``nemesis_s`` seconds at the rate of ``jobs / load_s`` (thousands of
jobs by default). From ``fault_start_s`` on, two lanes draw faults from the catalogue,
each lane one fault at a time with a random pause between faults:

- the **worker lane**: SIGKILL a worker (a replacement starts when the fault ends),
  SIGSTOP a worker past its lease then SIGCONT it, or cut a worker off the network longer
  than the heartbeat timeout;
- the **server lane**, what the run's topology supports: with nodes of the run's own (a
  cluster, e.g. logqueue's three nodes) cut the leader off everyone, SIGKILL the leader,
  cut a follower off, or restart a node, and wait for the node to catch up after each;
  without (the shared brokers) cut the broker off every client.

So at most one node of a cluster (a minority of three or more; none of a single node)
and at most one worker is faulted at a time; the worker and server lanes may overlap.
Every fault is a ``fault_start``/``fault_end`` pair (the start names the catalogue's
``kind``, e.g. ``leader-partition``), and no fault starts unless its
drawn length ends before the load does. Then everything still faulted is healed, and
the run drains. The schedule -- which fault, how long, which pause -- comes from a
``random.Random`` seeded with ``seed``; which worker or node it hits depends on the run
(the leader is whoever leads then; a worker is drawn, by the same seed, among the live
workers not otherwise faulted).
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass

from experiments.scenarios.base import POLL_S, Params, RunContext, Scenario, with_defaults

PAUSE_S = (1.0, 3.0)  # quiet time between two faults of a lane, drawn uniformly
SETTLE_S = 30.0  # longest wait, after a node fault, for the node to catch up
WORKER_FAULTS = ("worker-kill", "worker-pause", "worker-partition")
CLUSTER_FAULTS = ("leader-partition", "leader-kill", "follower-partition", "node-restart")
BROKER_FAULTS = ("broker-partition",)
# The catalogue: kind -> the ``fault`` of its events.
EVENT = {
    "worker-kill": "sigkill", "worker-pause": "sigstop", "worker-partition": "partition",
    "broker-partition": "partition",
    "leader-partition": "partition", "leader-kill": "sigkill", "follower-partition": "partition",
    "node-restart": "restart",
}


@dataclass
class Fault:
    """A fault in progress: its catalogue kind, event name, target and how to end it."""

    kind: str
    name: str
    target: str
    links: tuple[str, ...] = ()
    node: object = None
    worker: str | None = None


def server_faults(topology) -> tuple[str, ...]:
    """Node faults where the run has nodes of its own, enough that one is a minority; else the broker's."""
    return CLUSTER_FAULTS if topology.node_faults is None and len(topology.nodes) >= 3 else BROKER_FAULTS


class Links:
    """Cut and heal links shared by overlapping faults: a link heals when no fault still holds it."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.held: Counter[str] = Counter()

    def cut(self, links: list[str]) -> None:
        self.held.update(links)
        self.ctx.cut(links)

    def heal(self, links: list[str]) -> None:
        self.held.subtract(links)
        self.ctx.heal([name for name in dict.fromkeys(links) if self.held[name] <= 0])


class Nemesis(Scenario):
    name = "nemesis"
    summary = "a seeded random schedule of the faults above over a longer run"

    def adjust(self, params: Params, explicit: set[str]) -> Params:
        # The same rate of jobs as the other scenarios, over nemesis_s seconds.
        return with_defaults(params, explicit, load_s=params.nemesis_s,
                             jobs=max(1, round(params.jobs * params.nemesis_s / params.load_s)))

    # --- the catalogue --------------------------------------------------------------------

    def duration(self, kind: str, p: Params, rng) -> float:
        """How long a fault of ``kind`` lasts: long enough for its detector to fire."""
        outlast_heartbeat = 3 * p.heartbeat_s + p.timeout_s + 1  # as consumer-/broker-partition
        if kind in ("worker-partition", "leader-partition", "broker-partition"):
            return rng.uniform(1.0, 1.5) * outlast_heartbeat
        if kind == "worker-pause":
            return p.timeout_s + rng.uniform(1.0, 1.0 + p.timeout_s)  # past its lease
        if kind == "node-restart":
            return rng.uniform(0.2, 1.0)  # down for a process restart
        return rng.uniform(1.0, 2.0) * p.timeout_s  # worker-kill, leader-kill, follower-partition

    # --- starting and ending a fault --------------------------------------------------------

    def free_worker(self, ctx: RunContext) -> str | None:
        """A live worker no fault holds, drawn by the seed (a busy one when there is one)."""
        candidates = sorted(w for w in ctx.live_workers() if w not in self.faulted_workers)
        busy = [w for w in candidates if ctx.history.busy(w)]
        pool = busy or candidates
        return self.rng.choice(pool) if pool else None

    def start(self, ctx: RunContext, kind: str) -> Fault | None:
        """Begin a fault of ``kind`` (recording ``fault_start``); ``None`` when it has no target now."""
        topology = ctx.topology
        if kind.startswith("worker-"):
            worker = self.free_worker(ctx)
            if worker is None:
                return None
            self.faulted_workers.add(worker)
            links = ctx.link_names(clients=[worker]) if kind == "worker-partition" else []
            fault = Fault(kind, EVENT[kind], worker, tuple(links), worker=worker)
        elif kind == "broker-partition":
            fault = Fault(kind, EVENT[kind], topology.everything, tuple(ctx.link_names()))
        else:
            leader = topology.wait_leader(20.0)
            if kind in ("leader-partition", "leader-kill"):
                node = leader
            elif kind == "follower-partition":
                node = self.rng.choice(sorted(n for n in topology.nodes if n != leader))
            else:
                node = self.rng.choice(sorted(topology.nodes))
            links = ctx.node_links(node) if kind.endswith("-partition") else []
            fault = Fault(kind, EVENT[kind], topology.node_name(node), tuple(links), node=node)
        ctx.fault_start(fault.name, fault.target, kind=kind)
        if fault.links:
            self.links.cut(list(fault.links))
        elif kind == "worker-kill":
            ctx.kill_worker(fault.worker)
        elif kind == "worker-pause":
            ctx.pause_worker(fault.worker)
        else:
            topology.kill(fault.node)
        return fault

    def end(self, ctx: RunContext, fault: Fault):
        """Heal ``fault`` and record ``fault_end``; returns a predicate true once the run has settled.

        After a node fault the run has settled when there is a leader and the node has caught
        up, so that the next node fault never finds two nodes behind.
        """
        topology = ctx.topology
        if fault.links:
            self.links.heal(list(fault.links))
        elif fault.kind == "worker-kill":
            self.replacements += 1
            ctx.start_worker(f"{fault.worker.split('-r')[0]}-r{self.replacements}")  # w2 -> w2-r1 -> w2-r4
        elif fault.kind == "worker-pause":
            ctx.resume_worker(fault.worker)
        elif fault.node is not None:
            topology.spawn(fault.node)
        ctx.fault_end(fault.name, fault.target)
        self.faulted_workers.discard(fault.worker)
        if fault.node is None:
            return lambda: True
        topology.wait_leader(30.0)
        return topology.catching_up(fault.node)[1]

    # --- the run ----------------------------------------------------------------------------

    def inject(self, ctx: RunContext) -> None:
        """Run both lanes until neither can fit another fault before the load ends."""
        p = ctx.params
        self.rng = ctx.rng
        self.links = Links(ctx)
        self.faulted_workers: set[str | None] = set()
        self.replacements = 0
        deadline = ctx.t_load + p.load_s
        lanes = [Lane("worker", WORKER_FAULTS, p.seed), Lane("server", server_faults(ctx.topology), p.seed)]
        for lane in lanes:
            lane.next_at = ctx.t_load + p.fault_start_s
        ctx.note(f"nemesis: worker faults {', '.join(lanes[0].kinds)}; server faults {', '.join(lanes[1].kinds)}; "
                 f"{p.jobs} jobs over {p.load_s:g} s")
        # One thread: each lane's next step is due at next_at; a lane that ended a node fault waits to settle.
        while not all(lane.done for lane in lanes):
            for lane in lanes:
                self.step(ctx, lane, deadline)
            ctx.sleep(POLL_S)
        self.lanes = lanes

    def step(self, ctx: RunContext, lane: "Lane", deadline: float) -> None:
        now = time.monotonic()
        if lane.settled is not None:
            if lane.settled() or now > lane.settle_by:
                if not lane.settled():
                    ctx.note(f"{lane.name} lane: the run had not settled {SETTLE_S:g} s after a fault ended")
                lane.settled, lane.next_at = None, now + lane.pause
            return
        if lane.done or now < lane.next_at:
            return
        if lane.fault is not None:
            lane.settled, lane.settle_by = self.end(ctx, lane.fault), time.monotonic() + SETTLE_S
            lane.fault = None
            return
        kind = lane.rng.choice(lane.kinds)
        length, lane.pause = self.duration(kind, ctx.params, lane.rng), lane.rng.uniform(*PAUSE_S)
        if now + length >= deadline:
            lane.done = True
            return
        lane.fault = self.start(ctx, kind)
        lane.next_at = time.monotonic() + (length if lane.fault is not None else lane.pause)

    def heal(self, ctx: RunContext) -> None:
        """The final heal: every lane ended its faults before the load did (see :meth:`step`)."""
        assert all(lane.fault is None for lane in self.lanes)


class Lane:
    """One sequence of faults: its kinds, its own seeded draws, and where it stands."""

    def __init__(self, name: str, kinds: tuple[str, ...], seed: int) -> None:
        self.name, self.kinds = name, kinds
        self.rng = random.Random(f"{seed}-{name}")  # a str seed is stable across processes
        self.fault: Fault | None = None
        self.next_at = 0.0
        self.pause = 0.0
        self.settled = None  # after a fault ended: a predicate until the run has settled
        self.settle_by = 0.0
        self.done = False
