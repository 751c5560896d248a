"""``follower-lag``: cut a follower off its peers and clients, keep writing, heal.

Shows log repair and catch-up: after the heal the leader's fast back-off of ``nextIndex``
(or an InstallSnapshot) brings the follower level; a note gives how many entries it was
behind and how long catching up took.
"""
from __future__ import annotations

import time

from experiments.scenarios.base import RunContext, Scenario
from experiments.scenarios.leader_crash import SINGLE_NODE


class FollowerLag(Scenario):
    name = "follower-lag"
    summary = "cut a follower off, write, heal"

    def applies(self, backend: str) -> str | None:
        return None if backend == "logqueue" else SINGLE_NODE.format(backend=backend).replace(
            "no leader to fail over", "no follower to fall behind")

    def inject(self, ctx: RunContext) -> None:
        cluster = ctx.topology
        leader = cluster.wait_leader(10.0)
        self.follower = next(i for i in cluster.ids if i != leader)
        self.links = cluster.cut_node(ctx, self.follower)
        ctx.fault_start("partition", f"node-{self.follower}")
        ctx.cut(self.links)

    def heal(self, ctx: RunContext) -> None:
        cluster = ctx.topology
        ctx.sleep(ctx.params.fault_s)
        views = {s["id"]: s for s in cluster.status()}
        behind_from = views.get(self.follower, {}).get("last_index", 0)
        ctx.heal(self.links)
        ctx.fault_end("partition", f"node-{self.follower}")
        t0 = time.monotonic()
        target = max((s.get("commit_index", 0) for s in views.values()), default=0)

        def caught_up() -> bool:
            view = {s["id"]: s for s in cluster.status()}.get(self.follower, {})
            return view.get("applied_index", 0) >= target

        if ctx.wait_until(caught_up, ctx.params.drain_s / 2):
            ctx.note(f"node-{self.follower} caught up {max(0, target - behind_from)} entries "
                     f"in {(time.monotonic() - t0) * 1000:.0f} ms after the heal")
        else:
            ctx.note(f"node-{self.follower} had not caught up with index {target} {ctx.params.drain_s / 2:g} s after the heal")
