"""Reference clients for ``experiments bench --native``: each broker driven the best known way with its raw library.

They measure what the broker itself does on this machine, so the bench can say how far
each adapter is from it ("x native"). A reference uses the adapter's own configuration
(its servers -- a cluster's nodes, Sentinel's primary --, queue type / stream declaration
with its replicas, durability), a queue of its own next to the
adapter's, the same payloads, publish window, consumers, prefetch and ack batch, and
the same confirm semantics (every publish confirmed by the broker; every ack one the
broker can refuse where the adapter's can be refused):

- RabbitMQ (pika): publish on a ``SelectConnection`` in confirm mode with ``window``
  messages unconfirmed; each consumer a ``SelectConnection`` of its own with
  ``basic_qos(prefetch)``, acking from its I/O loop with one ``multiple=True`` ack per
  ``ack_batch`` deliveries or per read, whichever comes first.
- Redis Streams (redis-py): pipelined ``XADD``, ``window`` per round trip (then ``WAIT`` as
  the adapter's confirm does, for ``redis-sentinel``); each consumer
  ``XREADGROUP COUNT prefetch`` and one ``XACK`` per batch.
- NATS JetStream (nats-py): ``window`` publishes awaiting their ack at once; one asyncio
  loop with a task per consumer, each a pull ``fetch(batch=prefetch)`` with the ``ack_sync``
  of every ``ack_batch`` of it gathered.

A consume is timed as the adapter's is: from the moment every consumer is connected and
subscribed to the last ack (connecting is setup, not consuming).

A reference is found by the adapter's class (``reference_for``); backends without one
(the list and Celery adapters, logqueue, the stub) get no native figures.
"""
from __future__ import annotations

import asyncio
import threading
import time

from baselines.base import Backend
from baselines.nats_jetstream import NatsJetStreamBackend
from baselines.rabbitmq import RabbitMQBackend, connection_parameters
from baselines.redis_streams import WAIT_MS, RedisStreamsBackend

RECEIVE_S = 0.2  # one blocking read waits at most this long (bounds how late a consumer sees the end)


class Reference:
    """A native client on a queue of its own; ``publish`` then ``consume`` the same payloads."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.queue = f"{backend.config.queue}-native"

    def publish(self, payloads: list[bytes], window: int) -> None:
        raise NotImplementedError

    def consume(self, n: int, consumers: int, prefetch: int, ack_batch: int, timeout_s: float) -> float:
        """Seconds from the moment all ``consumers`` threads are connected to the last of ``n`` acks.

        As for the adapter (the bench's consumer pool), connecting is not timed: each
        thread connects and subscribes, then waits for the others.
        """
        counter = _Counter(n, consumers + 1)
        threads = [threading.Thread(target=self._consume_one, args=(counter, prefetch, ack_batch), daemon=True)
                   for _ in range(consumers)]
        for t in threads:
            t.start()
        try:
            counter.ready.wait(timeout_s)
        except threading.BrokenBarrierError:
            pass  # a thread failed (counter.error) or did not connect in time
        t0 = time.perf_counter()
        finished = not counter.ready.broken and counter.done.wait(timeout_s)
        counter.done.set()
        for t in threads:
            t.join(timeout=10)
        if counter.error:
            raise RuntimeError(counter.error)
        if not finished:
            raise TimeoutError(f"native consume: {counter.count} of {n} acked within {timeout_s:g} s")
        return counter.tally.last_ack - t0

    def _consume_one(self, counter: "_Counter", prefetch: int, ack_batch: int) -> None:
        raise NotImplementedError

    def delete(self) -> None:
        raise NotImplementedError


class _Counter:
    """The bench's ``Tally`` (each acked message's header read and recorded, the per-message
    work the bench's consumers do for an adapter too), plus the first error."""

    def __init__(self, n: int, parties: int = 1) -> None:
        from experiments.bench import PUBLISH, Tally  # bench imports this module on first use

        self.tally = Tally(PUBLISH, n)
        self.done = self.tally.done
        self.ready = threading.Barrier(parties)  # the consumers, connected, and the timer
        self.error = ""

    @property
    def count(self) -> int:
        return self.tally.count

    def add(self, payloads: list[bytes]) -> None:
        now = time.perf_counter()
        for p in payloads:
            self.tally.record(p, now)

    def fail(self, exc: BaseException) -> None:
        self.error = self.error or f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        self.ready.abort()
        self.done.set()


def _guarded(consume):
    def run(self, counter: _Counter, *args) -> None:
        try:
            consume(self, counter, *args)
        except Exception as exc:
            counter.fail(exc)
    return run


class RabbitMQReference(Reference):
    def __init__(self, backend: RabbitMQBackend) -> None:
        super().__init__(backend)
        conn = backend.open_connection()
        ch = conn.channel()
        ch.queue_declare(self.queue, durable=True, arguments=backend.queue_arguments())
        conn.close()

    def publish(self, payloads: list[bytes], window: int) -> None:
        """A ``SelectConnection`` in confirm mode, refilled to ``window`` unconfirmed on every confirm."""
        import pika

        n, sent, confirmed = len(payloads), 0, 0
        error: list[str] = []
        props = pika.BasicProperties(delivery_mode=2)

        def fill(ch) -> None:
            nonlocal sent
            while sent < n and sent - confirmed < window:
                ch.basic_publish("", self.queue, payloads[sent], properties=props)
                sent += 1

        def on_confirm(frame) -> None:
            nonlocal confirmed
            if isinstance(frame.method, pika.spec.Basic.Nack):
                error.append(f"nacked delivery tag {frame.method.delivery_tag}")
                conn.close()
                return
            confirmed = frame.method.delivery_tag if frame.method.multiple else confirmed + 1
            if confirmed >= n:
                conn.close()
            else:
                fill(channel[0])

        channel: list = []

        def on_channel(ch) -> None:
            channel.append(ch)
            ch.confirm_delivery(on_confirm, callback=lambda _f: fill(ch))

        conn = pika.SelectConnection(connection_parameters(self.backend),
                                     on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                     on_open_error_callback=lambda _c, exc: (error.append(str(exc)), conn.ioloop.stop()),
                                     on_close_callback=lambda _c, _reason: conn.ioloop.stop())
        conn.ioloop.start()
        if error or confirmed < n:
            raise RuntimeError(f"native publish: {confirmed} of {n} confirmed ({'; '.join(error) or 'closed'})")

    @_guarded
    def _consume_one(self, counter: _Counter, prefetch: int, ack_batch: int) -> None:
        """A ``SelectConnection`` (pika's own I/O loop, no thread hand-off) with ``basic_qos(prefetch)``.

        One ``multiple=True`` ack per ``ack_batch`` deliveries, or for what has arrived once
        a read is dispatched (a zero-delay timer runs after the loop's I/O): the adapter
        pool's rule, "what has already arrived, up to the ack batch".
        """
        import pika

        unacked: list[bytes] = []
        last_tag = 0
        error: list[str] = []

        def ack(ch) -> None:
            nonlocal unacked
            if unacked and ch.is_open:
                ch.basic_ack(last_tag, multiple=True)
                counter.add(unacked)
                unacked = []
            if counter.done.is_set() and conn.is_open:
                conn.close()

        def on_message(ch, method, _props, body) -> None:
            nonlocal last_tag
            if not unacked:  # the first of a read: settle the read once it is dispatched
                conn.ioloop.call_later(0, lambda: ack(ch))
            unacked.append(body)
            last_tag = method.delivery_tag
            if len(unacked) >= ack_batch:
                ack(ch)

        def watch() -> None:  # a consumer that gets nothing still sees the end
            if counter.done.is_set() and conn.is_open:
                conn.close()
            elif conn.is_open:
                conn.ioloop.call_later(RECEIVE_S, watch)

        def on_subscribed() -> None:
            counter.ready.wait()  # as the adapter's pool: connected and subscribed when the timer starts
            watch()

        def on_channel_closed(_ch, reason) -> None:
            if not counter.done.is_set():
                error.append(str(reason))
            if conn.is_open:
                conn.close()

        def on_channel(ch) -> None:
            ch.add_on_close_callback(on_channel_closed)
            ch.basic_qos(prefetch_count=prefetch,
                         callback=lambda _f: ch.basic_consume(self.queue, on_message, callback=lambda _f: on_subscribed()))

        conn = pika.SelectConnection(connection_parameters(self.backend),
                                     on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                     on_open_error_callback=lambda _c, exc: (error.append(str(exc)), conn.ioloop.stop()),
                                     on_close_callback=lambda _c, _reason: conn.ioloop.stop())
        try:
            conn.ioloop.start()
        finally:
            if conn.is_open:
                conn.close()
                conn.ioloop.start()  # runs until the close completes
        if error and not counter.done.is_set():
            raise RuntimeError(f"native consume: {'; '.join(error)}")

    def delete(self) -> None:
        conn = self.backend.open_connection()
        conn.channel().queue_delete(self.queue)
        conn.close()


class RedisStreamsReference(Reference):
    GROUP = "native"

    def __init__(self, backend: RedisStreamsBackend) -> None:
        super().__init__(backend)
        self._client = backend.client  # the adapter's server: one Redis, or Sentinel's primary
        self.stream = f"lqs:{self.queue}:stream"
        self._r = self._client()
        self._r.xgroup_create(self.stream, self.GROUP, id="0", mkstream=True)

    def publish(self, payloads: list[bytes], window: int) -> None:
        """``window`` XADDs per pipeline; with the adapter's ``replicas_to_wait``, its ``WAIT`` ends each."""
        wait = self.backend.replicas_to_wait
        for start in range(0, len(payloads), window):
            pipe = self._r.pipeline(transaction=False)
            for i, p in enumerate(payloads[start:start + window], start):
                pipe.xadd(self.stream, {"job": str(i), "payload": p})
            if wait:
                pipe.wait(wait, WAIT_MS)
            replies = pipe.execute()
            if wait and replies[-1] < wait:
                raise RuntimeError(f"native publish: WAIT {wait} answered {replies[-1]}")

    @_guarded
    def _consume_one(self, counter: _Counter, prefetch: int, ack_batch: int) -> None:
        r = self._client()
        r.ping()  # connected before the timer starts
        name = f"c{threading.get_ident()}"
        counter.ready.wait()
        while not counter.done.is_set():
            reply = r.xreadgroup(self.GROUP, name, {self.stream: ">"}, count=prefetch, block=int(RECEIVE_S * 1000))
            entries = [entry for _s, batch in reply or () for entry in batch]
            for start in range(0, len(entries), ack_batch):
                acked = entries[start:start + ack_batch]
                r.xack(self.stream, self.GROUP, *(entry_id for entry_id, _f in acked))
                counter.add([fields[b"payload"] for _id, fields in acked])
        r.close()

    def delete(self) -> None:
        self._r.delete(self.stream)
        self._r.close()


class JetStreamReference(Reference):
    def __init__(self, backend: NatsJetStreamBackend) -> None:
        super().__init__(backend)
        self.stream, self.subject = f"{backend.stream}_NATIVE", f"{backend.subject}.native"
        asyncio.run(self._with_js(self._declare))

    async def _with_js(self, work, *args):
        import nats

        nc = await nats.connect(servers=[f"nats://{a}" for a in self.backend.server_addresses()], connect_timeout=2)
        try:
            return await work(nc.jetstream(), *args)
        finally:
            await nc.close()

    async def _declare(self, js) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

        await js.add_stream(name=self.stream, subjects=[self.subject], retention=RetentionPolicy.WORK_QUEUE,
                            storage=StorageType.FILE, num_replicas=self.backend.replicas)
        await js.add_consumer(self.stream, ConsumerConfig(durable_name="native", ack_policy=AckPolicy.EXPLICIT,
                                                          ack_wait=self.backend.config.timeout_s))

    def publish(self, payloads: list[bytes], window: int) -> None:
        async def run(js) -> None:
            limit = asyncio.Semaphore(window)

            async def one(p: bytes) -> None:
                async with limit:
                    await js.publish(self.subject, p, timeout=10)

            await asyncio.gather(*(one(p) for p in payloads))

        asyncio.run(self._with_js(run))

    def consume(self, n: int, consumers: int, prefetch: int, ack_batch: int, timeout_s: float) -> float:
        """One asyncio loop (as nats-py is meant to be used) with ``consumers`` pull subscriptions as tasks;
        timed from when all are subscribed."""
        counter = _Counter(n)

        async def one(sub) -> None:
            while not counter.done.is_set():
                try:
                    msgs = await sub.fetch(batch=prefetch, timeout=RECEIVE_S)
                except asyncio.TimeoutError:  # nothing arrived (nats-py's fetch of a batch raises asyncio's)
                    continue
                for start in range(0, len(msgs), ack_batch):  # as the adapter's consumers: at most ack_batch together
                    acked = msgs[start:start + ack_batch]
                    await asyncio.gather(*(m.ack_sync(timeout=5) for m in acked))
                    counter.add([m.data for m in acked])

        async def run(js) -> float:
            subs = [await js.pull_subscribe_bind(durable="native", stream=self.stream) for _ in range(consumers)]
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(one(sub) for sub in subs)), timeout_s)
            return counter.tally.last_ack - t0

        return asyncio.run(self._with_js(run))

    def delete(self) -> None:
        asyncio.run(self._with_js(lambda js: js.delete_stream(self.stream)))


REFERENCES: list[tuple[type[Backend], type[Reference]]] = [
    (RabbitMQBackend, RabbitMQReference),
    (RedisStreamsBackend, RedisStreamsReference),
    (NatsJetStreamBackend, JetStreamReference),
]


def reference_for(backend: Backend) -> type[Reference] | None:
    """The reference client for this adapter's broker and queue kind, or ``None``."""
    return next((ref for cls, ref in REFERENCES if isinstance(backend, cls)), None)


def measure(backend: Backend, payloads: list[bytes], window: int, consumers: int, prefetch: int, ack_batch: int,
            timeout_s: float) -> dict | None:
    """``{"publish_per_s", "consume_per_s"}`` of the reference for ``backend`` (``None`` when it has none)."""
    cls = reference_for(backend)
    if cls is None:
        return None
    ref = cls(backend)
    try:
        t0 = time.perf_counter()
        ref.publish(payloads, window)
        publish_s = time.perf_counter() - t0
        consume_s = ref.consume(len(payloads), consumers, prefetch, ack_batch, timeout_s)
    finally:
        ref.delete()
    return {"publish_per_s": round(len(payloads) / publish_s, 1), "consume_per_s": round(len(payloads) / consume_s, 1)}
