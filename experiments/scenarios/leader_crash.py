"""``leader-crash``: SIGKILL the logqueue leader under load, restart it after ``fault_s``.

Shows failover time (a new leader among the survivors) and that no acknowledged job is
lost: claims and completions of the dead leader's term are retried by the clients on the
new leader, and leases fence whatever the old term handed out.
"""
from __future__ import annotations

import time

from experiments.scenarios.base import RunContext, Scenario

SINGLE_NODE = "{backend} runs as a single broker node here: there is no leader to fail over (see broker-restart)"


class LeaderCrash(Scenario):
    name = "leader-crash"
    summary = "SIGKILL the logqueue leader under load"

    def applies(self, backend: str) -> str | None:
        return None if backend == "logqueue" else SINGLE_NODE.format(backend=backend)

    def inject(self, ctx: RunContext) -> None:
        cluster = ctx.topology
        self.busy_worker(ctx)
        self.leader = cluster.wait_leader(10.0)
        ctx.fault_start("sigkill", f"node-{self.leader}")
        t0 = time.monotonic()
        cluster.kill(self.leader)
        successor = cluster.wait_leader(ctx.params.fault_s + 20.0, exclude=self.leader)
        ctx.note(f"leader node-{self.leader} killed; node-{successor} leads after {(time.monotonic() - t0) * 1000:.0f} ms")

    def heal(self, ctx: RunContext) -> None:
        ctx.sleep(ctx.params.fault_s)
        ctx.topology.spawn(self.leader)
        ctx.fault_end("sigkill", f"node-{self.leader}")
