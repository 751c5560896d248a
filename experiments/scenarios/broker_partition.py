"""``broker-partition``: cut the broker off everyone for ``fault_s``, then heal.

For a broker every client link (each worker and the producer) is blackholed: the broker
believes all its consumers are gone and requeues their unacknowledged jobs, while the
workers finish them; after the heal a cascade of acks and redeliveries follows. For
logqueue the *leader* is cut off from its followers and from every client: the majority
elects a new leader, the old one steps down (CheckQuorum), and completions of the old
leases are fenced.
"""
from __future__ import annotations

from experiments.scenarios.base import Params, RunContext, Scenario, with_defaults


class BrokerPartition(Scenario):
    name = "broker-partition"
    summary = "cut the broker (logqueue: the leader) off everyone, then heal"

    def adjust(self, params: Params, explicit: set[str]) -> Params:
        return with_defaults(params, explicit, fault_s=max(params.fault_s, 3 * params.heartbeat_s + params.timeout_s + 1))

    def inject(self, ctx: RunContext) -> None:
        self.busy_worker(ctx)
        topology = ctx.topology
        self.leader = None
        if topology.nodes and topology.node_faults is None:
            self.leader = topology.wait_leader(10.0)
            self.target = topology.node_name(self.leader)
            ctx.fault_start("partition", self.target)
            self.links = ctx.isolate(self.leader)
        else:  # no node of its own to cut off: "the broker" is every client's every link
            self.target, self.links = topology.everything, ctx.link_names()
            ctx.fault_start("partition", self.target)
            ctx.cut(self.links)

    def heal(self, ctx: RunContext) -> None:
        ctx.sleep(ctx.params.fault_s)
        if self.leader is not None:
            ctx.rejoin(self.leader, self.links)
        else:
            ctx.heal(self.links)
        ctx.fault_end("partition", self.target)
