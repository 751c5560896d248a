"""``python -m experiments reads``: the two kinds of log read, on 3 and 5 real nodes.

    python -m experiments reads [--nodes 3,5] [--seconds 5] [--readers 4] [--out reads.json] [--plot reads.png]

For each cluster size: start that many ``logqueue node`` processes on loopback (fsync
batch), keep one writer appending batches of 20 records, and for each kind of read
(``committed``: what the node has applied; ``linearizable``: ReadIndex at the leader, or
the leader's read index at a follower, Raft §6.4) and each target (the leader, one
follower) run ``--readers`` threads that read one entry at the writer's last acknowledged
index for ``--seconds``. Measured per combination: reads per second, and staleness --
how many appends acknowledged before the read began the node had not yet applied when
it answered (0 for a linearizable read, by construction; a committed read from a
follower may lag). Prints a Markdown table.

Exit status: 0 done, 1 when the cluster could not be run, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import threading
import time

from logqueue.client import Client, ClientError
from logqueue.local_cluster import LocalCluster
from logqueue.stats import nearest_rank

KINDS = ("committed", "linearizable")


def _leader(client: Client, addresses: dict[int, str], timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, address in addresses.items():
            try:
                if client.status(address)["role"] == "leader":
                    return i
            except ClientError:
                pass
        time.sleep(0.05)
    raise RuntimeError("no leader was elected")


class _Writer:
    """Appends until stopped; `acked` is the highest acknowledged index."""

    def __init__(self, spec: str) -> None:
        self.client = Client(spec, timeout=10, attempt_timeout=1.0)
        self.acked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            indexes = self.client.append([b"w%d" % (k + j) for j in range(20)])
            k += 20
            self.acked = max(self.acked, *indexes)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)
        self.client.close()


def _read_for(address: str, kind: str, writer: _Writer, seconds: float, lags: list[int], errors: list[str]) -> None:
    with Client([address], timeout=5, attempt_timeout=1.0) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            before = writer.acked  # acknowledged before this read began
            try:
                page = c.read_log(address, max(before, 1), 1, consistency=kind)
            except ClientError as exc:
                errors.append(str(exc))
                continue
            lags.append(max(0, before - page["applied_index"]))


def measure(nodes: int, seconds: float, readers: int) -> list[dict]:
    """One row per (kind, target) on a fresh cluster of `nodes`."""
    rows = []
    with LocalCluster(nodes, fsync="batch") as cluster:  # started; stopped and removed on exit
        with Client(cluster.spec, timeout=10) as client:
            leader = _leader(client, cluster.addresses)
        follower = min(i for i in cluster.addresses if i != leader)
        writer = _Writer(cluster.spec)
        try:
            while writer.acked == 0:
                time.sleep(0.05)
            for kind in KINDS:
                for target, node in (("leader", leader), ("follower", follower)):
                    lags: list[int] = []
                    errors: list[str] = []
                    threads = [threading.Thread(target=_read_for, args=(cluster.addresses[node], kind, writer,
                                                                         seconds, lags, errors))
                               for _ in range(readers)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    rows.append({"nodes": nodes, "kind": kind, "target": target, "reads": len(lags),
                                 "reads_per_s": round(len(lags) / seconds, 1), "errors": len(errors),
                                 "stale_reads": sum(1 for x in lags if x > 0),
                                 "lag_p99": nearest_rank(sorted(lags), 0.99) if lags else None, "lag_max": max(lags, default=None)})
        finally:
            writer.stop()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| nodes | read | from | reads/s | stale reads | lag p99 | lag max |", "| ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['nodes']} | {r['kind']} | {r['target']} | {r['reads_per_s']:,.0f} | "
                     f"{r['stale_reads']} of {r['reads']} | {r['lag_p99']} | {r['lag_max']} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    labels = [f"{r['nodes']} nodes\n{r['kind']}\n{r['target']}" for r in rows]
    axes[0].bar(labels, [r["reads_per_s"] for r in rows])
    axes[0].set_ylabel("reads/s")
    axes[1].bar(labels, [100 * r["stale_reads"] / max(r["reads"], 1) for r in rows])
    axes[1].set_ylabel("stale reads (%)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle("log reads: committed (any node, may be stale) vs linearizable (ReadIndex)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments reads", description=__doc__.split("\n\n")[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="3,5", help="cluster sizes, comma-separated (default 3,5)")
    p.add_argument("--seconds", type=float, default=5.0, help="reading time per combination (default 5)")
    p.add_argument("--readers", type=int, default=4, help="reader threads (default 4)")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--plot", help="draw throughput and staleness into this PNG")
    args = p.parse_args(argv)
    try:
        sizes = [int(x) for x in args.nodes.split(",")]
    except ValueError:
        p.error(f"--nodes must be integers like 3,5, got {args.nodes!r}")
    if any(n < 2 for n in sizes) or args.seconds <= 0 or args.readers < 1:
        p.error("--nodes need at least 2 nodes (a follower to read from), --seconds and --readers must be positive")
    try:
        rows = [row for n in sizes for row in measure(n, args.seconds, args.readers)]
    except (RuntimeError, OSError, ClientError) as exc:
        print(f"error: {exc}")
        return 1
    print(table(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    return 0
