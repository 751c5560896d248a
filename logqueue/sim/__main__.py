"""``python -m logqueue.sim``: run the deterministic Raft simulator over many seeds.

    python -m logqueue.sim --seeds N [--start S] [--nodes 3|5] [--ticks T] [--trace FILE]
                           [--inject-bug NAME] [--jobs J]

Exit status 0 when every seed holds the five guarantees and liveness, 1 on a violation
(the line starting with VIOLATION names it, and the command that replays that seed is
printed), 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
import time

from .bugs import BUGS
from .simulation import SimOptions, SimResult, Simulation


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m logqueue.sim",
        description="Run the real Raft core on a simulated network and disk under random faults, "
        "one seed per run, checking Election Safety, Leader Append-Only, Log Matching, "
        "Leader Completeness and State Machine Safety after every step, and liveness after healing.",
    )
    p.add_argument("--seeds", type=int, default=100, help="number of seeds to run (default 100)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=5, help="voters in the cluster (default 5)")
    p.add_argument("--ticks", type=int, default=3000, help="ticks per seed, faults then healing (default 3000)")
    p.add_argument("--trace", metavar="FILE", help="write JSON-lines events (leader, apply, crash, restart, snapshot_restore)")
    p.add_argument("--inject-bug", choices=sorted(BUGS), help="run a deliberately broken core instead")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: one per core; 1 with --trace)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.start < 0:
        p.error("--seeds must be >= 1 and --start >= 0")
    if args.ticks < 1000:
        p.error("--ticks must be at least 1000 (600 of them check liveness after healing)")
    return args


def _options(args: argparse.Namespace, trace=None) -> SimOptions:
    raft_cls = BUGS[args.inject_bug] if args.inject_bug else SimOptions.raft_cls
    return SimOptions(nodes=args.nodes, ticks=args.ticks, raft_cls=raft_cls, trace=trace)


def _run_one(job: tuple[argparse.Namespace, int]) -> SimResult:
    args, seed = job
    return Simulation(seed, _options(args)).run()


def replay_command(args: argparse.Namespace, seed: int) -> str:
    cmd = ["python", "-m", "logqueue.sim", "--seeds", "1", "--start", str(seed), "--nodes", str(args.nodes)]
    cmd += ["--ticks", str(args.ticks)]
    if args.inject_bug:
        cmd += ["--inject-bug", args.inject_bug]
    return shlex.join(cmd)


def run_seeds(args: argparse.Namespace) -> int:
    seeds = range(args.start, args.start + args.seeds)
    started = time.monotonic()
    totals = {"elections": 0, "committed": 0, "faults": 0}
    done = 0
    failed: SimResult | None = None
    if args.trace or args.jobs == 1:
        with open(args.trace, "w") if args.trace else _null() as trace:
            results = (Simulation(s, _options(args, trace)).run() for s in seeds)
            failed, done = _collect(results, totals)
    else:
        jobs = args.jobs or multiprocessing.cpu_count()
        with multiprocessing.Pool(jobs) as pool:
            failed, done = _collect(pool.imap(_run_one, ((args, s) for s in seeds), chunksize=4), totals)
            pool.terminate()
    elapsed = time.monotonic() - started
    label = f" (injected bug: {args.inject_bug})" if args.inject_bug else ""
    print(
        f"seeds {done} ({args.start}..{args.start + done - 1}), nodes {args.nodes}, ticks {args.ticks}{label}: "
        f"elections {totals['elections']}, entries committed {totals['committed']}, "
        f"faults injected {totals['faults']}, {elapsed:.1f}s"
    )
    if failed is not None:
        v = failed.violation
        print(f"VIOLATION {v.invariant} seed={failed.seed} tick={failed.tick}: {v.detail}")
        print(f"replay: {replay_command(args, failed.seed)}")
        return 1
    print("all seeds hold the five guarantees and liveness")
    return 0


def _collect(results, totals) -> tuple[SimResult | None, int]:
    done = 0
    for r in results:
        done += 1
        totals["elections"] += r.stats.elections
        totals["committed"] += r.stats.committed
        totals["faults"] += r.stats.faults
        if r.violation is not None:
            return r, done
    return None, done


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_seeds(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
