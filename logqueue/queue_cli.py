"""The work-queue commands of ``logqueue``: produce, worker, queue stats/results/read.

``logqueue.cli.build_parser`` registers them with ``add_commands``. Output is JSON (one
object, or JSON lines for listings); bytes are shown as UTF-8 text, or as base64 with
``"encoding": "base64"`` when they are not valid UTF-8.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import signal
import sys

from logqueue import cli
from logqueue.producer import Producer
from logqueue.worker import Worker
from logqueue.workers import load_function

PAGE = 1000  # rows per query when listing

EXAMPLES = """\
examples:
  logqueue produce --cluster 127.0.0.1:7001 --queue jobs --from-file jobs.txt
  logqueue worker --cluster 127.0.0.1:7001 --queue jobs --group g --func mymodule:handle --concurrency 4
  logqueue queue stats --cluster 127.0.0.1:7001 --queue jobs --group g --json
  logqueue queue results --cluster 127.0.0.1:7001 --queue jobs --group g
  logqueue queue read --cluster 127.0.0.1:7001 --queue jobs --from 0 --max 10
"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``produce``, ``worker`` and ``queue ...`` to the ``logqueue`` parser."""
    p = sub.add_parser("produce", help="enqueue jobs (idempotently) and wait until they are committed",
                       description="Enqueue each line of --from-file (without its newline) as one job, in order, "
                                   "or --count generated payloads. Prints "
                                   '{"enqueued": N, "first_offset": I, "last_offset": J}. Jobs carry '
                                   "(producer id, seq): rerunning the same input with the same --producer-id "
                                   "never enqueues a job twice.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli._cluster_arg(p)
    p.add_argument("--queue", required=True, metavar="Q")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-file", metavar="F", help="one job per line ('-' for stdin)")
    src.add_argument("--count", type=cli.non_negative, metavar="N", help="enqueue N generated payloads")
    p.add_argument("--payload-bytes", type=cli.positive, default=100, metavar="B",
                   help="size of each generated payload (default 100)")
    p.add_argument("--producer-id", metavar="ID",
                   help="idempotency identity; job k of the input gets seq k (default: a fresh id)")
    p.add_argument("--batch", type=cli.positive, default=256, metavar="N", help="jobs per submit (default 256)")
    p.add_argument("--window", type=cli.positive, default=8, metavar="N", help="submits in flight (default 8)")
    p.set_defaults(run=cmd_produce)

    p = sub.add_parser("worker", help="run a plug-in function on a queue's jobs until stopped",
                       description="Claim jobs of --queue for consumer group --group and run --func on each "
                                   "payload; its return value (bytes) is stored in the log as the job's result, "
                                   "exactly once. Leases are extended every --heartbeat-ms; a job whose worker "
                                   "stops heartbeating is claimed again after --lease-ms. SIGTERM or Ctrl-C: "
                                   "finish the jobs in hand, then print the worker's counts as JSON and exit.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli._cluster_arg(p)
    p.add_argument("--queue", required=True, metavar="Q")
    p.add_argument("--group", required=True, metavar="G")
    p.add_argument("--func", required=True, metavar="MODULE:FUNCTION",
                   help="fn(payload: bytes) -> bytes, as module:function (importable from PYTHONPATH) "
                        "or a name registered under the entry-point group logqueue.workers")
    p.add_argument("--concurrency", type=cli.positive, default=1, metavar="N", help="jobs run at once (default 1)")
    p.add_argument("--prefetch", type=cli.non_negative, default=0, metavar="N",
                   help="jobs claimed ahead of free threads, fewer round trips per job; each uses an attempt "
                        "when claimed, and on stop the worker runs them first (default 0)")
    p.add_argument("--lease-ms", type=cli.positive, default=30_000, metavar="MS", help="lease length (default 30000)")
    p.add_argument("--heartbeat-ms", type=cli.positive, metavar="MS",
                   help="lease extension interval, below --lease-ms (default: a third of it)")
    p.add_argument("--max-attempts", type=cli.non_negative, default=0, metavar="K",
                   help="claims before a failing or abandoned job is dead-lettered (default 0: never)")
    p.add_argument("--name", metavar="W", help="this worker's name in the group (default: a fresh unique one)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(run=cmd_worker)

    qp = sub.add_parser("queue", help="inspect a work queue").add_subparsers(dest="action", metavar="ACTION",
                                                                             required=True)
    p = qp.add_parser("stats", help="a group's counters on a queue",
                      description="Counters of consumer group --group on --queue: enqueued, completed, in_flight, "
                                  "dead_lettered, redelivered, fenced, backlog, ... (linearizable read).")
    _queue_args(p, group=True)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=cmd_stats)

    p = qp.add_parser("results", help="the results of a group's completed jobs, as JSON lines",
                      description='One JSON line per completed offset: {"offset", "attempts", "token", "result"}; '
                                  'the result is UTF-8 text, or base64 with "encoding": "base64".')
    _queue_args(p, group=True)
    _range_args(p)
    p.set_defaults(run=cmd_results)

    p = qp.add_parser("dead-letters", help="a group's dead-lettered jobs, as JSON lines",
                      description='One JSON line per dead-lettered offset: {"offset", "attempts", "token", "reason"}.')
    _queue_args(p, group=True)
    _range_args(p)
    p.set_defaults(run=cmd_dead_letters)

    p = qp.add_parser("read", help="log mode: the jobs from an offset on, as JSON lines",
                      description='Read the queue as a log, statelessly: one JSON line {"offset", "payload"} per '
                                  'job from --from on (payload as UTF-8 text, or base64 with "encoding": '
                                  '"base64"). Jobs below the retained history are skipped.')
    _queue_args(p, group=False)
    _range_args(p)
    p.set_defaults(run=cmd_read)


def _queue_args(p: argparse.ArgumentParser, group: bool) -> None:
    cli._cluster_arg(p)
    p.add_argument("--queue", required=True, metavar="Q")
    if group:
        p.add_argument("--group", required=True, metavar="G")


def _range_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", type=cli.non_negative, default=0, metavar="I",
                   help="first offset (default 0)")
    p.add_argument("--max", type=cli.non_negative, default=None, metavar="M", help="print at most M rows")


def text_field(row: dict, key: str, data: bytes) -> dict:
    """Put ``data`` in ``row[key]`` as UTF-8 text, or as base64 with ``"encoding": "base64"``."""
    try:
        row[key] = data.decode("utf-8")
    except UnicodeDecodeError:
        row[key] = base64.b64encode(data).decode("ascii")
        row["encoding"] = "base64"
    return row


# --- commands -------------------------------------------------------------------------


def cmd_produce(args) -> int:
    payloads = cli._payloads(args)
    with cli._client(args) as client:
        producer = Producer(client, args.queue, producer_id=args.producer_id, batch=args.batch, window=args.window)
        offsets = producer.enqueue_many(payloads)
    print(json.dumps({"enqueued": len(offsets), "first_offset": min(offsets, default=None),
                      "last_offset": max(offsets, default=None)}))
    return 0


def cmd_worker(args) -> int:
    if args.heartbeat_ms is not None and args.heartbeat_ms >= args.lease_ms:
        raise cli.UsageError(f"--heartbeat-ms {args.heartbeat_ms} must be below --lease-ms {args.lease_ms}")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fn = load_function(args.func)
    with cli._client(args) as client:
        client.status()  # no leader within --timeout: one line and exit, rather than retrying forever
        worker = Worker(client, args.queue, args.group, fn, worker=args.name, concurrency=args.concurrency, prefetch=args.prefetch,
                        lease_ms=args.lease_ms, heartbeat_ms=args.heartbeat_ms, max_attempts=args.max_attempts)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop())
        stats = worker.run()
    print(json.dumps({"worker": worker.name, **stats.as_dict()}), flush=True)
    return 0


def cmd_stats(args) -> int:
    with cli._client(args) as client:
        stats = client.query("stats", queue=args.queue, group=args.group)
    if args.json:
        print(json.dumps(stats))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, title=f"queue {args.queue}, group {args.group}")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key, "-" if value is None else str(value))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def _pages(client, name: str, args, **query):
    """Rows of a listing query from ``args.start`` on, at most ``args.max``, page by page."""
    start, remaining = args.start, args.max
    while remaining is None or remaining > 0:
        count = PAGE if remaining is None else min(PAGE, remaining)
        rows = client.query(name, from_offset=start, max_count=count, **query)
        yield from rows
        if len(rows) < count:
            return
        if remaining is not None:
            remaining -= len(rows)
        start = _offset(rows[-1]) + 1


def _offset(row) -> int:
    return row["offset"] if isinstance(row, dict) else row[0]


def cmd_results(args) -> int:
    with cli._client(args) as client:
        for row in _pages(client, "results", args, queue=args.queue, group=args.group):
            out = {"offset": row["offset"], "attempts": row["attempts"], "token": row["token"]}
            sys.stdout.write(json.dumps(text_field(out, "result", bytes(row["result"]))) + "\n")
    sys.stdout.flush()
    return 0


def cmd_dead_letters(args) -> int:
    with cli._client(args) as client:
        for row in _pages(client, "dead_letters", args, queue=args.queue, group=args.group):
            sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


def cmd_read(args) -> int:
    with cli._client(args) as client:
        for offset, payload in _pages(client, "read", args, queue=args.queue):
            sys.stdout.write(json.dumps(text_field({"offset": offset}, "payload", bytes(payload))) + "\n")
    sys.stdout.flush()
    return 0
