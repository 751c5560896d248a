"""A consumer of one queue in one consumer group: claims, lease heartbeats, completions.

A claim leases jobs for ``lease_ms``; each comes with a fencing token (the Raft index
of the claim). The consumer completes a job with its token: the cluster accepts the
first completion of an offset by the current holder and refuses a stale one with
``fenced`` (raised here as ``LeaseLost``), so a consumer can never complete a job that
another consumer has claimed since.

Batching: every command this consumer sends goes through one queue; while one submit
is in flight, the next commands (completions from several threads, heartbeats, the next
claim) gather and leave together in the following submit -- one log entry for many.

Idempotence: a claim carries a request id; if the cluster does not answer in time, the
next claim resends the same request and the cluster replays its first answer, so a
lost answer leaks no leases. A repeated completion by the same holder is accepted
(``already_done``).

Waiting for work costs (almost) no log entries: between claims an idle consumer polls
the group's counters with a cheap read of one node's state, and claims when work shows
up. While jobs are leased it also claims every ``IDLE_CLAIM_S``, because lease expiry
is decided by the time stamps of applied entries: someone must write for an expired
lease to be noticed.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from dataclasses import dataclass

from logqueue.client.client import AsyncClient, Client, ClientError
from logqueue.queue import commands

__all__ = ["AsyncConsumer", "Consumer", "Job", "LeaseLost"]

log = logging.getLogger("logqueue.consumer")

IDLE_POLL_S = 0.02  # backlog reads while idle
IDLE_CLAIM_S = 0.25  # an idle consumer still claims this often while jobs are leased (see above)
MAX_BATCH = 1024  # commands per submit
# Answers meaning the claim is no longer the caller's: completing or failing is refused.
LOST_CODES = frozenset({commands.FENCED, commands.DEAD_LETTERED, commands.COMPACTED})


class LeaseLost(ClientError):
    """The job's claim is no longer this consumer's (``code``: fenced, dead_lettered or
    compacted); its completion or failure was refused."""


@dataclass
class Job:
    """A claimed job.

    Attributes:
        offset: the job's offset in its queue.
        token: the fencing token of this claim.
        payload: the job's bytes.
        attempt: 1 on the first claim of the offset in this group.
        lost: a heartbeat found that the lease is no longer this consumer's.
        leased_until: Unix time by which the lease runs out at the latest, unless extended:
            ``lease_ms`` after the claim or the last heartbeat was sent (the leader starts
            the lease later, so this errs early).
    """

    offset: int
    token: int
    payload: bytes
    attempt: int
    lost: bool = False
    leased_until: float | None = None


class AsyncConsumer:
    """Asyncio consumer; see the module docstring.

    Args:
        client: a connected ``AsyncClient``.
        queue: the queue's name.
        group: the consumer group (each group sees every job once).
        worker: this consumer's name in the group (default: a fresh unique one). Two
            live consumers must not share a name.
        lease_ms: how long a claim or a heartbeat holds a job.
        heartbeat_ms: with a value, ``start()`` runs a task that extends the leases of
            every held job this often; ``None`` leaves heartbeats to the caller.
        max_attempts: claims after which a job that fails or whose lease expires is
            dead-lettered (0: never).
    """

    def __init__(self, client: AsyncClient, queue: str, group: str, worker: str | None = None, *,
                 lease_ms: int = 30_000, heartbeat_ms: int | None = None, max_attempts: int = 0) -> None:
        if not queue or not group:
            raise ValueError("queue and group names must not be empty")
        if lease_ms < 1 or max_attempts < 0 or (heartbeat_ms is not None and not 0 < heartbeat_ms < lease_ms):
            raise ValueError("lease_ms must be >= 1, max_attempts >= 0 and heartbeat_ms between 0 and lease_ms")
        self.client = client
        self.queue, self.group = queue, group
        self.worker = worker or f"w-{uuid.uuid4().hex[:12]}"
        self.lease_ms, self.heartbeat_ms, self.max_attempts = lease_ms, heartbeat_ms, max_attempts
        self.held: dict[int, Job] = {}  # offset -> job claimed and not yet settled by us
        self._settling: set[int] = set()  # held offsets whose completion or failure is in flight
        self._request_ids = itertools.count(1)
        self._unanswered_claim: dict | None = None  # a claim whose answer never came: resent first
        self._idle = False  # the last claim of claim_wait found nothing
        self._last_claim = 0.0  # loop time of claim_wait's last claim
        self._queued: list[tuple[list[dict], asyncio.Future]] = []  # commands, the future of their answers
        self._flusher: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start the heartbeat task (when ``heartbeat_ms`` is set)."""
        if self.heartbeat_ms is not None and self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep_leases())

    @property
    def heartbeating(self) -> bool:
        """True while the heartbeat task runs."""
        return self._keeper is not None

    async def close(self) -> None:
        """Stop heartbeating. Jobs still held go back to the group when their leases expire."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None

    # --- commands --------------------------------------------------------------------
    async def claim(self, max_jobs: int) -> list[Job]:
        """Lease up to ``max_jobs`` of the group's lowest claimable jobs (maybe none).

        Raises:
            Unavailable: no leader answered in the client's timeout; the next call
                resends this claim, so its jobs are not lost.
        """
        leased_until = time.time() + self.lease_ms / 1000
        return await self._claimed(self._send([self._claim_command(max_jobs)]), leased_until)

    def _claim_command(self, max_jobs: int) -> dict:
        """The next claim: the unanswered one again, else a new request id."""
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        cmd = self._unanswered_claim or commands.claim(
            self.queue, self.group, self.worker, max_jobs, self.lease_ms,
            request_id=next(self._request_ids), max_attempts=self.max_attempts or None)
        self._unanswered_claim = cmd
        return cmd

    async def _claimed(self, answers: asyncio.Future, leased_until: float) -> list[Job]:
        """The jobs of a sent claim (``leased_until``: taken before it was sent)."""
        (result,) = await answers
        self._unanswered_claim = None
        if commands.is_error(result):
            raise ClientError(result["error"], result["message"])
        jobs = [Job(offset, token, bytes(payload), attempt, leased_until=leased_until)
                for offset, token, payload, attempt in result["jobs"]]
        for job in jobs:
            self.held[job.offset] = job
        return jobs

    async def claim_wait(self, max_jobs: int, timeout_s: float, stop: asyncio.Event | None = None) -> list[Job]:
        """Claim; when nothing is claimable, wait for work up to ``timeout_s`` (or until
        ``stop`` is set) and claim again. Returns the jobs, or [] at the timeout.

        After a claim that found nothing, the next ones wait until the group's counters
        show work (see the module docstring), so an idle consumer writes nothing."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            if not self._idle or await self._worth_claiming(overdue=loop.time() >= self._last_claim + IDLE_CLAIM_S):
                self._last_claim = loop.time()
                jobs = await self.claim(max_jobs)
                self._idle = not jobs
                if jobs:
                    return jobs
            if loop.time() >= end or (stop is not None and stop.is_set()):
                return []
            if await _wait(stop, min(IDLE_POLL_S, end - loop.time())):
                return []

    async def heartbeat(self, jobs: list[Job]) -> list[Job]:
        """Extend the leases of ``jobs`` by ``lease_ms``; returns those found lost
        (their ``lost`` is set: another claim took them, or they were settled)."""
        by_token: dict[int, list[Job]] = {}
        for job in jobs:
            by_token.setdefault(job.token, []).append(job)
        leased_until = time.time() + self.lease_ms / 1000
        answers = await asyncio.gather(*(
            self._call(commands.heartbeat(self.queue, self.group, self.worker, [j.offset for j in group],
                                          token, self.lease_ms))
            for token, group in by_token.items()))
        lost = []
        for (token, group), answer in zip(by_token.items(), answers):
            if commands.is_error(answer):
                raise ClientError(answer["error"], answer["message"])
            gone = set(answer["lost"])
            for job in group:
                if job.offset in gone:
                    job.lost = True
                    lost.append(job)
                else:
                    job.leased_until = leased_until
        return lost

    async def complete(self, job: Job, result: bytes) -> None:
        """Record ``result`` as the job's outcome; exactly once per offset and group.

        Raises:
            LeaseLost: another claim took the job (``fenced``), or it was dead-lettered
                or compacted meanwhile; the result was not recorded.
            Unavailable: no answer in time; completing again is safe.
        """
        await self._settle(job, commands.complete(self.queue, self.group, job.offset, job.token, bytes(result)))

    async def complete_many(self, jobs: list[Job], results: list[bytes],
                            claim: int = 0) -> tuple[list[ClientError | None], list[Job]]:
        """Complete several jobs together (their commands leave in one submit) and, with
        ``claim`` > 0, claim up to that many next jobs in the same submit (after them).

        Returns (per job ``None`` or the ``ClientError`` -- ``LeaseLost``, ``Unavailable``
        -- its ``complete`` raised; the newly claimed jobs). A failed claim only gives no
        jobs: the next ``claim`` resends it.
        """
        offsets = [j.offset for j in jobs]
        cmds = [commands.complete(self.queue, self.group, j.offset, j.token, bytes(r)) for j, r in zip(jobs, results)]
        # Queued before anything is awaited: the completions leave first, the claim right after them.
        chunks = [self._send(cmds[i : i + MAX_BATCH]) for i in range(0, len(cmds), MAX_BATCH)]
        leased_until = time.time() + self.lease_ms / 1000
        claiming = self._send([self._claim_command(claim)]) if claim > 0 else None
        self._settling.update(offsets)
        try:
            answers = await asyncio.gather(*chunks, return_exceptions=True)
        finally:
            self._settling.difference_update(offsets)
        errors: list[ClientError | None] = []
        for k, chunk in enumerate(answers):
            part = jobs[k * MAX_BATCH : (k + 1) * MAX_BATCH]
            if isinstance(chunk, ClientError):
                errors += [chunk] * len(part)
            elif isinstance(chunk, BaseException):
                raise chunk
            else:
                errors += [self._error_of(job, answer) for job, answer in zip(part, chunk)]
        claimed: list[Job] = []
        if claiming is not None:
            with contextlib.suppress(ClientError):
                claimed = await self._claimed(claiming, leased_until)
        return errors, claimed

    async def fail(self, job: Job, reason: str = "", dead_letter: bool = False) -> bool:
        """Give the job back at once; returns True when it was dead-lettered instead
        (``dead_letter``, or this was its last attempt).

        Raises:
            LeaseLost, Unavailable: as for ``complete``.
        """
        cmd = commands.fail(self.queue, self.group, job.offset, job.token, reason, dead_letter)
        return bool((await self._settle(job, cmd)).get("dead_lettered"))

    def forget(self, job: Job) -> None:
        """Stop holding ``job`` without settling it (its lease is no longer extended, so
        it goes back to the group when the lease expires)."""
        self.held.pop(job.offset, None)

    async def _settle(self, job: Job, cmd: dict) -> dict:
        self._settling.add(job.offset)
        try:
            (answer,) = await self._send([cmd])
        finally:
            self._settling.discard(job.offset)
        error = self._error_of(job, answer)
        if error is not None:
            raise error
        return answer

    def _error_of(self, job: Job, answer: dict) -> ClientError | None:
        """Settle ``job`` by the answer to its complete or fail: None when it was accepted
        (the job is no longer held), else the error (``LeaseLost``: no longer held either)."""
        code = answer.get("error")
        if code is None or code == commands.ALREADY_DONE:
            self.held.pop(job.offset, None)
            return None
        if code in LOST_CODES:
            self.held.pop(job.offset, None)
            return LeaseLost(code, answer["message"])
        return ClientError(code, answer["message"])

    # --- batching ------------------------------------------------------------------------
    async def _call(self, cmd: dict) -> dict:
        """Send ``cmd`` with whatever else is waiting; its answer."""
        (answer,) = await self._send([cmd])
        return answer

    def _send(self, cmds: list[dict]) -> asyncio.Future:
        """Queue ``cmds`` (at most ``MAX_BATCH``) to leave together, after what is queued
        already; the future of their answers."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queued.append((cmds, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        while self._queued:
            take, count = 0, 0  # whole groups of commands, up to MAX_BATCH commands (at least one group)
            while take < len(self._queued) and (take == 0 or count + len(self._queued[take][0]) <= MAX_BATCH):
                count += len(self._queued[take][0])
                take += 1
            batch, self._queued = self._queued[:take], self._queued[take:]
            try:
                answers = await self.client.submit([cmd for cmds, _ in batch for cmd in cmds])
            except Exception as exc:  # Unavailable, ClientError...: each caller decides
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            at = 0
            for cmds, future in batch:
                if not future.done():
                    future.set_result(answers[at : at + len(cmds)])
                at += len(cmds)

    # --- background --------------------------------------------------------------------
    async def _worth_claiming(self, overdue: bool) -> bool:
        """Whether the group's counters, in one node's possibly stale view, show claimable
        jobs -- or leases that may have run out, when a claim is ``overdue``. True when
        that node does not answer: then claiming is how to find out."""
        try:
            stats = await self.client.query("stats", stale=True, queue=self.queue, group=self.group)
        except ClientError:
            return True
        # a claim's time stamp is what lets the queue notice an expired lease
        return stats["backlog"] > 0 or (overdue and stats["in_flight"] > 0)

    async def _keep_leases(self) -> None:
        interval = self.heartbeat_ms / 1000
        next_beat = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
            next_beat = time.monotonic() + interval
            jobs = [job for offset, job in self.held.items() if offset not in self._settling and not job.lost]
            if not jobs:
                continue
            try:
                lost = await self.heartbeat(jobs)
            except ClientError as exc:
                log.warning("%s: heartbeat of %d lease(s) failed: %s", self.worker, len(jobs), exc)
                continue
            for job in lost:
                if job.offset in self.held and job.offset not in self._settling:
                    log.warning("%s: lease of offset %d (token %d) is lost: another claim has it now, "
                                "so its completion will be fenced", self.worker, job.offset, job.token)


async def _wait(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when it was set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


class Consumer:
    """The synchronous face of ``AsyncConsumer`` (same arguments after ``client``),
    running on a ``Client``'s loop. Safe to use from several threads."""

    def __init__(self, client: Client, queue: str, group: str, worker: str | None = None, **kwargs) -> None:
        self.client = client
        self._consumer = client.run(_make(client.aio, queue, group, worker, kwargs))

    @property
    def worker(self) -> str:
        return self._consumer.worker

    @property
    def held(self) -> dict[int, Job]:
        return self._consumer.held

    def claim(self, max_jobs: int) -> list[Job]:
        return self.client.run(self._consumer.claim(max_jobs))

    def claim_wait(self, max_jobs: int, timeout_s: float) -> list[Job]:
        return self.client.run(self._consumer.claim_wait(max_jobs, timeout_s))

    def heartbeat(self, jobs: list[Job]) -> list[Job]:
        return self.client.run(self._consumer.heartbeat(jobs))

    def complete(self, job: Job, result: bytes) -> None:
        self.client.run(self._consumer.complete(job, result))

    def complete_many(self, jobs: list[Job], results: list[bytes],
                      claim: int = 0) -> tuple[list[ClientError | None], list[Job]]:
        return self.client.run(self._consumer.complete_many(jobs, results, claim))

    def fail(self, job: Job, reason: str = "", dead_letter: bool = False) -> bool:
        return self.client.run(self._consumer.fail(job, reason, dead_letter))

    def close(self) -> None:
        if self._consumer.heartbeating:
            self.client.run(self._consumer.close())


async def _make(aio: AsyncClient, queue: str, group: str, worker: str | None, kwargs: dict) -> AsyncConsumer:
    consumer = AsyncConsumer(aio, queue, group, worker, **kwargs)
    await consumer.start()
    return consumer
