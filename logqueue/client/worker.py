"""A worker: runs a plug-in function ``fn(payload: bytes) -> bytes`` on a queue's jobs.

The worker keeps up to ``concurrency`` jobs running, one per thread of its own, and up
to ``prefetch`` more claimed and waiting, and completes each job with the
function's result, which the cluster stores in the log -- the job's exactly-once effect.
The leases of all jobs it holds are extended in the background every ``heartbeat_ms``.
A function that raises fails the job: it is claimable again at once, or dead-lettered
on its ``max_attempts``-th claim. A prefetched job has used a claim (an attempt) even
before it runs; on stop, the worker runs the jobs it has claimed before it returns.

A worker whose lease was lost (paused, cut off, too slow) still sends its completion:
the cluster refuses it with ``fenced``, the worker logs that and moves on, and the
result it computed is dropped -- it never completes a job it no longer holds.

A thread takes its next job as soon as the function returns, and the next claim goes
out while the completion is still on its way; both usually share one log entry.
Prefetching lets a claim's round trip overlap the running jobs (see ``Worker``).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import asdict, dataclass
from queue import SimpleQueue

from logqueue.client.client import Client, ClientError, Unavailable
from logqueue.client.consumer import AsyncConsumer, Job, LeaseLost
from logqueue.workers import WorkerFn

__all__ = ["Worker", "WorkerStats", "run_function"]

log = logging.getLogger("logqueue.worker")

WAIT_S = 10.0  # one claim_wait round (a stop request interrupts it)
RETRY_PAUSE_S = 0.5  # after the cluster did not answer
SETTLE_TRIES = 3  # a completion is sent this often (each try up to the client's timeout) before giving up


@dataclass
class WorkerStats:
    """What a worker did: jobs ``completed`` (result accepted), ``failed`` (the function
    raised), ``dead_lettered`` (by this worker's failure), ``fenced`` (completion refused:
    the lease was lost), ``skipped`` (a prefetched job whose lease was lost before it
    ran), ``unsettled`` (the cluster never answered the completion; the job goes back to
    the group when its lease expires)."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    fenced: int = 0
    skipped: int = 0
    unsettled: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def run_function(fn: WorkerFn, payload: bytes) -> tuple[bytes | None, str | None]:
    """``(result, None)``, or ``(None, "Type: message")`` when ``fn`` raised or did not
    return bytes."""
    try:
        result = fn(payload)
        if not isinstance(result, (bytes, bytearray)):
            raise TypeError(f"the worker function returned {type(result).__name__}, not bytes")
        return bytes(result), None
    except Exception as exc:  # the plug-in's failure is the job's, never the worker's
        return None, f"{type(exc).__name__}: {exc}"


class Worker:
    """Runs ``fn`` on the jobs of ``queue`` for consumer group ``group``.

    Args:
        client: a ``Client`` of the cluster; the worker runs on its event loop.
        queue, group: where the jobs come from.
        fn: the plug-in function.
        worker: this worker's name in the group (default: a fresh unique one).
        concurrency: jobs run at once (threads).
        prefetch: jobs claimed ahead, waiting for a free thread (0: claim only for free
            threads). More prefetch, fewer round trips per job.
        lease_ms: lease of each claim and heartbeat.
        heartbeat_ms: how often leases are extended (default: a third of the lease).
        max_attempts: claims before a failing or abandoned job is dead-lettered (0: never).
    """

    def __init__(self, client: Client, queue: str, group: str, fn: WorkerFn, *, worker: str | None = None,
                 concurrency: int = 1, prefetch: int = 0, lease_ms: int = 30_000, heartbeat_ms: int | None = None,
                 max_attempts: int = 0) -> None:
        if concurrency < 1 or prefetch < 0:
            raise ValueError(f"concurrency must be >= 1 and prefetch >= 0, got {concurrency} and {prefetch}")
        self.client = client
        self.fn = fn
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.consumer = AsyncConsumer(client.aio, queue, group, worker, lease_ms=lease_ms,
                                      heartbeat_ms=heartbeat_ms or max(1, lease_ms // 3),
                                      max_attempts=max_attempts)
        self.stats = WorkerStats()
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._freed: asyncio.Event | None = None
        # Claimed jobs go to the threads through this queue; each thread takes the next job
        # itself, so jobs run back to back without waiting for the event loop.
        self._todo: SimpleQueue[Job | None] = SimpleQueue()
        self._unfinished = 0  # claimed jobs that have not finished running (waiting or running)
        self._settling: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return self.consumer.worker

    def stop(self) -> None:
        """Ask the worker to stop claiming, finish and settle the jobs in hand, and
        return from ``run``. Safe from any thread and from a signal handler."""
        self._stop_requested.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def run(self) -> WorkerStats:
        """Work until ``stop()``; returns the stats."""
        self.client.run(self._run())
        return self.stats

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._freed = asyncio.Event()
        if self._stop_requested.is_set():
            self._stop.set()
        await self.consumer.start()
        threads = [threading.Thread(target=self._work, name=f"logqueue-{self.name}-{i}", daemon=True)
                   for i in range(self.concurrency)]
        for t in threads:
            t.start()
        log.info("worker %s: claiming from queue %s, group %s (concurrency %d, prefetch %d)", self.name,
                 self.consumer.queue, self.consumer.group, self.concurrency, self.prefetch)
        try:
            while not self._stop.is_set():
                want = self.concurrency + self.prefetch - self._unfinished
                # With prefetch, refill only once half of it is used: few, large claims.
                if want < max(1, self.prefetch // 2):
                    self._freed.clear()
                    await _first(self._freed, self._stop)
                    continue
                try:
                    jobs = await self.consumer.claim_wait(want, WAIT_S, self._stop)
                except ClientError as exc:
                    log.warning("worker %s: claim failed: %s", self.name, exc)
                    await _first(self._stop, timeout=RETRY_PAUSE_S)
                    continue
                self.stats.claimed += len(jobs)
                self._unfinished += len(jobs)
                for job in jobs:
                    self._todo.put(job)
            if self._unfinished or self._settling:
                log.info("worker %s: stopping after the %d job(s) in hand", self.name,
                         self._unfinished + len(self._settling))
            while self._unfinished:
                self._freed.clear()
                await self._freed.wait()
            while self._settling:
                await asyncio.gather(*self._settling)
        finally:
            for _ in threads:
                self._todo.put(None)
            await self.consumer.close()

    def _work(self) -> None:
        """A thread: run jobs until the None that ends it."""
        while (job := self._todo.get()) is not None:
            # A heartbeat found it taken over while it waited: running it would duplicate.
            outcome = None if job.lost else run_function(self.fn, job.payload)
            self._loop.call_soon_threadsafe(self._finished, job, outcome)

    def _finished(self, job: Job, outcome: tuple[bytes | None, str | None] | None) -> None:
        self._unfinished -= 1
        self._freed.set()
        task = self._loop.create_task(self._settle(job, outcome))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, job: Job, outcome: tuple[bytes | None, str | None] | None) -> None:
        if outcome is None:
            log.warning("worker %s: offset %d: lease lost before it ran; skipped", self.name, job.offset)
            self.stats.skipped += 1
            self.consumer.forget(job)
            return
        result, error = outcome
        for attempt in range(1, SETTLE_TRIES + 1):
            try:
                if error is None:
                    await self.consumer.complete(job, result)
                    self.stats.completed += 1
                else:
                    dead = await self.consumer.fail(job, error)
                    self.stats.failed += 1
                    self.stats.dead_lettered += dead
                    log.warning("worker %s: offset %d attempt %d failed (%s)%s", self.name, job.offset,
                                job.attempt, error, "; dead-lettered" if dead else "")
                return
            except LeaseLost as exc:
                self.stats.fenced += 1
                log.warning("worker %s: offset %d: %s refused, %s: %s; moving on", self.name, job.offset,
                            "completion" if error is None else "failure", exc.code, exc)
                return
            except Unavailable as exc:
                log.warning("worker %s: offset %d: no answer to its %s (try %d of %d): %s", self.name, job.offset,
                            "completion" if error is None else "failure", attempt, SETTLE_TRIES, exc)
            except ClientError as exc:
                log.error("worker %s: offset %d: settling refused: %s %s", self.name, job.offset, exc.code, exc)
                break
        self.stats.unsettled += 1
        self.consumer.forget(job)


async def _first(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Wait until one of ``events`` is set, or ``timeout``."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
