"""``broker-restart``: SIGKILL the broker (a cluster: every node) under load and start it again.

Shows what survives a crash of the whole server side: acknowledged (confirmed) jobs must
come back; in-flight deliveries are redelivered. The backend's servers run privately for
this (``Backend.topology(private=True)``): a broker of the run's own, or logqueue's
three nodes restarted on their data directories.
"""
from __future__ import annotations

from experiments.scenarios.base import RunContext, Scenario


class BrokerRestart(Scenario):
    name = "broker-restart"
    summary = "SIGKILL and restart the broker / all nodes"
    node_faults = True
    private_servers = True

    def inject(self, ctx: RunContext) -> None:
        self.busy_worker(ctx)
        ctx.fault_start("restart", "broker")
        for node in ctx.topology.nodes:
            ctx.topology.kill(node)

    def heal(self, ctx: RunContext) -> None:
        # Down for a short while (a process restart, not an outage), then up on the same data.
        ctx.sleep(min(ctx.params.fault_s, 2.0))
        topology = ctx.topology
        for node in topology.nodes:
            topology.spawn(node)
        topology.wait_leader(20.0)
        ctx.fault_end("restart", "broker")
