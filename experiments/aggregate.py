"""Trials of one cell -> ``aggregate.json``: per figure a mean and a 95% confidence interval.

A cell (``OUT/<backend>/<scenario>``) run with ``--trials N`` holds ``trial-1`` ..
``trial-N``, each a run directory with its own ``summary.json``; a cell run once holds the
summary itself. :func:`aggregate` is a pure function of the trials' summaries (so
``python -m experiments.checker`` can recompute it from the events):

- Only trials with status ``ok`` contribute figures; ``statuses`` counts every trial's
  status, so a cell where some trials broke says so.
- Each numeric figure of the summary (``latency_ms`` per percentile; ``faults`` as the
  number of faults) becomes ``{"mean", "ci95": [lo, hi], "n"}`` over the trials where the
  figure is not ``null`` (``recovery_ms`` is ``null`` when no fault interrupted a job).
  ``ci95`` is a percentile bootstrap of the mean (:data:`RESAMPLES` resamples drawn with a
  fixed seed, so the same summaries always give the same interval); one trial, or equal
  values, gives ``[x, x]``. With ``n == 0``, ``mean`` and ``ci95`` are ``null``.
- ``p_duplicate_effect``: the proportion of trials with at least one duplicate effect,
  with a Wilson score interval, and ``count`` (how many trials had one).
- ``confirms``: what the backend's confirm promises, as the first trial's summary
  recorded it (the backend class's declaration: the same in every trial).

Values are rounded to 3 decimals, as the checker's.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

from logqueue.stats import nearest_rank

AGGREGATE_FILE = "aggregate.json"
SUMMARY_FILE = "summary.json"
TRIAL_DIR = re.compile(r"trial-(\d+)")
RESAMPLES = 2000
BOOTSTRAP_SEED = 15
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
# Summary figures that are counts or rates; ``latency_ms`` and ``faults`` are handled apart.
FIGURES = ("jobs", "completed", "lost", "duplicate_executions", "duplicate_effects", "redeliveries", "unexpected",
           "recovered", "indeterminate", "replayed", "throughput_jobs_per_s", "recovery_ms")
LATENCIES = ("p50", "p99", "max")


def trial_dir(cell_dir: str | os.PathLike, k: int) -> Path:
    """``cell_dir/trial-<k>`` (trials count from 1)."""
    return Path(cell_dir) / f"trial-{k}"


def trial_dirs(cell_dir: str | os.PathLike) -> list[Path]:
    """The run directories of a cell: its ``trial-<k>`` in order of ``k``, else the cell itself."""
    cell_dir = Path(cell_dir)
    trials = [p for p in cell_dir.iterdir() if p.is_dir() and TRIAL_DIR.fullmatch(p.name)] if cell_dir.is_dir() else []
    return sorted(trials, key=lambda p: int(TRIAL_DIR.fullmatch(p.name).group(1))) or [cell_dir]


def bootstrap_ci(values: list[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (non-empty), deterministic."""
    if min(values) == max(values):
        return [values[0], values[0]]
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return [nearest_rank(means, 0.025), nearest_rank(means, 0.975)]


def wilson_ci(successes: int, n: int, z: float = Z95) -> list[float]:
    """The Wilson score interval of the proportion ``successes / n`` (``n > 0``)."""
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _r(x: float) -> float:
    return round(x, 3)


def estimate(values: list[float | None]) -> dict:
    """``{"mean", "ci95", "n"}`` over the values that are not ``None``."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "ci95": None, "n": 0}
    return {"mean": _r(sum(present) / len(present)), "ci95": [_r(x) for x in bootstrap_ci(present)], "n": len(present)}


def proportion(flags: list[bool]) -> dict:
    """``{"mean", "ci95", "n", "count"}``: the share of true ``flags``, with a Wilson interval."""
    if not flags:
        return {"mean": None, "ci95": None, "n": 0, "count": 0}
    count = sum(flags)
    return {"mean": _r(count / len(flags)), "ci95": [_r(x) for x in wilson_ci(count, len(flags))],
            "n": len(flags), "count": count}


def aggregate(summaries: list[dict]) -> dict:
    """The aggregate of one cell's trial summaries (see the module docstring)."""
    if not summaries:
        raise ValueError("aggregate of no trials")
    statuses: dict[str, int] = {}
    for s in summaries:
        statuses[s.get("status", "ok")] = statuses.get(s.get("status", "ok"), 0) + 1
    ok = [s for s in summaries if s.get("status", "ok") == "ok"]
    out = {
        "backend": summaries[0].get("backend"),
        "scenario": summaries[0].get("scenario"),
        "trials": len(summaries),
        "statuses": statuses,
        "confirms": summaries[0].get("confirms"),
    }
    reasons = sorted({str(s["reason"]) for s in summaries if s.get("reason")})
    if reasons:
        out["reasons"] = reasons
    for figure in FIGURES:
        out[figure] = estimate([s.get(figure) for s in ok])
    out["latency_ms"] = {q: estimate([(s.get("latency_ms") or {}).get(q) for s in ok]) for q in LATENCIES}
    out["faults"] = estimate([len(s.get("faults") or []) for s in ok])
    out["p_duplicate_effect"] = proportion([(s.get("duplicate_effects") or 0) > 0 for s in ok])
    return out


def read_summaries(cell_dir: str | os.PathLike) -> list[dict]:
    """The recorded ``summary.json`` of each of the cell's runs (see :func:`trial_dirs`)."""
    summaries = []
    for run in trial_dirs(cell_dir):
        try:
            summaries.append(json.loads((run / SUMMARY_FILE).read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {run / SUMMARY_FILE}: {exc}") from None
    return summaries


def write_aggregate(cell_dir: str | os.PathLike) -> dict:
    """Aggregate the cell's recorded summaries into ``cell_dir/aggregate.json``; returns it."""
    result = aggregate(read_summaries(cell_dir))
    (Path(cell_dir) / AGGREGATE_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def fmt(figure: dict | None, digits: int = 1) -> str:
    """``mean [lo, hi]`` of an estimate, ``-`` when it has no value; integers print without decimals."""
    if not figure or figure.get("mean") is None:
        return "-"
    values = [figure["mean"], *figure["ci95"]]
    places = 0 if all(float(v).is_integer() for v in values) else digits
    mean, lo, hi = (f"{v:,.{places}f}" for v in values)
    return mean if lo == hi == mean else f"{mean} [{lo}, {hi}]"
