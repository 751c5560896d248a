"""The generic worker loop: one plug-in function, any backend, hooks at every step.

For each delivery: ``deliver`` -> ``start`` -> ``fn(payload)`` (while a heartbeat thread
calls ``delivery.heartbeat()`` every ``heartbeat_s``) -> ``finish`` -> the effect ->
ack -> ``ack`` / ``ack_error``.

The effect: for brokers (``effect_on_ack`` False) it is the write of the result to the
run's result sink, made *before* the ack, so a worker that dies between the two leaves a
job that is redelivered and effected again (at-least-once, visible as a duplicate
effect). For logqueue the accepted ack carrying the result is the effect, so ``effect``
is recorded only after the ack succeeded. A function that raises is nacked; on its
``max_attempts``-th delivery that nack dead-letters it.
"""
from __future__ import annotations

import logging
import threading

from baselines.base import AckError, Backend, Delivery
from baselines.hooks import WorkerHooks
from logqueue.client.worker import run_function

log = logging.getLogger(__name__)

# How long one receive call blocks: bounds how late a stop request is noticed.
RECEIVE_TIMEOUT_S = 0.5


class _Heartbeat:
    """Calls ``delivery.heartbeat()`` every ``interval_s`` from a thread while the job runs."""

    def __init__(self, delivery: Delivery, interval_s: float) -> None:
        self._delivery = delivery
        self._interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{delivery.job_id}", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self._interval_s):
            try:
                self._delivery.heartbeat()
            except Exception as exc:  # a lost lease shows up as ack_error later; keep the job running
                log.warning("heartbeat for job %s failed: %s", self._delivery.job_id, exc)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def process(backend: Backend, delivery: Delivery, fn, worker_id: str, hooks: WorkerHooks, result_sink=None) -> None:
    """Run one delivery through ``fn`` and settle it with the backend (see the module docstring)."""
    d = delivery
    hooks.deliver(d)
    hooks.start(d)
    with _Heartbeat(d, backend.config.heartbeat_s):
        result, error = run_function(fn, d.payload)
    hooks.finish(d, result, error)
    if error is not None:
        exhausted = d.attempt >= backend.config.max_attempts
        try:
            d.nack(requeue=True)
        except AckError as exc:
            hooks.ack_error(d, str(exc))
            return
        if exhausted:
            hooks.dead_letter(d.job_id, d.attempt, f"max_attempts={backend.config.max_attempts} reached; last error {error}")
        return
    if not backend.effect_on_ack:
        if result_sink is not None:
            result_sink.write(d.job_id, worker_id, result)
        hooks.effect(d, result)
    try:
        d.ack(result)
    except AckError as exc:
        hooks.ack_error(d, str(exc))
        return
    if backend.effect_on_ack:
        hooks.effect(d, result)
    hooks.ack(d)


def _consume(backend: Backend, consumer_name: str, fn, worker_id: str, hooks, stop: threading.Event, sink) -> None:
    consumer = backend.consumer(consumer_name)
    try:
        while not stop.is_set():
            try:
                delivery = consumer.receive(RECEIVE_TIMEOUT_S)
            except Exception as exc:  # broker hiccup: the consumer reconnects; keep polling
                log.warning("worker %s: receive failed: %s", consumer_name, exc)
                stop.wait(RECEIVE_TIMEOUT_S)
                continue
            if delivery is not None:
                process(backend, delivery, fn, worker_id, hooks, sink)
    finally:
        consumer.close()


def run_worker(
    backend: Backend,
    fn,
    worker_id: str,
    hooks: WorkerHooks | None = None,
    concurrency: int = 1,
    stop_event: threading.Event | None = None,
    result_sink=None,
) -> None:
    """Consume and process jobs until ``stop_event`` is set.

    Args:
        backend: a connected backend.
        fn: the worker function ``fn(payload: bytes) -> bytes``.
        worker_id: recorded in events; with ``concurrency`` > 1 the consumers are named ``W.0``, ``W.1``, ...
        hooks: receives every step (default: no-op).
        concurrency: number of consumer threads, each with its own consumer.
        stop_event: set it to stop after the jobs in hand; ``None`` runs forever.
        result_sink: an object with ``write(job_id, worker_id, result)`` (``experiments.recorder.ResultSink``).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    hooks = hooks or WorkerHooks()
    stop = stop_event or threading.Event()
    if concurrency == 1:
        _consume(backend, worker_id, fn, worker_id, hooks, stop, result_sink)
        return
    threads = [
        threading.Thread(
            target=_consume,
            args=(backend, f"{worker_id}.{i}", fn, worker_id, hooks, stop, result_sink),
            name=f"worker-{worker_id}.{i}",
            daemon=True,
        )
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
