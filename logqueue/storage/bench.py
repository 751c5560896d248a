"""Storage micro-benchmark: entries/s of append + sync for each fsync policy.

    python -m logqueue.storage.bench [--entries N] [--batch B] [--payload-bytes P] [--dir D]

Each batch is one ``append`` followed by one ``sync`` -- what the runtime does per
Ready -- so ``batch`` pays one fdatasync per batch and ``always`` one per append.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from logqueue.raft.types import Entry
from logqueue.storage import FSYNC_POLICIES, DiskStorage, MemoryStorage, Storage


def measure(storage: Storage, batches: list[list[Entry]]) -> float:
    """Append and sync every batch; return entries per second."""
    start = time.perf_counter()
    for batch in batches:
        storage.append(batch)
        storage.sync()
    elapsed = time.perf_counter() - start
    return sum(map(len, batches)) / elapsed


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m logqueue.storage.bench",
        description="Measure storage append throughput (append + sync per batch) for each fsync policy.",
    )
    parser.add_argument("--entries", type=positive, default=100_000, help="entries per policy (default 100000)")
    parser.add_argument("--batch", type=positive, default=100, help="entries per append call (default 100)")
    parser.add_argument("--payload-bytes", type=positive, default=100, help="bytes of data per entry (default 100)")
    parser.add_argument("--dir", type=Path, help="where to create the data dirs (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is not a directory")

    payload = b"x" * args.payload_bytes
    batches = [
        [Entry(1, i, payload) for i in range(lo, min(lo + args.batch, args.entries + 1))]
        for lo in range(1, args.entries + 1, args.batch)
    ]
    print(f"{args.entries} entries of {args.payload_bytes} bytes, {args.batch} per append, sync after each append")
    print(f"{'storage':<16}{'entries/s':>12}")
    print(f"{'memory':<16}{measure(MemoryStorage(), batches):>12,.0f}")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="logqueue-bench-") as tmp:
        for policy in FSYNC_POLICIES:
            with DiskStorage(Path(tmp) / policy, fsync=policy) as storage:
                rate = measure(storage, batches)
            print(f"{'disk ' + policy:<16}{rate:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
