"""``consumer-crash``: SIGKILL a worker mid-job; a replacement starts after ``fault_s``.

Shows detection by heartbeat / lease and the redelivery latency: the killed worker's job
is interrupted, and ``recovery_ms`` is the time until it took effect elsewhere.
"""
from __future__ import annotations

from experiments.scenarios.base import RunContext, Scenario


class ConsumerCrash(Scenario):
    name = "consumer-crash"
    summary = "SIGKILL a worker mid-job"

    def inject(self, ctx: RunContext) -> None:
        self.target = self.busy_worker(ctx)
        ctx.fault_start("sigkill", self.target)
        ctx.kill_worker(self.target)

    def heal(self, ctx: RunContext) -> None:
        ctx.sleep(ctx.params.fault_s)
        ctx.start_worker(f"{self.target}-restarted")
        ctx.fault_end("sigkill", self.target)
