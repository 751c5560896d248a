"""``logqueue member add|remove``: change the voters by joint consensus."""
from __future__ import annotations

import argparse
import json

from logqueue.cli.common import address, cluster_arg, open_client, positive


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``member add`` and ``member remove`` to the ``logqueue`` parser."""
    memp = sub.add_parser("member", help="add or remove a voter (joint consensus)").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    for action in ("add", "remove"):
        p = memp.add_parser(action, help=f"{action} a voter",
                            description=f"{action.capitalize()} a voter by joint consensus and wait until the new "
                                        "configuration is committed. A new node is started first with "
                                        "`logqueue node --join`.")
        cluster_arg(p)
        p.add_argument("--id", required=True, type=positive)
        p.add_argument("--address", type=address, metavar="HOST:PORT",
                       help="where the node listens (needed to add a node the cluster does not know)")
        p.set_defaults(run=cmd_member, member_action=action)


def cmd_member(args) -> int:
    with open_client(args) as c:
        if args.member_action == "add":
            voters = c.member_add(args.id, args.address)
        else:
            voters = c.member_remove(args.id)
    print(json.dumps({"voters": voters}))
    return 0
