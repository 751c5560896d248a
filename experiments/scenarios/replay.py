"""``replay``: after a clean run, a new reader asks for the whole history from the start.

A log keeps its history (Kreps): a backend that declares ``keeps_history`` (logqueue's
log-mode ``read`` from offset 0) returns every job again. A queue forgets what it delivered: a fresh consumer on the drained queue gets
nothing. Each job seen again is recorded as a ``replay`` event; the checker counts them.
"""
from __future__ import annotations

import contextlib
import time

from experiments.scenarios.base import RunContext, Scenario

LISTEN_S = 2.0


class Replay(Scenario):
    name = "replay"
    summary = "a new reader re-reads the history from offset 0"

    def run(self, ctx: RunContext) -> None:
        for worker_id in ctx.worker_ids():
            ctx.start_worker(worker_id)
        ctx.wait_workers_connected()
        ctx.start_load(lambda seq: self.payload(ctx, seq))
        ctx.drain()
        produced = self._produced(ctx)
        try:
            payloads = self._read_back(ctx)
        except Exception as exc:  # e.g. a backend whose consumers only live in worker processes
            ctx.note(f"the new reader could not read: {type(exc).__name__}: {' '.join(str(exc).split())}")
            payloads = []
        seen = set()
        for payload in payloads:  # each job read back is one produced job with these bytes, not yet seen
            jobs = produced.get(payload)
            if jobs:
                seen.add(jobs.pop(0))
        for job in sorted(seen):
            ctx.log.record("replay", job=job, worker="replay")
        total = sum(len(jobs) for jobs in produced.values()) + len(seen)
        ctx.note(f"a new reader got {len(seen)} of {total} jobs back from the start of the history")

    def _produced(self, ctx: RunContext) -> dict[bytes, list[str]]:
        """``{job bytes: [job ids]}`` of the produced jobs (the user's payloads may repeat)."""
        from experiments.checker import load_events

        produced: dict[bytes, list[str]] = {}
        for e in load_events(ctx.events_path):
            if e["ev"] == "produce" and "seq" in e:
                jobs = produced.setdefault(self.payload(ctx, e["seq"]), [])
                if e["job"] not in jobs:  # (a job confirmed twice is one job)
                    jobs.append(e["job"])
        return produced

    def _read_back(self, ctx: RunContext) -> list[bytes]:
        backend = ctx.backend_cls(ctx.config("replay"))
        backend.connect()
        try:
            if ctx.backend_cls.keeps_history:  # a log: read it from the start
                return backend.replay(ctx.params.jobs * 2)
            # A queue: a fresh consumer, listening for a while, gets whatever is left.
            got: list[bytes] = []
            consumer = backend.consumer("replay")
            deadline = time.monotonic() + LISTEN_S
            while time.monotonic() < deadline:
                delivery = consumer.receive(0.2)
                if delivery is not None:
                    got.append(delivery.payload)
                    with contextlib.suppress(Exception):
                        delivery.nack(requeue=True)
            consumer.close()
            return got
        finally:
            backend.close()
