"""``logqueue member add|promote|remove``: change the members (voters and learners)."""
from __future__ import annotations

import argparse
import json

from logqueue.cli.common import address, cluster_arg, open_client, positive

_HELP = {
    "add": "Add a node: it joins as a learner (it receives the log but does not vote), and "
           "becomes a voter by joint consensus once it holds every committed entry; with "
           "--learner it stays a learner. Start the node first with `logqueue node --join`.",
    "promote": "Make a learner a voter by joint consensus, once it holds every committed entry.",
    "remove": "Remove a voter or a learner (joint consensus for a voter).",
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``member add``, ``member promote`` and ``member remove`` to the ``logqueue`` parser."""
    memp = sub.add_parser("member", help="add, promote or remove a member").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    for action, text in _HELP.items():
        p = memp.add_parser(action, help=text.split(":")[0].split(" by ")[0].lower(),
                            description=text + " Waits until the new configuration is committed.")
        cluster_arg(p)
        p.add_argument("--id", required=True, type=positive)
        if action == "add":
            p.add_argument("--address", type=address, metavar="HOST:PORT",
                           help="where the node listens (needed to add a node the cluster does not know)")
            p.add_argument("--learner", action="store_true",
                           help="keep it a learner (promote it later with `logqueue member promote`)")
        p.set_defaults(run=cmd_member, member_action=action)


def cmd_member(args) -> int:
    op = "learner" if args.member_action == "add" and args.learner else args.member_action
    with open_client(args) as c:
        body = c.member_change(op, args.id, getattr(args, "address", None))
    print(json.dumps({"voters": body["voters"], "learners": body["learners"]}))
    return 0
