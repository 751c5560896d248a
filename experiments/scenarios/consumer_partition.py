"""``consumer-partition``: cut one worker off the network while it works, then heal.

The worker keeps running its job; every byte between it and the servers is held by the
proxy (a blackhole partition) for ``fault_s``, longer than the heartbeat timeout. Queue
brokers give its job to another worker; after the heal the first worker's late ack
arrives: the seed's "the message got processed twice".
"""
from __future__ import annotations

from experiments.scenarios.base import Params, RunContext, Scenario, with_defaults


class ConsumerPartition(Scenario):
    name = "consumer-partition"
    summary = "cut one worker off longer than the heartbeat timeout, then heal"

    def adjust(self, params: Params, explicit: set[str]) -> Params:
        # The cut must outlast every detector: 3 heartbeats and the ack timeout, with margin.
        return with_defaults(params, explicit, fault_s=max(params.fault_s, 3 * params.heartbeat_s + params.timeout_s + 1))

    def inject(self, ctx: RunContext) -> None:
        self.target = self.busy_worker(ctx)
        ctx.fault_start("partition", self.target)
        ctx.cut(ctx.link_names(clients=[self.target]))

    def heal(self, ctx: RunContext) -> None:
        ctx.sleep(ctx.params.fault_s)
        ctx.heal(ctx.link_names(clients=[self.target]))
        ctx.fault_end("partition", self.target)
