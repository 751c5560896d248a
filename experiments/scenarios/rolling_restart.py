"""``rolling-restart``: restart every logqueue node, one at a time, under load.

Each node is killed and started again on its data; the next one goes only when the
restarted node has caught up. Followers go first and the leader last, as an operator
would, so the cluster keeps a majority (and, but for one election, a leader) throughout.
"""
from __future__ import annotations

from experiments.scenarios.base import Params, RunContext, Scenario, with_defaults
from experiments.scenarios.leader_crash import SINGLE_NODE


class RollingRestart(Scenario):
    name = "rolling-restart"
    summary = "restart every node one at a time under load"

    def applies(self, backend: str) -> str | None:
        if backend == "logqueue":
            return None
        return SINGLE_NODE.format(backend=backend).replace(
            "there is no leader to fail over (see broker-restart)", "a rolling restart is a full restart (see broker-restart)")

    def adjust(self, params: Params, explicit: set[str]) -> Params:
        # The load must outlast three restarts (each: down, up, caught up), at the same rate.
        load_s = max(params.load_s, params.fault_s + 9.0)
        return with_defaults(params, explicit, load_s=load_s, jobs=round(params.jobs * load_s / params.load_s))

    def inject(self, ctx: RunContext) -> None:
        cluster = ctx.topology
        leader = cluster.wait_leader(10.0)
        order = [i for i in cluster.ids if i != leader] + [leader]
        pause = ctx.params.fault_s / len(order)
        for node in order:
            self.busy_worker(ctx)
            ctx.fault_start("restart", f"node-{node}")
            cluster.kill(node)
            ctx.sleep(min(pause, 1.0))
            cluster.spawn(node)
            cluster.wait_leader(20.0)
            commit = max((s.get("commit_index", 0) for s in cluster.status()), default=0)
            ctx.wait_until(lambda: {s["id"]: s for s in cluster.status()}.get(node, {}).get("applied_index", 0) >= commit,
                           20.0)
            ctx.fault_end("restart", f"node-{node}")
            ctx.sleep(pause)

    def heal(self, ctx: RunContext) -> None:
        """Every node was healed as soon as it was back (see :meth:`inject`)."""
