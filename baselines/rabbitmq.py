"""``rabbitmq-classic`` and ``rabbitmq-quorum``: RabbitMQ through pika, configured for reliable work queues.

Both use a durable queue, persistent messages (``delivery_mode=2``), publisher confirms
(``enqueue`` returns after the broker's ``basic.ack``), manual consumer acks and
``basic_qos(prefetch)``. Each consumer owns a connection driven by its own I/O thread,
so AMQP heartbeats flow while the worker function runs (pika is not thread-safe: acks
are handed to that thread with ``add_callback_threadsafe``). When the broker closes the
channel or connection, the thread reconnects; deliveries of the old channel are stale
and their ack raises ``AckError`` with the broker's reason.

The ack timeout. RabbitMQ 3.10 has only a node-wide ``consumer_timeout`` (per-queue
``x-consumer-timeout`` came in 3.12); a channel reads it when it opens and checks it on
its tick, every ``channel_tick_interval`` (60 s by default, which is why a 5 s timeout
fired only after 60 s). So each consumer, just before opening its channel, runs
``rabbitmqctl eval`` to set ``consumer_timeout`` to ``timeout_s`` and to lower
``channel_tick_interval`` to ``timeout_s``/5 (never below 200 ms, never raised), holding
a machine-wide file lock until its channel is open so concurrent consumers with other
timeouts each get their own. Detection then takes ``timeout_s`` plus up to one tick.
When ``rabbitmqctl`` cannot be used (no CLI, broker on another host) the server's own
setting applies and a warning says so. A timed-out channel is closed by the broker with
``PRECONDITION_FAILED``; its unacked messages are requeued.

| knob | classic | quorum |
| --- | --- | --- |
| ``heartbeat_s`` | AMQP connection heartbeat (whole seconds, at least 1); ``Delivery.heartbeat`` is a no-op (no per-message lease) | same |
| ``timeout_s`` | ``consumer_timeout`` (see above) | same |
| ``prefetch`` | ``basic_qos(prefetch_count)`` | same |
| ``max_attempts`` | counted by the adapter: a nack republishes the job with header ``x-attempt`` + 1 and acks the original; the nack of the last attempt dead-letters it | ``x-delivery-limit`` = ``max_attempts`` - 1: the broker counts every return (nack, channel or connection loss) and dead-letters |
| dead letters | ``<queue>.dlx`` exchange -> ``<queue>.dead`` queue | same |

``enqueue_many`` pipelines: it publishes on a confirm-mode channel of its own
connection (pika's ``SelectConnection``, driven by its own I/O thread, opened on first
use and kept until ``close``) with at most ``window`` messages unconfirmed, and returns
when the broker has confirmed them all.

What classic queues cannot do: they keep no delivery counter, only a ``redelivered``
flag, so ``attempt`` is approximate (any number of crash-redeliveries counts as one) and
a job that kills its worker every time is redelivered forever. Both: AMQP acks get no
reply, so an ack sent just as the broker closes the channel is lost silently (the job is
redelivered).
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import shutil
import subprocess
import threading
import time
from concurrent.futures import Future

import pika
import pika.exceptions

from baselines.base import (AckError, Backend, BackendError, BackendUnavailable, Consumer, Delivery, new_job_id,
                            split_address, unavailable)
from baselines.servers import RABBITMQ

log = logging.getLogger(__name__)

LOCK_PATH = "/tmp/logqueue-rabbitmq-consumer-timeout.lock"
MIN_TICK_MS = 200
# How long the I/O thread blocks in one process_data_events call: bounds how late it
# notices a stop request or a thread-safe callback.
IO_SLICE_S = 0.1
ACK_WAIT_S = 10.0


def _parameters(backend: "RabbitMQBackend", address: str) -> pika.ConnectionParameters:
    host, port = split_address(address)
    return pika.ConnectionParameters(
        host=host,
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        heartbeat=max(1, round(backend.config.heartbeat_s)),
        connection_attempts=1,
        socket_timeout=5,
        stack_timeout=10,
        blocked_connection_timeout=30,
    )


def connection_parameters(backend: "RabbitMQBackend") -> pika.ConnectionParameters:
    """The first node's parameters of ``backend`` (for a ``SelectConnection``, which takes one)."""
    return backend.connection_parameters()[0]


def _set_server_consumer_timeout(address: str, timeout_s: float) -> bool:
    """Set the node's consumer_timeout and (lower) its channel tick; False when it cannot."""
    host, _ = split_address(address)
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or host not in ("127.0.0.1", "localhost", "::1"):
        return False
    timeout_ms = max(1, int(timeout_s * 1000))
    tick_ms = max(MIN_TICK_MS, timeout_ms // 5)
    expr = (
        f"ok = application:set_env(rabbit, consumer_timeout, {timeout_ms}), "
        f"{{ok, Tick}} = application:get_env(rabbit, channel_tick_interval), "
        f"ok = application:set_env(rabbit, channel_tick_interval, min(Tick, {tick_ms}))."
    )
    try:
        done = subprocess.run([ctl, "eval", expr], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def server_consumer_timeout(backend_name: str, address: str, timeout_s: float):
    """Set the node's consumer_timeout to ``timeout_s``; open the consumer's channel inside this block.

    A machine-wide file lock is held for the whole block, so no other consumer changes the
    node-wide setting between ours and the moment our channel reads it.
    """
    with open(LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _set_server_consumer_timeout(address, timeout_s):
            log.warning("%s: could not set the server's consumer_timeout (no local rabbitmqctl); the server's own applies", backend_name)
        yield


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (pika.exceptions.ChannelClosed, pika.exceptions.ConnectionClosed)):
        return f"{type(exc).__name__}: {exc.reply_code} {exc.reply_text}"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class RabbitMQBackend(Backend):
    """Shared by both queue types; subclasses give the queue arguments."""

    queue_type = "classic"
    servers = (RABBITMQ,)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.dlx = f"{config.queue}.dlx"
        self.dead_queue = f"{config.queue}.dead"
        self._conn: pika.BlockingConnection | None = None
        self._ch = None
        self._lock = threading.Lock()  # pika is not thread-safe; the backend may be shared
        self._pipeline: _PipelinedPublisher | None = None
        self._pipeline_lock = threading.Lock()  # one enqueue_many batch at a time

    def queue_arguments(self) -> dict:
        return {"x-dead-letter-exchange": self.dlx}

    def node_addresses(self) -> list[str]:
        """The nodes a connection may go to, tried in this order (one broker here; a cluster overrides it)."""
        return [self.config.addresses["rabbitmq"]]

    def connection_parameters(self) -> list[pika.ConnectionParameters]:
        return [_parameters(self, address) for address in self.node_addresses()]

    def unreachable(self, reason: str) -> BackendUnavailable:
        return unavailable(self.name, RABBITMQ, self.config.addresses["rabbitmq"], reason)

    def consumer_timeout(self):
        """The block in which a consumer opens its channel (see ``server_consumer_timeout``)."""
        return server_consumer_timeout(self.name, self.config.addresses["rabbitmq"], self.config.timeout_s)

    def open_connection(self) -> pika.BlockingConnection:
        try:
            return pika.BlockingConnection(self.connection_parameters())
        except pika.exceptions.AMQPError as exc:
            raise self.unreachable(_describe(exc) or "connection refused") from None

    def declare(self, ch) -> None:
        ch.exchange_declare(self.dlx, exchange_type="direct", durable=True)
        ch.queue_declare(self.dead_queue, durable=True)
        ch.queue_bind(self.dead_queue, self.dlx, routing_key=self.config.queue)
        ch.queue_declare(self.config.queue, durable=True, arguments=self.queue_arguments())

    def connect(self) -> None:
        with self._lock:
            self._open_publisher()
            self.declare(self._ch)

    def _open_publisher(self) -> None:
        self._conn = self.open_connection()
        self._ch = self._conn.channel()
        self._ch.confirm_delivery()

    def _channel(self):
        """The publisher / admin channel, reopened if the connection died while idle. Hold ``_lock``."""
        # Handle heartbeats that came in while idle; a dead connection is reopened before an
        # operation, never after a failed one, so a job is never published twice by this path.
        try:
            self._conn.process_data_events(0)
        except pika.exceptions.AMQPError:
            pass
        if self._conn.is_closed or self._ch.is_closed:
            self._open_publisher()
        return self._ch

    def publish(self, payload: bytes, job_id: str, attempt: int = 1) -> None:
        """Publish one persistent message and wait for its confirm."""
        props = pika.BasicProperties(delivery_mode=2, message_id=job_id, headers={"x-attempt": attempt})
        with self._lock:
            ch = self._channel()
            try:
                ch.basic_publish("", self.config.queue, payload, properties=props, mandatory=True)
            except pika.exceptions.AMQPError as exc:
                raise BackendError(f"{self.name}: publish of job {job_id} not confirmed ({_describe(exc)})") from None

    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        self.publish(payload, job_id)
        return job_id

    def _enqueue_batch(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        """Pipelined: at most ``window`` publishes awaiting their confirm at once."""
        ids, payloads = [list(x) for x in zip(*jobs)]
        with self._pipeline_lock:
            if self._pipeline is None or self._pipeline.broken:
                if self._pipeline is not None:
                    self._pipeline.close()
                self._pipeline = _PipelinedPublisher(self)
            self._pipeline.publish(payloads, ids, window)

    def consumer(self, worker_id: str) -> "RabbitMQConsumer":
        return RabbitMQConsumer(self, worker_id)

    def dead_letters(self) -> list[str]:
        with self._lock:
            self._channel()
            ch = self._conn.channel()
            ids = []
            try:
                while True:
                    method, props, _ = ch.basic_get(self.dead_queue, auto_ack=False)
                    if method is None:
                        break
                    ids.append(props.message_id)
            finally:
                ch.close()  # unacked gets go back to the dead-letter queue
            return ids

    def purge(self) -> None:
        with self._lock:
            ch = self._channel()
            ch.queue_purge(self.config.queue)
            ch.queue_purge(self.dead_queue)

    def delete(self) -> None:
        with self._lock:
            ch = self._channel()
            ch.queue_delete(self.config.queue)
            ch.queue_delete(self.dead_queue)
            ch.exchange_delete(self.dlx)

    def close(self) -> None:
        with self._pipeline_lock:
            if self._pipeline is not None:
                self._pipeline.close()
                self._pipeline = None
        with self._lock:
            if self._conn is not None and self._conn.is_open:
                try:
                    self._conn.close()
                except pika.exceptions.AMQPError:
                    pass
            self._conn = None

    def attempt_of(self, method, props) -> int:
        """Classic queues: the adapter's own counter plus one if the broker says it redelivered."""
        counted = int((props.headers or {}).get("x-attempt", 1))
        return counted + (1 if method.redelivered else 0)

    def settle_nack(self, d: "RabbitMQDelivery", requeue: bool) -> None:
        """Classic queues: count the attempt by republishing, then ack the original."""
        if requeue and d.attempt < self.config.max_attempts:
            self.publish(d.payload, d.job_id, attempt=d.attempt + 1)
            d.consumer.call(d, lambda ch: ch.basic_ack(d.delivery_tag))
        else:
            d.consumer.call(d, lambda ch: ch.basic_nack(d.delivery_tag, requeue=False))


class _PipelinedPublisher:
    """A confirm-mode channel on its own ``SelectConnection`` and I/O thread (``enqueue_many``).

    ``publish`` hands a batch to the I/O thread and waits; everything else runs there.
    After a channel or connection error the publisher is ``broken`` and is replaced.
    """

    def __init__(self, backend: RabbitMQBackend) -> None:
        self.backend = backend
        self.broken = False
        self._ch = None
        self._tag = 0  # the last delivery tag used on the channel
        self._batch: dict | None = None
        self._opened: Future = Future()
        self._conn = pika.SelectConnection(connection_parameters(backend), on_open_callback=self._on_open,
                                           on_open_error_callback=self._on_open_error,
                                           on_close_callback=self._on_closed)
        self._thread = threading.Thread(target=self._conn.ioloop.start, name=f"rabbitmq-publish-{backend.config.queue}",
                                        daemon=True)
        self._thread.start()
        try:
            self._opened.result(timeout=ACK_WAIT_S)
        except BaseException:
            self.close()
            raise

    # --- the I/O thread ---

    def _on_open(self, conn) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, _conn, exc) -> None:
        self._opened.set_exception(self.backend.unreachable(_describe(exc)))
        self._conn.ioloop.stop()

    def _on_channel(self, ch) -> None:
        self._ch = ch
        ch.add_on_close_callback(lambda _ch, reason: self._fail(f"channel closed ({_describe(reason)})"))
        ch.add_on_return_callback(lambda _ch, method, props, _body: self._fail(
            f"job {props.message_id} returned by the broker ({method.reply_code} {method.reply_text})"))
        ch.confirm_delivery(self._on_confirm, callback=lambda _frame: self._opened.set_result(None))

    def _on_closed(self, _conn, reason) -> None:
        self._fail(f"connection closed ({_describe(reason)})")
        if not self._opened.done():
            self._opened.set_exception(BackendError(f"{self.backend.name}: {_describe(reason)}"))
        self._conn.ioloop.stop()

    def _fail(self, reason: str) -> None:
        self.broken = True
        batch, self._batch = self._batch, None
        if batch is not None and not batch["done"].done():
            batch["done"].set_exception(BackendError(f"{self.backend.name}: publish not confirmed: {reason}"))

    def _start(self, batch: dict) -> None:
        if self.broken or self._ch is None or not self._ch.is_open:
            self._batch = batch
            self._fail("channel is not open")
            return
        self._batch = batch
        batch["confirmed_upto"] = self._tag  # the previous batches are confirmed in full
        self._fill()

    def _fill(self) -> None:
        b = self._batch
        ch, queue_name = self._ch, self.backend.config.queue
        payloads, ids = b["payloads"], b["ids"]
        # invariant: delivery tags of a confirm-mode channel count its publishes from 1
        while b["sent"] < len(payloads) and self._unconfirmed(b) < b["window"]:
            k = b["sent"]
            props = pika.BasicProperties(delivery_mode=2, message_id=ids[k])  # no x-attempt: a first attempt
            ch.basic_publish("", queue_name, payloads[k], properties=props, mandatory=True)
            b["sent"] += 1
            self._tag += 1

    def _unconfirmed(self, b: dict) -> int:
        # confirms are for tags of this batch: above confirmed_upto (multiple) or in singles
        return self._tag - b["confirmed_upto"] - len(b["singles"])

    def _on_confirm(self, frame) -> None:
        b = self._batch
        if b is None:
            return
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self._fail(f"the broker nacked delivery tag {method.delivery_tag}")
            return
        if method.multiple:
            b["confirmed_upto"] = max(b["confirmed_upto"], method.delivery_tag)
            b["singles"] = {t for t in b["singles"] if t > method.delivery_tag}
        else:
            b["singles"].add(method.delivery_tag)
        if b["sent"] == len(b["payloads"]) and self._unconfirmed(b) == 0:
            self._batch = None
            b["done"].set_result(None)
        else:
            self._fill()

    # --- called by enqueue_many ---

    def publish(self, payloads: list[bytes], ids: list[str], window: int) -> None:
        """Publish every payload (at most ``window`` unconfirmed); return when all are confirmed."""
        batch = {"payloads": payloads, "ids": ids, "window": window, "sent": 0, "done": Future(),
                 "confirmed_upto": 0, "singles": set()}
        try:
            self._conn.ioloop.add_callback_threadsafe(lambda: self._start(batch))
        except pika.exceptions.AMQPError as exc:
            raise BackendError(f"{self.backend.name}: publish not confirmed: {_describe(exc)}") from None
        try:
            batch["done"].result(timeout=ACK_WAIT_S + len(payloads) / 100)
        except TimeoutError:
            self.broken = True
            raise BackendError(f"{self.backend.name}: publish of {len(payloads)} jobs not confirmed in time") from None

    def close(self) -> None:
        if self._thread.is_alive():
            def shut() -> None:
                if self._conn.is_open:
                    self._conn.close()
                else:
                    self._conn.ioloop.stop()

            self._conn.ioloop.add_callback_threadsafe(shut)
            self._thread.join(timeout=ACK_WAIT_S)


class RabbitMQClassicBackend(RabbitMQBackend):
    name = "rabbitmq-classic"
    durability = "durable classic queue, persistent messages, publisher confirms (confirmed once on disk)"


class RabbitMQQuorumBackend(RabbitMQBackend):
    name = "rabbitmq-quorum"
    durability = "quorum queue (Raft, 3.10 single node: fsynced WAL) with publisher confirms, persistent messages"
    queue_type = "quorum"
    fencing_token = True  # x-delivery-count is exact: the attempt is the delivery's token

    def queue_arguments(self) -> dict:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.config.max_attempts - 1,
            "x-dead-letter-exchange": self.dlx,
        }

    def attempt_of(self, method, props) -> int:
        """Quorum queues: exact, from the broker's ``x-delivery-count`` (returns so far)."""
        return int((props.headers or {}).get("x-delivery-count", 0)) + 1

    def settle_nack(self, d: "RabbitMQDelivery", requeue: bool) -> None:
        """The broker counts the return and dead-letters past ``x-delivery-limit``."""
        d.consumer.call(d, lambda ch: ch.basic_nack(d.delivery_tag, requeue=requeue))


class RabbitMQDelivery(Delivery):
    def __init__(self, consumer: "RabbitMQConsumer", generation: int, method, props, body: bytes) -> None:
        self.consumer = consumer
        self.generation = generation
        self.delivery_tag = method.delivery_tag
        self.job_id = props.message_id or ""
        self.payload = body
        self.attempt = consumer.backend.attempt_of(method, props)
        self.token = self.attempt if consumer.backend.fencing_token else None

    def ack(self, result: bytes = b"") -> None:
        [error] = self.consumer.ack_many([self])
        if error is not None:
            raise error

    def nack(self, requeue: bool = True) -> None:
        self.consumer.backend.settle_nack(self, requeue)

    def heartbeat(self) -> None:
        """No-op: RabbitMQ has no per-message lease; the AMQP heartbeat is sent by the I/O thread."""


class RabbitMQConsumer(Consumer):
    def __init__(self, backend: RabbitMQBackend, worker_id: str) -> None:
        self.backend = backend
        self.worker_id = worker_id
        # Filled by the I/O thread (deque appends are atomic), which notifies ``_arrival``
        # once per slice of events rather than once per message.
        self._inbox: collections.deque[RabbitMQDelivery] = collections.deque()
        self._arrival = threading.Condition()
        # Of the current channel (I/O thread only): every delivery tag <= _floor is settled,
        # and so are those in _above.
        self._floor = 0
        self._above: set[int] = set()
        self._stop = threading.Event()
        self._generation = 0  # bumped on every (re)connect; older deliveries are stale
        self._lost_reason = ""  # why the previous channel went away
        self._conn: pika.BlockingConnection | None = None
        self._ch = None
        self._started: Future = Future()
        self._thread = threading.Thread(target=self._run, name=f"rabbitmq-io-{worker_id}", daemon=True)
        self._thread.start()
        self._started.result()  # re-raises BackendUnavailable from the first connect

    # --- the I/O thread ---

    def _open(self) -> None:
        b = self.backend
        with b.consumer_timeout():
            self._conn = b.open_connection()
            self._ch = self._conn.channel()
        self._ch.basic_qos(prefetch_count=b.config.prefetch)
        generation = self._generation = self._generation + 1
        self._floor, self._above = 0, set()  # tags count from 1 on every channel

        def on_message(_ch, method, props, body) -> None:
            self._inbox.append(RabbitMQDelivery(self, generation, method, props, body))

        self._ch.basic_consume(b.config.queue, on_message, auto_ack=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._open()
                if not self._started.done():
                    self._started.set_result(None)
                while not self._stop.is_set():
                    self._conn.process_data_events(time_limit=IO_SLICE_S)
                    if self._inbox:
                        with self._arrival:
                            self._arrival.notify()
                    if self._ch.is_closed:  # pika does not raise here when the broker closes the channel
                        # pika exposes the broker's close reason only through this attribute
                        raise self._ch._closing_reason or pika.exceptions.ChannelClosed(0, "channel closed")
            except (pika.exceptions.AMQPError, BackendError) as exc:
                self._lost_reason = _describe(exc)
                if not self._started.done():
                    self._started.set_exception(exc if isinstance(exc, BackendError) else BackendError(self._lost_reason))
                    return
                log.warning("%s consumer %s: %s; reconnecting", self.backend.name, self.worker_id, self._lost_reason)
                self._generation += 1
                self._shutdown_connection()
                self._stop.wait(0.5)
        self._shutdown_connection()

    def _shutdown_connection(self) -> None:
        if self._conn is not None and self._conn.is_open:
            try:
                self._conn.close()  # the broker requeues what we did not ack
            except pika.exceptions.AMQPError:
                pass
        self._conn = self._ch = None

    def _settled(self, tags: list[int]) -> None:
        self._above.update(tags)
        while self._floor + 1 in self._above:
            self._floor += 1
            self._above.remove(self._floor)

    def _ack_tags(self, ch, tags: list[int]) -> None:
        """One ``multiple=True`` ack when ``tags`` are exactly the channel's unsettled tags up to the highest, else one each."""
        tags = sorted(tags)
        if tags[0] == self._floor + 1 and tags[-1] - tags[0] + 1 == len(tags):
            ch.basic_ack(tags[-1], multiple=True)  # acks nothing outside the batch: all below it are settled
        else:
            for tag in tags:
                ch.basic_ack(tag)
        self._settled(tags)

    # --- called from worker threads ---

    def call(self, d: RabbitMQDelivery, action) -> None:
        """Run ``action(channel)`` for ``d`` on the I/O thread; raise ``AckError`` if ``d``'s channel is gone."""
        done: Future = Future()

        def run() -> None:
            try:
                if d.generation != self._generation or self._ch is None or not self._ch.is_open:
                    raise AckError(f"{self.backend.name}: channel of job {d.job_id} was closed ({self._lost_reason or 'closed'}); the broker requeued it")
                action(self._ch)
                self._settled([d.delivery_tag])
                done.set_result(None)
            except AckError as exc:
                done.set_exception(exc)
            except pika.exceptions.AMQPError as exc:
                done.set_exception(AckError(f"{self.backend.name}: cannot settle job {d.job_id}: {_describe(exc)}"))

        conn = self._conn
        if conn is None or d.generation != self._generation:
            raise AckError(f"{self.backend.name}: channel of job {d.job_id} was closed ({self._lost_reason or 'closed'}); the broker requeued it")
        try:
            conn.add_callback_threadsafe(run)
        except pika.exceptions.AMQPError as exc:
            raise AckError(f"{self.backend.name}: cannot settle job {d.job_id}: {_describe(exc)}") from None
        try:
            done.result(timeout=ACK_WAIT_S)
        except TimeoutError:
            raise AckError(f"{self.backend.name}: no answer from the connection's I/O thread within {ACK_WAIT_S:g}s") from None

    def ack_many(self, deliveries: list[RabbitMQDelivery], results: list[bytes] | None = None) -> list[AckError | None]:
        """One hand-off to the I/O thread for the whole batch: one ``multiple`` ack frame where that acks exactly the batch."""
        out: list[AckError | None] = [None] * len(deliveries)
        live = [k for k, d in enumerate(deliveries) if d.generation == self._generation]
        for k in set(range(len(deliveries))) - set(live):
            out[k] = AckError(f"{self.backend.name}: channel of job {deliveries[k].job_id} was closed "
                              f"({self._lost_reason or 'closed'}); the broker requeued it")
        if live:
            tags = [deliveries[k].delivery_tag for k in live]
            try:
                self.call(deliveries[live[0]], lambda ch: self._ack_tags(ch, tags))
            except AckError as exc:
                for k in live:
                    out[k] = exc
        return out

    def receive(self, timeout_s: float) -> RabbitMQDelivery | None:
        end = time.monotonic() + timeout_s
        while True:
            try:
                d = self._inbox.popleft()
            except IndexError:
                with self._arrival:
                    if not self._inbox:  # checked under the lock the I/O thread notifies with: no lost wake-up
                        remaining = end - time.monotonic()
                        if remaining <= 0:
                            return None
                        self._arrival.wait(remaining)
                continue
            if d.generation == self._generation:
                return d
            # else: prefetched on a channel that is gone; the broker has requeued it

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
