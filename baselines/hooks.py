"""Worker hooks: what the worker loop reports at each step of a job.

Like dramatiq's middleware, every method has a default that does nothing; the
experiments' ``RecordingHooks`` overrides them to write events. Hooks are called from
the worker's threads, so implementations must be thread-safe.
"""
from __future__ import annotations

from baselines.base import Delivery


class WorkerHooks:
    """No-op hooks; subclass and override what you need."""

    def deliver(self, d: Delivery) -> None:
        """The worker received ``d``."""

    def start(self, d: Delivery) -> None:
        """The worker function is about to run on ``d.payload``."""

    def finish(self, d: Delivery, result: bytes | None, error: str | None = None) -> None:
        """The worker function returned ``result``, or raised (``result`` None, ``error`` set)."""

    def effect(self, d: Delivery, result: bytes) -> None:
        """The result was accepted by the system of record (result sink, or logqueue's complete)."""

    def effect_refused(self, d: Delivery, reason: str) -> None:
        """The sink did not take the result (``reason``): it kept another write's, or failed."""

    def ack(self, d: Delivery) -> None:
        """The backend acknowledged the completion."""

    def ack_error(self, d: Delivery, reason: str) -> None:
        """The backend refused the ack or nack."""

    def dead_letter(self, job_id: str, attempt: int | None = None, reason: str = "") -> None:
        """The backend gave up on ``job_id`` after ``attempt`` deliveries."""
