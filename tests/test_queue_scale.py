"""Bounded memory and batch cost of the work-queue state machine at 100k jobs."""
from __future__ import annotations

import gc
import time

from logqueue.queue import QueueMachine
from logqueue.queue import commands as c

Q, G = "jobs", "workers"
JOBS = 100_000
BATCH = 1_000
RETENTION = 5_000


def test_memory_stays_bounded_and_batches_stay_cheap_over_100k_jobs():
    m = QueueMachine(retention_jobs=RETENTION)
    index = 0
    peak = 0
    slowest = 0.0

    def apply(commands, now=0):
        nonlocal index
        index += 1
        return m.apply(index, now, commands)

    # the whole backlog first: claims must not rescan the settled prefix
    for first in range(0, JOBS, BATCH):
        apply([c.enqueue(Q, b"%d" % i, "producer", i) for i in range(first, first + BATCH)])
    for _ in range(JOBS // BATCH):
        jobs = apply([c.claim(Q, G, f"w{i}", 10, 60_000) for i in range(BATCH // 10)])
        completes = [c.complete(Q, G, off, tok, payload) for a in jobs for off, tok, payload, _ in a["jobs"]]
        gc.disable()  # a full collection walks the whole test process's heap: not this batch's cost
        try:
            started = time.process_time()
            answers = apply(completes)
            slowest = max(slowest, time.process_time() - started)
        finally:
            gc.enable()
        assert answers == [{"ok": True}] * BATCH
        footprint = m.footprint()
        peak = max(peak, footprint["records"] + footprint["slots"])

    s = m.stats(Q, G)
    assert (s["completed"], s["in_flight"], s["backlog"], s["low_water_mark"]) == (JOBS, 0, 0, JOBS)
    # the group's per-offset records are bounded by retention (plus one trimming step),
    # not by 100k; once all is settled, so are retained jobs and dedup entries
    assert peak <= RETENTION + m._chunk + BATCH
    assert sum(m.footprint().values()) <= 3 * (RETENTION + m._chunk), m.footprint()
    assert m.footprint()["slots"] == 0
    # a batch of 1,000 completions costs milliseconds of CPU (process time: other processes on
    # a busy machine do not count); 0.25 s leaves room for a slow one
    assert slowest < 0.25, f"applying {BATCH} completions took {slowest:.3f}s"
    results = m.results(Q, G)
    assert results[-1] == {"offset": JOBS - 1, "attempts": 1, "token": index - 1, "result": b"%d" % (JOBS - 1)}
    assert len(results) <= RETENTION + m._chunk
    assert len(m.snapshot()) < 100 * (RETENTION + m._chunk)
