"""Aggregated results as tables and curves: a cell's mean [95% CI], a sweep's curve with its CI band.

What ``notebooks/sweeps.ipynb`` and the aggregated report (``experiments.aggregate_report``) call,
as ``from experiments.analysis import aggregates``.

Input is what ``experiments run --trials N`` and ``experiments sweep`` write: per cell an
``aggregate.json`` (see ``experiments.aggregate``), and for a sweep ``OUT/sweep.json``
(``param``, ``values``, ``command``) with one ``OUT/<param>=<value>/`` per value.
:func:`load_aggregates` flattens them into one row per (value, backend, scenario): each
figure ``F`` gives the columns ``F`` (the mean), ``F_lo``, ``F_hi`` and ``F_n``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments import aggregate, checker
from experiments.analysis.discovery import results_root
from experiments.sweep import SWEEP_FILE

SWEEP_ENV = "LOGQUEUE_SWEEP"

FIGURE_LABELS = {
    "p_duplicate_effect": "P(at least one duplicate effect)",
    "duplicate_effects": "duplicate effects",
    "duplicate_executions": "duplicate executions",
    "redeliveries": "redeliveries",
    "lost": "lost jobs",
    "recovery_ms": "recovery (ms)",
}


MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")


class SweepAnalysisError(ValueError):
    """Input that cannot be read; the message is one line."""

    def _render_traceback_(self) -> list[str]:
        return [f"error: {self}"]  # a notebook shows the line, not a traceback


def sweep_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$LOGQUEUE_SWEEP``, else the sweep (a directory with ``sweep.json``) written last under ``results/``."""
    if env.get(SWEEP_ENV):
        path = Path(env[SWEEP_ENV])
        if not (path / SWEEP_FILE).is_file():
            raise SweepAnalysisError(f"{SWEEP_ENV}={path} is not a sweep (no {SWEEP_FILE})")
        return path
    newest = max(results_root().rglob(SWEEP_FILE), key=lambda p: p.stat().st_mtime, default=None)
    if newest is None:
        raise SweepAnalysisError(f"no {SWEEP_FILE} under results/; run `python -m experiments sweep ... --out "
                                 "results/NAME` or set " + SWEEP_ENV)
    return newest.parent


def _estimates(a: dict) -> dict[str, dict]:
    """Every estimate of an aggregate by flat name (``latency_ms`` per percentile)."""
    flat = {name: a[name] for name in (*aggregate.FIGURES, "faults", "p_duplicate_effect") if name in a}
    flat.update({f"latency_{q}_ms": a["latency_ms"][q] for q in aggregate.LATENCIES if "latency_ms" in a})
    return flat


def _row(a: dict, param: str | None, value: str | None) -> dict:
    row = {"backend": a["backend"], "confirms": checker.confirms_label(a.get("confirms")), "scenario": a["scenario"],
           "param": param,
           "value": None if value is None else float(value), "trials": a["trials"],
           "ok": a["statuses"].get("ok", 0)}
    for name, est in _estimates(a).items():
        lo, hi = est["ci95"] if est["ci95"] else (None, None)
        row.update({name: est["mean"], f"{name}_lo": lo, f"{name}_hi": hi, f"{name}_n": est["n"]})
    return row


def _cells(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob(f"*/*/{aggregate.AGGREGATE_FILE}"))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SweepAnalysisError(f"cannot read {path}: {exc}") from None


def sweep_info(out_dir: str | os.PathLike) -> dict | None:
    """``sweep.json`` of a sweep directory, or ``None`` for a plain results directory."""
    path = Path(out_dir) / SWEEP_FILE
    return _read(path) if path.exists() else None


def load_aggregates(out_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per aggregated cell (and per value of a sweep), in the sweep's order of values."""
    out_dir = Path(out_dir)
    info = sweep_info(out_dir)
    rows = []
    if info is None:
        rows = [_row(_read(cell / aggregate.AGGREGATE_FILE), None, None) for cell in _cells(out_dir)]
    else:
        for value in info["values"]:
            rows += [_row(_read(cell / aggregate.AGGREGATE_FILE), info["param"], value)
                     for cell in _cells(out_dir / f"{info['param']}={value}")]
    if not rows:
        raise SweepAnalysisError(f"no {aggregate.AGGREGATE_FILE} under {out_dir} "
                                 "(run `experiments run --trials N` or `experiments sweep`)")
    return pd.DataFrame(rows)


def cell_table(points: pd.DataFrame, figures=("lost", "duplicate_executions", "duplicate_effects",
                                              "p_duplicate_effect")) -> pd.DataFrame:
    """Backend x scenario (x value) rows, with whether the backend's confirms are replicated, each figure as
    ``mean [lo, hi]``."""
    def text(row, name):
        if name not in row or pd.isna(row[name]):  # an older aggregate without this figure
            return "-"
        return aggregate.fmt({"mean": row[name], "ci95": [row[f"{name}_lo"], row[f"{name}_hi"]]},
                             2 if name.startswith("p_") else 1)

    keys = ["backend", "confirms", "scenario"] + (["value"] if points["param"].notna().any() else [])
    table = points[keys].copy()
    if "value" in keys:
        table["value"] = [f"{v:g}" for v in table["value"]]
        table = table.rename(columns={"value": points["param"].dropna().iloc[0]})
    for name in figures:
        table[FIGURE_LABELS.get(name, name)] = [text(row, name) for _, row in points.iterrows()]
    return table.reset_index(drop=True)


def plot_sweep(points: pd.DataFrame, figures: str | list[str], scenario: str | None = None, x_per: float = 1.0,
               xlabel: str | None = None, title: str | None = None):
    """Per figure a panel: one curve per backend against the swept value (divided by ``x_per``), with its 95% CI band."""
    figures = [figures] if isinstance(figures, str) else list(figures)
    if points["param"].isna().all():
        raise SweepAnalysisError("these results are not a sweep (no sweep.json): nothing to draw a curve over")
    if scenario is not None:
        points = points[points["scenario"] == scenario]
    missing = [f for f in figures if f not in points]
    if points.empty or missing:
        raise SweepAnalysisError(f"no {', '.join(missing) or figures[0]!s} values for scenario {scenario!r}")
    fig, axes = plt.subplots(1, len(figures), figsize=(6.5 * len(figures), 4.2), squeeze=False)
    param = points["param"].iloc[0]
    for ax, figure in zip(axes[0], figures):
        for i, (backend, curve) in enumerate(points.groupby("backend", sort=False)):
            curve = curve.sort_values("value").dropna(subset=[figure])
            x = curve["value"] / x_per
            # Markers and dashes differ per backend, so that curves lying on each other stay visible.
            line, = ax.plot(x, curve[figure], marker=MARKERS[i % len(MARKERS)], linestyle=DASHES[i % len(DASHES)],
                            markersize=8 - 1.5 * (i % 3), label=backend)
            ax.fill_between(x, curve[f"{figure}_lo"], curve[f"{figure}_hi"], color=line.get_color(), alpha=0.18,
                            linewidth=0)
        ax.set_xlabel(xlabel or param)
        ax.set_ylabel(FIGURE_LABELS.get(figure, figure))
        if figure.startswith("p_"):
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    trials = int(points["trials"].max())
    fig.suptitle(title or f"{scenario or ', '.join(points['scenario'].unique())}: "
                          f"{' and '.join(FIGURE_LABELS.get(f, f) for f in figures)} vs {param}\n"
                          f"(mean and 95% CI over {trials} trials)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_cells(points: pd.DataFrame, figures=("lost", "duplicate_executions", "duplicate_effects")):
    """Trials of a matrix: per figure a panel, a group of bars per scenario, one bar per backend at its
    mean with the 95% CI as an error bar."""
    scenarios = list(dict.fromkeys(points["scenario"]))
    backends = list(dict.fromkeys(points["backend"]))
    fig, axes = plt.subplots(1, len(figures), figsize=(5.5 * len(figures), 4.2), squeeze=False)
    width = 0.8 / max(1, len(backends))
    for ax, figure in zip(axes[0], figures):
        for i, backend in enumerate(backends):
            rows = points[points["backend"] == backend].set_index("scenario").reindex(scenarios)
            means = rows[figure].astype(float)
            errors = [(means - rows[f"{figure}_lo"].astype(float)).clip(lower=0).fillna(0),
                      (rows[f"{figure}_hi"].astype(float) - means).clip(lower=0).fillna(0)]
            x = [j + (i - (len(backends) - 1) / 2) * width for j in range(len(scenarios))]
            ax.bar(x, means.fillna(0), width, yerr=errors, capsize=3, label=backend)
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right")
        ax.set_title(FIGURE_LABELS.get(figure, figure))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    trials = int(points["trials"].max())
    fig.suptitle(f"mean and 95% CI over {trials} trials per cell")
    fig.tight_layout()
    plt.close(fig)
    return fig
