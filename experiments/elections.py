"""``python -m experiments elections``: the Raft paper's election-timing experiment (§9.3, Figure 16) on real nodes.

    python -m experiments elections --nodes 5 --ranges 150-150,150-151,150-155,150-175,150-200,150-300 \\
        --trials N --out real.json [--setup paper|logqueue] [--plot real.png] [--compare sim.json]

For each election-timeout range: start N ``logqueue node`` processes on loopback (fsync
batch, ``--tick-ms 1`` so a 1 ms range is a range, heartbeat interval half the minimum
timeout as in the paper), then repeat N times: wait until every node follows one leader
in its term with its log caught up; wait a random time (independent of the leader's
heartbeat schedule, so the crash falls at a uniformly random point of the heartbeat
interval); SIGKILL the leader; wait for another node to become leader; restart the
killed node on its data. On loopback a message takes well under a millisecond;
``--link-delay-ms D`` (or ``LOW-HIGH``) sends every node-to-node connection through a proxy
that delays each message by D ms (or uniformly LOW to HIGH ms, in order per connection),
for a broadcast time like the paper's (about 2D plus an fsync). The jitter matters: a
follower's timeout starts when the last heartbeat reaches it, so with equal delays the
followers time out in step and split the vote more often.
``--setup paper`` (the default, as for ``sim-elections``) starts every node with
``--raft-variant paper``: no PreVote, no CheckQuorum, the election timer kept running when
a node steps down, as the paper's servers ran; ``--setup logqueue`` runs them as ``logqueue
node`` does by default. Unlike the simulator's paper setup, the followers' logs are all
caught up at the crash: this harness cannot hold back a live node's appends to give them
the paper's different log lengths.

What is measured, and how precisely: from the wall-clock time taken just before the
``kill`` system call to the timestamp of the new leader's own log line "node N is the
leader of term T" (written when its role changed, after its vote was on disk). Both are
the same machine's clock; the log has millisecond resolution, so a time is accurate to
about 1 ms. The harness polls the nodes' status only to know when to stop waiting
(every 20 ms, which would otherwise be the error); a trial whose log line cannot be
found falls back to the poll time and says so (``"by": "poll"``). ``terms`` counts the
terms the election needed: more than 1 means a candidacy failed (votes split).

A trial without a leader after ``--max-ms`` is recorded as timed out. The output format
(``experiments.election_results``) is the one ``sim-elections`` writes too, so
``--compare`` plots both side by side.
Exit status: 0 done, 1 when the cluster could not be run (the reason is printed), 2 for
bad arguments.
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from experiments.election_results import (EXPERIMENT, add_output_args, core_settings, parse_output_args, parse_range,
                                          finish, range_result)
from experiments.faults.proxy import Mode, ProxyHub
from logqueue.client import Client, ClientError
from logqueue.local_cluster import LocalCluster, free_ports
from logqueue.raft import RAFT_VARIANTS

POLL_S = 0.02  # status polling while waiting for a new leader (the log gives the precise time)
SETTLE_TIMEOUT_S = 30.0  # a cluster that finds no stable leader within this is broken
_LEADER_LINE = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*is the leader of term (\d+)", re.M)


class ClusterError(RuntimeError):
    """The node processes could not be run as the experiment needs (one-line reason)."""


def _log_time(stamp: bytes) -> float:
    """The logging module's ``asctime`` (local time, ``YYYY-MM-DD HH:MM:SS,mmm``) -> Unix seconds."""
    dt = datetime.datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S,%f")
    return dt.timestamp()


class ElectionCluster:
    """N node processes for one timeout range; every process it starts is stopped by ``close``."""

    def __init__(self, root: Path, nodes: int, election_ms: tuple[int, int], heartbeat_ms: int, tick_ms: int,
                 link_delay: Mode | None = None, setup: str = "paper") -> None:
        self.root = root
        self.ids = list(range(1, nodes + 1))
        ports = free_ports(nodes)
        self.addresses = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports)}
        self.hub: ProxyHub | None = None
        peers = None  # default: every node's real address
        if link_delay is not None:
            # Every node-to-node link through a proxy that delays each message: a longer
            # broadcast time, like the paper's ~15 ms, on loopback.
            self.hub = ProxyHub()
            peer_of = {}
            for i in self.ids:
                for j in self.ids:
                    if i != j:
                        name = f"node-{i}->node-{j}"
                        peer_of[i, j] = self.hub.add(name, self.addresses[j])
                        self.hub.set(name, link_delay)
            peers = {i: ",".join(f"{j}={self.addresses[j] if j == i else peer_of[i, j]}" for j in self.ids)
                     for i in self.ids}
        self.nodes = LocalCluster(nodes, root, ports=ports, peers=peers, own_session=True, fsync="batch",
                                  election_timeout_ms=election_ms, heartbeat_ms=heartbeat_ms, tick_ms=tick_ms,
                                  log_level="info", extra_args=["--raft-variant", setup])
        self.logs = {i: self.nodes.log_path(i) for i in self.ids}
        self.procs = self.nodes.procs
        self.client = Client(list(self.addresses.values()), timeout=2.0, attempt_timeout=0.5)

    def start(self, i: int) -> None:
        self.nodes.start(i)

    def close(self) -> None:
        self.nodes.stop(grace_s=5)
        self.client.close()
        if self.hub is not None:
            self.hub.close()

    def _check_alive(self) -> None:
        for i, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.logs[i].read_bytes()[-300:].decode(errors="replace").strip().splitlines()
                raise ClusterError(f"node {i} exited with status {proc.returncode}: {tail[-1] if tail else 'no output'}")

    def statuses(self) -> dict[int, dict]:
        """Each live node's own view, by id (nodes that do not answer are left out)."""
        out = {}
        for s in self.client.cluster_status():
            if s.get("role") != "unreachable" and s.get("id") is not None:
                out[s["id"]] = s
        return out

    def wait_stable(self, timeout_s: float = SETTLE_TIMEOUT_S) -> dict:
        """Wait until every node follows one leader in its term, logs caught up; the leader's status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            views = self.statuses()
            leaders = [s for s in views.values() if s["role"] == "leader"]
            if len(views) == len(self.ids) and len(leaders) == 1:
                lead = leaders[0]
                if all(s["term"] == lead["term"] and s["leader_id"] == lead["id"]
                       and s["commit_index"] >= lead["commit_index"] for s in views.values()):
                    return lead
            time.sleep(POLL_S)
        raise ClusterError(f"no stable leader of all {len(self.ids)} nodes within {timeout_s:g} s (logs in {self.root})")

    def log_offsets(self) -> dict[int, int]:
        return {i: self.logs[i].stat().st_size if self.logs[i].exists() else 0 for i in self.ids}

    def first_leader_line(self, offsets: dict[int, int], after_term: int) -> tuple[float, int] | None:
        """(time, term) of the earliest "is the leader of term T > after_term" logged past ``offsets``."""
        found = []
        for i, start in offsets.items():
            with open(self.logs[i], "rb") as f:
                f.seek(start)
                for m in _LEADER_LINE.finditer(f.read()):
                    if int(m.group(2)) > after_term:
                        found.append((_log_time(m.group(1)), int(m.group(2))))
        return min(found) if found else None

    def trial(self, heartbeat_ms: int, max_ms: int, rng: random.Random) -> dict:
        """Kill the leader once and time the election; restart it afterwards. ``{"ms", "terms", "by"}``."""
        lead = self.wait_stable()
        # The harness's clock is independent of the leader's heartbeat schedule, so a
        # uniform wait puts the crash at a uniform point of the heartbeat interval.
        time.sleep(rng.uniform(0, heartbeat_ms / 1000))
        victim, old_term = lead["id"], lead["term"]
        offsets = self.log_offsets()
        crashed_at = time.time()
        self.nodes.kill(victim)
        deadline = time.monotonic() + max_ms / 1000
        polled: tuple[float, int] | None = None
        while time.monotonic() < deadline:
            views = self.statuses()
            new = [s for s in views.values() if s["role"] == "leader" and s["term"] > old_term]
            if new:
                polled = (time.time(), new[0]["term"])
                break
            time.sleep(POLL_S)
        logged = self.first_leader_line(offsets, old_term)
        # The status can answer "leader" a moment before the new leader's line reaches its log
        # file (a loaded machine runs the writer later): wait for the line, not the poll.
        while logged is None and polled is not None and time.monotonic() < deadline:
            time.sleep(POLL_S)
            logged = self.first_leader_line(offsets, old_term)
        self.start(victim)
        if polled is None and logged is None:
            terms = max((s["term"] for s in self.statuses().values()), default=old_term) - old_term
            return {"ms": None, "terms": terms, "by": "timeout"}
        at, term = logged if logged is not None else polled
        # The log stamp is truncated to the millisecond: never report less than 0.
        return {"ms": round(max(0.0, at - crashed_at) * 1000, 1), "terms": term - old_term,
                "by": "log" if logged is not None else "poll"}


def run_range(root: Path, nodes: int, election_ms: tuple[int, int], heartbeat_ms: int, tick_ms: int,
              trials: int, max_ms: int, rng: random.Random, on_trial, link_delay: Mode | None = None,
              setup: str = "paper") -> list[dict]:
    """All trials of one range on a fresh cluster (stopped afterwards, also on error)."""
    cluster = ElectionCluster(root, nodes, election_ms, heartbeat_ms, tick_ms, link_delay, setup)
    try:
        for i in cluster.ids:
            cluster.start(i)
        results = []
        for _ in range(trials):
            results.append(cluster.trial(heartbeat_ms, max_ms, rng))
            on_trial(results[-1])
        return results
    except ClientError as exc:
        raise ClusterError(f"cannot talk to the nodes: {exc}") from None
    finally:
        cluster.close()


def parse_link_delay(text: str) -> Mode | None:
    """``"0"`` -> None (plain loopback); ``"7"`` -> 7 ms; ``"1-14"`` -> uniform 1-14 ms (7.5 +- 6.5)."""
    if "-" in text:
        low, high = parse_range(text)
        return Mode("delay", (low + high) / 2, (high - low) / 2)
    try:
        ms = float(text)
    except ValueError:
        raise ValueError(f"bad delay {text!r}: expected D or LOW-HIGH milliseconds") from None
    if ms < 0:
        raise ValueError(f"bad delay {text!r}: must be >= 0")
    return Mode("delay", ms) if ms > 0 else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments elections", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=30,
                   help="leader crashes per range (default 30; the paper ran 1000, about 1-2 s each here)")
    p.add_argument("--tick-ms", type=int, default=1, help="the nodes' Raft tick (default 1 ms, the resolution of a range)")
    p.add_argument("--link-delay-ms", default="0", metavar="D|LOW-HIGH",
                   help="delay every node-to-node message through a proxy: D ms, or uniformly LOW-HIGH ms, in "
                        "order per connection (default 0: plain loopback; 1-14 is sim-elections' default, about "
                        "the paper's 15 ms broadcast time with jitter)")
    p.add_argument("--setup", choices=sorted(RAFT_VARIANTS), default="paper",
                   help="paper: the nodes run Raft as the paper's servers did (default); logqueue: as logqueue "
                        "nodes do by default (the nodes' --raft-variant)")
    p.add_argument("--keep-dir", metavar="DIR",
                   help="keep the nodes' data and logs under DIR (default: a temporary directory, removed)")
    add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args, ranges, seed = parse_output_args(p, argv)
    if args.tick_ms < 1:
        p.error("--tick-ms must be at least 1")
    try:
        link_delay = parse_link_delay(args.link_delay_ms)
    except ValueError as exc:
        p.error(f"--link-delay-ms: {exc}")
    rng = random.Random(seed)
    root = Path(args.keep_dir) if args.keep_dir else Path(tempfile.mkdtemp(prefix="logqueue-elections-"))
    console = Console(stderr=True)
    out = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[last]}"), console=console, transient=False) as progress:
            for low, high in ranges:
                hb = args.heartbeat_ms or max(1, low // 2)
                task = progress.add_task(f"{low}-{high} ms", total=args.trials, last="")

                def on_trial(t: dict, task=task) -> None:
                    last = "timed out" if t["ms"] is None else f"last {t['ms']:.0f} ms, {t['terms']} term(s)"
                    progress.update(task, advance=1, last=last)

                range_dir = root / f"range-{low}-{high}"
                shutil.rmtree(range_dir, ignore_errors=True)
                range_dir.mkdir(parents=True)
                trials = run_range(range_dir, args.nodes, (low, high), hb, args.tick_ms, args.trials, args.max_ms,
                                   rng, on_trial, link_delay, args.setup)
                out.append(range_result(low, high, hb, trials))
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.keep_dir:
            shutil.rmtree(root, ignore_errors=True)
    source = [f"{args.setup} setup"] + ([f"+{args.link_delay_ms} ms per message"] if link_delay else [])
    result = {
        "experiment": EXPERIMENT,
        "source": f"real nodes ({', '.join(source)})",
        "nodes": args.nodes,
        "trials_per_range": args.trials,
        "max_ms": args.max_ms,
        "settings": {
            "tick_ms": args.tick_ms,
            "heartbeat": "half the minimum election timeout" if args.heartbeat_ms is None else f"{args.heartbeat_ms} ms",
            "setup": args.setup,
            **core_settings(args.setup),  # what --raft-variant gives the nodes' cores
            "staggered_logs": False,
            "fsync": "batch",
            "network": "loopback TCP" + (f", every node-to-node message delayed {args.link_delay_ms} ms by a proxy"
                                         if link_delay else ""),
            "link_delay_ms": ([link_delay.delay_ms - link_delay.jitter_ms, link_delay.delay_ms + link_delay.jitter_ms]
                              if link_delay else [0, 0]),  # LOW-HIGH, uniform
            "crash": "SIGKILL of the leader at a uniformly random point of its heartbeat interval",
            "measured": "from just before kill() to the new leader's log line (ms resolution)",
            "seed": seed,
            "host_cpus": os.cpu_count(),
        },
        "ranges": out,
    }
    return finish(result, args)
