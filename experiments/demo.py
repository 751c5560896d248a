"""``python -m experiments demo`` (what ``make demo`` runs): the quick comparison, then the report.

Checks which backends can run on this machine (logqueue and the replicated baselines run
as clusters the runs start themselves; the shared brokers must already be running), says
how to start the missing ones, runs every (backend, scenario) cell of the quick matrix
on the rest and writes the report. The cells are independent -- each has its own queue,
its own proxies and, where it needs them, its own servers on free ports -- so up to
``--parallel`` of them run side by side (two of one backend at most), each as
``experiments run --quick`` of its own in a forked child; the cells that start a cluster
per run go first, since they take longest. ``--parallel 1`` runs them one after the other. Exit status: 0 when the report
was written, 1 when a run failed, 2 for bad arguments, 3 when no backend was usable.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from rich.console import Console

from baselines import registry
from experiments import report, runner
from experiments import scenarios as scenario_registry
from experiments.checker import SUMMARY_FILE, write_summary
from experiments.topologies import SERVERS_DIR

# The seed's four cases and the leader's crash; `--scenarios all` adds the log's own questions.
DEMO_SCENARIOS = "consumer-crash,slow-consumer,consumer-partition,broker-partition,leader-crash"
PARALLEL = 6  # cells at once: they mostly wait on timeouts, so more than the cores
# Cells of one backend at once: a backend with a cluster per run starts no more than this many
# together (five RabbitMQ clusters starting at once on 2 loaded cores timed out in rabbitmqctl).
PER_BACKEND = 2
LOG_DIR = ".demo-logs"  # each cell's runner output, beside the cells (not a cell: no events)
POLL_S = 0.2


def cell_order(backends: list[str], scenarios: list[str]) -> list[tuple[str, str]]:
    """Every (backend, scenario) cell, the longest first: cells of replicated backends (a cluster
    to start per run) before the others, each group taken scenario by scenario across its
    backends, so that no backend's cells are left to run one after the other at the end."""
    replicated = [b for b in backends if registry.get(b).replicas > 1]
    single = [b for b in backends if b not in replicated]
    return [(b, s) for group in (replicated, single) for s in scenarios for b in group]


class Cell:
    """One cell's ``experiments run --quick``, in a child forked from this process (which has
    imported the runner once for all cells), its output in the cell's log."""

    def __init__(self, backend: str, scenario: str, out: Path) -> None:
        self.backend, self.scenario, self.out = backend, scenario, out
        self.log = out / LOG_DIR / f"{backend}.{scenario}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.returncode: int | None = None
        self.started = time.monotonic()
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the cell, never return into the parent's code
            code = 1
            try:
                log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                # Two cells of one backend run side by side: each keeps its servers in its own directory.
                servers = out / backend / scenario / SERVERS_DIR
                code = runner.main(["--backends", backend, "--scenarios", scenario, "--out", str(out), "--quick",
                                    "--servers-dir", str(servers)])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def poll(self) -> int | None:
        """The exit status once the child has ended, else ``None``."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def stop(self) -> None:
        """SIGTERM (the runner stops its workers and servers, as on Ctrl-C) and wait."""
        if self.returncode is None:
            os.kill(self.pid, signal.SIGTERM)
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def summary(self) -> dict:
        """The cell's checked summary; a child that ended without one is an ``error`` run naming its log."""
        run_dir = self.out / self.backend / self.scenario
        try:
            return json.loads((run_dir / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            run_dir.mkdir(parents=True, exist_ok=True)
            runner.record_status(run_dir, "error", f"the run exited {self.returncode} without a summary; "
                                                   f"see {self.log}")
            return write_summary(run_dir, self.backend, self.scenario)


def outcome(s: dict) -> str:
    """A finished cell in a few words: its status and figures, or why it did not run."""
    if s["status"] == "ok":
        return f"ok: lost {s['lost']}, dup. executions {s['duplicate_executions']}, dup. effects {s['duplicate_effects']}"
    return s["status"] if s["status"] == "n/a" else f"{s['status']}: {s.get('reason', '')}"


def not_started(s: dict) -> bool:
    """The cell's own servers did not start (e.g. a free port taken before the server bound it):
    nothing ran, so running it again changes no answer."""
    return s["status"] == "error" and str(s.get("reason", "")).startswith("ServerStartError")


def run_cells(cells: list[tuple[str, str]], out: Path, parallel: int, console: Console) -> list[dict]:
    """Run ``cells``, ``parallel`` at a time (at most :data:`PER_BACKEND` of one backend), in their order
    but for that cap, printing each as it ends; a cell whose servers did not start runs once more.
    Returns their summaries in ``cells``' order."""
    pending, running, summaries, retried = list(cells), [], {}, set()
    started = time.monotonic()
    try:
        while pending or running:
            while len(running) < parallel:
                busy = [c.backend for c in running]
                ready = [cell for cell in pending if busy.count(cell[0]) < PER_BACKEND]
                if not ready:
                    break
                pending.remove(ready[0])
                running.append(Cell(*ready[0], out))
            time.sleep(POLL_S)
            for cell in [c for c in running if c.poll() is not None]:
                running.remove(cell)
                s = cell.summary()
                now = time.monotonic()
                key = (cell.backend, cell.scenario)
                if not_started(s) and key not in retried:  # no result to lose: run it again, once
                    retried.add(key)
                    pending.insert(0, key)
                    console.print(f"{cell.backend} / {cell.scenario}: {s['reason']}; running it once more")
                    continue
                summaries[key] = s
                console.print(f"[{len(summaries)}/{len(cells)}] {cell.backend} / {cell.scenario} {outcome(s)} "
                              f"({now - cell.started:.0f} s; {now - started:.0f} s in)")
    finally:  # Ctrl-C or SIGTERM: each runner stops its workers and servers on SIGTERM
        for cell in running:
            cell.stop()
    return [summaries[cell] for cell in cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments demo",
        description="Run the quick failure experiments on every backend available here (a local 3-node "
                    "logqueue cluster, the replicated baselines' private clusters and the brokers that answer), "
                    "several cells side by side, then write the report.",
    )
    parser.add_argument("--out", default="results/demo", help="results directory (default results/demo)")
    parser.add_argument("--backends", default="all", help="NAME,NAME or 'all' (default): the backends to try")
    parser.add_argument("--scenarios", default=DEMO_SCENARIOS, help=f"NAME,NAME or 'all' (default {DEMO_SCENARIOS})")
    parser.add_argument("--parallel", type=int, default=PARALLEL, metavar="N",
                        help=f"cells run side by side (default {PARALLEL}; 1: one after the other)")
    args = parser.parse_args(argv)
    try:
        scenarios = scenario_registry.parse_scenarios(args.scenarios)
        backends = registry.parse_backends(args.backends)
        if args.parallel < 1:
            raise ValueError(f"--parallel must be >= 1, got {args.parallel}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: the cells are stopped
    console = runner.make_console()
    started = time.monotonic()
    usable, missing = [], {}
    for backend in backends:
        reason = runner.probe(backend)
        if reason is None:
            usable.append(backend)
        else:
            missing[backend] = reason
            console.print(f"[yellow]{backend} is unavailable[/]: {reason}")
    if not usable:
        console.print("[red]no backend is usable; start the brokers (make services) and try again[/]")
        return 3
    cells = cell_order(usable, scenarios)
    console.print(f"running the quick matrix on: {', '.join(usable)} ({len(cells)} cells, {args.parallel} at a time)")
    out = Path(args.out)
    try:
        summaries = run_cells(cells, out, args.parallel, console)
    except KeyboardInterrupt:
        console.print(f"[red]interrupted[/]; finished cells are in {out}")
        return 130
    console.print(runner.results_table(summaries, missing))
    failed = [s for s in summaries if s["status"] not in ("ok", "n/a")]
    for s in failed:
        console.print(f"[red]{s['backend']} / {s['scenario']} failed[/]: {s.get('reason', '')}")
    try:
        path = report.write_report(out)
    except report.ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    console.print(f"[green]report written[/]: {path} (plots next to it); {len(cells)} cells in "
                  f"{time.monotonic() - started:.0f} s")
    if missing:
        console.print("not run here, and how to start them:")
        for backend, reason in missing.items():
            console.print(f"  {backend}: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
