"""Where the analysis finds its inputs, the one-line error it raises, and the order of names.

Each input is found through an environment variable (a notebook reads it) or, when unset,
the newest one under ``results/`` (see the package docstring).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from baselines.registry import BACKENDS
from experiments import aggregate, checker
from experiments.clusterlog import CLUSTER_FILE
from experiments.election_results import EXPERIMENT as ELECTION_EXPERIMENT
from experiments.scenarios import SCENARIOS

RESULTS_ENV = "LOGQUEUE_RESULTS"
BENCH_ENV = "LOGQUEUE_BENCH"
ELECTIONS_ENV = "LOGQUEUE_ELECTIONS"
TIMELINE_ENV = "LOGQUEUE_TIMELINE"



class AnalysisError(ValueError):
    """Input the analysis cannot use; the message is one line that says what to do."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: a notebook shows one line.
        return [f"error: {self}"]


# --- finding the inputs --------------------------------------------------------------------


def results_root() -> Path:
    """The ``results/`` directory: in the working directory, its parent (a notebook runs in
    ``notebooks/``), or the checkout this module is in."""
    for base in (Path.cwd(), Path.cwd().parent, Path(__file__).resolve().parents[2]):  # experiments/analysis/ -> the checkout
        if (base / "results").is_dir():
            return base / "results"
    raise AnalysisError("no results/ directory here; run `python -m experiments demo` first, or set the "
                        "environment variable to the input's path")


def _newest(paths: Iterable[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


def newest_results_dir(root: str | os.PathLike) -> Path:
    """The results directory under ``root`` (at any depth, or ``root`` itself) whose runs
    were written last; a results directory holds ``<backend>/<scenario>/events.jsonl``, or
    ``<backend>/<scenario>/trial-<k>/events.jsonl`` for a run with trials."""
    root = Path(root)
    latest: dict[Path, float] = {}
    for events in root.rglob(checker.EVENTS_FILE):
        run = events.parent
        out = (run.parent if aggregate.TRIAL_DIR.fullmatch(run.name) else run).parents[1]
        if out == root or root in out.parents:
            latest[out] = max(latest.get(out, 0.0), events.stat().st_mtime)
    if not latest:
        raise AnalysisError(f"no results under {root} (expected {root}/<dir>/<backend>/<scenario>/"
                            f"{checker.EVENTS_FILE}); run `python -m experiments run --quick --out {root}/q`")
    return max(latest, key=latest.__getitem__)


def results_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$LOGQUEUE_RESULTS``, else the newest results directory under ``results/``."""
    if env.get(RESULTS_ENV):
        path = Path(env[RESULTS_ENV])
        if not path.is_dir():
            raise AnalysisError(f"{RESULTS_ENV}={path} is not a directory")
        return path
    return newest_results_dir(results_root())


def _file_from_env(env: Mapping[str, str], name: str, pattern: str, how: str) -> Path:
    if env.get(name):
        path = Path(env[name])
        if not path.is_file():
            raise AnalysisError(f"{name}={path} is not a file")
        return path
    root = results_root()
    newest = _newest(root.rglob(pattern))
    if newest is None:
        raise AnalysisError(f"no {pattern} under {root}; set {name} or run `{how}`")
    return newest


def bench_file(env: Mapping[str, str] = os.environ) -> Path:
    """``$LOGQUEUE_BENCH``, else the newest ``bench*.json`` under ``results/``."""
    return _file_from_env(env, BENCH_ENV, "bench*.json",
                          "python -m experiments bench --out results/bench.json")


def election_files(env: Mapping[str, str] = os.environ) -> list[Path]:
    """``$LOGQUEUE_ELECTIONS`` (comma-separated files or directories of ``*.json``), else
    every ``*election*.json`` in the directory of the newest one under ``results/``."""
    if env.get(ELECTIONS_ENV):
        files: list[Path] = []
        for part in (p.strip() for p in env[ELECTIONS_ENV].split(",") if p.strip()):
            path = Path(part)
            if path.is_dir():
                found = sorted(f for f in path.glob("*.json") if _is_election_result(f))
                if not found:
                    raise AnalysisError(f"{ELECTIONS_ENV}: no election-timing result (*.json) in {path}")
                files += found
            elif path.is_file():
                files.append(path)
            else:
                raise AnalysisError(f"{ELECTIONS_ENV}: {path} is neither a file nor a directory")
        if not files:
            raise AnalysisError(f"{ELECTIONS_ENV} names no file")
        return files
    newest = _file_from_env(env, ELECTIONS_ENV, "*election*.json",
                            "python -m experiments sim-elections --out results/elections-sim.json")
    return sorted(newest.parent.glob("*election*.json"))


def _is_election_result(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("experiment") == ELECTION_EXPERIMENT
    except (OSError, ValueError, AttributeError):
        return False


TIMELINE_SCENARIOS = ("leader-crash", "broker-partition", "follower-lag", "rolling-restart", "broker-restart")


def timeline_run(env: Mapping[str, str] = os.environ) -> Path:
    """The run to draw: ``$LOGQUEUE_TIMELINE`` (a run directory with a ``cluster.jsonl``,
    or a results directory), else the newest results directory.

    In a results directory the first run (or first trial) of :data:`TIMELINE_SCENARIOS` that
    has a ``cluster.jsonl`` (only logqueue's runs write one) is taken, else any run that has one.
    """
    base = Path(env[TIMELINE_ENV]) if env.get(TIMELINE_ENV) else results_dir(env)
    if not base.is_dir():
        raise AnalysisError(f"{TIMELINE_ENV}={base} is not a directory")
    if (base / CLUSTER_FILE).is_file():
        return base
    found = [run for run in checker.find_runs(base) if (run / CLUSTER_FILE).is_file()]
    for scenario in TIMELINE_SCENARIOS:
        for run in found:
            if scenario in (run.name, run.parent.name):  # a run, or a trial of the cell
                return run
    if not found:
        raise AnalysisError(f"no logqueue run with a {CLUSTER_FILE} in {base}; run `python -m experiments run "
                            f"--backends logqueue --scenarios leader-crash --quick --out results/timeline`")
    return found[0]


# --- ordering ---------------------------------------------------------------------------


def _rank(names: Iterable[str], known: Iterable[str]) -> list[str]:
    order = {name: i for i, name in enumerate(known)}
    return sorted(dict.fromkeys(names), key=lambda n: (order.get(n, len(order)), n))


def backend_order(names: Iterable[str]) -> list[str]:
    """``names`` in the backend registry's order (unknown names last, alphabetically)."""
    return _rank(names, BACKENDS)


def scenario_order(names: Iterable[str]) -> list[str]:
    """``names`` in DESIGN.md's scenario order (the seed's four first)."""
    return _rank(names, SCENARIOS)
