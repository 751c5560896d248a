"""``nats-jetstream``: a work-queue-retention JetStream stream with a durable pull consumer (nats-py).

Per queue ``Q`` (sanitised to ``S``): stream ``LQ_S`` on subject ``lq.S`` with
``retention=workqueue`` and file storage; durable pull consumer ``workers`` with explicit
acks; dead letters in stream ``LQ_S_DEAD``, which captures the server's
``MAX_DELIVERIES`` advisories for that consumer and the adapter's own records of jobs
nacked without requeue (JetStream has no dead-letter queue of its own). ``enqueue``
returns after JetStream's publish ack (the message is stored). The job id travels in
the ``Lq-Job`` header.

nats-py is asyncio: each backend runs one event loop in a private thread and every call
(from the worker thread or the heartbeat thread) is a coroutine submitted to that loop,
so the client is only ever touched by its own thread.

| knob | mapping |
| --- | --- |
| ``heartbeat_s`` | how often the worker sends ``AckProgress`` (``+WPI``), which restarts ``AckWait`` |
| ``timeout_s`` | consumer ``AckWait`` |
| ``prefetch`` | pull batch: an empty consumer buffer is refilled with ``fetch(batch=prefetch)`` (messages held there until handed out; their ``AckWait`` runs meanwhile, and ``close`` naks the ones never handed out); ``MaxAckPending`` is the server's default |
| ``max_attempts`` | consumer ``MaxDeliver`` (exact ``num_delivered``); the server stops delivering and emits the advisory |

What it cannot do: acks are by stream sequence, so a late ack from a worker whose
``AckWait`` passed is accepted (no ``AckError``) even while the redelivered copy runs;
redelivery of a dead worker's job waits for ``AckWait`` (there is no connection-level
liveness). The server's ``max_payload`` (1 MiB by default) bounds a message, so larger
payloads go to a JetStream object store (``LQ_S_BLOBS``) and the message carries a
reference (the claim-check pattern).
"""
from __future__ import annotations

import asyncio
import collections
import json
import re
import socket
import threading
import time

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

from baselines.base import (AckError, Backend, BackendError, BackendUnavailable, Consumer, Delivery, new_job_id,
                            split_address, unavailable)
from baselines.servers import NATS

DURABLE = "workers"
JOB_HEADER = "Lq-Job"
BLOB_HEADER = "Lq-Blob"  # present when the payload is in the object store
HEADER_ROOM = 512  # bytes kept for headers below the server's max_payload
CALL_SLACK_S = 10.0  # a loop call may take this much longer than its own timeout
# A cluster without a JetStream meta leader (an election after a node fault) answers 503 for a
# while: declaring goes on trying this long, as a worker restarted during a fault must.
DECLARE_RETRY_S = 60.0


class _LoopThread:
    """An asyncio loop in a daemon thread; ``run`` submits a coroutine and waits for it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout + CALL_SLACK_S)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def sanitised(queue: str) -> str:
    """Queue name ``queue`` as it goes into stream and subject names (``S`` above)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", queue)


def stream_of(queue: str) -> str:
    """The job stream of queue ``queue``."""
    return f"LQ_{sanitised(queue)}"


class NatsJetStreamBackend(Backend):
    name = "nats-jetstream"
    fencing_token = True  # num_delivered
    servers = (NATS,)
    durability = "JetStream publish ack, file storage (written to the stream's file; fsync by the server's sync interval)"

    def __init__(self, config) -> None:
        super().__init__(config)
        s = sanitised(config.queue)
        self.stream, self.subject = stream_of(config.queue), f"lq.{s}"
        self.dead_stream, self.dead_subject = f"LQ_{s}_DEAD", f"lqdead.{s}"
        self.blob_bucket = f"LQ_{s}_BLOBS"
        self.advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{DURABLE}"
        self._loop: _LoopThread | None = None
        self.nc = self.js = None
        self._blobs = None

    def call(self, coro, timeout: float = 10.0):
        return self._loop.run(coro, timeout)

    def server_addresses(self) -> list[str]:
        """The servers the client may use (one here; a cluster overrides it)."""
        return [self.config.addresses["nats"]]

    def unreachable(self, reason: object) -> BackendUnavailable:
        return unavailable(self.name, NATS, self.config.addresses["nats"], reason)

    def _probe(self) -> None:
        """nats-py retries a refused first connect until its own timeouts; probe once instead."""
        error: OSError | None = None
        for address in self.server_addresses():
            try:
                socket.create_connection(split_address(address), timeout=2).close()
                return
            except OSError as exc:
                error = exc
        raise self.unreachable(error or "no servers")

    def connect(self) -> None:
        self._probe()
        self._loop = _LoopThread(f"nats-{self.stream}")
        try:
            self.nc = self.call(nats.connect(
                servers=[f"nats://{address}" for address in self.server_addresses()],
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                ping_interval=max(1, round(self.config.heartbeat_s)),
                max_outstanding_pings=2,
            ))
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            self._loop.stop()
            self._loop = None
            raise self.unreachable(exc or "connection refused") from None
        self.js = self.nc.jetstream()
        deadline = time.monotonic() + DECLARE_RETRY_S
        while True:
            try:
                self.call(self._declare())
                return
            except (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise BackendError(f"{self.name}: JetStream did not take the stream and consumer within "
                                       f"{DECLARE_RETRY_S:g} s ({type(exc).__name__}: {exc})") from None
                time.sleep(0.5)

    async def _declare(self) -> None:
        js = self.js
        await js.add_stream(name=self.stream, subjects=[self.subject], retention=RetentionPolicy.WORK_QUEUE,
                            storage=StorageType.FILE, num_replicas=self.replicas)
        await js.add_stream(name=self.dead_stream, subjects=[self.advisory, self.dead_subject], storage=StorageType.FILE,
                            num_replicas=self.replicas)
        await js.add_consumer(self.stream, ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.config.timeout_s,
            max_deliver=self.config.max_attempts,
        ))

    async def _blob_store(self):
        if self._blobs is None:
            self._blobs = await self.js.create_object_store(self.blob_bucket, storage=StorageType.FILE,
                                                            replicas=self.replicas)
        return self._blobs

    async def _publish(self, payload: bytes, job_id: str) -> None:
        headers = {JOB_HEADER: job_id}
        if len(payload) + HEADER_ROOM > self.nc.max_payload:
            await (await self._blob_store()).put(job_id, payload)
            headers[BLOB_HEADER] = "1"
            payload = b""
        await self.js.publish(self.subject, payload, headers=headers, timeout=10)

    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        try:
            self.call(self._publish(bytes(payload), job_id), timeout=20)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise BackendError(f"{self.name}: publish of job {job_id} not acknowledged ({type(exc).__name__}: {exc})") from None
        return job_id

    def _enqueue_batch(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        """Pipelined: up to ``window`` publishes awaiting their JetStream ack at once."""

        async def run() -> None:
            limit = asyncio.Semaphore(window)

            async def one(job_id: str, payload: bytes) -> None:
                async with limit:
                    await self._publish(payload, job_id)

            await asyncio.gather(*(one(j, p) for j, p in jobs))

        self.call(run(), timeout=30 + len(jobs))

    def consumer(self, worker_id: str) -> "NatsJetStreamConsumer":
        return NatsJetStreamConsumer(self, worker_id)

    async def _dead_letters(self) -> list[str]:
        ids = []
        state = (await self.js.stream_info(self.dead_stream)).state
        if state.messages == 0:
            return ids
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await self.js.get_msg(self.dead_stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            if msg.subject == self.dead_subject:
                ids.append(msg.headers[JOB_HEADER])
            else:  # a MAX_DELIVERIES advisory names the stream sequence of the job
                original = await self.js.get_msg(self.stream, json.loads(msg.data)["stream_seq"])
                ids.append(original.headers[JOB_HEADER])
        return ids

    def dead_letters(self) -> list[str]:
        return self.call(self._dead_letters())

    async def _delete_blobs(self) -> None:
        try:
            await self.js.delete_stream(f"OBJ_{self.blob_bucket}")
        except nats.js.errors.NotFoundError:
            pass
        self._blobs = None

    async def _purge(self) -> None:
        await self.js.purge_stream(self.stream)
        await self.js.purge_stream(self.dead_stream)
        await self._delete_blobs()

    def purge(self) -> None:
        self.call(self._purge())

    async def _delete(self) -> None:
        for stream in (self.stream, self.dead_stream):
            try:
                await self.js.delete_stream(stream)
            except nats.js.errors.NotFoundError:
                pass
        await self._delete_blobs()

    def delete(self) -> None:
        self.call(self._delete())

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            self.call(self.nc.close())
        except (nats.errors.Error, asyncio.TimeoutError):
            pass
        self._loop.stop()
        self._loop = None


class NatsJetStreamDelivery(Delivery):
    """``attempt`` is JetStream's exact ``num_delivered``, and so the fencing ``token``."""

    def __init__(self, backend: NatsJetStreamBackend, msg, job_id: str, payload: bytes) -> None:
        self._b = backend
        self._msg = msg
        self.job_id, self.payload = job_id, payload
        self.attempt = self.token = msg.metadata.num_delivered
        self.received_at = time.monotonic()

    def _do(self, coro, what: str) -> None:
        try:
            self._b.call(coro)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise AckError(f"{self._b.name}: {what} of job {self.job_id} failed ({type(exc).__name__}: {exc})") from None

    def ack(self, result: bytes = b"") -> None:
        self._do(self._ack(), "ack")

    async def _ack(self) -> None:
        await self._msg.ack_sync(timeout=5)
        if self._msg.headers.get(BLOB_HEADER):
            await (await self._b._blob_store()).delete(self.job_id)

    def nack(self, requeue: bool = True) -> None:
        self._do(self._msg.nak() if requeue else self._kill(), "nack")

    async def _kill(self) -> None:
        await self._b.js.publish(self._b.dead_subject, b"", headers={JOB_HEADER: self.job_id}, timeout=10)
        await self._msg.term()

    def heartbeat(self) -> None:
        self._do(self._msg.in_progress(), "AckProgress")


class NatsJetStreamConsumer(Consumer):
    def __init__(self, backend: NatsJetStreamBackend, worker_id: str) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self._buffer: collections.deque[NatsJetStreamDelivery] = collections.deque()
        self._sub = backend.call(backend.js.pull_subscribe_bind(durable=DURABLE, stream=backend.stream))

    async def _fetch(self, timeout_s: float) -> list[NatsJetStreamDelivery]:
        try:
            msgs = await self._sub.fetch(batch=self.backend.config.prefetch, timeout=timeout_s)
        except asyncio.TimeoutError:  # nats-py raises its own subclass for batch 1, asyncio's for larger batches
            return []
        out = []
        for msg in msgs:
            job_id = msg.headers[JOB_HEADER]
            payload = msg.data
            if msg.headers.get(BLOB_HEADER):
                payload = (await (await self.backend._blob_store()).get(job_id)).data
            out.append(NatsJetStreamDelivery(self.backend, msg, job_id, payload))
        return out

    def receive(self, timeout_s: float) -> NatsJetStreamDelivery | None:
        """The next buffered delivery; when none, one pull of up to ``prefetch`` (waiting up to ``timeout_s``)."""
        end = time.monotonic() + timeout_s
        while True:
            expired = time.monotonic() - self.backend.config.timeout_s
            while self._buffer:
                d = self._buffer.popleft()
                if d.received_at > expired:
                    return d
                # else: past AckWait, redelivered by the server; not handed out twice
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            # the server rejects pull requests that expire too soon to be useful
            self._buffer.extend(self.backend.call(self._fetch(max(0.1, remaining)), timeout=remaining))

    def ack_many(self, deliveries: list[NatsJetStreamDelivery], results: list[bytes] | None = None) -> list[AckError | None]:
        """All acks in flight at once on the backend's loop (JetStream acks one message per ack)."""
        async def run():
            return await asyncio.gather(*(d._ack() for d in deliveries), return_exceptions=True)

        answers = self.backend.call(run())
        return [None if a is None else AckError(f"{self.backend.name}: ack of job {d.job_id} failed "
                                                f"({type(a).__name__}: {a})")
                for d, a in zip(deliveries, answers)]

    def close(self) -> None:
        """Stop pulling; buffered messages are nacked (redelivered at once), handed-out unacked ones after ``AckWait``."""
        unhanded, self._buffer = list(self._buffer), collections.deque()

        async def run() -> None:
            await asyncio.gather(*(d._msg.nak() for d in unhanded), return_exceptions=True)
            await self._sub.unsubscribe()

        try:
            self.backend.call(run())
        except (nats.errors.Error, asyncio.TimeoutError):
            pass
