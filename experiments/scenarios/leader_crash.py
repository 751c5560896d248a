"""``leader-crash``: SIGKILL the node that leads the queue under load, restart it after ``fault_s``.

Shows failover time (a new leader among the survivors) and that no acknowledged job is
lost: for logqueue, claims and completions of the dead leader's term are retried by the
clients on the new leader, and leases fence whatever the old term handed out.
"""
from __future__ import annotations

import time

from experiments.scenarios.base import RunContext, Scenario

SINGLE_NODE = "{backend} runs as a single broker node here: there is no leader to fail over (see broker-restart)"


class LeaderCrash(Scenario):
    name = "leader-crash"
    summary = "SIGKILL the leader of the queue under load"
    node_faults = True

    def applies(self, backend) -> str | None:
        return None if backend.replicas > 1 else SINGLE_NODE.format(backend=backend.name)

    def inject(self, ctx: RunContext) -> None:
        topology = ctx.topology
        self.busy_worker(ctx)
        self.leader = topology.wait_leader(10.0)
        name = topology.node_name(self.leader)
        ctx.fault_start("sigkill", name)
        t0 = time.monotonic()
        topology.kill(self.leader)
        successor = topology.wait_leader(ctx.params.fault_s + 20.0, exclude=self.leader)
        ctx.note(f"leader {name} killed; {topology.node_name(successor)} leads after "
                 f"{(time.monotonic() - t0) * 1000:.0f} ms")

    def heal(self, ctx: RunContext) -> None:
        ctx.sleep(ctx.params.fault_s)
        ctx.topology.spawn(self.leader)
        ctx.fault_end("sigkill", ctx.topology.node_name(self.leader))
