"""``python -m experiments sim-elections``: the Raft paper's election-timing experiment on the simulator.

    python -m experiments sim-elections --nodes 5 --ranges 150-150,150-155,150-200,150-300 \\
        --trials 1000 --out sim.json [--delay-ms 1-14] [--setup paper|logqueue] [--plot sim.png] [--compare real.json]

The measurement is the simulator's (``logqueue.sim.elections``: real Raft cores on a
simulated network, one tick a millisecond, every message delayed uniformly by
``--delay-ms``, the leader crashed at a random tick of its heartbeat interval). ``--setup
paper`` (the default) is the paper's §9.3: no PreVote or CheckQuorum, the election timer
kept running when a node steps down (its Figure 2, LogCabin), the followers' logs of
different lengths so some candidates cannot win; ``--setup logqueue`` runs the core as
``logqueue node`` does (PreVote, CheckQuorum, timer restarted on stepping down) with
every log caught up. The
output is the experiment's format (``experiments.election_results``), the same as
``python -m experiments elections`` on real nodes, so ``--compare`` plots both side by
side. Exit status: 0 done, 1 when a cluster finds no stable leader to crash (the paper's
setup with a fixed timeout, 150-150, can keep its candidates in step for good) or the
output cannot be written, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import sys

from experiments.election_results import EXPERIMENT, add_output_args, core_settings, parse_output_args, finish, parse_range, range_result
from logqueue.sim.elections import SETUPS, NoStableLeader, simulate

DEFAULT_DELAY = "1-14"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments sim-elections", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000, help="leader crashes per range (default 1000, as in the paper)")
    p.add_argument("--delay-ms", default=DEFAULT_DELAY,
                   help=f"one-way message delay LOW-HIGH in ms, uniform (default {DEFAULT_DELAY}: a ~15 ms broadcast time)")
    p.add_argument("--setup", choices=sorted(SETUPS), default="paper",
                   help="paper: the paper's §9.3 setup (default); logqueue: the core as logqueue nodes run it")
    add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args, ranges, seed = parse_output_args(p, argv)
    try:
        delay = parse_range(args.delay_ms)
    except ValueError as exc:
        p.error(f"--delay-ms: {exc}")

    def progress(range_text: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{range_text} ms: {done}/{total} trials", end="" if done < total else "\n", file=sys.stderr)

    try:
        measured = simulate(ranges, nodes=args.nodes, trials=args.trials, delay_ms=delay,
                            heartbeat_ms=args.heartbeat_ms, max_ms=args.max_ms, seed=seed, setup=SETUPS[args.setup],
                            progress=progress)
    except NoStableLeader as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    setup = SETUPS[args.setup]
    result = {
        "experiment": EXPERIMENT,
        "source": f"simulator ({args.setup} setup)",
        "nodes": args.nodes,
        "trials_per_range": args.trials,
        "max_ms": args.max_ms,
        "settings": {
            "tick_ms": 1,
            "message_delay_ms": list(delay),
            "heartbeat": "half the minimum election timeout" if args.heartbeat_ms is None else f"{args.heartbeat_ms} ms",
            "setup": args.setup,
            **core_settings(setup.raft_variant),
            "staggered_logs": setup.staggered_logs,
            "crash": "uniformly random tick of the leader's heartbeat interval, after its heartbeat broadcast",
            "measured": "ticks from the crash to the tick in which another node became leader",
            "seed": seed,
        },
        "ranges": [range_result(r["low"], r["high"], r["heartbeat_ms"], r["trials"]) for r in measured],
    }
    return finish(result, args)


if __name__ == "__main__":
    sys.exit(main())
