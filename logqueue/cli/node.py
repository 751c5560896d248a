"""``logqueue node``: run one Raft node in the foreground (also the node options that
``logqueue cluster up`` passes on)."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from logqueue.cli.common import UsageError, address, ms_range, non_negative, peers, positive, secret, secret_arg
from logqueue.raft import RAFT_VARIANTS


def node_args(p: argparse.ArgumentParser) -> None:
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
                   help="entries kept on disk behind the latest snapshot, for `log read` (more when retained "
                        "jobs still need them: the log is the queue's store) (default 100000)")
    p.add_argument("--retain-bytes", type=non_negative, default=64 << 20, metavar="B",
                   help="... as long as they hold at most B bytes of data: the WAL of a queue then follows "
                        "its retention, not the entry count (default 64 MiB)")
    p.add_argument("--memory-entries", type=non_negative, default=1_000, metavar="N",
                   help="entries the Raft core keeps in memory behind its snapshot, within 8 MiB, for "
                        "followers slightly behind (a leader keeps more for a follower it streams to); a "
                        "follower further behind is sent a snapshot (default 1000)")
    p.add_argument("--retention-jobs", type=positive, default=1_000_000, metavar="N",
                   help="jobs of history each queue keeps (payloads, results, dedup; and the WAL segments "
                        "holding them) once every group has settled them; give every node the same value "
                        "(default 1000000)")
    p.add_argument("--snapshot-chunk-bytes", type=positive, default=1 << 20, metavar="N",
                   help="snapshot data per frame when a snapshot is streamed to a follower (default 1 MiB)")
    p.add_argument("--segment-bytes", type=positive, default=64 << 20, metavar="N",
                   help="size of one WAL segment file; retention deletes whole segments (default 64 MiB)")
    p.add_argument("--max-payload-bytes", type=positive, default=32 << 20, metavar="B",
                   help="largest record or job payload accepted; larger ones are refused at once "
                        "(default 33554432, 32 MiB; at most the frame limit of 64 MiB minus 64 KiB)")
    p.add_argument("--raft-variant", choices=sorted(RAFT_VARIANTS), default="logqueue",
                   help="for experiments only: paper runs Raft as the servers of the Raft paper's election "
                        "experiments (§9.3): no PreVote, no CheckQuorum, and stepping down keeps the election "
                        "timer running (its Figure 2), so a node cut off from the others disrupts the leader when it "
                        "comes back. "
                        "logqueue: PreVote, CheckQuorum, timer restarted on stepping down (default)")
    p.add_argument("--test-hooks", action="store_true",
                   help="tests only: accept test requests (cutting this node off its peers), record what is "
                        "durable and check that nothing is sent before it is (DATA_DIR/test-hooks/)")
    p.add_argument("--test-slow-sync-ms", type=non_negative, default=0, metavar="MS",
                   help="tests only, with --test-hooks: each sync that makes new entries durable takes MS "
                        "longer, as on a slow disk (default 0)")
    p.add_argument("--test-slow-snapshot-ms", type=non_negative, default=0, metavar="MS",
                   help="tests only, with --test-hooks: each snapshot write takes MS longer (default 0)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    secret_arg(p)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``node`` to the ``logqueue`` parser."""
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
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --listen without --secret-file (anyone who reaches the port "
                        "can then join the cluster and write to it); refused otherwise")
    node_args(p)
    p.set_defaults(run=cmd_node)


def node_config(args, node_id: int, listen: str, peer_map: dict[int, str], data_dir: str, join: bool = False):
    from logqueue.runtime.node import NodeConfig

    low, high = args.election_timeout_ms
    if args.heartbeat_ms >= low:
        raise UsageError(f"--heartbeat-ms {args.heartbeat_ms} must be below the election timeout ({low} ms)")
    if args.tick_ms > args.heartbeat_ms:
        raise UsageError("--tick-ms must not exceed --heartbeat-ms")
    from logqueue.client.client import MAX_PAYLOAD

    if args.max_payload_bytes > MAX_PAYLOAD:
        raise UsageError(f"--max-payload-bytes {args.max_payload_bytes} is above {MAX_PAYLOAD}, the most a frame can carry")
    for name in ("test_slow_sync_ms", "test_slow_snapshot_ms"):
        if getattr(args, name) and not args.test_hooks:
            raise UsageError(f"--{name.replace('_', '-')} needs --test-hooks")
    return NodeConfig(node_id=node_id, listen=listen, peers=peer_map, data_dir=data_dir, fsync=args.fsync,
                      election_timeout_ms=(low, high), heartbeat_ms=args.heartbeat_ms, tick_ms=args.tick_ms,
                      secret=secret(args), join=join, snapshot_every=args.snapshot_every,
                      retain_entries=args.retain_entries, retain_bytes=args.retain_bytes,
                      memory_entries=args.memory_entries, retention_jobs=args.retention_jobs,
                      segment_bytes=args.segment_bytes, snapshot_chunk_bytes=args.snapshot_chunk_bytes,
                      test_hooks=args.test_hooks,
                      test_slow_sync_ms=args.test_slow_sync_ms, test_slow_snapshot_ms=args.test_slow_snapshot_ms,
                      max_payload=args.max_payload_bytes, raft_variant=args.raft_variant)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def cmd_node(args) -> int:
    from logqueue.lifetime import die_with_parent
    from logqueue.runtime.serve import serve

    die_with_parent()  # when a launcher (cluster up, LocalCluster) started us
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s node{args.id} %(levelname)s %(name)s: %(message)s")
    peer_map = dict(args.peers)
    if args.id in peer_map and peer_map[args.id] != args.listen:
        raise UsageError(f"--peers gives node {args.id} the address {peer_map[args.id]}, but --listen is {args.listen}")
    peer_map.pop(args.id, None)
    host = args.listen.rpartition(":")[0]
    if not args.secret_file and not args.insecure and not _loopback(host):
        raise UsageError(f"refusing to listen on {args.listen} without --secret-file: anyone who can reach it "
                         "could join the cluster or write to it (give --secret-file F, or --insecure)")
    cfg = node_config(args, args.id, args.listen, peer_map, args.data_dir, join=args.join)
    return serve(cfg)
