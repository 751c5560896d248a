"""The ``logqueue`` command: run nodes, inspect and change a cluster, use the log and the
work queue. One module per command group; ``common`` holds what they share.

Every error is one line on stderr (exit status 1; 2 for a usage error), never a
traceback. Commands that talk to a cluster take ``--cluster HOST:PORT,...`` (any
subset of the nodes) and ``--secret-file`` when the nodes were started with one.
"""
from __future__ import annotations

import argparse
import sys

from logqueue.cli import (
    cluster,
    leader,
    log,
    member,
    node,
    produce,
    queue,
    status,
    worker,
)
from logqueue.cli.common import UsageError
from logqueue.client import ClientError
from logqueue.runtime.auth import AuthError
from logqueue.storage import StorageError

EXAMPLES = """\
examples:
  logqueue cluster up --nodes 3 --base-port 7001 --data-dir /tmp/lq
  logqueue status --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  logqueue log append --cluster 127.0.0.1:7001 --count 1000 --payload-bytes 100
  logqueue log read --node 127.0.0.1:7002 --from 1 --max 10
  logqueue produce --cluster 127.0.0.1:7001 --queue jobs --from-file jobs.txt
  logqueue worker --cluster 127.0.0.1:7001 --queue jobs --group g --func mymodule:handle
  logqueue queue stats --cluster 127.0.0.1:7001 --queue jobs --group g --json
"""

COMMAND_GROUPS = (node, cluster, status, log, member, leader, produce, worker, queue)  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logqueue",
        description="A Raft-replicated log with a work queue on it. Run nodes, inspect and change a "
                    "cluster, append to and read the log.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        parser.exit(2, f"logqueue: error: {exc}\n")
    except (ClientError, AuthError, StorageError, OSError, ValueError) as exc:
        print(f"logqueue: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
