"""``logqueue``: the work queue on logqueue's Raft log, behind the common ``Backend`` interface.

Jobs of queue ``Q`` are enqueued into the log queue ``Q`` and consumed by the consumer
group ``workers``. A delivery is a claim: a lease with a fencing token. ``ack(result)``
completes the job with its result, which the cluster stores in the log -- that accepted
completion *is* the job's effect (``effect_on_ack``), and the cluster accepts it once
per job: a worker whose lease was taken over by a newer claim gets ``AckError("fenced:
...")``. The cluster is named by ``BackendConfig.addresses["logqueue"]`` (comma-separated
``HOST:PORT`` of some nodes), else ``$LOGQUEUE_CLUSTER``, else
``127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003``, so the experiments can route every
client through its own fault proxies.

| knob | mapping |
| --- | --- |
| ``heartbeat_s`` | how often the worker loop calls ``Delivery.heartbeat``: a heartbeat command that extends the lease to the leader's now + ``timeout_s`` |
| ``timeout_s`` | the claim's lease (``lease_ms``); when it passes, the job can be claimed again, and the old holder's completion is fenced once it is |
| ``prefetch`` | the claim batch: one claim leases up to ``prefetch`` jobs; those not yet handed out wait in the consumer with their leases running |
| ``max_attempts`` | the claim's ``max_attempts``, an exact claim counter: a job that is nacked, or whose lease expires, on its last claim is dead-lettered |

Job ids: the log holds each job as ``MAGIC + msgpack([job_id, payload])`` (``wrap``), so
a delivery carries the id ``enqueue`` returned; a job without that envelope (enqueued by
``logqueue produce``) is delivered with its offset as its id. Enqueues are idempotent:
each process has one producer id, and a job id that is enqueued again (a retry after a
lost confirm, even through a new backend) reuses its first seq, so the queue answers
with the first copy's offset instead of adding a second job.

What it cannot do: a log does not forget, so ``purge`` and ``delete`` start a new
generation of the queue (log queue ``Q~1``, ``Q~2``, ... counted in ``Q~generations``):
backends connected afterwards see an empty queue, while the old jobs stay readable in
the log until retention drops them. Lease expiry is decided by the time stamps of
applied entries, so an expired lease is noticed at the next write; while jobs are
leased, idle consumers claim every quarter second for that reason. ``nack(requeue=False)``
dead-letters at once.
"""
from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections import OrderedDict, deque

import msgpack

from baselines.base import AckError, Backend, BackendError, BackendUnavailable, Consumer, Delivery, new_job_id
from baselines.servers import Server
from logqueue.client import AsyncProducer, Client, ClientError, Job, LeaseLost, parse_cluster
from logqueue.client import Consumer as QueueConsumer
from logqueue.queue import commands

__all__ = ["LogqueueBackend", "cluster_addresses", "wrap", "unwrap"]

CLUSTER_ENV = "LOGQUEUE_CLUSTER"
DEFAULT_CLUSTER = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
START_HINT = "logqueue cluster up --nodes 3 --base-port 7001 --data-dir /tmp/lq"
GROUP = "workers"
MAGIC = b"\x00lqjob\x01"
CALL_TIMEOUT_S = 30.0  # rides out a leader election; then the call fails
ATTEMPT_TIMEOUT_S = 1.0
PAGE = 1000
REMEMBERED_JOB_IDS = 65_536  # per process, for idempotent retries by job id
CLUSTER = Server("logqueue", CLUSTER_ENV, DEFAULT_CLUSTER, START_HINT)


def wrap(job_id: str, payload: bytes) -> bytes:
    """The log's bytes for a job enqueued through this backend."""
    return MAGIC + msgpack.packb([job_id, bytes(payload)], use_bin_type=True)


def unwrap(data: bytes, offset: int | None = None) -> tuple[str, bytes]:
    """``(job_id, payload)`` of a job's log bytes; a job without the envelope is
    ``(str(offset), data)``."""
    if data.startswith(MAGIC):
        try:
            job_id, payload = msgpack.unpackb(data[len(MAGIC):], raw=False)
            if isinstance(job_id, str) and isinstance(payload, bytes):
                return job_id, payload
        except (ValueError, TypeError, msgpack.UnpackException):
            pass
    return str(offset), data


def cluster_addresses(addresses: dict[str, str] | None = None) -> str:
    """The cluster a backend with ``BackendConfig.addresses`` uses (see the module docstring)."""
    return (addresses or {}).get("logqueue") or os.environ.get(CLUSTER_ENV) or DEFAULT_CLUSTER


class _Seqs:
    """This process's producer identity: a retried job id gets the seq of its first try."""

    def __init__(self) -> None:
        self.producer_id = f"lqb-{uuid.uuid4().hex}"
        self._next = 0
        self._seqs: OrderedDict[tuple[str, str], int] = OrderedDict()  # (queue, job id) -> seq
        self._lock = threading.Lock()

    def seq(self, queue: str, job_id: str) -> int:
        with self._lock:
            key = (queue, job_id)
            seq = self._seqs.get(key)
            if seq is None:
                seq = self._seqs[key] = self._next
                self._next += 1
                if len(self._seqs) > REMEMBERED_JOB_IDS:
                    self._seqs.popitem(last=False)
            return seq


_SEQS = _Seqs()


class LogqueueBackend(Backend):
    name = "logqueue"
    effect_on_ack = True
    fencing_token = True  # the claim's token
    durability = "committed: appended and fsynced (group commit) on a majority of 3 nodes before the answer"
    replicas = 3
    confirmed_on = 2  # a majority
    keeps_history = True
    servers = (CLUSTER,)

    @classmethod
    def topology(cls, private: bool = False, external=None):
        """A local 3-node cluster behind proxies, or (``external["logqueue"]``) the user's running nodes."""
        from baselines.servers.logqueue_cluster import ClusterTopology, ExternalClusterTopology

        if external and external.get(CLUSTER.name):
            return ExternalClusterTopology(external[CLUSTER.name].split(","))
        return ClusterTopology()

    @classmethod
    def probe(cls, external=None) -> str | None:
        from baselines.servers.logqueue_cluster import probe_cluster

        return probe_cluster((external or {}).get(CLUSTER.name))

    @classmethod
    @contextlib.contextmanager
    def local_servers(cls, fresh: bool = True):
        """A local 3-node cluster, unless (``fresh`` False) a cluster answers at the configured addresses."""
        from baselines.servers.logqueue_cluster import cluster_answers, local_cluster

        if not fresh and cluster_answers(cluster_addresses()):
            yield {}
            return
        with local_cluster() as spec:
            yield {CLUSTER.name: spec}

    def __init__(self, config) -> None:
        super().__init__(config)
        self.addresses = cluster_addresses(config.addresses)
        self.client: Client | None = None
        self.log_queue = config.queue  # the current generation's log queue

    # --- connection ---------------------------------------------------------------------
    def connect(self) -> None:
        where = f"logqueue: cannot reach the cluster at {self.addresses}"
        try:
            parse_cluster(self.addresses)
        except ValueError as exc:
            raise BackendUnavailable(f"{where} ({exc})") from None
        self.client = Client(self.addresses, timeout=CALL_TIMEOUT_S, attempt_timeout=ATTEMPT_TIMEOUT_S)
        try:
            rows = self.client.cluster_status()
            if all(row["role"] == "unreachable" for row in rows):
                raise ClientError("unavailable", "no node answers")
            self.log_queue = self._generation_queue(self._generations())
        except ClientError as exc:
            self.close()
            reason = " ".join(str(exc).split())
            raise BackendUnavailable(f"{where} ({reason}); start it with: {START_HINT}") from None

    def _generations(self) -> int:
        return self._query("stats", queue=self._meta_queue, group=GROUP)["enqueued"]

    @property
    def _meta_queue(self) -> str:
        return f"{self.config.queue}~generations"

    def _generation_queue(self, generation: int) -> str:
        return self.config.queue if generation == 0 else f"{self.config.queue}~{generation}"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    # --- calls ------------------------------------------------------------------------
    def _query(self, name: str, **args):
        try:
            return self.client.query(name, **args)
        except ClientError as exc:
            raise BackendError(f"logqueue: {name} query failed ({exc.code}: {exc})") from None

    def _submit_one(self, cmd: dict, what: str) -> dict:
        try:
            (answer,) = self.client.submit([cmd])
        except ClientError as exc:
            raise BackendError(f"logqueue: {what} failed ({exc.code}: {exc})") from None
        if commands.is_error(answer):
            raise BackendError(f"logqueue: {what} refused ({answer['error']}: {answer['message']})")
        return answer

    # --- producing --------------------------------------------------------------------
    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        cmd = commands.enqueue(self.log_queue, wrap(job_id, payload), _SEQS.producer_id,
                               _SEQS.seq(self.log_queue, job_id))
        self._submit_one(cmd, f"enqueue of job {job_id}")
        return job_id

    def _enqueue_batch(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        """Pipelined: batches of enqueue commands, ``window`` jobs unconfirmed at most."""
        batch = min(window, 256)
        producer = AsyncProducer(self.client.aio, self.log_queue, batch=batch, window=max(1, window // batch))
        try:
            self.client.run(producer.enqueue_many([wrap(job_id, payload) for job_id, payload in jobs]))
        except ClientError as exc:
            raise BackendError(f"logqueue: enqueue of {len(jobs)} jobs failed ({exc.code}: {exc})") from None

    # --- consuming --------------------------------------------------------------------
    def consumer(self, worker_id: str) -> "LogqueueConsumer":
        return LogqueueConsumer(self, worker_id)

    def _settled(self, query: str) -> list[dict]:
        """Every row of a settled-offsets query (``results``, ``dead_letters``), in offset order."""
        rows, start = [], 0
        while True:
            page = self._query(query, queue=self.log_queue, group=GROUP, from_offset=start, max_count=PAGE)
            rows += page
            if len(page) < PAGE:
                return rows
            start = page[-1]["offset"] + 1

    def _job_ids(self, offsets: list[int]) -> dict[int, str]:
        """``{offset: job id}`` for ``offsets`` (sorted), read from the log a page at a time."""
        ids: dict[int, str] = {}
        for offset in offsets:
            if offset not in ids:
                for at, data in self._query("read", queue=self.log_queue, from_offset=offset, max_count=PAGE):
                    ids[at] = unwrap(bytes(data), at)[0]
                ids.setdefault(offset, str(offset))  # below the retained log: known by its offset only
        return ids

    def dead_letters(self) -> list[str]:
        offsets = [row["offset"] for row in self._settled("dead_letters")]
        ids = self._job_ids(offsets)
        return [ids[offset] for offset in offsets]

    def completions(self) -> list[tuple[str, int]]:
        """The group's completed offsets: the log's record of every accepted completion."""
        rows = self._settled("results")
        ids = self._job_ids([row["offset"] for row in rows])
        return [(ids[row["offset"]], row["attempts"]) for row in rows]

    def replay(self, max_count: int) -> list[bytes]:
        """A log-mode read from offset 0: every job's payload, in log order."""
        rows = self._query("read", queue=self.log_queue, from_offset=0, max_count=max_count)
        return [unwrap(bytes(payload), offset)[1] for offset, payload in rows]

    def purge(self) -> None:
        """Start a new, empty generation of the queue (see the module docstring)."""
        answer = self._submit_one(commands.enqueue(self._meta_queue, b""), f"purge of queue {self.config.queue}")
        self.log_queue = self._generation_queue(answer["offset"] + 1)

    def delete(self) -> None:
        """As ``purge``: the log keeps the old generation's history until retention drops it."""
        self.purge()


class LogqueueDelivery(Delivery):
    """One claimed job; ``attempt`` is the queue's exact claim counter, ``token`` the claim's fencing token."""

    def __init__(self, consumer: QueueConsumer, job: Job) -> None:
        self._consumer = consumer
        self._job = job
        self.job_id, self.payload = unwrap(job.payload, job.offset)
        self.attempt = job.attempt
        self.token = job.token

    @property
    def lease_deadline(self) -> float | None:
        return self._job.leased_until

    def _refused(self, what: str, exc: ClientError) -> AckError:
        return AckError(f"{exc.code}: {what} of job {self.job_id} (offset {self._job.offset}, token "
                        f"{self._job.token}) refused: {exc}")

    def ack(self, result: bytes = b"") -> None:
        try:
            self._consumer.complete(self._job, result)
        except ClientError as exc:  # LeaseLost (fenced, ...) or the cluster did not answer
            raise self._refused("completion", exc) from None

    def nack(self, requeue: bool = True) -> None:
        try:
            self._consumer.fail(self._job, "nack", dead_letter=not requeue)
        except ClientError as exc:
            raise self._refused("failure", exc) from None

    def heartbeat(self) -> None:
        try:
            lost = self._consumer.heartbeat([self._job])
        except ClientError as exc:
            raise self._refused("heartbeat", exc) from None
        if lost:
            raise self._refused("heartbeat", LeaseLost(commands.FENCED, "the lease is another claim's now"))


class LogqueueConsumer(Consumer):
    """Claims ``prefetch`` jobs at a time for one worker; no background heartbeats (the
    worker loop calls ``Delivery.heartbeat``)."""

    def __init__(self, backend: LogqueueBackend, worker_id: str) -> None:
        config = backend.config
        # A unique name per consumer: leases and claim replays are per worker name.
        self._consumer = QueueConsumer(backend.client, backend.log_queue, GROUP, f"{worker_id}-{uuid.uuid4().hex[:8]}",
                                       lease_ms=max(1, round(config.timeout_s * 1000)),
                                       max_attempts=config.max_attempts)
        self._prefetch = config.prefetch
        self._ready: deque[Job] = deque()

    def receive(self, timeout_s: float) -> LogqueueDelivery | None:
        if not self._ready:
            try:
                self._ready.extend(self._consumer.claim_wait(self._prefetch, timeout_s))
            except ClientError as exc:
                raise BackendError(f"logqueue: claim failed ({exc.code}: {exc})") from None
        return LogqueueDelivery(self._consumer, self._ready.popleft()) if self._ready else None

    def ack_many(self, deliveries: list[LogqueueDelivery], results: list[bytes] | None = None) -> list[AckError | None]:
        """Complete the batch in one submit (one log entry); per delivery None or its AckError.

        When fewer than half the prefetch are left in hand, the same submit claims the
        next jobs (up to the prefetch), as a broker pushes more once acks free its
        prefetch window: the consumer then rarely waits for a claim of its own.
        """
        results = [b""] * len(deliveries) if results is None else results
        room = self._prefetch - len(self._ready)
        claim = room if room * 2 >= self._prefetch else 0
        answers, claimed = self._consumer.complete_many([d._job for d in deliveries], results, claim)
        self._ready.extend(claimed)
        return [None if exc is None else d._refused("completion", exc) for d, exc in zip(deliveries, answers)]

    def close(self) -> None:
        """Stop; jobs not acked go back to the group when their leases expire."""
        self._consumer.close()
