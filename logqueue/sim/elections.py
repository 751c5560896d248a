"""The Raft paper's election-timing experiment (§9.3, Figure 16) on the simulator.

    python -m logqueue.sim elections --nodes 5 --ranges 150-150,150-155,150-200,150-300 \\
        --trials 1000 --out sim.json [--delay-ms 5-10] [--plot sim.png] [--compare real.json]

For each election-timeout range, one simulated cluster of real Raft cores (``Config``
with ``pre_vote`` and ``check_quorum`` on, as ``logqueue node`` runs them; ``--plain-raft``
turns both off, as in the paper) on a simulated
network. One tick is 1 ms. Every message takes a delay drawn uniformly from
``--delay-ms`` (default 5-10 ms one way, so a request and its answer take about 15 ms:
the paper's broadcast time). The leader's heartbeat interval is half the minimum
election timeout, as in the paper. Each trial waits for a stable leader (every node
follows it in its term), then crashes it at a uniformly random tick of its heartbeat
interval, counts the ticks until another node becomes leader, and restarts the crashed
node. A trial that finds no leader within ``--max-ms`` is recorded as timed out.

The output has the same format as ``python -m experiments elections`` (real node
processes), so both can be plotted side by side (``--compare``); the format, the summary,
the table and the plot are defined here and used by both.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
from dataclasses import dataclass

from logqueue.raft import Config, ConfState, Message, Role
from logqueue.stats import nearest_rank

from .node import SimNode

EXPERIMENT = "raft-election-timing"
PAPER_RANGES = "150-150,150-151,150-155,150-175,150-200,150-300"


# --- shared by the simulator's and the real-node experiment -------------------------------


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


def check_output_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[int, int]]:
    """Validate the shared options (``p.error`` exits 2 with one line); returns the ranges."""
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
    return ranges


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


# --- the simulation --------------------------------------------------------------------------


class _Links:
    """Every message arrives after a delay drawn uniformly from [low, high] ticks."""

    def __init__(self, rng: random.Random, delay: tuple[int, int]) -> None:
        self.rng = rng
        self.delay = delay
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0

    def send(self, now: int, msg: Message) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (now + self.rng.randint(*self.delay), self._seq, msg))

    def due(self, now: int) -> list[Message]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        return out


@dataclass
class ElectionCluster:
    """A simulated cluster for one timeout range; ``trial()`` crashes its leader once."""

    nodes: int
    election_ms: tuple[int, int]
    heartbeat_ms: int
    delay_ms: tuple[int, int]
    max_ms: int
    rng: random.Random
    plain: bool = False  # the paper's algorithm: no PreVote, no CheckQuorum

    def __post_init__(self) -> None:
        cfg = Config(election_ticks=self.election_ms, heartbeat_ticks=self.heartbeat_ms,
                     pre_vote=not self.plain, check_quorum=not self.plain)
        voters = ConfState(frozenset(range(1, self.nodes + 1)))
        self.members = {i: SimNode(i, cfg, random.Random(self.rng.random()), voters) for i in voters.voters}
        self.links = _Links(random.Random(self.rng.random()), self.delay_ms)
        self.now = 0  # ticks = ms

    def step(self) -> None:
        """One tick: tick every live node, deliver due messages, carry out the Readies."""
        self.now += 1
        live = [n for n in self.members.values() if n.alive]
        for n in live:
            n.raft.tick()
        for msg in self.links.due(self.now):
            n = self.members[msg.dst]
            if n.alive:  # a crashed node's messages are lost
                n.raft.step(msg)
        for n in live:
            rd, sent = n.process_ready()
            if rd is not None and sent:
                for m in rd.messages:
                    self.links.send(self.now, m)

    def leader(self) -> SimNode | None:
        leaders = [n for n in self.members.values() if n.alive and n.raft.role is Role.LEADER]
        return max(leaders, key=lambda n: n.raft.term) if leaders else None

    def _stable_leader(self) -> SimNode | None:
        lead = self.leader()
        if lead is None:
            return None
        for n in self.members.values():
            if not n.alive or n.raft.term != lead.raft.term or n.raft.leader_id != lead.id:
                return None
            if n.raft.commit_index < lead.raft.commit_index:
                return None
        return lead

    def settle(self, limit_ticks: int) -> SimNode:
        """Run until every node follows one leader in its term; ``RuntimeError`` after ``limit_ticks``."""
        for _ in range(limit_ticks):
            lead = self._stable_leader()
            if lead is not None:
                return lead
            self.step()
        raise RuntimeError(f"no stable leader within {limit_ticks} simulated ms")

    def trial(self) -> dict:
        """Crash the leader at a random point of its heartbeat interval; ``{"ms", "terms"}``.

        ``ms`` is the number of ticks from the crash to the tick in which another node
        became leader (``None`` after ``max_ms``); ``terms`` how many terms that took.
        """
        lead = self.settle(limit_ticks=100 * self.election_ms[1] + self.max_ms)
        # Wait for the tick in which the leader broadcasts a heartbeat, then a uniform
        # number of ticks of its interval: the crash point is uniform within the interval.
        while True:
            self.step()
            if lead.raft.role is not Role.LEADER:  # lost leadership while settling: start over
                return self.trial()
            if lead.raft.heartbeat_elapsed == 0:
                break
        for _ in range(self.rng.randrange(self.heartbeat_ms)):
            self.step()
        old_term = lead.raft.term
        lead.crash()
        crashed_at = self.now
        elected = None
        while self.now - crashed_at < self.max_ms:
            self.step()
            new = self.leader()
            if new is not None and new.raft.term > old_term:
                elected = new
                break
        terms = max(n.raft.term for n in self.members.values() if n.alive) - old_term
        if elected is not None:
            terms = elected.raft.term - old_term
        lead.restart()
        return {"ms": float(self.now - crashed_at) if elected is not None else None, "terms": terms}


def simulate(ranges: list[tuple[int, int]], *, nodes: int, trials: int, delay_ms: tuple[int, int],
             heartbeat_ms: int | None, max_ms: int, seed: int, plain: bool = False, progress=None) -> dict:
    """Run the experiment; returns the result dict (the format ``finish`` writes).

    ``progress(range_text, done, total)`` is called after every trial when given.
    """
    rng = random.Random(seed)
    out = []
    for low, high in ranges:
        hb = heartbeat_ms or max(1, low // 2)
        cluster = ElectionCluster(nodes, (low, high), hb, delay_ms, max_ms, random.Random(rng.random()), plain)
        results = []
        for k in range(trials):
            results.append(cluster.trial())
            if progress is not None:
                progress(f"{low}-{high}", k + 1, trials)
        out.append(range_result(low, high, hb, results))
    return {
        "experiment": EXPERIMENT,
        "source": "simulator" + (" (no PreVote/CheckQuorum)" if plain else ""),
        "nodes": nodes,
        "trials_per_range": trials,
        "max_ms": max_ms,
        "settings": {
            "tick_ms": 1,
            "message_delay_ms": list(delay_ms),
            "heartbeat": "half the minimum election timeout" if heartbeat_ms is None else f"{heartbeat_ms} ms",
            "pre_vote": not plain,
            "check_quorum": not plain,
            "crash": "uniformly random tick of the leader's heartbeat interval",
            "measured": "ticks from the crash to the tick in which another node became leader",
            "seed": seed,
        },
        "ranges": out,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m logqueue.sim elections", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000, help="leader crashes per range (default 1000, as in the paper)")
    p.add_argument("--delay-ms", default="5-10",
                   help="one-way message delay LOW-HIGH in ms, uniform (default 5-10: a ~15 ms broadcast time)")
    p.add_argument("--plain-raft", action="store_true",
                   help="run the paper's algorithm: PreVote and CheckQuorum off (logqueue nodes run with both on)")
    add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    ranges = check_output_args(p, args)
    try:
        delay = parse_range(args.delay_ms)
    except ValueError as exc:
        p.error(f"--delay-ms: {exc}")
    seed = args.seed if args.seed is not None else random.randrange(2**32)

    def progress(range_text: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{range_text} ms: {done}/{total} trials", end="" if done < total else "\n", file=sys.stderr)

    result = simulate(ranges, nodes=args.nodes, trials=args.trials, delay_ms=delay, heartbeat_ms=args.heartbeat_ms,
                      max_ms=args.max_ms, seed=seed, plain=args.plain_raft, progress=progress)
    return finish(result, args)
