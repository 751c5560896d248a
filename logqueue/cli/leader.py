"""``logqueue leader transfer``: hand leadership to another voter."""
from __future__ import annotations

import argparse
import json

from logqueue.cli.common import cluster_arg, open_client, positive


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``leader transfer`` to the ``logqueue`` parser."""
    p = sub.add_parser("leader", help="leadership operations").add_subparsers(dest="action", metavar="ACTION",
                                                                              required=True)
    tr = p.add_parser("transfer", help="hand leadership to another voter",
                      description="Ask the leader to hand over to --to (Raft leadership transfer) and wait for it.")
    cluster_arg(tr)
    tr.add_argument("--to", required=True, type=positive, metavar="ID")
    tr.set_defaults(run=cmd_leader_transfer)


def cmd_leader_transfer(args) -> int:
    with open_client(args) as c:
        leader = c.transfer_leader(args.to)
    print(json.dumps({"leader": leader}))
    return 0
