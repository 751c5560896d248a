"""``python -m experiments bench``: throughput and latency of every backend, measured the same way in one run.

    python -m experiments bench --backends logqueue,rabbitmq-quorum,rabbitmq-classic,redis-streams,nats-jetstream \\
        --messages 20000 --payload-bytes 100 --window 1000 [--consumers K] --out bench.json [--plot bench.png]
        [--native] [--rates 10,25,50,75,90] [--consumers 1,2,4,8] [--payload-bytes 100,1024,16384] [--clients C]

For each backend, on a fresh queue, four phases:

1. publish: one producer enqueues N messages with ``enqueue_many(payloads, window=W)``:
   at most W unconfirmed at a time, each confirmed durably as the backend defines it
   (publisher confirm, committed append, XADD/LPUSH reply, JetStream ack). Nothing
   consumes yet. -> ``publish_per_s``.
2. consume: K consumers (threads, each with its own ``Backend.consumer``) receive and
   ack those N messages. -> ``consume_per_s`` (from the start to the last ack). A
   consumer acks what it has received so far together (up to ``--ack-batch``, default
   half the prefetch, so a broker keeps pushing while a batch is acked) through
   ``Consumer.ack_many``: each adapter's batch path (one submit for logqueue, one hand-off
   to pika's I/O thread for RabbitMQ, one pipeline for Redis Streams, concurrent acks for
   JetStream) or one at a time where it has none.
3. mixed: the consumers run while the producer publishes N new messages.
   -> ``end_to_end_per_s`` (first publish to last ack): the measured maximum.
4. latency (open loop): for each ``--rates`` percent (default 50) of that maximum, the
   producer offers that load at a fixed rate (every message has a due time; the due ones
   are published together every few ms) for ``--warmup-seconds`` then
   ``--latency-seconds``. -> ``latency_vs_load``: per rate ``p50_ms``, ``p90_ms``,
   ``p99_ms``, ``p999_ms``, ``max_ms`` from each message's due time to the return of its
   ack (measuring from the due time, not the send, counts the time a message waited behind
   a slow one: no coordinated omission), the warm-up's messages left out; the point nearest
   50 % is also the row's headline ``p50_ms`` / ``p99_ms``.
5. closed loop (``--clients C``): C clients, each with one message outstanding (publish,
   wait for its ack, publish the next), as ``etcdctl check perf`` drives etcd.
   -> ``closed_loop``: ``completed_per_s`` and the same percentiles, from send to ack.
6. curves: each further ``--consumers`` count and ``--payload-bytes`` size adds a publish
   then consume of N messages (fresh consumers) -> ``consume_vs_consumers``,
   ``throughput_vs_payload``.
7. ``--native``: ``--native-rounds`` rounds (default 3), each the adapter's publish then
   consume of N messages (fresh consumers) and right before or after it (alternately) the
   broker's reference client (``experiments/bench_native.py``) doing the same with the same
   N payloads -> ``native``
   (the reference's median rates and every round), ``x_native`` (the median of the rounds'
   adapter / reference ratios: both sides of a ratio saw the same machine load) and the
   table's "x native" column.

Percentiles: every figure is the nearest-rank percentile (``logqueue.stats.nearest_rank``,
the project's one definition) over all measured samples. Each latency phase also stores
its samples as an HdrHistogram (``hdr``: base64, microseconds, 3 significant digits) for
distribution plots; HdrHistogram's own percentiles are bucketed, a different statistic,
and are not reported.

Fairness rules (the same for every backend, one backend after the other in one run, in
this process):
- the same payloads: N messages of B bytes, a 5-byte phase and index header then the same
  pseudo-random bytes (with ``--func``, each consumer runs that worker function on a
  message's bytes after the header before acking it);
- the same publish window W, prefetch, ack batch and number of consumers;
- every publish confirmed as the backend's durable mode defines it (its class's
  ``durability``, copied into the output; where the server decides, e.g. Redis persistence, it says so);
  every consumer acks each message (no auto-ack);
- loads are relative: each rate is a percent of the backend's own measured maximum, so
  every backend is compared at the same fraction of its capacity;
- latency is measured from intended send times, and the warm-up is excluded for all;
- the native reference uses the adapter's servers, queue declaration (replicas
  included), confirm (e.g. ``WAIT`` for redis-sentinel), payloads, window, consumers,
  prefetch and ack batch, alternating with the adapter round by round;
- replicated and single-node rows are told apart: each row carries its class's
  ``replicas`` (nodes a confirmed message is on) and ``durability`` (what its confirm
  promises), the table prints both.

A backend with servers of its own (``Backend.local_servers``; logqueue: a local 3-node
cluster in a temporary directory, free loopback ports, ``--fsync batch``) has them
started for its turn and stopped after it, unless ``--cluster`` names running nodes.

Output (``--out``): one JSON object keyed by backend name; each value has ``command``
(the run's command line), ``status``
(``ok``, ``unavailable`` or ``failed``), ``reason`` when not ok, the figures above and
the run's parameters. A table is printed; ``--plot`` writes a PNG. Exit status: 0 when no
backend failed (unavailable ones are reported, not fatal), 1 when one failed, 2 for bad
arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import shlex
import statistics
import struct
import sys
import threading
import time
import uuid

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from baselines import registry
from baselines.base import BackendConfig, BackendError, BackendUnavailable
from baselines.servers import ServerStartError
from baselines.worker_loop import job_context
from logqueue.client.worker import run_function
from logqueue.stats import nearest_rank
from logqueue.workers import WorkerLoadError, load_function

HEADER = struct.Struct(">BI")  # phase, index: how a consumer tells which message it got
PUBLISH, CONSUME, MIXED, LATENCY = 1, 1, 2, 3  # the consume phase drains the publish phase's messages
CLOSED_LOOP_MAX = 1_000_000  # messages one closed-loop phase can send at most
CURVE = 10  # phases of the curves (consumers, payload sizes, rates, closed loop) count from here
QUANTILES = (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99), ("p999_ms", 0.999))
# HdrHistogram of each latency phase, in microseconds: 1 us to 1 h at 3 significant digits.
HDR_RANGE_US, HDR_DIGITS = (1, 3_600_000_000), 3
PACE_S = 0.005  # the latency phase publishes what is due every PACE_S
RECEIVE_S = 0.2  # one receive call blocks at most this long (bounds how late a stop is seen)

class PhaseTimeout(BackendError):
    """A phase did not finish within ``--phase-timeout-s``."""


def make_payloads(phase: int, n: int, size: int) -> list[bytes]:
    """N payloads of ``size`` bytes: the header (phase, index) then bytes that are the same every run."""
    pad = random.Random(size).randbytes(size - HEADER.size)
    return [HEADER.pack(phase, i) + pad for i in range(n)]


# --- the consumers ---------------------------------------------------------------------------


class Tally:
    """What the consumers have acked in one phase (thread-safe)."""

    def __init__(self, phase: int, n: int) -> None:
        self.phase, self.n = phase, n
        self.lock = threading.Lock()
        self.seen = bytearray(n)
        self.count = 0
        self.duplicates = 0
        self.first_ack = self.last_ack = 0.0
        self.acked_at: list[float] = [0.0] * n
        self.done = threading.Event()
        self.on_ack = None  # the closed loop's hook: on_ack(index), called once per newly acked index

    def record(self, payload: bytes, now: float) -> None:
        if len(payload) < HEADER.size:
            return
        phase, index = HEADER.unpack_from(payload)
        if phase != self.phase or index >= self.n:
            return  # a stray message of another phase (a redelivery)
        with self.lock:
            if self.seen[index]:
                self.duplicates += 1
                return
            self.seen[index] = 1
            self.acked_at[index] = now
            self.count += 1
            self.first_ack = self.first_ack or now
            self.last_ack = now
            if self.count == self.n:
                self.done.set()
        if self.on_ack is not None:
            self.on_ack(index)


class ConsumerPool:
    """K threads, each owning one consumer for the whole run (a consumer belongs to one thread).

    The threads open their consumers in ``start`` and wait; after ``go`` each receives one
    delivery (waiting), then whatever else has already arrived, up to ``ack_batch``, and
    acks them together with ``Consumer.ack_many`` (the backend's batch path, or one at a
    time), crediting each accepted ack to the current ``Tally``. With ``fn`` (a
    ``worker_function``), each delivery's payload (after the header) goes through it first and the batch is
    acked with the results; a call that raises counts in ``func_errors`` and is acked too.
    """

    def __init__(self, backend, k: int, ack_batch: int, fn=None) -> None:
        self.backend = backend
        self.ack_batch = ack_batch
        self.fn = fn
        self.ack_errors = 0
        self.func_errors = 0
        self.tally: Tally | None = None
        self._go = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Barrier(k + 1)
        self.error: str | None = None
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"bench-consumer-{i}", daemon=True)
                         for i in range(k)]

    def start(self, timeout_s: float) -> None:
        for t in self._threads:
            t.start()
        try:
            self._ready.wait(timeout_s)
        except threading.BrokenBarrierError:
            raise BackendError(self.error or f"consumers not ready within {timeout_s:g} s") from None
        if self.error:
            raise BackendError(self.error)

    def go(self) -> None:
        self._go.set()

    def _fail(self, message: str) -> None:
        self.error = self.error or message
        if self.tally is not None:
            self.tally.done.set()

    def _run(self, i: int) -> None:
        try:
            consumer = self.backend.consumer(f"bench-{i}")
        except Exception as exc:  # reported by start(); the barrier is broken so it does not wait
            self._fail(f"consumer {i}: {type(exc).__name__}: {exc}")
            self._ready.abort()
            return
        try:
            self._ready.wait()
            self._go.wait()
            clock = time.perf_counter
            while not self._stop.is_set():
                d = consumer.receive(RECEIVE_S)
                if d is None:
                    continue
                batch = [d]
                while len(batch) < self.ack_batch:  # what has already arrived, without waiting
                    d = consumer.receive(0)
                    if d is None:
                        break
                    batch.append(d)
                results = None
                if self.fn is not None:
                    outcomes = [run_function(self.fn, d.payload[HEADER.size:], job_context(self.backend, d))
                                for d in batch]
                    self.func_errors += sum(error is not None for _, error in outcomes)
                    results = [result or b"" for result, _ in outcomes]
                refused = consumer.ack_many(batch, results)
                now = clock()
                tally = self.tally
                for d, error in zip(batch, refused):
                    if error is not None:
                        self.ack_errors += 1  # the backend redelivers it
                    elif tally is not None:
                        tally.record(d.payload, now)
        except threading.BrokenBarrierError:
            pass
        except Exception as exc:
            self._fail(f"consumer {i}: {type(exc).__name__}: {' '.join(str(exc).split())}")
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def wait(self, tally: Tally, timeout_s: float, what: str, on_tick) -> None:
        """Until every message of ``tally`` is acked; ``on_tick()`` every 0.2 s meanwhile."""
        deadline = time.monotonic() + timeout_s
        while not tally.done.wait(0.2):
            on_tick()
            if time.monotonic() > deadline:
                raise PhaseTimeout(f"{what}: {tally.count} of {tally.n} acked within {timeout_s:g} s")
        on_tick()
        if self.error:
            raise BackendError(self.error)

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        self._ready.abort()
        for t in self._threads:
            t.join(timeout=10)


# --- one backend -----------------------------------------------------------------------------


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def _paced_publish(backend, payloads: list[bytes], rate: float, window: int, timeout_s: float, on_tick) -> list[float]:
    """Publish payload i at its due time ``start + i / rate`` (the due ones together); returns the due times."""
    n = len(payloads)
    start = time.perf_counter() + PACE_S
    due = [start + i / rate for i in range(n)]
    sent = 0
    ticked = start
    while sent < n:
        now = time.perf_counter()
        if now - start > timeout_s:
            raise PhaseTimeout(f"latency: published {sent} of {n} within {timeout_s:g} s")
        upto = min(n, int((now - start) * rate) + 1) if now >= start else 0
        if upto > sent:
            backend.enqueue_many(payloads[sent:upto], window=window)
            sent = upto
            if now - ticked > 0.2:
                on_tick()
                ticked = now
        else:
            time.sleep(max(0.0, min(PACE_S, due[sent] - now)))
    return due


def _native(backend, args: argparse.Namespace, phase_id: int, report) -> dict:
    """The adapter and its broker's reference client in alternation, ``--native-rounds`` times.

    Each round publishes and consumes N messages through the adapter (fresh consumers, as a
    curve point) and through the reference, one right after the other (the adapter first
    in odd rounds, the reference first in even ones): a round's two figures see
    the same machine load, so the ratio is the median of the rounds' ratios. Returns
    ``{"native": {publish_per_s, consume_per_s (medians), rounds}, "x_native": {publish,
    consume}}``, ``{}`` for a backend without a reference, or why the reference failed.
    """
    from experiments import bench_native

    if bench_native.reference_for(backend) is None:
        return {}
    n, rounds = args.messages, []
    try:
        for r in range(args.native_rounds):
            def adapter() -> dict:
                return _drain(backend, args, phase_id + r, args.consumers, args.payload_bytes, report,
                              f"x native {r + 1}: adapter")

            def reference() -> dict:
                report(f"x native {r + 1}: reference", 0, n)
                ref = bench_native.measure(backend, make_payloads(PUBLISH, n, args.payload_bytes), args.window,
                                           args.consumers, args.prefetch, args.ack_batch, args.phase_timeout_s)
                report(f"x native {r + 1}: reference", n, n)
                return ref

            # who goes first alternates, so neither side always meets the other's leftovers (caches, GC, disk)
            if r % 2 == 0:
                mine, ref = adapter(), reference()
            else:
                ref, mine = reference(), adapter()
            rounds.append({"adapter_publish_per_s": mine["publish_per_s"], "adapter_consume_per_s": mine["consume_per_s"],
                           **ref})
    except Exception as exc:  # the reference's failure is reported beside the adapter's figures
        return {"native_reason": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 1)

    def ratio(what: str) -> float:
        return round(statistics.median(r[f"adapter_{what}_per_s"] / r[f"{what}_per_s"] for r in rounds), 2)

    return {"native": {"publish_per_s": median("publish_per_s"), "consume_per_s": median("consume_per_s"),
                       "rounds": rounds},
            "x_native": {"publish": ratio("publish"), "consume": ratio("consume")}}


def latency_summary(latencies_ms: list[float]) -> dict:
    """p50/p90/p99/p99.9 by ``nearest_rank`` over every sample, the max, and the samples' HdrHistogram.

    The figures are exact (the project's one percentile definition); the histogram
    (``hdr``, HdrHistogram's base64 encoding, microseconds) is kept for distribution plots
    and tools; its own bucketed percentiles are not reported.
    """
    from hdrh.histogram import HdrHistogram

    xs = sorted(latencies_ms)
    hist = HdrHistogram(*HDR_RANGE_US, HDR_DIGITS)
    for x in xs:
        hist.record_value(min(HDR_RANGE_US[1], max(HDR_RANGE_US[0], round(x * 1000))))
    return ({key: round(nearest_rank(xs, q), 2) for key, q in QUANTILES}
            | {"max_ms": round(xs[-1], 2), "hdr": hist.encode().decode()})


def _drain(backend, args, phase_id: int, consumers: int, payload_bytes: int, report, label: str) -> dict:
    """Publish N messages, then consume them with ``consumers`` fresh consumers: one point of a curve."""
    n = args.messages
    payloads = make_payloads(phase_id, n, payload_bytes)
    report(label, 0, n)
    t0 = time.perf_counter()
    backend.enqueue_many(payloads, window=args.window)
    publish_s = time.perf_counter() - t0
    pool = ConsumerPool(backend, consumers, args.ack_batch, args.fn)
    try:
        pool.start(args.phase_timeout_s)
        tally = pool.tally = Tally(phase_id, n)
        t0 = time.perf_counter()
        pool.go()
        pool.wait(tally, args.phase_timeout_s, label, lambda: report(label, tally.count, n))
    finally:
        pool.stop()
    return {"consumers": consumers, "payload_bytes": payload_bytes, "publish_per_s": _rate(n, publish_s),
            "consume_per_s": _rate(n, tally.last_ack - t0), "duplicates": tally.duplicates}


def _open_loop(backend, pool, args, phase_id: int, offered: float, report, label: str) -> dict:
    """One latency phase at ``offered`` messages/s; the first ``--warmup-seconds`` are not in the figures."""
    total = max(2, min(args.messages, int(offered * (args.warmup_seconds + args.latency_seconds))))
    warm = min(int(offered * args.warmup_seconds), total // 2)
    tally = pool.tally = Tally(phase_id, total)
    tick = lambda: report(label, tally.count, total)  # noqa: E731
    report(label, 0, total)
    due = _paced_publish(backend, make_payloads(phase_id, total, args.payload_bytes), offered, args.window,
                         args.phase_timeout_s, tick)
    pool.wait(tally, args.phase_timeout_s, label, tick)
    measured = [(tally.acked_at[i] - due[i]) * 1000 for i in range(warm, total)]
    return {"offered_per_s": round(offered, 1), "latency_messages": len(measured), "warmup_messages": warm,
            "duplicates": tally.duplicates} | latency_summary(measured)


def _closed_loop(backend, pool, args, phase_id: int, report, label: str) -> dict:
    """``--clients`` threads, each with one message outstanding: publish, wait for its ack, publish the next."""
    c, n = args.clients, CLOSED_LOOP_MAX  # the phase ends by time; n only bounds the message indices
    tally = pool.tally = Tally(phase_id, n)
    pad = make_payloads(phase_id, 1, args.payload_bytes)[0][HEADER.size:]
    acked = [threading.Event() for _ in range(c)]  # client j's message is outstanding until acked[j] is set
    tally.on_ack = lambda index: acked[index % c].set()
    sent_at = [0.0] * n
    stop_at = time.perf_counter() + args.warmup_seconds + args.latency_seconds
    errors: list[str] = []

    def client(j: int) -> None:
        clock = time.perf_counter
        try:
            for i in range(j, n, c):  # client j's messages: j, j + C, j + 2C, ...
                if clock() >= stop_at:
                    return
                acked[j].clear()
                sent_at[i] = clock()
                backend.enqueue_many([HEADER.pack(phase_id, i) + pad], window=1)
                if not acked[j].wait(args.phase_timeout_s):
                    raise PhaseTimeout(f"{label}: message {i} not acked within {args.phase_timeout_s:g} s")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}")

    report(label, 0, 0)
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(j,), daemon=True) for j in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report(label, tally.count, tally.count)
    if errors:
        raise BackendError(errors[0])
    warm_end = started + args.warmup_seconds
    done = [i for i in range(n) if tally.seen[i] and sent_at[i] >= warm_end]
    if not done:
        raise PhaseTimeout(f"{label}: no message completed after the warm-up")
    span = max(tally.acked_at[i] for i in done) - warm_end
    return {"clients": c, "latency_messages": len(done), "completed_per_s": _rate(len(done), span),
            "duplicates": tally.duplicates} | latency_summary([(tally.acked_at[i] - sent_at[i]) * 1000 for i in done])


def bench_backend(name: str, args: argparse.Namespace, addresses: dict[str, str], report) -> dict:
    """Run the four phases on one backend; never raises for a backend problem.

    ``report(name, phase, done, total)`` is called when a phase starts and ends and,
    while consumers work, about every 0.2 s.
    """
    n, w, k = args.messages, args.window, args.consumers
    row: dict = {"status": "failed", "durability": "see the adapter's docstring", "messages": n,
                 "payload_bytes": args.payload_bytes, "window": w, "consumers": k, "prefetch": args.prefetch,
                 "ack_batch": args.ack_batch, "warmup_seconds": args.warmup_seconds,
                 "func": args.func}
    try:
        cls = registry.get(name)
        row["durability"], row["replicas"] = cls.durability, cls.replicas
        config = BackendConfig(queue=f"bench-{uuid.uuid4().hex[:10]}", prefetch=args.prefetch,
                               heartbeat_s=10.0, timeout_s=600.0, addresses=addresses)
        backend = cls(config)
        backend.connect()
    except BackendUnavailable as exc:
        return row | {"status": "unavailable", "reason": " ".join(str(exc).split())}
    except Exception as exc:
        return row | {"reason": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}

    pool = None
    timeout = args.phase_timeout_s
    tallies: list[Tally] = []

    def phase(tally: Tally, what: str) -> Tally:
        pool.tally = tally
        tallies.append(tally)
        report(name, what, 0, tally.n)
        return tally

    try:
        report(name, "publish", 0, n)
        payloads = make_payloads(PUBLISH, n, args.payload_bytes)
        t0 = time.perf_counter()
        backend.enqueue_many(payloads, window=w)
        row["publish_per_s"] = _rate(n, time.perf_counter() - t0)
        report(name, "publish", n, n)

        pool = ConsumerPool(backend, k, args.ack_batch, args.fn)
        pool.start(timeout)
        tally = phase(Tally(CONSUME, n), "consume")
        t0 = time.perf_counter()
        pool.go()
        pool.wait(tally, timeout, "consume", lambda: report(name, "consume", tally.count, n))
        row["consume_per_s"] = _rate(n, tally.last_ack - t0)

        tally = phase(Tally(MIXED, n), "mixed")
        payloads = make_payloads(MIXED, n, args.payload_bytes)
        t0 = time.perf_counter()
        backend.enqueue_many(payloads, window=w)
        row["mixed_publish_per_s"] = _rate(n, time.perf_counter() - t0)
        pool.wait(tally, timeout, "mixed", lambda: report(name, "mixed", tally.count, n))
        row["end_to_end_per_s"] = _rate(n, tally.last_ack - t0)

        def curve_report(label: str, done: int, total: int) -> None:
            report(name, label, done, total)

        row["latency_vs_load"] = []
        for j, pct in enumerate(args.rates):
            point = _open_loop(backend, pool, args, CURVE + j, row["end_to_end_per_s"] * pct / 100, curve_report,
                               f"latency {pct:g}%")
            row["latency_vs_load"].append({"rate_pct": pct} | point)
        # the headline latency: the point nearest half the measured maximum
        headline = min(row["latency_vs_load"], key=lambda point: abs(point["rate_pct"] - 50))
        row.update({key: headline[key] for key in ("offered_per_s", "latency_messages", *dict(QUANTILES), "max_ms")})
        if args.clients:
            row["closed_loop"] = _closed_loop(backend, pool, args, CURVE + len(args.rates), curve_report,
                                              f"closed loop x{args.clients}")
        pool.stop()
        # the curves' other points: publish then drain with each further consumer count / payload size
        phase_id = CURVE + len(args.rates) + 1
        row["consume_vs_consumers"] = [{"consumers": k, "consume_per_s": row["consume_per_s"]}]
        for k2 in args.consumers_curve[1:]:
            point = _drain(backend, args, phase_id, k2, args.payload_bytes, curve_report, f"consume x{k2}")
            row["consume_vs_consumers"].append({key: point[key] for key in ("consumers", "consume_per_s", "duplicates")})
            phase_id += 1
        row["throughput_vs_payload"] = [{"payload_bytes": args.payload_bytes, "publish_per_s": row["publish_per_s"],
                                         "consume_per_s": row["consume_per_s"]}]
        for size in args.payload_sizes[1:]:
            point = _drain(backend, args, phase_id, k, size, curve_report, f"payload {size} B")
            row["throughput_vs_payload"].append({key: point[key] for key in ("payload_bytes", "publish_per_s",
                                                                              "consume_per_s", "duplicates")})
            phase_id += 1
        if args.native:
            row.update(_native(backend, args, phase_id, curve_report))
        row["status"] = "ok"
    except (BackendError, OSError) as exc:
        row["reason"] = " ".join(str(exc).split())
    except Exception as exc:  # an adapter bug: report it and go on with the next backend
        row["reason"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    finally:
        if pool is not None:
            pool.stop()
        with contextlib.suppress(Exception):
            backend.delete()
        with contextlib.suppress(Exception):
            backend.close()
    # Deliveries acked twice (redelivered after a consumer lost its channel, say); not in the rates.
    points = [*row.get("latency_vs_load", ()), *filter(None, [row.get("closed_loop")]),
              *row.get("consume_vs_consumers", ())[1:], *row.get("throughput_vs_payload", ())[1:]]
    row["duplicates"] = sum(t.duplicates for t in tallies) + sum(point["duplicates"] for point in points)
    row["ack_errors"] = pool.ack_errors if pool is not None else 0
    row["func_errors"] = pool.func_errors if pool is not None else 0
    return row


# --- output ---------------------------------------------------------------------------------


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def results_table(results: dict) -> Table:
    table = Table(title="bench: messages/s (durable, confirmed) and end-to-end latency at half the maximum load")
    for col in ("backend", "replicas", "status", "publish/s", "consume/s", "x native", "end-to-end/s", "p50 ms",
                "p99 ms", "note"):
        table.add_column(col, justify="left" if col in ("backend", "status", "note") else "right")
    for name, r in results.items():
        table.add_row(name, _fmt(r.get("replicas")), r["status"], _fmt(r.get("publish_per_s")),
                      _fmt(r.get("consume_per_s")), _x_native(r),
                      _fmt(r.get("end_to_end_per_s")), _fmt(r.get("p50_ms"), 1), _fmt(r.get("p99_ms"), 1),
                      (r.get("reason") or r.get("native_reason") or "")[:100])
    return table


def confirm_lines(results: dict) -> list[str]:
    """What a confirm promises, per backend (its class's ``durability``), and on how many nodes it is."""
    return [f"{name} ({r['replicas']} node{'s' if r['replicas'] != 1 else ''}): {r['durability']}"
            for name, r in results.items() if "replicas" in r]


def native_ratios(row: dict) -> tuple[float, float] | None:
    """(publish, consume) of the adapter divided by its native reference's (the rounds' medians), when measured."""
    ratios = row.get("x_native")
    if not ratios or row.get("status") != "ok":
        return None
    return ratios["publish"], ratios["consume"]


def _x_native(row: dict) -> str:
    ratios = native_ratios(row)
    return "-" if ratios is None else f"{ratios[0]:.2f} / {ratios[1]:.2f}"


def ratio_lines(results: dict, ref: str = "logqueue") -> list[str]:
    """``ref``'s publish and consume rates divided by each other ok backend's."""
    mine = results.get(ref)
    if not mine or mine["status"] != "ok":
        return []
    lines = []
    for name, r in results.items():
        if name != ref and r["status"] == "ok":
            lines.append(f"{ref} / {name}: publish {mine['publish_per_s'] / r['publish_per_s']:.2f}x, "
                         f"consume {mine['consume_per_s'] / r['consume_per_s']:.2f}x, "
                         f"end-to-end {mine['end_to_end_per_s'] / r['end_to_end_per_s']:.2f}x")
    return lines


def plot(results: dict, path: str) -> None:
    """Throughput bars (publish, consume, end-to-end) and latency bars (p50, p99, max) per ok backend,
    drawn by ``experiments.analysis.plot_bench``."""
    from experiments import analysis

    try:
        figure = analysis.plot_bench(analysis.bench_frame(results))
    except analysis.AnalysisError as exc:  # e.g. no backend finished: nothing to draw
        print(f"no plot written: {exc}", file=sys.stderr)
        return
    figure.savefig(path, dpi=110)


# --- the command ----------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(x) for x in _items(text)]


def _float_list(text: str) -> list[float]:
    return [float(x) for x in _items(text)]


def _items(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected one or more comma-separated numbers")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="all", help=f"NAME,NAME or 'all' (known: {', '.join(registry.names())})")
    p.add_argument("--messages", type=int, default=20_000, help="messages per phase (default 20000)")
    p.add_argument("--payload-bytes", type=_int_list, default=[100], metavar="B[,B...]",
                   help=f"message size, at least {HEADER.size} (default 100); with several (e.g. 100,1024,16384) the "
                        "phases use the first and each other size adds a publish + consume point "
                        "(throughput_vs_payload), every backend the same sizes")
    p.add_argument("--window", type=int, default=1000, help="unconfirmed publishes at most (default 1000)")
    p.add_argument("--consumers", type=_int_list, default=[4], metavar="K[,K...]",
                   help="consumer threads, one consumer each (default 4); with several (e.g. 1,2,4,8) the phases use "
                        "the first and each other count adds a publish + consume point with that many fresh "
                        "consumers (consume_vs_consumers), every backend the same counts")
    p.add_argument("--rates", type=_float_list, default=[50.0], metavar="PCT[,PCT...]",
                   help="open-loop latency phases, each at this percent of the backend's own measured end-to-end "
                        "maximum (default 50; e.g. 10,25,50,75,90 -> latency_vs_load); the headline p50/p99 are "
                        "the point nearest 50")
    p.add_argument("--clients", type=int, default=0, metavar="C",
                   help="also a closed-loop phase: C clients, each with one message outstanding (publish, wait for "
                        "its ack, publish the next), for --latency-seconds after the warm-up (default 0: off)")
    p.add_argument("--warmup-seconds", type=float, default=1.0,
                   help="each latency phase first runs this long at its rate (or closed loop) and those messages "
                        "are left out of its figures (default 1; at most half a phase's messages)")
    p.add_argument("--prefetch", type=int, default=100,
                   help="unacked deliveries a broker may push to one consumer / jobs per claim (default 100)")
    p.add_argument("--ack-batch", type=int, default=None,
                   help="deliveries a consumer acks together, at most (default: half the prefetch)")
    p.add_argument("--latency-seconds", type=float, default=5.0,
                   help="measured length of each latency phase, after the warm-up (default 5; a phase has at most "
                        "--messages messages)")
    p.add_argument("--phase-timeout-s", type=float, default=300.0,
                   help="give up on a backend when one phase takes longer (default 300)")
    p.add_argument("--cluster", metavar="HOST:PORT,...",
                   help="a running logqueue cluster to use (default: start a local 3-node one for the run)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="write the results here")
    p.add_argument("--plot", metavar="FILE.png", help="also write a bar chart of the results")
    p.add_argument("--func", metavar="MODULE:FUNCTION",
                   help="run this worker function, fn(payload) or fn(payload, ctx) -> bytes, on every delivery "
                        "before its ack, so the figures include its cost (default: ack at once)")
    p.add_argument("--native", action="store_true",
                   help="also run each broker's reference client (experiments/bench_native.py: the raw library used "
                        "the best known way) on the same payloads with the same window, consumers, prefetch and ack "
                        "batch, alternating with the adapter (--native-rounds); JSON 'native' and 'x_native', table "
                        "'x native' = median of the rounds' adapter / reference ratios (publish / consume)")
    p.add_argument("--native-rounds", type=int, default=3, metavar="R",
                   help="with --native: adapter-then-reference rounds per backend (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        names = registry.parse_backends(args.backends)
    except registry.UnknownBackend as exc:
        p.error(str(exc))
    args.consumers_curve, args.consumers = args.consumers, args.consumers[0]
    args.payload_sizes, args.payload_bytes = args.payload_bytes, args.payload_bytes[0]
    if args.ack_batch is None:
        args.ack_batch = max(1, args.prefetch // 2)
    args.fn = None
    if args.func:
        try:
            args.fn = load_function(args.func)
        except WorkerLoadError as exc:
            p.error(f"--func: {exc}")
    for opt in ("messages", "window", "prefetch", "ack_batch", "native_rounds"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be at least 1")
    if min(args.consumers_curve) < 1:
        p.error("--consumers must be at least 1")
    if min(args.payload_sizes) < HEADER.size:
        p.error(f"--payload-bytes must be at least {HEADER.size} (each message carries its phase and index)")
    if not args.latency_seconds > 0 or not args.phase_timeout_s > 0:
        p.error("--latency-seconds and --phase-timeout-s must be positive")
    if not min(args.rates) > 0 or args.clients < 0 or args.warmup_seconds < 0:
        p.error("--rates must be positive percents, --clients and --warmup-seconds at least 0")
    if CURVE + len(args.rates) + len(args.consumers_curve) + len(args.payload_sizes) + args.native_rounds > 255:
        p.error("too many --rates, --consumers, --payload-bytes values and --native-rounds (a message header has room "
                "for 255 phases)")
    if args.cluster:
        from logqueue.client import parse_cluster

        try:
            args.cluster = ",".join(parse_cluster(args.cluster))
        except ValueError as exc:
            p.error(f"--cluster: {exc}")
    return args, names


def run(args: argparse.Namespace, names: list[str], console: Console) -> dict:
    """Bench every backend in ``names``, in order; returns the results keyed by backend.

    A backend's local servers run only during its turn, so their idle processes take no
    CPU from the other backends.
    """
    results: dict[str, dict] = {}
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=args.quiet, transient=False) as progress:
        tasks: dict[str, int] = {}

        def report(name: str, what: str, done: int, total: int) -> None:
            key = f"{name} {what}"
            if key not in tasks:
                for other in tasks.values():
                    progress.stop_task(other)  # freezes its elapsed time
                tasks[key] = progress.add_task(key, total=total)
            progress.update(tasks[key], completed=done)

        for name in names:
            servers = contextlib.nullcontext({"logqueue": args.cluster} if args.cluster else {})
            if not args.cluster:
                with contextlib.suppress(BackendUnavailable):  # bench_backend reports it
                    servers = registry.get(name).local_servers(fresh=True)
            try:
                with servers as addresses:
                    results[name] = bench_backend(name, args, addresses, report)
            except ServerStartError as exc:
                results[name] = {"status": "failed", "reason": str(exc)}
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, names = parse_args(argv)
    console = Console(stderr=True)
    try:
        results = run(args, names, console)
    except KeyboardInterrupt:
        return 130
    command = shlex.join(["python", "-m", "experiments", "bench", *argv])
    for row in results.values():
        row["command"] = command  # the figures travel with the run that made them
    try:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
        if args.plot:
            plot(results, args.plot)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Console(width=None if sys.stdout.isatty() else 160)  # a file or pipe gets whole rows
    out.print(results_table(results))
    for line in confirm_lines(results) + ratio_lines(results):
        out.print(line)
    out.print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0
