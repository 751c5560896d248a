"""Idempotent, batched, pipelined enqueues to one queue of a logqueue cluster.

Every job a producer sends carries ``(producer_id, seq)``: the queue answers a repeat
with the offset of the first copy, so a retry -- by the client session after a leader
change, or by a new process that reuses the producer id and its seqs -- never
duplicates a job. Jobs go out in batches of ``batch`` enqueue commands (one log entry
may carry many) and at most ``client.CHUNK_BYTES`` of payload, with up to ``window``
batches in flight at once.

Example::

    with Client("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003") as client:
        offsets = Producer(client, "jobs").enqueue_many([b"a", b"b", b"c"])
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Iterable

from logqueue.client.client import AsyncClient, Client, ClientError, byte_chunks, check_payload
from logqueue.queue import commands

__all__ = ["AsyncProducer", "Producer"]


class AsyncProducer:
    """Asyncio producer for one queue.

    Args:
        client: a connected ``AsyncClient``.
        queue: the queue's name.
        producer_id: the idempotency identity (default: a fresh random id). Reuse it,
            with ``first_seq``, to retry a crashed producer's jobs without duplicates.
        first_seq: the seq of this producer's first job.
        batch: enqueue commands per submit (per log entry at most).
        window: submits in flight at once.
    """

    def __init__(self, client: AsyncClient, queue: str, *, producer_id: str | None = None, first_seq: int = 0,
                 batch: int = 256, window: int = 8) -> None:
        if not queue:
            raise ValueError("the queue name must not be empty")
        if batch < 1 or window < 1 or first_seq < 0:
            raise ValueError("batch and window must be >= 1 and first_seq >= 0")
        self.client = client
        self.queue = queue
        self.producer_id = producer_id or f"p-{uuid.uuid4().hex}"
        self.next_seq = first_seq
        self.batch = batch
        self.window = window

    async def enqueue(self, payload: bytes) -> int:
        """Enqueue one job; returns its offset once committed."""
        return (await self.enqueue_many([payload]))[0]

    async def enqueue_many(self, payloads: Iterable[bytes]) -> list[int]:
        """Enqueue jobs in order; returns their offsets once all are committed.

        Without failures the offsets follow the order given. Seqs are taken before
        anything is sent, so a failed call can be retried by a producer with the same
        ``producer_id`` and ``first_seq`` without duplicating the jobs that did land.

        Raises:
            ClientError: the queue refused a job (e.g. ``stale_seq``), or
                ``Unavailable`` when no leader answered within the client's timeout.
        """
        payloads = [bytes(p) for p in payloads]
        first = self.next_seq
        self.next_seq += len(payloads)
        for p in payloads:
            check_payload(p)
        cmds = [commands.enqueue(self.queue, p, self.producer_id, first + i) for i, p in enumerate(payloads)]
        batches = byte_chunks(cmds, lambda cmd: len(cmd["payload"]), self.batch)
        slots = asyncio.Semaphore(self.window)

        async def send(batch: list[dict]) -> list[int]:
            async with slots:
                results = await self.client.submit(batch)
            offsets = []
            for cmd, result in zip(batch, results):
                if commands.is_error(result):
                    raise ClientError(result["error"], f"enqueue of seq {cmd['seq']}: {result['message']}")
                offsets.append(result["offset"])
            return offsets

        if not batches:
            return []
        # The first batch alone finds the leader and opens the connection; after it, the
        # batches leave in order on that one connection, so the log keeps their order.
        parts = [await send(batches[0])]
        parts += await asyncio.gather(*(send(b) for b in batches[1:]))
        return [offset for part in parts for offset in part]


class Producer:
    """The synchronous face of ``AsyncProducer`` (same arguments), on a ``Client``'s loop."""

    def __init__(self, client: Client, queue: str, **kwargs) -> None:
        self.client = client
        self._producer = AsyncProducer(client.aio, queue, **kwargs)

    @property
    def producer_id(self) -> str:
        return self._producer.producer_id

    @property
    def next_seq(self) -> int:
        return self._producer.next_seq

    def enqueue(self, payload: bytes) -> int:
        """Enqueue one job; returns its offset once committed."""
        return self.client.run(self._producer.enqueue(payload))

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[int]:
        """Enqueue jobs in order, pipelined; see ``AsyncProducer.enqueue_many``."""
        return self.client.run(self._producer.enqueue_many(payloads))
