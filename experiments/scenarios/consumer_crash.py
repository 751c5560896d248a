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
        self.wait_busy(ctx, ctx.target_worker)
        ctx.fault_start("sigkill", ctx.target_worker)
        ctx.kill_worker(ctx.target_worker)

    def heal(self, ctx: RunContext) -> None:
        ctx.sleep(ctx.params.fault_s)
        ctx.start_worker(f"{ctx.target_worker}-restarted")
        ctx.fault_end("sigkill", ctx.target_worker)
