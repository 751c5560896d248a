"""``python -m experiments.store_scale``: the bench at scale on a 3-node cluster, then the
node faults of issue 13 on the data it left.

    python -m experiments.store_scale --messages 2000000 --out scale.json [--root DIR] [--phase-timeout-s S]

1. starts a local 3-node cluster (``--fsync batch``, as the bench's own) and runs
   ``python -m experiments bench --backends logqueue --cluster ...`` on it;
2. **restart**: SIGKILLs a follower, starts it again on its data and times until its
   applied index reaches the leader's commit index (the cluster is idle by then);
3. **replay**: a log-mode reader pages the largest queue from offset 0 (``read`` queries)
   and reports jobs/s and the reader's peak RSS;
4. **wiped**: SIGKILLs the other follower, deletes its data directory, starts it again
   and times until it has caught up (snapshot + the retained entries behind it).

Every step records the nodes' peak RSS (``logqueue status --json``) and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from logqueue.client import Client
from logqueue.local_cluster import LocalCluster

PAGE = 10_000


def _rows(client: Client) -> dict[int, dict]:
    return {row["id"]: row for row in client.cluster_status() if row.get("role") != "unreachable"}


def _wait_caught_up(client: Client, node: int, timeout_s: float) -> tuple[float, dict]:
    """Seconds until ``node`` answers with applied index >= the leader's commit index and
    no backfill under way; and the last rows seen."""
    start = time.monotonic()
    while True:
        rows = _rows(client)
        leader = next((r for r in rows.values() if r["role"] == "leader"), None)
        row = rows.get(node)
        if leader and row and not row["backfilling"] and row["applied_index"] >= leader["commit_index"]:
            return time.monotonic() - start, rows
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"store_scale: node {node} not caught up within {timeout_s:g} s: {row}")
        time.sleep(0.05)


def _memory(rows: dict[int, dict]) -> dict:
    return {i: {"rss_mb": r["rss_bytes"] >> 20, "peak_rss_mb": r["peak_rss_bytes"] >> 20, "wal_mb": r["wal_bytes"] >> 20,
                "wal_segments": r["wal_segments"], "snapshot_bytes": r["snapshot_bytes"],
                "first_index": r["first_index"], "applied_index": r["applied_index"],
                "longest_stall_ms": r["longest_stall_ms"], "longest_turn_ms": r["longest_turn_ms"],
                "longest_gc_ms": r.get("longest_gc_ms"), "longest_gc_generation": r.get("longest_gc_generation"),
                "longest_storage_wait_ms": r.get("longest_storage_wait_ms")} for i, r in rows.items()}


def _replay(client: Client) -> dict:
    queues = client.query("queue_names")
    sizes = {q: client.query("stats", queue=q, group="-")["enqueued"] for q in queues}
    queue = max(sizes, key=sizes.get)
    start = time.monotonic()
    offset = count = 0
    while True:
        rows = client.query("read", queue=queue, from_offset=offset, max_count=PAGE)
        if not rows:
            break
        count += len(rows)
        offset = rows[-1][0] + 1
    seconds = time.monotonic() - start
    return {"queue": queue, "enqueued": sizes[queue], "read": count, "seconds": round(seconds, 2),
            "jobs_per_s": round(count / seconds), "reader_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.store_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="the bench's --messages (default 200000)")
    p.add_argument("--phase-timeout-s", type=float, default=1800.0, help="the bench's --phase-timeout-s (default 1800)")
    p.add_argument("--root", help="the nodes' data directory (default: a temporary one, removed at the end)")
    p.add_argument("--catch-up-timeout-s", type=float, default=600.0, help="give up on a catch-up after this long")
    p.add_argument("--out", required=True, metavar="FILE.json")
    args = p.parse_args(argv)
    if args.messages < 1:
        p.error("--messages must be >= 1")
    out: dict = {"command": " ".join([sys.executable.rsplit("/", 1)[-1], "-m", "experiments.store_scale", *(argv or sys.argv[1:])])}
    with LocalCluster(3, args.root, prefix="logqueue-scale-", own_session=True, fsync="batch", log_level="warning") as cluster:
        leader = cluster.wait_leader(60)
        with Client(cluster.spec, timeout=60) as client:
            bench = [sys.executable, "-m", "experiments", "bench", "--backends", "logqueue", "--cluster", cluster.spec,
                     "--messages", str(args.messages), "--phase-timeout-s", str(args.phase_timeout_s),
                     "--out", args.out + ".bench.json", "--quiet"]
            out["load_before"] = os.getloadavg()
            started = time.monotonic()
            if subprocess.run(bench).returncode:
                raise SystemExit(f"store_scale: the bench failed: {' '.join(bench)}")
            out["bench_seconds"] = round(time.monotonic() - started)
            out["load_after_bench"] = os.getloadavg()
            with open(args.out + ".bench.json") as f:
                out["bench"] = json.load(f)["logqueue"]
            rows = _rows(client)
            out["after_bench"] = _memory(rows)
            leader = next(i for i, r in rows.items() if r["role"] == "leader")
            restarted, wiped = [i for i in cluster.members if i != leader][:2]

            cluster.kill(restarted)
            cluster.start(restarted)
            seconds, rows = _wait_caught_up(client, restarted, args.catch_up_timeout_s)
            out["restart"] = {"node": restarted, "seconds": round(seconds, 2), "replayed_at_start": rows[restarted]["replayed_at_start"],
                              "load": os.getloadavg(), "nodes": _memory(rows)}

            out["replay"] = {**_replay(client), "load": os.getloadavg(), "nodes": _memory(_rows(client))}

            cluster.kill(wiped)
            shutil.rmtree(cluster.data_dir(wiped))
            cluster.start(wiped)
            seconds, rows = _wait_caught_up(client, wiped, args.catch_up_timeout_s)
            out["wiped"] = {"node": wiped, "seconds": round(seconds, 2), "load": os.getloadavg(), "nodes": _memory(rows)}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "bench"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
