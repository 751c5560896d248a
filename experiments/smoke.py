"""``python -m experiments smoke``: push N jobs through each backend with a worker in a separate process.

For each backend: connect (unavailable -> reported with the reason), start
``python -m experiments.worker`` as a subprocess, enqueue N jobs (recording ``produce``),
wait until every job has an ``effect`` in the events, stop the worker with SIGTERM, and
delete the queue. A backend with servers of its own (``Backend.local_servers``: logqueue)
runs on them at their configured addresses or, when none answers there, on servers
started for the run. Reports per backend
``backend``, ``status`` (``ok``, ``unavailable``, ``failed``), ``produced``, ``completed``
(jobs with an effect), ``duplicates`` (effects beyond the first per job), ``seconds`` and
``reason``.

Exit status: 0 when no backend failed, 1 when one did, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from baselines import registry
from baselines.base import BackendConfig, BackendError, BackendUnavailable
from baselines.servers import ServerStartError
from experiments.recorder import EventLog, read_jsonl
from experiments.worker import spawn

POLL_S = 0.1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments smoke",
        description="Push N jobs through each backend, with the worker in a separate process, and report ok/unavailable/failed.",
    )
    p.add_argument("--backends", default="all", help=f"NAME,NAME or 'all' (known: {', '.join(registry.names())})")
    p.add_argument("--jobs", type=int, default=20, help="jobs per backend (default 20)")
    p.add_argument("--func", default="experiments.workers:echo", help="worker function (default experiments.workers:echo)")
    p.add_argument("--deadline-s", type=float, default=120.0, help="give up on a backend after this many seconds (default 120)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    return p


def _last_line(path: str) -> str:
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else ""


def smoke_one(name: str, jobs: int, func: str, deadline_s: float, workdir: str) -> dict:
    """Run the smoke test on one backend; never raises for a backend problem."""
    row = {"backend": name, "status": "failed", "produced": 0, "completed": 0, "duplicates": 0, "seconds": 0.0, "reason": ""}
    started = time.monotonic()
    try:
        cls = registry.get(name)
        if not cls.multiprocess:
            raise BackendUnavailable(f"{name}: in-process backend, it cannot serve a worker process")
        queue = f"smoke-{name}-{uuid.uuid4().hex[:8]}"
        backend = cls(BackendConfig(queue=queue, heartbeat_s=2.0, timeout_s=30.0))
        backend.connect()
    except BackendUnavailable as exc:
        row.update(status="unavailable", reason=str(exc))
        return row
    except Exception as exc:
        row["reason"] = f"{type(exc).__name__}: {exc}"
        return row

    events_path = os.path.join(workdir, f"{name}.events.jsonl")
    results_path = os.path.join(workdir, f"{name}.results.jsonl")
    stderr_path = os.path.join(workdir, f"{name}.worker.log")
    proc = None
    try:
        proc = spawn("smoke-worker", name, queue, func, Path(stderr_path), events=events_path,
                     results=results_path, heartbeat_s=2.0, timeout_s=30.0)
        with EventLog(events_path) as log:
            ids = set()
            for i in range(jobs):
                job = backend.enqueue(f"smoke-{i}".encode())
                log.produce(job)
                ids.add(job)
        row["produced"] = len(ids)
        deadline = started + deadline_s
        effects: Counter = Counter()
        while True:
            effects = Counter(e["job"] for e in read_jsonl(events_path) if e["ev"] == "effect" and e.get("job") in ids)
            if len(effects) == len(ids):
                break
            if not proc.alive():
                row["reason"] = f"worker exited with status {proc.proc.returncode}: {_last_line(stderr_path)}"
                break
            if time.monotonic() > deadline:
                row["reason"] = f"timed out after {deadline_s:g}s with {len(effects)}/{len(ids)} jobs completed"
                break
            time.sleep(POLL_S)
        row["completed"] = len(effects)
        row["duplicates"] = sum(effects.values()) - len(effects)
        if row["completed"] == row["produced"]:
            row["status"] = "ok"
    except BackendError as exc:
        row["reason"] = str(exc)
    finally:
        if proc is not None:
            proc.stop(timeout_s=15.0)
        try:
            backend.delete()
        except Exception as exc:  # a broker that died mid-run: report, do not crash the table
            row["reason"] = (row["reason"] + f"; cleanup failed: {exc}").lstrip("; ")
        backend.close()
        row["seconds"] = round(time.monotonic() - started, 2)
    return row


@contextlib.contextmanager
def _local_servers(classes: list):
    """Servers started here for the backends that need them and find none (``Backend.local_servers``).

    Their addresses go into the environment variables of their ``Server``, so that the
    worker processes and the backends of this command reach them. A backend whose
    servers cannot be started then reports unavailable, with how to start them.
    """
    saved: dict[str, str | None] = {}
    with contextlib.ExitStack() as stack:
        for cls in classes:
            try:
                addresses = stack.enter_context(cls.local_servers(fresh=False))
            except ServerStartError:
                continue
            for server in cls.servers:
                if server.name in addresses:
                    saved.setdefault(server.env, os.environ.get(server.env))
                    os.environ[server.env] = addresses[server.name]
        try:
            yield
        finally:
            for env, value in saved.items():
                if value is None:
                    os.environ.pop(env, None)
                else:
                    os.environ[env] = value


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"ok": "green", "unavailable": "yellow", "failed": "red"}
    table = Table(title="smoke")
    for col in ("backend", "status", "produced", "completed", "duplicates", "seconds"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for r in rows:
        status = f"[{colours[r['status']]}]{r['status']}[/]"
        table.add_row(r["backend"], status, str(r["produced"]), str(r["completed"]), str(r["duplicates"]),
                      f"{r['seconds']:.1f}", r["reason"])
    Console().print(table)


def _classes(names: list[str]) -> list:
    """The classes of ``names`` that can be imported (the others report unavailable in ``smoke_one``)."""
    classes = []
    for name in names:
        with contextlib.suppress(BackendUnavailable):
            classes.append(registry.get(name))
    return classes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = registry.parse_backends(args.backends)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="logqueue-smoke-") as workdir:
        with _local_servers(_classes(names)):
            rows = [smoke_one(name, args.jobs, args.func, args.deadline_s, workdir) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
