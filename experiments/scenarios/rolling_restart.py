"""``rolling-restart``: restart every node of a replicated system, one at a time, under load.

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
    node_faults = True

    def applies(self, backend) -> str | None:
        if backend.replicas > 1:
            return None
        return SINGLE_NODE.format(backend=backend.name).replace(
            "there is no leader to fail over (see broker-restart)", "a rolling restart is a full restart (see broker-restart)")

    def adjust(self, params: Params, explicit: set[str]) -> Params:
        # The load must outlast three restarts (each: down, up, caught up), at the same rate.
        load_s = max(params.load_s, params.fault_s + 9.0)
        return with_defaults(params, explicit, load_s=load_s, jobs=round(params.jobs * load_s / params.load_s))

    def inject(self, ctx: RunContext) -> None:
        topology = ctx.topology
        leader = topology.wait_leader(10.0)
        order = [n for n in topology.nodes if n != leader] + [leader]
        pause = ctx.params.fault_s / len(order)
        for node in order:
            self.busy_worker(ctx)
            ctx.fault_start("restart", topology.node_name(node))
            topology.kill(node)
            ctx.sleep(min(pause, 1.0))
            topology.spawn(node)
            topology.wait_leader(20.0)
            _, caught_up = topology.catching_up(node)
            ctx.wait_until(caught_up, 20.0)
            ctx.fault_end("restart", topology.node_name(node))
            ctx.sleep(pause)

    def heal(self, ctx: RunContext) -> None:
        """Every node was healed as soon as it was back (see :meth:`inject`)."""
