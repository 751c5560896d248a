"""``follower-lag``: cut a follower off its peers and clients, keep writing, heal.

Shows log repair and catch-up: after the heal the leader brings the follower level (for
logqueue, the fast back-off of ``nextIndex`` or an InstallSnapshot); a note gives how
many entries it was behind and how long catching up took.
"""
from __future__ import annotations

import time

from experiments.scenarios.base import RunContext, Scenario
from experiments.scenarios.leader_crash import SINGLE_NODE


class FollowerLag(Scenario):
    name = "follower-lag"
    summary = "cut a follower off, write, heal"
    node_faults = True

    def applies(self, backend) -> str | None:
        return None if backend.replicas > 1 else SINGLE_NODE.format(backend=backend.name).replace(
            "no leader to fail over", "no follower to fall behind")

    def inject(self, ctx: RunContext) -> None:
        topology = ctx.topology
        leader = topology.wait_leader(10.0)
        self.follower = next(n for n in topology.nodes if n != leader)
        ctx.fault_start("partition", topology.node_name(self.follower))
        self.links = ctx.isolate(self.follower)

    def heal(self, ctx: RunContext) -> None:
        topology = ctx.topology
        name = topology.node_name(self.follower)
        ctx.sleep(ctx.params.fault_s)
        behind, caught_up = topology.catching_up(self.follower)
        ctx.rejoin(self.follower, self.links)
        ctx.fault_end("partition", name)
        t0 = time.monotonic()
        if ctx.wait_until(caught_up, ctx.params.drain_s / 2):
            entries = "" if behind is None else f" {behind} {topology.lag_unit}"
            ctx.note(f"{name} caught up{entries} in {(time.monotonic() - t0) * 1000:.0f} ms after the heal")
        else:
            ctx.note(f"{name} had not caught up {ctx.params.drain_s / 2:g} s after the heal")
