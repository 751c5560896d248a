"""``logqueue status``: one row per node (role, membership, term, indexes)."""
from __future__ import annotations

import argparse
import json

from logqueue.cli.common import cluster_arg, open_client, print_table


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``status`` to the ``logqueue`` parser."""
    p = sub.add_parser("status", help="one row per node: role, membership, term, indexes",
                       description="Ask every listed node for its own view. Unreachable nodes are listed as such. "
                                   "`member` is voter, learner (receives the log, does not vote) or none. "
                                   "Exits 0 when some node answers as the leader, 1 otherwise (no node "
                                   "answered, or none leads), so scripts can wait on it.")
    cluster_arg(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of every node's full status (also memory, WAL use, retained offsets, snapshot, longest loop stall, each peer's links and replication) instead of a table")
    p.set_defaults(run=cmd_status)


STATUS_FIELDS = ("id", "address", "role", "member", "term", "leader_id", "commit_index", "last_index",
                 "applied_index", "pid")


def membership(row: dict) -> str | None:
    """What the node is in its own latest configuration: voter, learner or none."""
    if row.get("voters") is None:
        return None  # unreachable
    if row["id"] in row["voters"] or row["id"] in row.get("outgoing", ()):
        return "voter"
    return "learner" if row["id"] in row.get("learners", ()) else "none"


def cmd_status(args) -> int:
    with open_client(args) as c:
        rows = c.cluster_status()
    code = 0 if any(row.get("role") == "leader" for row in rows) else 1
    if args.json:
        print(json.dumps(rows))
        return code
    from rich.table import Table

    table = Table(box=None)
    for f in STATUS_FIELDS:
        table.add_column(f)
    for row in rows:
        row = {**row, "member": membership(row)}
        table.add_row(*("-" if row.get(f) is None else str(row.get(f)) for f in STATUS_FIELDS))
    print_table(table)
    return code
