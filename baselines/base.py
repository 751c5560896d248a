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
import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Iterable
from urllib.parse import urlsplit

from baselines.servers import SHARED, Server, Topology
from logqueue import client as logqueue_client


class BackendError(Exception):
    """Base class of the errors a backend raises on purpose."""


class BackendUnavailable(BackendError):
    """The broker cannot be reached; ``str()`` is one line naming it, its address and how to start it."""


class AckError(BackendError):
    """The broker refused an ack or nack; ``str()`` says why (e.g. the channel closed after a timeout)."""


def host_port(value: str) -> str:
    """Reduce ``amqp://user:pw@host:port/vhost`` or ``host:port`` to ``host:port``.

    Raises ``ValueError`` (one line) for anything else.
    """
    if "://" in value:
        parts = urlsplit(value)
        if not parts.hostname or not parts.port:
            raise ValueError(f"address {value!r} must name a host and a port")
        return f"{parts.hostname}:{parts.port}"
    logqueue_client.split_address(value)
    return value


def default_addresses() -> dict[str, str]:
    """``{"rabbitmq": "host:port", ...}`` from the ``LOGQUEUE_*_URL`` variables, else loopback."""
    return {s.name: host_port(os.environ.get(s.env) or s.default) for s in SHARED}


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or a URL with a port -> ``("host", port)``, by logqueue's address parser."""
    return logqueue_client.split_address(host_port(address))


def unavailable(backend: str, server: Server, address: str, reason: object) -> BackendUnavailable:
    """The one-line error for a server that cannot be reached."""
    reason_line = " ".join(str(reason).split()) or type(reason).__name__
    return BackendUnavailable(f"{backend}: cannot reach {server.name} at {address} ({reason_line}); "
                              f"start it with: {server.start}")


class _JobIds:
    """32 hex digits: 64 random bits drawn per process (again in a forked child), then a counter.

    Unique across processes as uuid4 is, without a system call per id (bulk enqueues make many).
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


new_job_id = _JobIds()


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
        self.addresses = {**default_addresses(), **{k: host_port(v) for k, v in self.addresses.items()}}


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
        durability: one line, what "confirmed" means here (copied into the bench's results).
        replicas: how many nodes hold the queue's data (its replica group; 1: a single node).
        confirmed_on: how many of them hold a job when its confirm reaches the producer
            (1: the confirm is not replicated; ``durability`` says whether on disk or in memory).
        keeps_history: ``True`` where a new reader can read every job again from the
            start (a log); then :meth:`replay` returns them.
        servers: the servers it needs (``baselines.servers.Server``): where they are, how
            to start them, whether a run may start a private one.

    What the harness needs to know about a backend it asks these and the class methods
    :meth:`topology`, :meth:`probe` and :meth:`local_servers`, never its name.
    """

    name: ClassVar[str]
    effect_on_ack: ClassVar[bool] = False
    fencing_token: ClassVar[bool] = False
    multiprocess: ClassVar[bool] = True
    durability: ClassVar[str] = "see the adapter's docstring"
    replicas: ClassVar[int] = 1
    confirmed_on: ClassVar[int] = 1
    keeps_history: ClassVar[bool] = False
    servers: ClassVar[tuple[Server, ...]] = ()

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    # --- what the harness asks the class ----------------------------------------------

    @classmethod
    def confirms(cls) -> dict:
        """What a confirm promises, as a run records it: ``replicas``, ``confirmed_on``, ``durability``."""
        return {"replicas": cls.replicas, "confirmed_on": cls.confirmed_on, "durability": cls.durability}

    @classmethod
    def topology(cls, private: bool = False, external: Mapping[str, str] | None = None) -> Topology:
        """Where this backend's servers are for one run, and which node faults it supports.

        ``private``: the run needs servers of its own, which a scenario may kill and
        restart (see ``baselines.servers.private``). ``external``: ``{server: addresses}``
        of servers the user runs and names on the command line. The default is the
        shared servers of the machine (no node faults), or a private one.
        """
        if private:
            from baselines.servers.private import private_topology

            return private_topology(cls.name, cls.servers)
        return Topology(cls.servers)

    @classmethod
    def probe(cls, external: Mapping[str, str] | None = None) -> str | None:
        """``None`` when this backend can be used here, else a one-line reason (it connects once)."""
        instance = cls(BackendConfig(queue=f"probe-{uuid.uuid4().hex[:8]}"))
        try:
            instance.connect()
            instance.delete()
        except BackendError as exc:
            return str(exc)
        except Exception as exc:  # a client library error the adapter did not wrap: still one line
            return f"{cls.name}: {type(exc).__name__}: {' '.join(str(exc).split())}"
        finally:
            with contextlib.suppress(Exception):
                instance.close()
        return None

    @classmethod
    @contextlib.contextmanager
    def local_servers(cls, fresh: bool = True) -> Iterator[dict[str, str]]:
        """Servers started on this machine for one command (the bench, the smoke test), if it needs any.

        Yields ``BackendConfig.addresses`` for them (``{}``: the shared servers will do).
        ``fresh``: start them even when some already answer at the configured addresses.
        Raises ``baselines.servers.ServerStartError`` when they cannot be started.
        """
        yield {}

    def replay(self, max_count: int) -> list[bytes]:
        """Every job's payload from the start of the history, oldest first (``keeps_history`` backends)."""
        raise NotImplementedError(f"{self.name} keeps no history to replay")

    def completions(self) -> list[tuple[str, int]]:
        """``(job id, attempt)`` of every job the backend holds as completed (``effect_on_ack``
        backends: their own record of the effects, read back after a run)."""
        raise NotImplementedError(f"{self.name} keeps no record of completions: its effects are the sink's")

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
