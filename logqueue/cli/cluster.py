"""``logqueue cluster up``: start N local nodes and stop them on Ctrl-C."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from logqueue.cli.common import UsageError, positive, secret
from logqueue.cli.node import node_args


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``cluster up`` to the ``logqueue`` parser."""
    p = sub.add_parser("cluster", help="run a local cluster").add_subparsers(dest="action", metavar="ACTION",
                                                                                required=True)
    up = p.add_parser("up", help="start N local nodes and stop them on Ctrl-C",
                      description="Start N node processes on 127.0.0.1 (node i listens on BASE_PORT+i-1, data "
                                  "in DIR/node-i), print their addresses and wait. A node that dies is reported, "
                                  "not restarted. Ctrl-C stops them all.")
    up.add_argument("--nodes", required=True, type=positive, metavar="N")
    up.add_argument("--base-port", required=True, type=positive, metavar="P")
    up.add_argument("--data-dir", required=True, metavar="DIR")
    node_args(up)
    up.set_defaults(run=cmd_cluster_up)


def node_options(args) -> dict:
    """``node_argv`` options that pass ``cluster up``'s node settings on to each node."""
    extra = ["--snapshot-every", str(args.snapshot_every), "--retain-entries", str(args.retain_entries),
             "--retain-bytes", str(args.retain_bytes),
             "--retention-jobs", str(args.retention_jobs), "--segment-bytes", str(args.segment_bytes),
             "--snapshot-chunk-bytes", str(args.snapshot_chunk_bytes),
             "--max-payload-bytes", str(args.max_payload_bytes), "--raft-variant", args.raft_variant]
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
    secret(args)  # fail now, not in every child
    # The nodes share this terminal: their output is ours, and a Ctrl-C reaches them too.
    cluster = LocalCluster(args.nodes, args.data_dir, ports=range(args.base_port, args.base_port + args.nodes),
                           logs=False, **node_options(args))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C stops the nodes even where this process inherited SIGINT ignored (a shell's `cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
