"""``python -m logqueue.bench``: committed appends per second of a local cluster.

Starts N `logqueue node` processes on loopback (``--fsync batch`` by default) in a
temporary directory, appends ``--count`` payloads of ``--payload-bytes`` from one
pipelined client (``--window`` records in flight, ``--chunk`` records per frame), and
reports committed appends/s and the commit latency of each frame (p50/p99/max: from
send to the answer, which comes after the entries are committed and applied). The
nodes are stopped at the end, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from logqueue.local_cluster import LocalCluster
from logqueue.stats import nearest_rank


async def _drive(addresses: list[str], count: int, payload_bytes: int, window: int, chunk: int) -> dict:
    from logqueue.client import AsyncClient

    client = AsyncClient(addresses, window=window, chunk=chunk, timeout=60)
    try:
        await client.status()
        await client.append([b"warm-up"] * min(chunk, 100))
        payload = b"x" * payload_bytes
        latencies: list[float] = []
        slots = asyncio.Semaphore(max(1, window // chunk))

        async def frame(n: int) -> None:
            async with slots:
                t0 = time.perf_counter()
                await client.append([payload] * n)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        sizes = [min(chunk, count - k) for k in range(0, count, chunk)]
        await asyncio.gather(*(frame(n) for n in sizes))
        elapsed = time.perf_counter() - start
    finally:
        await client.close()
    latencies.sort()
    return {
        "appends": count,
        "seconds": round(elapsed, 3),
        "appends_per_s": round(count / elapsed),
        "latency_ms": {k: round(nearest_rank(latencies, q) * 1000, 2) if latencies else 0.0 for k, q in (("p50", 0.5), ("p99", 0.99))}
        | {"max": round(latencies[-1] * 1000, 2) if latencies else 0.0},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m logqueue.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    p.add_argument("--count", type=int, default=200_000, help="payloads to append (default 200000)")
    p.add_argument("--payload-bytes", type=int, default=100, help="payload size (default 100)")
    p.add_argument("--window", type=int, default=8192, help="records in flight (default 8192)")
    p.add_argument("--chunk", type=int, default=512, help="records per request frame (default 512)")
    p.add_argument("--fsync", choices=("always", "batch", "off"), default="batch")
    p.add_argument("--data-dir", help="where the nodes keep their data (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("nodes", "count", "payload_bytes", "window", "chunk"):
        if getattr(args, name) < 1:
            print(f"logqueue.bench: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    cluster = LocalCluster(args.nodes, args.data_dir, prefix="logqueue-bench-", logs=False, fsync=args.fsync,
                           log_level="warning")
    try:
        cluster.start_all()
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            run = asyncio.run
        result = run(_drive(list(cluster.addresses.values()), args.count, args.payload_bytes, args.window, args.chunk))
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.close(grace_s=5)  # removes the data only when it was in a temporary directory
    result |= {"nodes": args.nodes, "fsync": args.fsync, "payload_bytes": args.payload_bytes,
               "window": args.window, "chunk": args.chunk}
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        print(f"{result['appends']} appends of {args.payload_bytes} B to {args.nodes} nodes (fsync {args.fsync}, "
              f"window {args.window}): {result['appends_per_s']:,} committed appends/s; commit latency per frame "
              f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
