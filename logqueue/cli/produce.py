"""``logqueue produce``: enqueue jobs idempotently and wait until they are committed."""
from __future__ import annotations

import argparse
import json

from logqueue.cli.common import (
    cluster_arg,
    non_negative,
    open_client,
    payloads,
    positive,
)
from logqueue.cli.queue import EXAMPLES
from logqueue.client import Producer


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``produce`` to the ``logqueue`` parser."""
    p = sub.add_parser("produce", help="enqueue jobs (idempotently) and wait until they are committed",
                       description="Enqueue each line of --from-file (without its newline) as one job, in order, "
                                   "or --count generated payloads. Prints "
                                   '{"enqueued": N, "first_offset": I, "last_offset": J}. Jobs carry '
                                   "(producer id, seq): rerunning the same input with the same --producer-id "
                                   "never enqueues a job twice.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cluster_arg(p)
    p.add_argument("--queue", required=True, metavar="Q")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-file", metavar="F", help="one job per line ('-' for stdin)")
    src.add_argument("--count", type=non_negative, metavar="N", help="enqueue N generated payloads")
    p.add_argument("--payload-bytes", type=positive, default=100, metavar="B",
                   help="size of each generated payload (default 100)")
    p.add_argument("--producer-id", metavar="ID",
                   help="idempotency identity; job k of the input gets seq k (default: a fresh id)")
    p.add_argument("--batch", type=positive, default=256, metavar="N", help="jobs per submit (default 256)")
    p.add_argument("--window", type=positive, default=8, metavar="N", help="submits in flight (default 8)")
    p.set_defaults(run=cmd_produce)


def cmd_produce(args) -> int:
    jobs = payloads(args)
    with open_client(args) as client:
        producer = Producer(client, args.queue, producer_id=args.producer_id, batch=args.batch, window=args.window)
        offsets = producer.enqueue_many(jobs)
    print(json.dumps({"enqueued": len(offsets), "first_offset": min(offsets, default=None),
                      "last_offset": max(offsets, default=None)}))
    return 0
