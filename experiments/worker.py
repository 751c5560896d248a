"""A worker process: ``python -m experiments.worker --backend NAME --queue Q --func MODULE:FUNCTION --worker-id W``.

Runs one plug-in worker function on one backend until SIGTERM or SIGINT (a clean stop:
the job in hand is finished and settled) or until it is killed. The experiments start
these as subprocesses and SIGKILL / SIGSTOP them by PID; for the Celery backends this
process *is* the Celery worker (solo or thread pool, no child processes), so the same
signals reach the process that runs the job.

Exit status: 0 after a clean stop, 2 for bad arguments, 3 when the backend (or the PostgreSQL sink) is unavailable.
:func:`spawn` starts one such process and :class:`WorkerProcess` stops it: the one way
the smoke test and the scenarios run workers. A worker dies with the process that spawned
it, even when that one is SIGKILLed (``logqueue.lifetime``): no worker outlives its run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from baselines import registry
from baselines.base import BackendConfig, BackendError
from baselines.hooks import WorkerHooks
from experiments.recorder import EventLog, RecordingHooks, ResultSink
from experiments.scenarios.jobs import Harness
from experiments.sinks import KINDS, PostgresSink, SinkError
from logqueue.lifetime import child_env, die_with_parent
from logqueue.workers import WorkerLoadError, load_function


class WorkerProcess:
    """One ``python -m experiments.worker`` process and its identity."""

    def __init__(self, worker_id: str, proc: subprocess.Popen, log_path: Path) -> None:
        self.id, self.proc, self.log_path = worker_id, proc, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (finish the job in hand), then SIGKILL after ``timeout_s``; reaps it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a paused worker cannot honour SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(worker_id: str, backend: str, queue: str, func: str, log_path: Path, *, events: Path | str | None = None,
          results: Path | str | None = None, heartbeat_s: float = 5.0, timeout_s: float = 30.0,
          max_attempts: int = 5, prefetch: int = 1, env: dict[str, str] | None = None, sink: str = "file",
          sink_table: str | None = None, harness: bool = False) -> WorkerProcess:
    """Start a worker process in its own session (so faults and Ctrl-C reach only what they aim at),
    its output appended to ``log_path``; ``sink``, ``sink_table`` and ``harness`` are the options
    of the same names. It dies with the calling thread (``PR_SET_PDEATHSIG``): call from one that
    lives as long as the worker."""
    argv = [sys.executable, "-m", "experiments.worker", "--backend", backend, "--queue", queue, "--func", func,
            "--worker-id", worker_id, "--heartbeat-s", str(heartbeat_s), "--timeout-s", str(timeout_s),
            "--max-attempts", str(max_attempts), "--prefetch", str(prefetch)]
    argv += ["--events", str(events)] if events is not None else []
    argv += ["--results", str(results)] if results is not None else []
    argv += ["--sink", sink] + (["--sink-table", sink_table] if sink_table else [])
    argv += ["--harness"] if harness else []
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, env=child_env(env), stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return WorkerProcess(worker_id, proc, Path(log_path))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.worker",
        description="Run a plug-in worker function on one backend until SIGTERM/SIGINT; record every step.",
    )
    p.add_argument("--backend", required=True, help=f"backend name: {', '.join(registry.names())}")
    p.add_argument("--queue", required=True, help="queue name (the producer must use the same)")
    p.add_argument("--func", required=True, help="worker function: MODULE:FUNCTION or a registered name (e.g. echo)")
    p.add_argument("--worker-id", required=True, help="this worker's name in the events")
    p.add_argument("--events", help="append events (deliver, start, finish, effect, ack, ...) to this JSONL file")
    p.add_argument("--results", help="the file sink: a JSONL file written before each ack (after it for logqueue)")
    p.add_argument("--sink", choices=KINDS, default="file",
                   help="where effects go: file (--results, default) or a PostgreSQL table (--sink-table): plain, "
                        "idempotent, fenced (see experiments.sinks)")
    p.add_argument("--sink-table", help="the PostgreSQL sink's table (the runner creates one per run)")
    p.add_argument("--harness", action="store_true",
                   help="jobs are the runner's envelopes: run --func on their payloads with the scenario's "
                        "wrapping (experiments.scenarios.jobs.Harness)")
    p.add_argument("--heartbeat-s", type=float, default=5.0, help="heartbeat interval in seconds (default 5)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="ack timeout / lease in seconds (default 30)")
    p.add_argument("--prefetch", type=int, default=1, help="unacknowledged jobs the broker may push (default 1)")
    p.add_argument("--max-attempts", type=int, default=5, help="deliveries before dead-lettering (default 5)")
    p.add_argument("--concurrency", type=int, default=1, help="jobs run at once in this process (default 1)")
    return p


def open_sink(kind: str, results: str | None, table: str | None):
    """The sink the worker writes effects to; ``None`` for a file sink without a file."""
    if kind != "file":
        return PostgresSink(kind, table)
    return ResultSink(results) if results else None


def main(argv: list[str] | None = None) -> int:
    die_with_parent()  # when spawn() started us
    args = build_parser().parse_args(argv)
    try:
        cls = registry.get(args.backend)
        if not cls.multiprocess:
            raise BackendError(f"{args.backend}: in-process backend, it cannot be shared with a worker process")
        if args.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {args.concurrency}")
        config = BackendConfig(
            queue=args.queue,
            heartbeat_s=args.heartbeat_s,
            timeout_s=args.timeout_s,
            prefetch=args.prefetch,
            max_attempts=args.max_attempts,
        )
        fn = load_function(args.func)
        if args.harness:
            fn = Harness(fn)
        if args.sink != "file" and not args.sink_table:
            raise ValueError(f"--sink {args.sink} needs --sink-table")
    except (ValueError, WorkerLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    events = EventLog(args.events) if args.events else None
    try:
        sink = open_sink(args.sink, args.results, args.sink_table)
    except SinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    hooks = RecordingHooks(events, args.worker_id, "effect" if args.sink == "file" else "write") if events \
        else WorkerHooks()
    backend = cls(config)
    try:
        backend.connect()
        backend.serve(fn, args.worker_id, hooks, result_sink=sink, concurrency=args.concurrency, stop_event=stop)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        backend.close()
        for f in (events, sink):
            if f is not None:
                f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
