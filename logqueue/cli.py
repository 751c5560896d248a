"""The ``logqueue`` command: run nodes, inspect and change a cluster, use the log.

Every error is one line on stderr (exit status 1; 2 for a usage error), never a
traceback. Commands that talk to a cluster take ``--cluster HOST:PORT,...`` (any
subset of the nodes) and ``--secret-file`` when the nodes were started with one.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from logqueue.client import Client, ClientError, parse_cluster
from logqueue.runtime.auth import AuthError, load_secret
from logqueue.runtime.transport import split_address
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


class UsageError(ValueError):
    """Bad command-line input (exit status 2)."""


# --- argument types -----------------------------------------------------------------------


def address(text: str) -> str:
    try:
        split_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def peers(text: str) -> dict[int, str]:
    """'1=h:p,2=h:p' -> {1: 'h:p', 2: 'h:p'}."""
    out: dict[int, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        ident, sep, addr = item.partition("=")
        if not sep or not ident.isdigit() or int(ident) <= 0:
            raise argparse.ArgumentTypeError(f"bad peer {item!r}: expected ID=HOST:PORT with a positive integer ID")
        if int(ident) in out:
            raise argparse.ArgumentTypeError(f"peer id {ident} is given twice")
        out[int(ident)] = address(addr)
    if not out:
        raise argparse.ArgumentTypeError("no peers given: expected ID=HOST:PORT[,ID=HOST:PORT...]")
    return out


def ms_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not (sep and low.isdigit() and high.isdigit()) or not 0 < int(low) <= int(high):
        raise argparse.ArgumentTypeError(f"bad range {text!r}: expected LOW-HIGH milliseconds with 0 < LOW <= HIGH")
    return int(low), int(high)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def cluster(text: str) -> list[str]:
    try:
        return parse_cluster(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- the parser ---------------------------------------------------------------------------


def _secret_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secret-file", metavar="F", help="file holding the cluster's shared secret (>= 16 bytes)")


def _cluster_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, type=cluster, metavar="HOST:PORT,...",
                   help="addresses of some nodes of the cluster (any one that answers finds the leader)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to keep retrying before giving up (default 30)")
    _secret_arg(p)


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fsync", choices=("always", "batch", "off"), default="batch",
                   help="always: fsync every write; batch: one fsync per batch of appends, before any "
                        "reply or message that depends on it (default); off: never (unsafe, tests only)")
    p.add_argument("--election-timeout-ms", type=ms_range, default=(300, 600), metavar="LOW-HIGH",
                   help="randomized election timeout (default 300-600)")
    p.add_argument("--heartbeat-ms", type=positive, default=50, metavar="N", help="leader heartbeat interval (default 50)")
    p.add_argument("--tick-ms", type=positive, default=10, metavar="N", help="length of one Raft tick (default 10)")
    p.add_argument("--snapshot-every", type=positive, default=10_000, metavar="N",
                   help="take a snapshot every N applied entries (default 10000)")
    p.add_argument("--retain-entries", type=non_negative, default=100_000, metavar="N",
                   help="entries kept on disk behind the latest snapshot, for `log read` and slow "
                        "followers (default 100000)")
    p.add_argument("--test-hooks", action="store_true",
                   help="accept test-only requests (cutting this node off its peers)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    _secret_arg(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logqueue",
        description="A Raft-replicated log with a work queue on it. Run nodes, inspect and change a "
                    "cluster, append to and read the log.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("node", help="run one node in the foreground",
                       description="Run one Raft node. It serves peers and clients on --listen and keeps its "
                                   "log, hard state and snapshots in --data-dir. Stop it with SIGTERM or Ctrl-C.")
    p.add_argument("--id", required=True, type=positive, help="this node's id (a positive integer)")
    p.add_argument("--listen", required=True, type=address, metavar="HOST:PORT")
    p.add_argument("--peers", required=True, type=peers, metavar="ID=HOST:PORT,...",
                   help="the initial members (this node may be listed too); with --join: nodes to talk to")
    p.add_argument("--data-dir", required=True, metavar="DIR")
    p.add_argument("--join", action="store_true",
                   help="start empty and wait to be added with `logqueue member add` (do not bootstrap)")
    _node_args(p)
    p.set_defaults(run=cmd_node)

    p = sub.add_parser("cluster", help="run a local cluster").add_subparsers(dest="action", metavar="ACTION",
                                                                                required=True)
    up = p.add_parser("up", help="start N local nodes and stop them on Ctrl-C",
                      description="Start N node processes on 127.0.0.1 (node i listens on BASE_PORT+i-1, data "
                                  "in DIR/node-i), print their addresses and wait. A node that dies is reported, "
                                  "not restarted. Ctrl-C stops them all.")
    up.add_argument("--nodes", required=True, type=positive, metavar="N")
    up.add_argument("--base-port", required=True, type=positive, metavar="P")
    up.add_argument("--data-dir", required=True, metavar="DIR")
    _node_args(up)
    up.set_defaults(run=cmd_cluster_up)

    p = sub.add_parser("status", help="one row per node: role, term, indexes",
                       description="Ask every listed node for its own view. Unreachable nodes are listed as such.")
    _cluster_arg(p)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(run=cmd_status)

    logp = sub.add_parser("log", help="append to or read the replicated log").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    p = logp.add_parser("append", help="append records and wait until they are committed",
                        description="Append each line of --from-file (without its newline), or --count generated "
                                    "payloads, and return once all are committed. Prints "
                                    '{"appended": N, "first_index": I, "last_index": J}.')
    _cluster_arg(p)
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
                                    '"kind": "queue").')
    p.add_argument("--node", required=True, type=address, metavar="HOST:PORT")
    p.add_argument("--from", dest="start", type=positive, default=1, metavar="I", help="first index (default 1)")
    p.add_argument("--max", type=non_negative, default=None, metavar="M", help="print at most M entries")
    p.add_argument("--all", action="store_true", help="also show no-op, config, address and duplicate entries")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S")
    _secret_arg(p)
    p.set_defaults(run=cmd_log_read)

    memp = sub.add_parser("member", help="add or remove a voter (joint consensus)").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    for action in ("add", "remove"):
        p = memp.add_parser(action, help=f"{action} a voter",
                            description=f"{action.capitalize()} a voter by joint consensus and wait until the new "
                                        "configuration is committed. A new node is started first with "
                                        "`logqueue node --join`.")
        _cluster_arg(p)
        p.add_argument("--id", required=True, type=positive)
        p.add_argument("--address", type=address, metavar="HOST:PORT",
                       help="where the node listens (needed to add a node the cluster does not know)")
        p.set_defaults(run=cmd_member, member_action=action)

    p = sub.add_parser("leader", help="leadership operations").add_subparsers(dest="action", metavar="ACTION",
                                                                              required=True)
    tr = p.add_parser("transfer", help="hand leadership to another voter",
                      description="Ask the leader to hand over to --to (Raft leadership transfer) and wait for it.")
    _cluster_arg(tr)
    tr.add_argument("--to", required=True, type=positive, metavar="ID")
    tr.set_defaults(run=cmd_leader_transfer)

    from logqueue import queue_cli  # imported here: it builds on this module's helpers

    queue_cli.add_commands(sub)
    return parser


# --- commands -----------------------------------------------------------------------------


def _secret(args) -> bytes | None:
    return load_secret(args.secret_file) if args.secret_file else None


def _client(args, **kwargs) -> Client:
    return Client(args.cluster, secret=_secret(args), timeout=args.timeout, **kwargs)


def _node_config(args, node_id: int, listen: str, peer_map: dict[int, str], data_dir: str, join: bool = False):
    from logqueue.runtime.node import NodeConfig

    low, high = args.election_timeout_ms
    if args.heartbeat_ms >= low:
        raise UsageError(f"--heartbeat-ms {args.heartbeat_ms} must be below the election timeout ({low} ms)")
    if args.tick_ms > args.heartbeat_ms:
        raise UsageError("--tick-ms must not exceed --heartbeat-ms")
    return NodeConfig(node_id=node_id, listen=listen, peers=peer_map, data_dir=data_dir, fsync=args.fsync,
                      election_timeout_ms=(low, high), heartbeat_ms=args.heartbeat_ms, tick_ms=args.tick_ms,
                      secret=_secret(args), join=join, snapshot_every=args.snapshot_every,
                      retain_entries=args.retain_entries, test_hooks=args.test_hooks)


def cmd_node(args) -> int:
    from logqueue.runtime.serve import serve

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s node{args.id} %(levelname)s %(name)s: %(message)s")
    peer_map = dict(args.peers)
    if args.id in peer_map and peer_map[args.id] != args.listen:
        raise UsageError(f"--peers gives node {args.id} the address {peer_map[args.id]}, but --listen is {args.listen}")
    peer_map.pop(args.id, None)
    cfg = _node_config(args, args.id, args.listen, peer_map, args.data_dir, join=args.join)
    return serve(cfg)


def _node_options(args) -> dict:
    """``node_argv`` options that pass ``cluster up``'s node settings on to each node."""
    extra = ["--snapshot-every", str(args.snapshot_every), "--retain-entries", str(args.retain_entries)]
    if args.secret_file:
        extra += ["--secret-file", args.secret_file]
    if args.test_hooks:
        extra.append("--test-hooks")
    return dict(fsync=args.fsync, election_timeout_ms=args.election_timeout_ms, heartbeat_ms=args.heartbeat_ms,
                tick_ms=args.tick_ms, log_level=args.log_level, extra_args=extra)


def cmd_cluster_up(args) -> int:
    from logqueue.local_cluster import LocalCluster

    if args.base_port + args.nodes - 1 > 65535:
        raise UsageError("--base-port + --nodes goes beyond port 65535")
    _secret(args)  # fail now, not in every child
    # The nodes share this terminal: their output is ours, and a Ctrl-C reaches them too.
    cluster = LocalCluster(args.nodes, args.data_dir, ports=range(args.base_port, args.base_port + args.nodes),
                           logs=False, **_node_options(args))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for i in cluster.members:
            data_dir = cluster.data_dir(i)
            os.makedirs(data_dir, exist_ok=True)
            pid = cluster.start(i)
            print(f"node {i}: {cluster.addresses[i]} pid {pid} data {data_dir}", flush=True)
        print(f"cluster: {cluster.spec}", flush=True)
        print("Ctrl-C stops all nodes.", file=sys.stderr, flush=True)
        running = set(cluster.members)
        while running:
            time.sleep(0.2)
            for i in sorted(running):
                if not cluster.alive(i):
                    print(f"node {i} exited with status {cluster.procs[i].returncode} (not restarted)",
                          file=sys.stderr, flush=True)
                    running.discard(i)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop(grace_s=5)


STATUS_FIELDS = ("id", "address", "role", "term", "leader_id", "commit_index", "last_index", "applied_index", "pid")


def cmd_status(args) -> int:
    with _client(args) as c:
        rows = c.cluster_status()
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for f in STATUS_FIELDS:
        table.add_column(f)
    for row in rows:
        table.add_row(*("-" if row.get(f) is None else str(row.get(f)) for f in STATUS_FIELDS))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def _payloads(args):
    if args.from_file is not None:
        if args.from_file == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                data = Path(args.from_file).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {args.from_file}: {exc.strerror}") from None
        return data.splitlines()
    stamp = f"{os.getpid()}-{time.time_ns()}"
    out = []
    for n in range(args.count):
        head = f"{stamp}-{n}-".encode()
        out.append((head + b"x" * max(0, args.payload_bytes - len(head)))[: max(args.payload_bytes, len(head))])
    return out


def cmd_log_append(args) -> int:
    records = _payloads(args)
    with _client(args, window=args.window) as c:
        indexes = c.append(records)
    print(json.dumps({"appended": len(indexes), "first_index": min(indexes, default=None),
                      "last_index": max(indexes, default=None)}))
    return 0


def cmd_log_read(args) -> int:
    remaining = args.max
    start = args.start
    with Client([args.node], secret=_secret(args), timeout=args.timeout) as c:
        first = True
        while remaining is None or remaining > 0:
            page = c.read_log(args.node, start, 1000 if remaining is None else min(remaining, 1000), args.all)
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


def cmd_member(args) -> int:
    with _client(args) as c:
        if args.member_action == "add":
            voters = c.member_add(args.id, args.address)
        else:
            voters = c.member_remove(args.id)
    print(json.dumps({"voters": voters}))
    return 0


def cmd_leader_transfer(args) -> int:
    with _client(args) as c:
        leader = c.transfer_leader(args.to)
    print(json.dumps({"leader": leader}))
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
