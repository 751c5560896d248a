"""``slow-consumer``: one job's first run takes 3x the ack timeout.

The consumer stays alive (its connection heartbeats flow) but the job does not finish in
time, so the timeout redelivers it while the first run goes on; the first run's ack comes
late. By default ``heartbeat_s`` is set above the slow run so that no per-job lease
extension reaches the backend during it: the seed's model, where liveness is a heartbeat
and slowness is caught only by a timeout. (With lease extension, a live slow job keeps
its lease on redis-list, redis-streams, nats-jetstream and logqueue: no redelivery.)
"""
from __future__ import annotations

from experiments.scenarios import jobs
from experiments.scenarios.base import Params, RunContext, Scenario, with_defaults


class SlowConsumer(Scenario):
    name = "slow-consumer"
    summary = "one job runs 3x the timeout"

    def adjust(self, params: Params, explicit: set[str]) -> Params:
        slow = 3 * params.timeout_s
        return with_defaults(params, explicit, fault_s=slow, heartbeat_s=slow + params.timeout_s)

    def slow_seq(self, ctx: RunContext) -> int:
        p = ctx.params
        return min(p.jobs - 1, int(p.jobs * p.fault_start_s / p.load_s))

    def payload(self, ctx: RunContext, seq: int) -> bytes:
        if seq == self.slow_seq(ctx):
            return jobs.envelope(ctx.user_payload(seq), slow_s=ctx.params.fault_s,
                                 once=str(ctx.run_dir / "slow-job.marker"))
        return ctx.payload(seq)

    def _runner_of_slow_job(self, ctx: RunContext) -> str | None:
        job = ctx.history.job_of_seq.get(self.slow_seq(ctx))
        for worker, running in ctx.history.running.items():
            if job in running:
                return worker
        return None

    def inject(self, ctx: RunContext) -> None:
        p = ctx.params
        ctx.note(f"slow job (seq {self.slow_seq(ctx)}): first run {p.fault_s:g} s, timeout_s {p.timeout_s:g}, "
                 f"heartbeat_s {p.heartbeat_s:g} (no lease extension during the slow run)")
        ctx.wait_until(lambda: self._runner_of_slow_job(ctx) is not None, p.load_s + p.drain_s / 2)
        self.target = self._runner_of_slow_job(ctx) or "unknown"
        ctx.fault_start("slow-job", self.target, job=ctx.history.job_of_seq.get(self.slow_seq(ctx)))

    def heal(self, ctx: RunContext) -> None:
        # The fault ends when the slow first run returns (its worker is no longer busy with it).
        ctx.wait_until(lambda: self._runner_of_slow_job(ctx) != self.target, ctx.params.fault_s + ctx.params.drain_s / 2)
        ctx.fault_end("slow-job", self.target)
