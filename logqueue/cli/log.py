"""``logqueue log append|read``: append to and read the replicated log."""
from __future__ import annotations

import argparse
import json
import sys

from logqueue.cli.common import (
    address,
    cluster_arg,
    non_negative,
    open_client,
    payloads,
    positive,
    secret,
    secret_arg,
)
from logqueue.client import Client


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``log append`` and ``log read`` to the ``logqueue`` parser."""
    logp = sub.add_parser("log", help="append to or read the replicated log").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = logp.add_parser("append", help="append records and wait until they are committed",
                        description="Append each line of --from-file (without its newline), or --count generated "
                                    "payloads, and return once all are committed. Prints "
                                    '{"appended": N, "first_index": I, "last_index": J}.')
    cluster_arg(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-file", metavar="F", help="one record per line ('-' for stdin)")
    src.add_argument("--count", type=non_negative, metavar="N", help="append N generated payloads")
    p.add_argument("--payload-bytes", type=positive, default=100, metavar="B",
                   help="size of each generated payload (default 100)")
    p.add_argument("--window", type=positive, default=8192, metavar="N", help="records in flight at once")
    p.set_defaults(run=cmd_log_append)

    p = logp.add_parser("read", help="print one node's committed entries as JSON lines",
                        description='Print the committed entries of one node as JSON lines {"index", "term", '
                                    '"data"} (data as UTF-8 text, or base64 with "encoding": "base64"). Without '
                                    "--all only application records are shown (and queue batches, with "
                                    '"kind": "queue"). --consistency says how fresh the read must be.')
    p.add_argument("--node", required=True, type=address, metavar="HOST:PORT")
    p.add_argument("--from", dest="start", type=positive, default=1, metavar="I", help="first index (default 1)")
    p.add_argument("--max", type=non_negative, default=None, metavar="M", help="print at most M entries")
    p.add_argument("--all", action="store_true", help="also show no-op, config, address and duplicate entries")
    p.add_argument("--consistency", choices=("committed", "linearizable"), default="committed",
                   help="committed (default): what the node has applied, possibly stale on a follower; "
                        "linearizable: includes every append acknowledged before the read began, on any node "
                        "(ReadIndex at the leader; a follower waits for the leader's read index)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S")
    secret_arg(p)
    p.set_defaults(run=cmd_log_read)


def cmd_log_append(args) -> int:
    records = payloads(args)
    with open_client(args, window=args.window) as c:
        indexes = c.append(records)
    print(json.dumps({"appended": len(indexes), "first_index": min(indexes, default=None),
                      "last_index": max(indexes, default=None)}))
    return 0


def cmd_log_read(args) -> int:
    remaining = args.max
    start = args.start
    with Client([args.node], secret=secret(args), timeout=args.timeout) as c:
        first = True
        while remaining is None or remaining > 0:
            page = c.read_log(args.node, start, 1000 if remaining is None else min(remaining, 1000), args.all,
                              args.consistency)
            if first and start < page["first_index"]:
                print(f"logqueue: entries before {page['first_index']} were compacted into a snapshot; "
                      f"reading from {page['first_index']}", file=sys.stderr)
            first = False
            for row in page["entries"]:
                sys.stdout.write(json.dumps(row) + "\n")
            if remaining is not None:
                remaining -= len(page["entries"])
            if page["next"] > page["applied_index"]:
                break
            start = page["next"]
    sys.stdout.flush()
    return 0
