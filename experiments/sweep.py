"""``python -m experiments sweep``: the matrix once per value of one parameter.

``--param NAME=V1,V2,...`` names any field of :class:`~experiments.scenarios.base.Params`
(``timeout_s`` or ``timeout-s``); each value is parsed with the field's type. For each
value, ``experiments run`` runs with ``--NAME V`` into ``OUT/NAME=V/`` (every other option
is passed on as given), and every cell gets an ``aggregate.json`` -- also with
``--trials 1`` -- so each value is one aggregated point of a curve. ``OUT/sweep.json``
records ``param``, ``values`` (as given) and ``command`` (the command line, for captions). Every value and option
is checked before the first run starts. Exit status as ``experiments run``'s: the first
value whose matrix could not run (2, 3, 130) stops the sweep; otherwise 1 when a run failed.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from baselines import registry
from experiments import aggregate, runner
from experiments import scenarios as scenario_registry
from experiments.scenarios.base import Params
from experiments.topologies import SERVERS_DIR


SWEEP_FILE = "sweep.json"


class SweepError(ValueError):
    """A bad ``--param`` or option; the message is one line."""


def parse_param(spec: str) -> tuple[str, list[str]]:
    """``"NAME=V1,V2"`` -> (field name, the values as given), each value checked against the field's type."""
    name, sep, values = spec.partition("=")
    name = name.strip().replace("-", "_")
    known = {f.name: type(getattr(Params(), f.name)) for f in fields(Params)}
    if not sep or not name:
        raise SweepError(f"--param wants NAME=V1,V2,..., got {spec!r}")
    if name not in known:
        raise SweepError(f"--param: unknown parameter {name!r}; known: {', '.join(known)}")
    texts = [v.strip() for v in values.split(",") if v.strip()]
    if not texts:
        raise SweepError(f"--param {name}: no values given")
    parsed = []
    for text in texts:
        try:
            parsed.append(known[name](text))
        except ValueError:
            raise SweepError(f"--param {name}: {text!r} is not {'an' if known[name] is int else 'a'} "
                             f"{known[name].__name__}") from None
    if len(set(parsed)) != len(parsed):
        raise SweepError(f"--param {name}: a value is given twice")
    return name, texts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments sweep",
        description="Run `experiments run` once per value of one parameter, into OUT/<param>=<value>/, with an "
                    "aggregate.json (mean and 95%% CI per figure) in every cell. Every other option (--backends, "
                    "--scenarios, --trials, --quick, the other parameters) is that of `experiments run` "
                    "(see `python -m experiments run --help`).",
        epilog="example: python -m experiments sweep --param timeout_s=1,2 --backends redis-streams "
               "--scenarios slow-consumer --quick --trials 2 --out OUT2",
    )
    parser.add_argument("--param", required=True, metavar="NAME=V1,V2,...",
                        help="a parameter of `experiments run` (one of: "
                             + ", ".join(f.name for f in fields(Params)) + ") and its values")
    parser.add_argument("--out", required=True, help="results directory; each value gets OUT/<param>=<value>/")
    return parser


def run_argv(name: str, value: str, rest: list[str], out: Path) -> list[str]:
    """The ``experiments run`` arguments for one value."""
    return [*rest, f"--{name.replace('_', '-')}", value, "--out", str(out / f"{name}={value}")]


def check_options(name: str, values: list[str], rest: list[str], out: Path) -> None:
    """Raise :class:`SweepError` for any value ``experiments run`` would refuse.

    Options argparse refuses (unknown, malformed) exit there as they do for ``experiments run``.
    """
    option = f"--{name.replace('_', '-')}"
    if any(a == option or a.startswith(option + "=") for a in rest):
        raise SweepError(f"{option} is the swept parameter; give its values in --param only")
    parser = runner.build_parser()
    for value in values:
        args = parser.parse_args(run_argv(name, value, rest, out))
        try:
            runner.checked_params(args)
        except ValueError as exc:
            raise SweepError(f"--param {name}={value}: {exc}") from None
        registry.parse_backends(args.backends)
        scenario_registry.parse_scenarios(args.scenarios)


def matrix_cells(out: Path) -> list[Path]:
    """Every cell ``out/<backend>/<scenario>`` an ``experiments run`` wrote (n/a included; an unreachable
    backend has none), not the directories of its servers (``out/.servers/<backend>``)."""
    return [p for p in sorted(out.glob("*/*")) if p.is_dir() and p.parent.name != SERVERS_DIR]


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    out = Path(args.out)
    try:
        name, values = parse_param(args.param)
        check_options(name, values, rest, out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console = runner.make_console()
    out.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m experiments sweep", *map(shlex.quote, given)])
    (out / SWEEP_FILE).write_text(json.dumps({"param": name, "values": values, "command": command}, indent=2) + "\n")
    points: list[tuple[str, dict]] = []
    failed = False
    for value in values:
        console.rule(f"{name}={value}")
        code = runner.main(run_argv(name, value, rest, out))
        if code not in (0, 1):
            return code
        failed |= code == 1
        cells = matrix_cells(out / f"{name}={value}")
        points += [(value, aggregate.write_aggregate(cell)) for cell in cells]
    # One block of rows per cell, its values in the order given.
    order = list(dict.fromkeys((a["backend"], a["scenario"]) for _, a in points))
    points.sort(key=lambda p: order.index((p[1]["backend"], p[1]["scenario"])))
    console.print(runner.aggregate_table([a for _, a in points], {}, sweep=(name, [v for v, _ in points])))
    console.print(f"sweep results in {out}/{name}=<value>/; recheck: python -m experiments check {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
