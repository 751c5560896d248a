"""``python -m experiments demo`` (what ``make demo`` runs): the quick comparison, then the report.

Checks which backends answer on this machine (logqueue runs as a local 3-node cluster
started by the runner; the brokers must already be running), says how to start the
missing ones, runs ``experiments run --quick`` on the rest, writes the report and
prints where it is. Exit status: 0 when the report was written, 1 when a run failed,
3 when no backend was usable.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from baselines import registry
from experiments import report, runner
from experiments import scenarios as scenario_registry

DEMO_SCENARIOS = "consumer-crash,slow-consumer,consumer-partition,broker-partition,leader-crash,replay"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments demo",
        description="Run the quick failure experiments on every backend available here (a local 3-node "
                    "logqueue cluster and the brokers that answer), then write the report.",
    )
    parser.add_argument("--out", default="results/demo", help="results directory (default results/demo)")
    parser.add_argument("--backends", default="all", help="NAME,NAME or 'all' (default): the backends to try")
    parser.add_argument("--scenarios", default=DEMO_SCENARIOS, help=f"NAME,NAME or 'all' (default {DEMO_SCENARIOS})")
    args = parser.parse_args(argv)
    try:
        scenario_registry.parse_scenarios(args.scenarios)
        backends = registry.parse_backends(args.backends)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console = Console()
    usable = []
    for backend in backends:
        reason = runner.probe(backend)
        if reason is None:
            usable.append(backend)
        else:
            console.print(f"[yellow]{backend} is unavailable[/]: {reason}")
    if not usable:
        console.print("[red]no backend is usable; start the brokers (make services) and try again[/]")
        return 3
    console.print(f"running the quick matrix on: {', '.join(usable)}")
    code = runner.main(["--backends", ",".join(usable), "--scenarios", args.scenarios, "--out", args.out, "--quick"])
    if code not in (0, 1):
        return code
    try:
        path = report.write_report(Path(args.out))
    except report.ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    console.print(f"[green]report written[/]: {path} (plots next to it)")
    return code


if __name__ == "__main__":
    sys.exit(main())
