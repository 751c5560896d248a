"""What a worker function may learn about the job it runs: ``fn(payload, ctx)``."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JobContext"]


@dataclass(frozen=True)
class JobContext:
    """The job a worker function is running.

    Attributes:
        job_id: the job's id (logqueue's own worker: its offset in the queue).
        attempt: 1 on the first delivery or claim.
        token: a fencing token that grows with every new delivery of the job, for a
            resource to refuse a stale worker's write (logqueue: the claim's token; a
            queue: its exact delivery counter); ``None`` where the backend has none.
        lease_deadline: Unix time when the job goes back to the queue unless its lease is
            extended (measured from when the worker received it); ``None`` when unknown.
        backend: the backend's name (``logqueue``, ``redis-streams``, ...).
    """

    job_id: str
    attempt: int
    token: int | None
    lease_deadline: float | None
    backend: str
