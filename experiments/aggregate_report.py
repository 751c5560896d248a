"""``report.md`` for aggregated results: a matrix run with ``--trials N``, or a sweep.

``python -m experiments report DIR`` comes here when ``DIR`` holds aggregates
(``experiments run --trials N`` or ``experiments sweep``). The report has one row per
cell (and per swept value) with whether its confirms are replicated and each figure as
``mean [95% CI]``, whether each ``aggregate.json`` equals its recomputation from the
trials' events, and the plots drawn by :mod:`experiments.analysis.aggregates`: for trials, bars with CI error bars
(``trials.png``); for a sweep, per scenario the curves with their CI bands
(``sweep-<scenario>.png``), and the sweep's command.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

from experiments import checker
from experiments.analysis import aggregates
from experiments.aggregate import AGGREGATE_FILE

TABLE_FIGURES = ("lost", "duplicate_executions", "duplicate_effects", "p_duplicate_effect", "redeliveries",
                 "recovery_ms")
SWEEP_FIGURES = ["p_duplicate_effect", "duplicate_effects", "redeliveries"]


def has_aggregates(out_dir: str | Path) -> bool:
    """True when ``out_dir`` is a sweep or holds a cell's ``aggregate.json``."""
    out_dir = Path(out_dir)
    return aggregates.sweep_info(out_dir) is not None or any(out_dir.glob(f"*/*/{AGGREGATE_FILE}"))


def _markdown(table) -> list[str]:
    lines = ["| " + " | ".join(map(str, table.columns)) + " |",
             "| " + " | ".join("---" if i < 3 else "---:" for i in range(len(table.columns))) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return lines


def _cell_dirs(out_dir: Path) -> list[Path]:
    return sorted(p.parent for p in out_dir.rglob(AGGREGATE_FILE))


def write_aggregate_report(out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` and its plots; returns the report's path.

    Raises:
        aggregates.SweepAnalysisError: no aggregates, or one that cannot be read.
    """
    matplotlib.use("Agg")  # files only (see experiments.report)
    out_dir = Path(out_dir)
    points = aggregates.load_aggregates(out_dir)
    info = aggregates.sweep_info(out_dir)
    lines = ["# Failure experiments: aggregated report", ""]
    if info is not None:
        lines += [f"A sweep of `{info['param']}` over {', '.join(info['values'])}, made by:", "",
                  f"    {info['command']}", ""]
    lines += [f"Each cell: mean [95% CI] over its trials (bootstrap; P(duplicate effect): Wilson), "
              f"{int(points['trials'].max())} trials per cell. Definitions in `experiments/checker.py` "
              "and `experiments/aggregate.py`.", ""]
    lines += _markdown(aggregates.cell_table(points, TABLE_FIGURES)) + [""]
    plots: dict[str, str] = {}
    if info is None:
        aggregates.plot_cells(points).savefig(out_dir / "trials.png", dpi=90)
        plots["Lost jobs and duplicates"] = "trials.png"
    else:
        for scenario in dict.fromkeys(points["scenario"]):
            file = f"sweep-{scenario}.png"
            aggregates.plot_sweep(points, SWEEP_FIGURES, scenario).savefig(out_dir / file, dpi=90)
            plots[f"{scenario} against {info['param']}"] = file
    lines += ["## Plots", ""]
    for title, file in plots.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    lines += ["## Every aggregate re-checked", ""]
    for cell in _cell_dirs(out_dir):
        try:
            diffs = checker.recheck_aggregate(cell)
        except checker.CheckerError as exc:
            diffs = [str(exc)]
        lines.append(f"- `{cell.relative_to(out_dir)}`: " + ("equal to its recomputation" if not diffs
                                                             else "**differs**: " + "; ".join(diffs)))
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
