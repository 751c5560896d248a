"""``python -m experiments <command>``: dispatch to the command's module.

Each command lives in its own module with a ``main(argv) -> int``.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("experiments.demo", "run the quick comparison and write a report (what `make demo` runs)"),
    "smoke": ("experiments.smoke", "push N jobs through every backend and report ok/unavailable/failed"),
    "run": ("experiments.runner", "run failure scenarios against backends and check the histories"),
    "report": ("experiments.report", "write report.md and plots for a results directory"),
    "bench": ("experiments.bench", "throughput and latency benchmark across backends"),
    "elections": ("experiments.elections", "the Raft paper's election-timing experiment on real nodes"),
    "sim-elections": ("experiments.sim_elections", "the same experiment on the deterministic simulator"),
}


def usage() -> str:
    lines = ["usage: python -m experiments COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `python -m experiments COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
