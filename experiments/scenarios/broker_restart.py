"""``broker-restart``: SIGKILL the broker (logqueue: every node) under load and start it again.

Shows what survives a crash of the whole server side: acknowledged (confirmed) jobs must
come back; in-flight deliveries are redelivered. Brokers run privately for this (see
``private_broker``); logqueue restarts all three nodes on their data directories.
"""
from __future__ import annotations

from experiments.scenarios.base import RunContext, Scenario, Topology
from experiments.scenarios.private_broker import NO_PRIVATE_REASON, PRIVATE, PrivateBrokerTopology


class BrokerRestart(Scenario):
    name = "broker-restart"
    summary = "SIGKILL and restart the broker / all nodes"

    def applies(self, backend: str) -> str | None:
        if backend == "logqueue" or backend in PRIVATE:
            return None
        return NO_PRIVATE_REASON.format(backend=backend)

    def topology(self, backend: str) -> Topology | None:
        return PrivateBrokerTopology(PRIVATE[backend]) if backend in PRIVATE else None

    def inject(self, ctx: RunContext) -> None:
        self.busy_worker(ctx)
        ctx.fault_start("restart", "broker")
        topology = ctx.topology
        if isinstance(topology, PrivateBrokerTopology):
            topology.kill()
        else:
            for node in topology.ids:
                topology.kill(node)

    def heal(self, ctx: RunContext) -> None:
        # Down for a short while (a process restart, not an outage), then up on the same data.
        ctx.sleep(min(ctx.params.fault_s, 2.0))
        topology = ctx.topology
        if isinstance(topology, PrivateBrokerTopology):
            topology.spawn()
        else:
            for node in topology.ids:
                topology.spawn(node)
            topology.wait_leader(20.0)
        ctx.fault_end("restart", "broker")
