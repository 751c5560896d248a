"""``logqueue worker``: run a plug-in function on a queue's jobs until stopped."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from logqueue.cli.common import (
    UsageError,
    cluster_arg,
    non_negative,
    open_client,
    positive,
)
from logqueue.cli.queue import EXAMPLES
from logqueue.client import Worker
from logqueue.workers import load_function


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``worker`` to the ``logqueue`` parser."""
    p = sub.add_parser("worker", help="run a plug-in function on a queue's jobs until stopped",
                       description="Claim jobs of --queue for consumer group --group and run --func on each "
                                   "payload; its return value (bytes) is stored in the log as the job's result, "
                                   "exactly once. Leases are extended every --heartbeat-ms; a job whose worker "
                                   "stops heartbeating is claimed again after --lease-ms. SIGTERM or Ctrl-C: "
                                   "finish the jobs in hand, then print the worker's counts as JSON and exit.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cluster_arg(p)
    p.add_argument("--queue", required=True, metavar="Q")
    p.add_argument("--group", required=True, metavar="G")
    p.add_argument("--func", required=True, metavar="MODULE:FUNCTION",
                   help="fn(payload: bytes) -> bytes, as module:function (importable from PYTHONPATH) "
                        "or a name registered under the entry-point group logqueue.workers")
    p.add_argument("--concurrency", type=positive, default=1, metavar="N", help="jobs run at once (default 1)")
    p.add_argument("--prefetch", type=non_negative, default=0, metavar="N",
                   help="jobs claimed ahead of free threads, fewer round trips per job; each uses an attempt "
                        "when claimed, and on stop the worker runs them first (default 0)")
    p.add_argument("--lease-ms", type=positive, default=30_000, metavar="MS", help="lease length (default 30000)")
    p.add_argument("--heartbeat-ms", type=positive, metavar="MS",
                   help="lease extension interval, below --lease-ms (default: a third of it)")
    p.add_argument("--max-attempts", type=non_negative, default=0, metavar="K",
                   help="claims before a failing or abandoned job is dead-lettered (default 0: never)")
    p.add_argument("--name", metavar="W", help="this worker's name in the group (default: a fresh unique one)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(run=cmd_worker)


def cmd_worker(args) -> int:
    if args.heartbeat_ms is not None and args.heartbeat_ms >= args.lease_ms:
        raise UsageError(f"--heartbeat-ms {args.heartbeat_ms} must be below --lease-ms {args.lease_ms}")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fn = load_function(args.func)
    with open_client(args) as client:
        client.status()  # no leader within --timeout: one line and exit, rather than retrying forever
        worker = Worker(client, args.queue, args.group, fn, worker=args.name, concurrency=args.concurrency, prefetch=args.prefetch,
                        lease_ms=args.lease_ms, heartbeat_ms=args.heartbeat_ms, max_attempts=args.max_attempts)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop())
        stats = worker.run()
    print(json.dumps({"worker": worker.name, **stats.as_dict()}), flush=True)
    return 0
