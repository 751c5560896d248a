"""``stub``: an in-process backend with leases, for unit tests (dramatiq's StubBroker).

A real implementation, not a mock: jobs wait in a FIFO; a delivery holds a lease of
``timeout_s`` that ``heartbeat`` extends; an expired lease puts the job back; each
delivery counts an attempt; a job is dead-lettered when it would be delivered more than
``max_attempts`` times or is nacked without requeue. Every ``StubBackend`` with the same
queue name in one process shares that queue.

| knob | mapping |
| --- | --- |
| ``heartbeat_s`` | how often the worker loop extends the lease |
| ``timeout_s`` | the lease length; expiry redelivers the job |
| ``prefetch`` | not applicable: a consumer takes one job per ``receive`` |
| ``max_attempts`` | exact delivery counter; the job is dead-lettered after it |

It cannot be shared between processes: ``multiprocess`` is False, so the smoke command
and worker processes report it unavailable.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from baselines.base import AckError, Backend, Consumer, Delivery, new_job_id


@dataclass
class _Lease:
    token: int
    holder: str
    deadline: float


@dataclass
class _Queue:
    cond: threading.Condition = field(default_factory=threading.Condition)
    ready: deque = field(default_factory=deque)  # job ids, oldest first
    payloads: dict = field(default_factory=dict)  # job id -> bytes, for every live job
    attempts: dict = field(default_factory=dict)  # job id -> deliveries so far
    leases: dict = field(default_factory=dict)  # job id -> _Lease; invariant: a leased job is not in ready
    dead: list = field(default_factory=list)


_queues: dict[str, _Queue] = {}
_queues_lock = threading.Lock()
_tokens = itertools.count(1)


class StubBackend(Backend):
    name = "stub"
    multiprocess = False
    durability = "in memory (test backend)"

    def connect(self) -> None:
        with _queues_lock:
            self._q = _queues.setdefault(self.config.queue, _Queue())

    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        q = self._q
        with q.cond:
            q.payloads[job_id] = bytes(payload)
            q.attempts.setdefault(job_id, 0)
            q.ready.append(job_id)
            q.cond.notify()
        return job_id

    def consumer(self, worker_id: str) -> "StubConsumer":
        return StubConsumer(self, worker_id)

    def dead_letters(self) -> list[str]:
        with self._q.cond:
            self._reap()
            return list(self._q.dead)

    def purge(self) -> None:
        q = self._q
        with q.cond:
            q.ready.clear()
            q.payloads.clear()
            q.attempts.clear()
            q.leases.clear()
            q.dead.clear()

    def delete(self) -> None:
        self.purge()
        with _queues_lock:
            _queues.pop(self.config.queue, None)

    def close(self) -> None:
        pass

    # --- called with self._q.cond held ---

    def _kill(self, job_id: str) -> None:
        q = self._q
        q.dead.append(job_id)
        q.payloads.pop(job_id, None)
        q.attempts.pop(job_id, None)

    def _return(self, job_id: str) -> None:
        """Put a job whose lease ended back in line, or dead-letter it if it used its attempts."""
        q = self._q
        if q.attempts[job_id] >= self.config.max_attempts:
            self._kill(job_id)
        else:
            q.ready.appendleft(job_id)  # redeliveries go first, as a broker's requeue does
            q.cond.notify()

    def _reap(self) -> float | None:
        """Return expired leases to the queue; give the next expiry time, if any."""
        q = self._q
        now = time.monotonic()
        for job_id, lease in list(q.leases.items()):
            if lease.deadline <= now:
                del q.leases[job_id]
                self._return(job_id)
        return min((lease.deadline for lease in q.leases.values()), default=None)

    def _settle(self, d: "StubDelivery", action: str) -> _Lease:
        lease = self._q.leases.get(d.job_id)
        if lease is None or lease.token != d._token:
            raise AckError(f"stub: cannot {action} job {d.job_id}: its lease expired and it was redelivered or dead-lettered")
        return lease


class StubDelivery(Delivery):
    def __init__(self, backend: StubBackend, job_id: str, payload: bytes, attempt: int, token: int) -> None:
        self._backend = backend
        self._token = token
        self.job_id, self.payload, self.attempt = job_id, payload, attempt

    def ack(self, result: bytes = b"") -> None:
        b, q = self._backend, self._backend._q
        with q.cond:
            b._reap()
            b._settle(self, "ack")
            del q.leases[self.job_id]
            q.payloads.pop(self.job_id, None)
            q.attempts.pop(self.job_id, None)

    def nack(self, requeue: bool = True) -> None:
        b, q = self._backend, self._backend._q
        with q.cond:
            b._reap()
            b._settle(self, "nack")
            del q.leases[self.job_id]
            if requeue:
                b._return(self.job_id)
            else:
                b._kill(self.job_id)

    def heartbeat(self) -> None:
        b, q = self._backend, self._backend._q
        with q.cond:
            b._reap()
            b._settle(self, "heartbeat").deadline = time.monotonic() + b.config.timeout_s


class StubConsumer(Consumer):
    def __init__(self, backend: StubBackend, worker_id: str) -> None:
        self._backend = backend
        self._worker_id = worker_id

    def receive(self, timeout_s: float) -> StubDelivery | None:
        b, q = self._backend, self._backend._q
        end = time.monotonic() + timeout_s
        with q.cond:
            while True:
                next_expiry = b._reap()
                if q.ready:
                    job_id = q.ready.popleft()
                    q.attempts[job_id] += 1
                    token = next(_tokens)
                    q.leases[job_id] = _Lease(token, self._worker_id, time.monotonic() + b.config.timeout_s)
                    return StubDelivery(b, job_id, q.payloads[job_id], q.attempts[job_id], token)
                now = time.monotonic()
                if now >= end:
                    return None
                q.cond.wait(min(end, next_expiry or end) - now)

    def close(self) -> None:
        """Release this consumer's leases at once, as a broker does when a connection closes."""
        b, q = self._backend, self._backend._q
        with q.cond:
            for job_id, lease in list(q.leases.items()):
                if lease.holder == self._worker_id:
                    del q.leases[job_id]
                    b._return(job_id)
