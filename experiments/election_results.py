"""The election-timing experiment's output: its JSON format, summary, table and plot.

Both versions of the experiment write it: ``python -m experiments elections`` (real node
processes) and ``python -m experiments sim-elections`` (the simulator's measurement,
``logqueue.sim.elections``), so either can be plotted beside the other (``--compare``).

A result is ``{"experiment": EXPERIMENT, "source", "nodes", "trials_per_range",
"max_ms", "settings", "ranges": [...]}``; each range is ``{"range": "LOW-HIGH",
"low_ms", "high_ms", "heartbeat_ms", "summary", "trials"}`` and each trial
``{"ms": float | None, "terms": int}`` (``None``: no leader within ``max_ms``).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys

from logqueue.raft import RAFT_VARIANTS, Config
from logqueue.stats import nearest_rank

EXPERIMENT = "raft-election-timing"
PAPER_RANGES = "150-150,150-151,150-155,150-175,150-200,150-300"


def parse_range(text: str) -> tuple[int, int]:
    """``"150-300"`` -> ``(150, 300)``; ``ValueError`` with a one-line reason otherwise."""
    low, sep, high = text.strip().partition("-")
    if not (sep and low.isdigit() and high.isdigit()) or not 0 < int(low) <= int(high):
        raise ValueError(f"bad range {text!r}: expected LOW-HIGH milliseconds with 0 < LOW <= HIGH")
    return int(low), int(high)


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``"150-150,150-300"`` -> ``[(150, 150), (150, 300)]`` (at least one range)."""
    ranges = [parse_range(part) for part in text.split(",") if part.strip()]
    if not ranges:
        raise ValueError("no range given: expected LOW-HIGH[,LOW-HIGH...]")
    return ranges


def _quantile(sorted_ms: list[float], q: float) -> float | None:
    """Nearest-rank quantile; ``inf`` entries stand for timed-out trials (-> ``None``)."""
    value = nearest_rank(sorted_ms, q)
    return None if math.isinf(value) else round(value, 1)


def summarize(trials: list[dict]) -> dict:
    """Summary of one range's trials (each ``{"ms": float | None, "terms": int}``).

    A timed-out trial (``ms`` None) counts as slower than every other; a quantile that
    falls on one is ``None``. ``split_vote_trials`` counts the trials that needed more than
    one term to elect a leader (a candidacy failed, usually because the votes split).
    """
    times = sorted(math.inf if t["ms"] is None else t["ms"] for t in trials)
    elected = [t["ms"] for t in trials if t["ms"] is not None]
    out = {
        "trials": len(trials),
        "elected": len(elected),
        "timed_out": len(trials) - len(elected),
        "split_vote_trials": sum(1 for t in trials if t["terms"] > 1),
        "mean_ms": round(sum(elected) / len(elected), 1) if elected else None,
        "min_ms": round(min(elected), 1) if elected else None,
    }
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("max_ms", 1.0)):
        out[name] = _quantile(times, q) if times else None
    return out


def range_result(low: int, high: int, heartbeat_ms: int, trials: list[dict], **extra) -> dict:
    """One entry of a result's ``ranges`` list."""
    return {"range": f"{low}-{high}", "low_ms": low, "high_ms": high, "heartbeat_ms": heartbeat_ms,
            **extra, "summary": summarize(trials), "trials": trials}


def core_settings(raft_variant: str) -> dict:
    """The settings fields that say how a RAFT_VARIANTS entry configures the Raft core."""
    core = Config(**RAFT_VARIANTS[raft_variant])
    return {"pre_vote": core.pre_vote, "check_quorum": core.check_quorum,
            "step_down_restarts_timer": core.step_down_restarts_timer}


def format_table(result: dict) -> str:
    """A plain-text table of a result (one row per range)."""
    head = f"{'range (ms)':<11} {'trials':>6} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'timed out':>9} {'split votes':>11}"
    lines = [f"{result['source']}: {result['nodes']} nodes, time without a leader after the leader crashed (ms)", head]
    show = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    for r in result["ranges"]:
        s = r["summary"]
        lines.append(f"{r['range']:<11} {s['trials']:>6} {show(s['p50_ms']):>7} {show(s['p90_ms']):>7} "
                     f"{show(s['p99_ms']):>7} {show(s['max_ms']):>7} {s['timed_out']:>9} {s['split_vote_trials']:>11}")
    return "\n".join(lines)


def load_result(path: str) -> dict:
    """Read a result file; ``ValueError`` with a one-line reason if it is not one."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(result, dict) or result.get("experiment") != EXPERIMENT:
        raise ValueError(f"{path} is not an election-timing result (no \"experiment\": \"{EXPERIMENT}\")")
    return result


def plot_results(results: list[dict], path: str) -> None:
    """Write a PNG with one CDF panel per result (side by side), one curve per range.

    Like the paper's Figure 16: x is the time without a leader (log scale), y the share of
    trials that had a leader again by then; timed-out trials keep a curve below 100 %.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.5), sharex=True, sharey=True,
                             squeeze=False)
    times_all = [t["ms"] for res in results for r in res["ranges"] for t in r["trials"] if t["ms"]]
    names = list(dict.fromkeys(r["range"] for res in results for r in res["ranges"]))
    colors = {name: plt.get_cmap("tab10")(k % 10) for k, name in enumerate(names)}  # one colour per range in every panel
    for ax, res in zip(axes[0], results):
        for r in res["ranges"]:
            n = len(r["trials"])
            times = sorted(t["ms"] for t in r["trials"] if t["ms"] is not None)
            if not n or not times:
                continue
            xs = [times[0]] + times
            ys = [0.0] + [100.0 * (k + 1) / n for k in range(len(times))]
            ax.step(xs, ys, where="post", label=f"{r['range']} ms", color=colors[r["range"]])
        ax.set_xscale("log")
        if times_all:
            ax.set_xlim(max(1.0, min(times_all) * 0.8), max(times_all) * 1.25)
        ax.set_ylim(0, 100)
        ax.set_xlabel("time without leader (ms)")
        ax.set_title(f"{res['source']} ({res['nodes']} nodes, {res['ranges'][0]['summary']['trials']} trials per range)",
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="election timeout", fontsize=8)
    axes[0][0].set_ylabel("cumulative percent of trials")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_output_args(p: argparse.ArgumentParser) -> None:
    """The options both election commands share."""
    p.add_argument("--nodes", type=int, default=5, help="cluster size (default 5, as in the paper)")
    p.add_argument("--ranges", default=PAPER_RANGES,
                   help=f"election-timeout ranges LOW-HIGH in ms, comma-separated (default: the paper's {PAPER_RANGES})")
    p.add_argument("--heartbeat-ms", type=int, default=None,
                   help="leader heartbeat interval (default: half the range's minimum timeout, as in the paper)")
    p.add_argument("--max-ms", type=int, default=10_000,
                   help="give up on a trial after this long without a leader and record it as timed out (default 10000)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="write the results here")
    p.add_argument("--plot", metavar="FILE.png", help="also write CDF plots (one panel per result)")
    p.add_argument("--compare", metavar="OTHER.json",
                   help="another election result (e.g. the other command's) to plot side by side with this one")


def parse_output_args(p: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list, int]:
    """Parse ``argv`` and validate the shared options (``p.error`` exits 2 with one line).

    Returns ``(args, ranges, seed)``; the seed is a random one when ``--seed`` is not given.
    """
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        ranges = parse_ranges(args.ranges)
    except ValueError as exc:
        p.error(str(exc))
    if args.nodes < 3:
        p.error("--nodes must be at least 3 (a crashed leader must leave a majority)")
    if args.trials < 1:
        p.error("--trials must be at least 1")
    if args.max_ms < 1:
        p.error("--max-ms must be at least 1")
    if args.heartbeat_ms is not None and not 0 < args.heartbeat_ms <= min(low for low, _ in ranges):
        p.error("--heartbeat-ms must be positive and at most the smallest minimum election timeout")
    if args.compare:
        try:
            load_result(args.compare)
        except ValueError as exc:
            p.error(str(exc))
    return args, ranges, args.seed if args.seed is not None else random.randrange(2**32)


def finish(result: dict, args: argparse.Namespace) -> int:
    """Write the JSON (and plot), print the table; the shared tail of both commands."""
    try:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        if args.plot:
            others = [load_result(args.compare)] if args.compare else []
            plot_results([result, *others], args.plot)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(result))
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
