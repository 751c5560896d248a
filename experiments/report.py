"""``python -m experiments report DIR``: ``DIR/report.md`` and PNG plots for a results directory.

Reads every ``DIR/<backend>/<scenario>/{summary.json,events.jsonl}`` the runner wrote and
produces:

- ``report.md``: the backend x scenario table (status, jobs, lost, duplicate executions,
  duplicate effects, p99 latency, recovery), whether each summary equals its
  recomputation from the events, every run's notes, and the plots;
- ``anomalies.png``: lost jobs, duplicate executions and duplicate effects, by backend
  and scenario;
- ``latency-<scenario>.png``: per backend, each job's produce -> first effect latency
  over the run's time, with the fault windows shaded;
- ``recovery.png``: recovery time by backend and scenario.

Results of ``experiments run --trials N`` or of ``experiments sweep`` get the aggregated
report instead (``experiments.aggregate_report``): mean [95% CI] per cell, error bars,
a sweep's curves with their CI bands.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import pandas as pd

from experiments import aggregate_report, analysis


class ReportError(ValueError):
    """The results directory cannot be reported on; the message is one line."""


def _fmt(value) -> str:
    """A figure in milliseconds for the table; ``-`` when there is none."""
    if value is None or pd.isna(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _count(value) -> str:
    """A count for the table; ``-`` when there is none. (pandas holds a count column as floats
    when another run has none, so it is printed as an integer here.)"""
    return "-" if value is None or pd.isna(value) else str(int(value))


def render_markdown(runs: pd.DataFrame, plots: dict[str, str]) -> str:
    """``report.md`` for ``runs`` (:func:`experiments.analysis.load_runs`, in its order) and
    ``plots`` (section title -> PNG file name)."""
    lines = [
        "# Failure experiments: report",
        "",
        "Each cell is one run: `OUT/<backend>/<scenario>/events.jsonl` checked into `summary.json` "
        "(definitions in `experiments/checker.py`). Latency is produce -> first effect; recovery is "
        "fault start -> every job the fault interrupted took effect; replayed is how many jobs a new "
        "reader got back from the start of the history. Confirms: on how many nodes a job is when the "
        "producer's confirm arrives (the backend's declaration, recorded in the run's history).",
        "",
        "| backend | confirms | scenario | status | jobs | lost | dup. executions | dup. effects | p99 ms | recovery ms | replayed | recomputed |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs.itertuples():
        recomputed = "equal" if r.rechecked else "**differs**"
        if r.status == "n/a":
            cells = [r.backend, r.confirms, r.scenario, "n/a", "", "", "", "", "", "", "", recomputed]
        else:
            cells = [
                r.backend, r.confirms, r.scenario, r.status, _count(r.jobs), _count(r.lost), _count(r.duplicate_executions),
                _count(r.duplicate_effects), _fmt(r.latency_p99_ms), _fmt(r.recovery_ms),
                _count(r.replayed) if r.scenario == "replay" else "", recomputed,
            ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "## Plots", ""]
    for title, file in plots.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    lines += ["## Notes", ""]
    for r in runs.itertuples():
        reason = r.reason if isinstance(r.reason, str) else ""  # (pandas stores a missing reason as NaN)
        notes = [f"{r.status}: {reason}"] if r.status != "ok" else []
        notes += r.notes
        notes += [f"summary differs from recomputation: {d}" for d in r.differences]
        named = {k: v for k, v in r.anomalies.items() if v}
        if named:
            notes.append("anomalies: " + ", ".join(f"{k} x{len(v)}" for k, v in named.items()))
        if notes:
            lines.append(f"- **{r.backend} / {r.scenario}**")
            lines += [f"  - {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _save(fig, out_dir: Path, file: str) -> str:
    fig.savefig(out_dir / file, dpi=90)
    return file


def write_report(out_dir: str | Path) -> Path:
    """Write ``report.md`` and the plots (drawn by :mod:`experiments.analysis`, as in the
    notebooks) into ``out_dir``; returns the report's path.

    Raises:
        ReportError: no runs, or an unreadable summary / events file.
    """
    # Files only: no display on a server or in CI. Chosen here, not at import, so that
    # importing this module leaves a notebook's inline backend alone.
    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    if aggregate_report.has_aggregates(out_dir):  # --trials N or a sweep: mean [95% CI] per cell
        try:
            return aggregate_report.write_aggregate_report(out_dir)
        except ValueError as exc:
            raise ReportError(str(exc)) from None
    try:
        runs = analysis.load_runs(out_dir)
        plots = {
            "Lost jobs and duplicates": _save(analysis.plot_anomalies(runs), out_dir, "anomalies.png"),
            "Recovery time": _save(analysis.plot_recovery(runs), out_dir, "recovery.png"),
        }
        # n/a runs did not run, so they have no latency to draw.
        for scenario in analysis.scenario_order(runs.loc[runs["status"] != "n/a", "scenario"]):
            figure = analysis.plot_latency_over_time(runs, scenario)
            plots[f"Latency over time: {scenario}"] = _save(figure, out_dir, f"latency-{scenario}.png")
    except analysis.AnalysisError as exc:
        raise ReportError(str(exc)) from None
    report = out_dir / "report.md"
    report.write_text(render_markdown(runs, plots))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments report",
        description="Write DIR/report.md and PNG plots (anomalies, latency over time with faults shaded, "
        "recovery) from the runs under DIR/<backend>/<scenario>/.",
    )
    parser.add_argument("dir", help="the results directory given to `python -m experiments run --out`")
    args = parser.parse_args(argv)
    if not Path(args.dir).is_dir():
        print(f"error: {args.dir} is not a directory", file=sys.stderr)
        return 2
    try:
        report = write_report(args.dir)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
