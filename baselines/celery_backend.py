"""``celery-rabbitmq`` and ``celery-redis``: Celery configured for reliable work queues.

The app: ``task_acks_late=True`` (ack after the task returns), ``task_reject_on_worker_lost=True``,
``worker_prefetch_multiplier = prefetch``, publisher confirms on RabbitMQ
(``confirm_publish``), one durable queue named after ``queue``, JSON messages with the
payload in base64. Every queue's Redis keys live under ``lqc:<queue>:``
(``global_keyprefix``), so runs never share kombu's ``unacked`` bookkeeping.

Workers are real Celery workers: ``experiments.worker --backend celery-...`` runs
``app.Worker(pool="threads")`` *in its own process* (``Backend.serve``), so SIGKILL and
SIGSTOP reach the process that runs the job (prefork would leave children behind), and
the consumer's event loop stays free to send AMQP heartbeats while a job runs. The task
body calls the plug-in function and the same hooks as ``baselines.worker_loop``
(deliver, start, finish, result sink, effect); a custom ``Request.acknowledge`` records
``ack`` / ``ack_error`` once Celery has acked. A function that raises is retried by
``Task.retry`` (a republish with ``retries + 1``, Celery's own attempt counter) until
``max_attempts``, then dead-lettered.

``consumer()`` reads the same queue with kombu directly (the contract tests use it);
it decodes Celery's message protocol 2 and settles messages as the Celery worker would.

| knob | celery-rabbitmq | celery-redis |
| --- | --- | --- |
| ``heartbeat_s`` | ``broker_heartbeat`` (AMQP); Celery has no per-task heartbeat, ``Delivery.heartbeat`` is a no-op | no heartbeat at all (Redis has none) |
| ``timeout_s`` | RabbitMQ ``consumer_timeout``, set as for ``rabbitmq-classic`` before the worker connects | ``visibility_timeout``; kombu restores expired unacked messages on a sweep every ``timeout_s``/4 |
| ``prefetch`` | ``worker_prefetch_multiplier`` | same |
| ``max_attempts`` | ``max_retries = max_attempts - 1`` on failure; then the job goes to ``<queue>.dead`` | same |

What Celery cannot do: crash redeliveries are not counted (``retries`` counts only
explicit retries; ``attempt`` adds one when the broker flags a redelivery, so it is
approximate), so a job that kills its worker is redelivered forever; it has no
dead-letter queue (the adapter keeps ``<queue>.dead``); on Redis, redelivery of a dead
worker's job waits for ``visibility_timeout`` and for some worker's restore sweep.
"""
from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time

import kombu
from celery import Celery
from celery.signals import worker_ready
from celery.worker.request import Request

from baselines import _redis
from baselines.base import AckError, Backend, BackendError, Consumer, Delivery, new_job_id, split_address, unavailable
from baselines.servers import RABBITMQ, REDIS, Server
from baselines.rabbitmq import server_consumer_timeout
from logqueue.client.worker import run_function

TASK_NAME = "logqueue.job"

# What the running worker process needs inside the task body; set by ``serve``.
_context: dict = {}
_inflight: dict[str, "CeleryDelivery"] = {}  # task id -> delivery being worked on in this process
_inflight_lock = threading.Lock()


class CeleryDelivery(Delivery):
    """A Celery message. ``attempt`` = Celery's ``retries`` + 1, plus 1 if the broker flags a redelivery (approximate)."""

    def __init__(self, backend: "CeleryBackend", job_id: str, payload: bytes, attempt: int, message=None,
                 consumer: "CeleryConsumer | None" = None) -> None:
        self._b = backend
        self._message = message
        self._consumer = consumer
        self.job_id, self.payload, self.attempt = job_id, payload, attempt
        self.outcome = ""  # inside a worker: "effect", "retry" or "dead", read by LqRequest.acknowledge

    def _settle(self, fn, what: str) -> None:
        try:
            if self._consumer is not None:
                # Read what the broker already sent first: a channel it closed (consumer_timeout)
                # must refuse this settle, not swallow it (an AMQP ack has no reply).
                self._consumer.poll()
            fn()
        except Exception as exc:  # kombu raises transport-specific errors for a closed channel
            raise AckError(f"{self._b.name}: cannot {what} job {self.job_id}: {type(exc).__name__}: {exc}") from None

    def ack(self, result: bytes = b"") -> None:
        self._settle(self._message.ack, "ack")

    def nack(self, requeue: bool = True) -> None:
        """Like Celery's worker: republish with ``retries + 1``, or dead-letter at ``max_attempts``; then ack."""
        if requeue and self.attempt < self._b.config.max_attempts:
            self._b.send(self.payload, self.job_id, retries=self.attempt)
        else:
            self._b.dead_letter(self.job_id)
        self.ack()

    def heartbeat(self) -> None:
        """No-op: Celery has no per-task heartbeat or lease."""


def _attempt(retries: int | None, delivery_info: dict | None) -> int:
    return (retries or 0) + 1 + (1 if (delivery_info or {}).get("redelivered") else 0)


class LqRequest(Request):
    """Records ``ack`` / ``ack_error`` when Celery's ack of a job that produced its effect runs."""

    def acknowledge(self):
        with _inflight_lock:
            d = _inflight.pop(self.id, None)
        if d is not None and d.outcome == "effect":
            # Celery does not ack here: it schedules ``message.ack_log_error`` on the worker's
            # event loop, which calls ``message.ack`` there; wrap that to see the outcome.
            message, hooks = self._message, _context["hooks"]
            broker_ack = message.ack

            def ack_and_record(*args, **kwargs):
                try:
                    broker_ack(*args, **kwargs)
                except Exception as exc:  # kombu logs and swallows it after us
                    hooks.ack_error(d, f"{d._b.name}: Celery could not ack job {d.job_id}: {type(exc).__name__}: {exc}")
                    raise
                hooks.ack(d)

            message.ack = ack_and_record
        super().acknowledge()


def _run_job(task, payload_b64: str) -> None:
    """The task body in a worker process: the same steps as ``baselines.worker_loop.process``."""
    ctx = _context
    backend, hooks = ctx["backend"], ctx["hooks"]
    req = task.request
    d = CeleryDelivery(backend, req.id, base64.b64decode(payload_b64), _attempt(req.retries, req.delivery_info))
    with _inflight_lock:
        _inflight[d.job_id] = d
    hooks.deliver(d)
    hooks.start(d)
    result, error = run_function(ctx["fn"], d.payload)
    hooks.finish(d, result, error)
    if error is not None:
        if d.attempt < backend.config.max_attempts:
            d.outcome = "retry"
            raise task.retry(countdown=0, max_retries=None)
        d.outcome = "dead"
        backend.dead_letter(d.job_id)
        hooks.dead_letter(d.job_id, d.attempt, f"max_attempts={backend.config.max_attempts} reached; last error {error}")
        return
    if ctx["sink"] is not None:
        ctx["sink"].write(d.job_id, ctx["worker_id"], result)
    hooks.effect(d, result)
    d.outcome = "effect"


class CeleryBackend(Backend):
    """Shared by both brokers; subclasses give the broker URL and transport options."""

    server: Server  # the broker

    def __init__(self, config) -> None:
        super().__init__(config)
        self.dead_queue_name = f"{config.queue}.dead"
        self.app = self._make_app()
        self.task = self.app.task(bind=True, name=TASK_NAME, Request=LqRequest)(_run_job)
        self._conn: kombu.Connection | None = None
        self._lock = threading.Lock()  # kombu connections are not thread-safe

    def broker_url(self) -> str:
        raise NotImplementedError

    def transport_options(self) -> dict:
        return {}

    def _make_app(self) -> Celery:
        q = self.config.queue
        app = Celery(f"logqueue-{q}", set_as_current=False)
        app.conf.update(
            broker_url=self.broker_url(),
            broker_transport_options=self.transport_options(),
            broker_heartbeat=max(1, round(self.config.heartbeat_s)),
            broker_connection_retry_on_startup=True,
            broker_connection_timeout=2,
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=self.config.prefetch,
            task_serializer="json",
            accept_content=["json"],
            task_ignore_result=True,
            task_queues=[self._queue(q)],
            task_default_queue=q,
            task_default_exchange=q,
            task_default_routing_key=q,
            worker_hijack_root_logger=False,
            worker_send_task_events=False,
            worker_enable_remote_control=False,  # no pidbox exchange/queue left on the broker
            task_send_sent_event=False,
        )
        return app

    @staticmethod
    def _queue(name: str) -> kombu.Queue:
        return kombu.Queue(name, kombu.Exchange(name, type="direct", durable=True), routing_key=name, durable=True)

    def _connection(self) -> kombu.Connection:
        conn = self.app.connection_for_write()
        try:
            conn.ensure_connection(max_retries=1, timeout=3)
        except Exception as exc:  # kombu raises the transport's own error types
            conn.release()
            raise unavailable(self.name, self.server, self.config.addresses[self.server.name], exc) from None
        return conn

    def connect(self) -> None:
        self._conn = self._connection()
        with self._lock:
            for name in (self.config.queue, self.dead_queue_name):
                self._queue(name)(self._conn.default_channel).declare()

    def send(self, payload: bytes, job_id: str, retries: int = 0) -> None:
        """Publish a task message the way ``Task.apply_async`` / ``Task.retry`` does (confirmed on RabbitMQ)."""
        try:
            with self._lock:
                self.task.apply_async(
                    args=[base64.b64encode(payload).decode()],
                    task_id=job_id,
                    retries=retries,
                    connection=self._conn,
                    queue=self.config.queue,
                )
        except Exception as exc:
            raise BackendError(f"{self.name}: publish of job {job_id} failed ({type(exc).__name__}: {exc})") from None

    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        self.send(bytes(payload), job_id)
        return job_id

    def dead_letter(self, job_id: str) -> None:
        with self._lock:
            producer = kombu.Producer(self._conn.default_channel)
            producer.publish({"job": job_id}, exchange=self.dead_queue_name, routing_key=self.dead_queue_name,
                             serializer="json", delivery_mode=2, declare=[self._queue(self.dead_queue_name)])

    def dead_letters(self) -> list[str]:
        # Read without acking, then close the channel: the broker (or kombu's Redis
        # emulation, restore_at_shutdown) puts the messages back.
        conn = self._connection()
        ids: list[str] = []
        try:
            channel = conn.channel()
            queue = self._queue(self.dead_queue_name)(channel)
            while (message := queue.get(no_ack=False)) is not None:
                ids.append(message.decode()["job"])
            channel.close()
        finally:
            conn.release()
        return ids

    def consumer(self, worker_id: str) -> "CeleryConsumer":
        return CeleryConsumer(self, worker_id)

    def purge(self) -> None:
        with self._lock:
            for name in (self.config.queue, self.dead_queue_name):
                self._queue(name)(self._conn.default_channel).purge()

    def delete(self) -> None:
        with self._lock:
            channel = self._conn.default_channel
            for name in (self.config.queue, self.dead_queue_name):
                self._queue(name)(channel).delete()
                kombu.Exchange(name, type="direct")(channel).delete()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.release()
            self._conn = None

    def consumer_setup(self):
        """A context to open a consumer's channel in (RabbitMQ: its consumer_timeout); none by default."""
        return contextlib.nullcontext()

    def serve(self, fn, worker_id: str, hooks, result_sink=None, concurrency: int = 1, stop_event=None) -> None:
        """Run a real Celery worker in this process until SIGTERM/SIGINT or ``stop_event``.

        The thread pool keeps every job in this process (so SIGKILL/SIGSTOP of this PID hit
        it) and leaves the consumer loop free for heartbeats.
        """
        _context.update(backend=self, fn=fn, hooks=hooks, sink=result_sink, worker_id=worker_id)
        worker = self.app.Worker(
            hostname=f"{worker_id}@logqueue",
            pool="threads",
            concurrency=concurrency,
            queues=[self.config.queue],
            loglevel="WARNING",
            without_heartbeat=True,
            without_gossip=True,
            without_mingle=True,
            quiet=True,
            redirect_stdouts=False,
        )
        if stop_event is not None:
            def stop_when_asked() -> None:
                stop_event.wait()
                worker.stop(in_sighandler=False)

            threading.Thread(target=stop_when_asked, name="celery-stop", daemon=True).start()
        with contextlib.ExitStack() as setup:
            # Hold the consumer set-up until the worker's consumer is running, so its
            # channel is opened under it (signals are weakly referenced: keep ``ready``).
            setup.enter_context(self.consumer_setup())

            def ready(**_) -> None:
                setup.close()

            worker_ready.connect(ready, weak=False)
            try:
                worker.start()
            finally:
                worker_ready.disconnect(ready)


class CeleryRabbitMQBackend(CeleryBackend):
    name = "celery-rabbitmq"
    server = RABBITMQ
    servers = (RABBITMQ,)
    durability = "Celery over RabbitMQ (durable queue, persistent messages)"

    def broker_url(self) -> str:
        host, port = split_address(self.config.addresses["rabbitmq"])
        return f"pyamqp://guest:guest@{host}:{port}//"

    def transport_options(self) -> dict:
        return {"confirm_publish": True}

    def consumer_setup(self):
        return server_consumer_timeout(self.name, self.config.addresses["rabbitmq"], self.config.timeout_s)


class CeleryRedisBackend(CeleryBackend):
    name = "celery-redis"
    server = REDIS
    servers = (REDIS,)
    durability = "Celery over Redis (server's persistence settings)"

    def broker_url(self) -> str:
        host, port = split_address(self.config.addresses["redis"])
        return f"redis://{host}:{port}/0"

    def transport_options(self) -> dict:
        sweep = max(1, round(self.config.timeout_s / 4))
        return {
            "visibility_timeout": self.config.timeout_s,
            "unacked_restore_interval": sweep,
            "unacked_restore_throttle": 1,
            "global_keyprefix": f"lqc:{self.config.queue}:",
            "socket_timeout": 10,
        }

    def delete(self) -> None:
        super().delete()
        r = _redis.client(self.config)
        try:
            _redis.delete_prefix(r, f"lqc:{self.config.queue}:")
        finally:
            r.close()


class CeleryConsumer(Consumer):
    """Reads the Celery queue with kombu and settles messages as Celery's worker would."""

    def __init__(self, backend: CeleryBackend, worker_id: str) -> None:
        self.backend = backend
        self.worker_id = worker_id
        # No AMQP heartbeat on this connection: nothing would send it while a job runs in
        # this thread (Celery's own worker sends it from its event loop).
        self._conn = backend.app.connection_for_read(heartbeat=0)
        self._inbox: list[CeleryDelivery] = []
        self._open()

    def _open(self) -> None:
        with self.backend.consumer_setup():
            self._conn.ensure_connection(max_retries=1, timeout=3)
            self._channel = self._conn.channel()
        self._channel.basic_qos(0, self.backend.config.prefetch, False)
        self._consumer = kombu.Consumer(self._channel, queues=[self.backend._queue(self.backend.config.queue)],
                                        callbacks=[self._on_message], accept=["json"])
        self._consumer.consume()

    def _reopen(self) -> None:
        """After the broker closed the channel (e.g. consumer_timeout): drop what it requeued, consume again."""
        self._inbox.clear()
        try:
            self._channel.close()
        except Exception:  # already closed by the broker
            pass
        self._conn.close()
        self._conn = self.backend.app.connection_for_read(heartbeat=0)
        self._open()

    def _on_message(self, body, message) -> None:
        args = body[0] if isinstance(body, (list, tuple)) else body.get("args", [])
        headers = message.headers or {}
        attempt = _attempt(headers.get("retries"), message.delivery_info)
        self._inbox.append(
            CeleryDelivery(self.backend, headers.get("id", ""), base64.b64decode(args[0]), attempt, message, self)
        )

    def poll(self) -> None:
        """Process frames the broker has already sent, without waiting (raises if it closed the channel)."""
        try:
            self._conn.drain_events(timeout=0)
        except socket.timeout:
            pass

    def receive(self, timeout_s: float) -> CeleryDelivery | None:
        end = time.monotonic() + timeout_s
        while not self._inbox:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self._conn.drain_events(timeout=remaining)
            except socket.timeout:
                return None
            except (*self._conn.connection_errors, *self._conn.channel_errors):
                self._reopen()
        return self._inbox.pop(0)

    def close(self) -> None:
        try:
            self._consumer.cancel()
            self._channel.close()  # unacked messages go back (kombu's Redis emulation restores them too)
        except Exception:  # already cut off: the broker's own redelivery path applies
            pass
        self._conn.release()
