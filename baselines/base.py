"""The one interface every backend implements (logqueue and each queue baseline).

In the spirit of dramatiq's ``Broker``: a short list of abstract methods per backend
and concrete template methods built on them. A backend is used like this::

    backend = registry.get("redis-streams")(BackendConfig(queue="jobs"))
    backend.connect()                      # BackendUnavailable: one line, how to start it
    job_id = backend.enqueue(b"payload")   # returns once the broker confirmed it
    consumer = backend.consumer("w1")
    delivery = consumer.receive(timeout_s=1.0)
    delivery.ack(b"result")                # AckError when the broker refuses

Threading: a ``Backend`` may be shared by threads (``enqueue``, ``consumer``); a
``Consumer`` and its deliveries belong to one thread, except ``Delivery.heartbeat``,
which the worker loop calls from its heartbeat thread while the job runs.
"""
from __future__ import annotations

import abc
import os
import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Iterable
from urllib.parse import urlsplit

# Server name -> (environment variable, loopback default, how to start it here).
SERVERS = {
    "rabbitmq": ("LOGQUEUE_RABBITMQ_URL", "127.0.0.1:5672", "rabbitmq-server -detached (or: make services)"),
    "redis": ("LOGQUEUE_REDIS_URL", "127.0.0.1:6379", "redis-server --daemonize yes (or: make services)"),
    "nats": ("LOGQUEUE_NATS_URL", "127.0.0.1:4222", "nats-server -js -a 127.0.0.1 -p 4222 & (or: make services)"),
}


class BackendError(Exception):
    """Base class of the errors a backend raises on purpose."""


class BackendUnavailable(BackendError):
    """The broker cannot be reached; ``str()`` is one line naming it, its address and how to start it."""


class AckError(BackendError):
    """The broker refused an ack or nack; ``str()`` says why (e.g. the channel closed after a timeout)."""


def _host_port(value: str) -> str:
    """Reduce ``amqp://user:pw@host:port/vhost`` or ``host:port`` to ``host:port``."""
    if "://" in value:
        parts = urlsplit(value)
        if not parts.hostname or not parts.port:
            raise ValueError(f"address {value!r} must name a host and a port")
        return f"{parts.hostname}:{parts.port}"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {value!r} must be HOST:PORT or a URL with a port")
    return value


def default_addresses() -> dict[str, str]:
    """``{"rabbitmq": "host:port", ...}`` from the ``LOGQUEUE_*_URL`` variables, else loopback."""
    return {name: _host_port(os.environ.get(var) or default) for name, (var, default, _) in SERVERS.items()}


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)``."""
    host, _, port = _host_port(address).rpartition(":")
    return host, int(port)


def unavailable(backend: str, server: str, address: str, reason: object) -> BackendUnavailable:
    """The one-line error for a broker that cannot be reached."""
    reason_line = " ".join(str(reason).split()) or type(reason).__name__
    start = SERVERS[server][2]
    return BackendUnavailable(f"{backend}: cannot reach {server} at {address} ({reason_line}); start it with: {start}")


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass
class BackendConfig:
    """The knobs common to every backend; each adapter's docstring says how it maps them.

    Attributes:
        queue: queue / stream / subject name; tests use a unique one per test.
        heartbeat_s: how often a live worker proves it is alive (connection heartbeat or lease extension).
        timeout_s: how long a delivered, unacknowledged job stays with its worker before redelivery.
        prefetch: how many unacknowledged jobs the broker may push to one consumer.
        max_attempts: deliveries after which a job is dead-lettered (where the backend can count them).
        addresses: ``{"rabbitmq"|"redis"|"nats": "host:port"}``; the experiments point these at a fault proxy.
    """

    queue: str
    heartbeat_s: float = 5.0
    timeout_s: float = 30.0
    prefetch: int = 1
    max_attempts: int = 5
    addresses: dict[str, str] = field(default_factory=default_addresses)

    def __post_init__(self) -> None:
        if not self.queue or any(c.isspace() for c in self.queue):
            raise ValueError(f"queue name {self.queue!r} must be non-empty and contain no whitespace")
        for knob in ("heartbeat_s", "timeout_s"):
            if not getattr(self, knob) > 0:
                raise ValueError(f"{knob} must be > 0, got {getattr(self, knob)!r}")
        for knob in ("prefetch", "max_attempts"):
            if not (isinstance(getattr(self, knob), int) and getattr(self, knob) >= 1):
                raise ValueError(f"{knob} must be an integer >= 1, got {getattr(self, knob)!r}")
        self.addresses = {**default_addresses(), **{k: _host_port(v) for k, v in self.addresses.items()}}


class Delivery(abc.ABC):
    """One delivery of a job to a worker.

    Attributes:
        job_id: the id ``enqueue`` returned.
        payload: the job's bytes, unchanged.
        attempt: 1 on the first delivery, counted from the broker's delivery counter or
            redelivery flag; each adapter says where it is only approximate.
        token: a fencing token that grows with each delivery of the job (the broker's exact
            delivery counter, logqueue's claim token); ``None`` where the backend has none.
        lease_deadline: Unix time when the job is redelivered unless heartbeats extend it;
            ``None`` where the adapter does not know it (the worker loop then counts
            ``timeout_s`` from when the job starts).
    """

    job_id: str
    payload: bytes
    attempt: int
    token: int | None = None
    lease_deadline: float | None = None

    @abc.abstractmethod
    def ack(self, result: bytes = b"") -> None:
        """Complete the job. Raises ``AckError`` with the reason when the broker refuses."""

    @abc.abstractmethod
    def nack(self, requeue: bool = True) -> None:
        """Give the job back (``requeue``) or dead-letter it. After ``max_attempts`` it is dead-lettered."""

    @abc.abstractmethod
    def heartbeat(self) -> None:
        """Tell the broker the job is still being worked on (no-op where the broker has no such thing)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} job={self.job_id} attempt={self.attempt} {len(self.payload)}B>"


class Consumer(abc.ABC):
    """A worker's subscription to the queue."""

    @abc.abstractmethod
    def receive(self, timeout_s: float) -> Delivery | None:
        """Wait up to ``timeout_s`` for the next delivery; ``None`` when there was none."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop consuming; unacknowledged deliveries go back to the broker's normal redelivery path."""

    def ack_many(self, deliveries: list[Delivery], results: list[bytes] | None = None) -> list[AckError | None]:
        """Ack several of this consumer's deliveries (with ``results``, default empty).

        Returns one entry per delivery, in order: ``None`` when acked, else the ``AckError``
        its ack raised. This default acks one at a time; adapters that can settle a batch
        in one round trip (or one hand-off to their I/O thread) override it.
        """
        results = [b""] * len(deliveries) if results is None else results
        if len(results) != len(deliveries):
            raise ValueError(f"{len(deliveries)} deliveries but {len(results)} results")
        out: list[AckError | None] = []
        for d, result in zip(deliveries, results):
            try:
                d.ack(result)
                out.append(None)
            except AckError as exc:
                out.append(exc)
        return out

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """A work-distribution backend behind the common interface.

    Class attributes:
        name: the registry name (``rabbitmq-classic``, ...).
        effect_on_ack: ``True`` where the accepted ack carrying the result *is* the job's
            effect (logqueue); ``False`` for brokers, where the effect is the worker's write
            to the run's result sink before it acks.
        multiprocess: ``False`` for backends that live inside one process (the stub).
        fencing_token: ``True`` where every delivery carries a ``token`` that grows with
            each redelivery of the job (an exact delivery counter, logqueue's claim token).
    """

    name: ClassVar[str]
    effect_on_ack: ClassVar[bool] = False
    fencing_token: ClassVar[bool] = False
    multiprocess: ClassVar[bool] = True

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def connect(self) -> None:
        """Open connections and declare the queue. Raises ``BackendUnavailable``."""

    @abc.abstractmethod
    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        """Add a job; return its id once the broker has confirmed it durably."""

    @abc.abstractmethod
    def consumer(self, worker_id: str) -> Consumer:
        """A new consumer for this queue named ``worker_id``."""

    @abc.abstractmethod
    def dead_letters(self) -> list[str]:
        """Ids of the jobs the backend has dead-lettered, oldest first."""

    @abc.abstractmethod
    def purge(self) -> None:
        """Drop every job of the queue (ready, in flight and dead-lettered)."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Remove the queue and everything declared for it, leaving the broker clean."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close connections. Safe to call twice."""

    def enqueue_many(self, payloads: Iterable[bytes], window: int = 64) -> list[str]:
        """Enqueue every payload, with at most ``window`` unconfirmed at a time; return the ids in order.

        Raises:
            ValueError: ``window`` is below 1.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        jobs = [(new_job_id(), bytes(p)) for p in payloads]
        if jobs:
            self._enqueue_batch(jobs, window)
        return [job_id for job_id, _ in jobs]

    def _enqueue_batch(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        """Enqueue ``(job_id, payload)`` pairs in order, at most ``window`` unconfirmed.

        This default confirms one at a time; adapters whose client can pipeline
        confirmations override it.
        """
        for job_id, payload in jobs:
            self.enqueue(payload, job_id)

    def serve(self, fn, worker_id: str, hooks, result_sink=None, concurrency: int = 1, stop_event=None) -> None:
        """Run a worker process's loop until ``stop_event`` is set (``experiments.worker`` calls this).

        The default is ``baselines.worker_loop.run_worker``; the Celery adapters override
        it to run a real Celery worker in this process.
        """
        from baselines.worker_loop import run_worker

        run_worker(self, fn, worker_id, hooks, concurrency=concurrency, stop_event=stop_event, result_sink=result_sink)

    def __enter__(self) -> "Backend":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
