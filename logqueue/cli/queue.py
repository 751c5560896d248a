"""``logqueue queue stats|results|dead-letters|read``: inspect a work queue.

Output is JSON (one object, or JSON lines for listings); bytes are shown as UTF-8 text,
or as base64 with ``"encoding": "base64"`` when they are not valid UTF-8.
"""
from __future__ import annotations

import argparse
import json
import sys

from logqueue.cli.common import (
    cluster_arg,
    non_negative,
    open_client,
    print_table,
    text_field,
)

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
    """Add ``queue ...`` to the ``logqueue`` parser."""
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
    cluster_arg(p)
    p.add_argument("--queue", required=True, metavar="Q")
    if group:
        p.add_argument("--group", required=True, metavar="G")


def _range_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", type=non_negative, default=0, metavar="I",
                   help="first offset (default 0)")
    p.add_argument("--max", type=non_negative, default=None, metavar="M", help="print at most M rows")


# --- commands -------------------------------------------------------------------------


def cmd_stats(args) -> int:
    with open_client(args) as client:
        stats = client.query("stats", queue=args.queue, group=args.group)
    if args.json:
        print(json.dumps(stats))
        return 0
    from rich.table import Table

    table = Table(box=None, title=f"queue {args.queue}, group {args.group}")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key, "-" if value is None else str(value))
    print_table(table)
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
    with open_client(args) as client:
        for row in _pages(client, "results", args, queue=args.queue, group=args.group):
            out = {"offset": row["offset"], "attempts": row["attempts"], "token": row["token"]}
            sys.stdout.write(json.dumps(text_field(out, "result", bytes(row["result"]))) + "\n")
    sys.stdout.flush()
    return 0


def cmd_dead_letters(args) -> int:
    with open_client(args) as client:
        for row in _pages(client, "dead_letters", args, queue=args.queue, group=args.group):
            sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


def cmd_read(args) -> int:
    with open_client(args) as client:
        for offset, payload in _pages(client, "read", args, queue=args.queue):
            sys.stdout.write(json.dumps(text_field({"offset": offset}, "payload", bytes(payload))) + "\n")
    sys.stdout.flush()
    return 0
