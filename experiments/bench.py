"""``python -m experiments bench``: throughput and latency of every backend, measured the same way in one run.

    python -m experiments bench --backends logqueue,rabbitmq-quorum,rabbitmq-classic,redis-streams,nats-jetstream \\
        --messages 20000 --payload-bytes 100 --window 1000 [--consumers K] --out bench.json [--plot bench.png]

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
4. latency: the producer offers half that maximum, at a fixed rate (every message has a
   due time; the due ones are published together every few ms), for ``--latency-seconds``.
   -> ``p50_ms``, ``p99_ms``, ``max_ms`` from each message's due time to the return of
   its ack (measuring from the due time, not the send, counts the time a message waited
   behind a slow one: no coordinated omission).

Fairness: the same payloads (N messages of B bytes, a 5-byte phase and index header then
the same pseudo-random bytes), the same window W, the same prefetch and the same number
of consumers for every backend, one backend after the other in one run, in this process.
Durability is each backend's durable mode (its class's ``durability``, copied into the
output); where the server decides (Redis persistence) the output says so.

A backend with servers of its own (``Backend.local_servers``; logqueue: a local 3-node
cluster in a temporary directory, free loopback ports, ``--fsync batch``) has them
started for its turn and stopped after it, unless ``--cluster`` names running nodes.

Output (``--out``): one JSON object keyed by backend name; each value has ``status``
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
from logqueue.stats import nearest_rank

HEADER = struct.Struct(">BI")  # phase, index: how a consumer tells which message it got
PUBLISH, CONSUME, MIXED, LATENCY = 1, 1, 2, 3  # the consume phase drains the publish phase's messages
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


class ConsumerPool:
    """K threads, each owning one consumer for the whole run (a consumer belongs to one thread).

    The threads open their consumers in ``start`` and wait; after ``go`` each receives one
    delivery (waiting), then whatever else has already arrived, up to ``ack_batch``, and
    acks them together with ``Consumer.ack_many`` (the backend's batch path, or one at a
    time), crediting each accepted ack to the current ``Tally``.
    """

    def __init__(self, backend, k: int, ack_batch: int) -> None:
        self.backend = backend
        self.ack_batch = ack_batch
        self.ack_errors = 0
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
                refused = consumer.ack_many(batch)
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


def bench_backend(name: str, args: argparse.Namespace, addresses: dict[str, str], report) -> dict:
    """Run the four phases on one backend; never raises for a backend problem.

    ``report(name, phase, done, total)`` is called when a phase starts and ends and,
    while consumers work, about every 0.2 s.
    """
    n, w, k = args.messages, args.window, args.consumers
    row: dict = {"status": "failed", "durability": "see the adapter's docstring", "messages": n, "payload_bytes": args.payload_bytes, "window": w, "consumers": k,
                 "prefetch": args.prefetch, "ack_batch": args.ack_batch}
    try:
        cls = registry.get(name)
        row["durability"] = cls.durability
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

        pool = ConsumerPool(backend, k, args.ack_batch)
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

        offered = row["end_to_end_per_s"] / 2
        count = max(1, min(n, int(offered * args.latency_seconds)))
        tally = phase(Tally(LATENCY, count), "latency")
        tick = lambda: report(name, "latency", tally.count, count)  # noqa: E731
        due = _paced_publish(backend, make_payloads(LATENCY, count, args.payload_bytes), offered, w, timeout, tick)
        pool.wait(tally, timeout, "latency", tick)
        latencies = sorted((tally.acked_at[i] - due[i]) * 1000 for i in range(count))
        row.update(offered_per_s=round(offered, 1), latency_messages=count,
                   p50_ms=round(nearest_rank(latencies, 0.50), 2), p99_ms=round(nearest_rank(latencies, 0.99), 2),
                   max_ms=round(latencies[-1], 2))
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
    row["duplicates"] = sum(t.duplicates for t in tallies)
    row["ack_errors"] = pool.ack_errors if pool is not None else 0
    return row


# --- output ---------------------------------------------------------------------------------


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def results_table(results: dict) -> Table:
    table = Table(title="bench: messages/s (durable, confirmed) and end-to-end latency at half the maximum load")
    for col in ("backend", "status", "publish/s", "consume/s", "end-to-end/s", "p50 ms", "p99 ms", "note"):
        table.add_column(col, justify="left" if col in ("backend", "status", "note") else "right")
    for name, r in results.items():
        table.add_row(name, r["status"], _fmt(r.get("publish_per_s")), _fmt(r.get("consume_per_s")),
                      _fmt(r.get("end_to_end_per_s")), _fmt(r.get("p50_ms"), 1), _fmt(r.get("p99_ms"), 1),
                      r.get("reason", "")[:100])
    return table


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="all", help=f"NAME,NAME or 'all' (known: {', '.join(registry.names())})")
    p.add_argument("--messages", type=int, default=20_000, help="messages per phase (default 20000)")
    p.add_argument("--payload-bytes", type=int, default=100, help=f"message size, at least {HEADER.size} (default 100)")
    p.add_argument("--window", type=int, default=1000, help="unconfirmed publishes at most (default 1000)")
    p.add_argument("--consumers", type=int, default=4, help="consumer threads, one consumer each (default 4)")
    p.add_argument("--prefetch", type=int, default=100,
                   help="unacked deliveries a broker may push to one consumer / jobs per claim (default 100)")
    p.add_argument("--ack-batch", type=int, default=None,
                   help="deliveries a consumer acks together, at most (default: half the prefetch)")
    p.add_argument("--latency-seconds", type=float, default=5.0,
                   help="length of the fixed-load latency phase (default 5; at most --messages messages)")
    p.add_argument("--phase-timeout-s", type=float, default=300.0,
                   help="give up on a backend when one phase takes longer (default 300)")
    p.add_argument("--cluster", metavar="HOST:PORT,...",
                   help="a running logqueue cluster to use (default: start a local 3-node one for the run)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="write the results here")
    p.add_argument("--plot", metavar="FILE.png", help="also write a bar chart of the results")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        names = registry.parse_backends(args.backends)
    except registry.UnknownBackend as exc:
        p.error(str(exc))
    if args.ack_batch is None:
        args.ack_batch = max(1, args.prefetch // 2)
    for opt in ("messages", "window", "consumers", "prefetch", "ack_batch"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be at least 1")
    if args.payload_bytes < HEADER.size:
        p.error(f"--payload-bytes must be at least {HEADER.size} (each message carries its phase and index)")
    if not args.latency_seconds > 0 or not args.phase_timeout_s > 0:
        p.error("--latency-seconds and --phase-timeout-s must be positive")
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
    args, names = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console(stderr=True)
    try:
        results = run(args, names, console)
    except KeyboardInterrupt:
        return 130
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
    for line in ratio_lines(results):
        out.print(line)
    out.print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0
