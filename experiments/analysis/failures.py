"""The failure matrix: load the runs of a results directory, re-check, tabulate and plot them."""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from baselines.registry import BACKENDS
from experiments import aggregate, checker
from experiments.analysis.discovery import AnalysisError, backend_order, scenario_order

# --- the failure matrix --------------------------------------------------------------------

RUN_COLUMNS = ["backend", "scenario", "trial", "status", "confirms", "jobs", "completed", "lost",
               "duplicate_executions", "duplicate_effects", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "recovery_ms",
               "throughput_jobs_per_s", "replayed", "rechecked", "differences", "reason", "notes", "anomalies", "dir"]


def load_runs(out_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per run under ``out_dir``: the summary's figures, and whether it re-checks.

    A cell run with ``--trials N`` gives one row per trial, ``trial`` its ``k`` (``None`` for
    a cell run once). ``anomalies`` is the summary's named anomalies (kind -> jobs); ``dir``
    the run's directory.

    Every ``summary.json`` is recomputed from its ``events.jsonl`` by the project's checker
    (``experiments.checker.recheck``): ``rechecked`` is True when both agree, else
    ``differences`` lists the fields that do not.

    Raises:
        AnalysisError: no runs, or an unreadable summary or history.
    """
    out_dir = Path(out_dir)
    rows = []
    for run_dir in checker.find_runs(out_dir):
        try:
            summary = json.loads((run_dir / checker.SUMMARY_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"cannot read {run_dir / checker.SUMMARY_FILE}: {exc}") from None
        try:
            differences = checker.recheck(run_dir)
        except checker.CheckerError as exc:
            raise AnalysisError(str(exc)) from None
        latency = summary.get("latency_ms") or {}
        trial = aggregate.TRIAL_DIR.fullmatch(run_dir.name)
        cell = run_dir.parent if trial else run_dir
        rows.append({
            "backend": summary.get("backend", cell.parent.name),
            "scenario": summary.get("scenario", cell.name),
            "trial": int(trial.group(1)) if trial else None,
            "status": summary.get("status", "ok"),
            "confirms": checker.confirms_label(summary.get("confirms")),
            **{k: summary.get(k) for k in ("jobs", "completed", "lost", "duplicate_executions", "duplicate_effects")},
            "latency_p50_ms": latency.get("p50"),
            "latency_p99_ms": latency.get("p99"),
            "latency_max_ms": latency.get("max"),
            "recovery_ms": summary.get("recovery_ms"),
            "throughput_jobs_per_s": summary.get("throughput_jobs_per_s"),
            "replayed": summary.get("replayed"),
            "rechecked": not differences,
            "differences": differences,
            "reason": summary.get("reason"),
            "notes": list(summary.get("notes") or []),
            "anomalies": dict(summary.get("anomalies") or {}),
            "dir": run_dir,
        })
    if not rows:
        raise AnalysisError(f"no runs under {out_dir} (expected {out_dir}/<backend>/<scenario>/{checker.EVENTS_FILE})")
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS).astype({"trial": "Int64"})
    backends, scenarios = backend_order(runs["backend"]), scenario_order(runs["scenario"])
    key = runs["backend"].map(backends.index) * len(scenarios) + runs["scenario"].map(scenarios.index)
    return runs.assign(_key=key).sort_values(["_key", "trial"], kind="stable").drop(columns="_key") \
        .reset_index(drop=True)


def _figure_runs(cell: pd.DataFrame) -> pd.DataFrame:
    """The runs of one cell whose figures count: its ``ok`` trials; a cell run once, its run
    (unless ``n/a``: it did not run)."""
    if len(cell) == 1:
        return cell[cell["status"] != "n/a"]
    return cell[cell["status"] == "ok"]


def _estimate(runs: pd.DataFrame, field: str) -> dict:
    return aggregate.estimate([None if pd.isna(v) else v for v in runs[field]])


def cell_estimates(runs: pd.DataFrame, field: str) -> pd.DataFrame:
    """Per (backend, scenario) cell that ran: ``field``'s ``mean``, ``lo``, ``hi`` (the 95% CI of
    ``experiments.aggregate``, as in ``aggregate.json``) and ``n`` over its ``ok`` trials; a cell
    run once has ``lo == hi == mean``."""
    rows = []
    for (backend, scenario), cell in runs.groupby(["backend", "scenario"], sort=False):
        chosen = _figure_runs(cell)
        if not chosen.empty:
            est = _estimate(chosen, field)
            lo, hi = est["ci95"] or (None, None)
            rows.append({"backend": backend, "scenario": scenario, "mean": est["mean"], "lo": lo, "hi": hi,
                         "n": est["n"]})
    return pd.DataFrame(rows, columns=["backend", "scenario", "mean", "lo", "hi", "n"])


def _cell_text(cell: pd.DataFrame, field: str):
    """``field`` in one cell: the run's value, or for trials ``mean [lo, hi]`` over the ``ok`` ones."""
    return cell[field].iloc[0] if len(cell) == 1 else aggregate.fmt(_estimate(_figure_runs(cell), field))


def _table(runs: pd.DataFrame, name: str, text) -> pd.DataFrame:
    """Backend x scenario, each cell ``text(its runs)``; a cell that is not ``ok`` (no run of it
    is, or its one run is not) shows its statuses."""
    cells = []
    for (backend, scenario), cell in runs.groupby(["backend", "scenario"], sort=False):
        statuses = ", ".join(dict.fromkeys(cell["status"]))
        ok = (cell["status"] == "ok").all() if len(cell) == 1 else (cell["status"] == "ok").any()
        cells.append({"backend": backend, "scenario": scenario, "cell": text(cell) if ok else statuses})
    table = pd.DataFrame(cells).pivot(index="backend", columns="scenario", values="cell")
    table = table.reindex(index=backend_order(runs["backend"]), columns=scenario_order(runs["scenario"]))
    table.columns.name = name
    return table.astype(object).where(table.notna(), "")


def matrix(runs: pd.DataFrame, field: str) -> pd.DataFrame:
    """Backend x scenario table of ``field``; a run that is not ``ok`` shows its status, a cell
    with trials the mean [95% CI] over its ``ok`` trials."""
    return _table(runs, field, lambda cell: _cell_text(cell, field))


OVERVIEW_FIELDS = ("lost", "duplicate_executions", "duplicate_effects")


def overview(runs: pd.DataFrame) -> pd.DataFrame:
    """Backend x scenario, each cell ``lost / duplicate executions / duplicate effects`` (with
    trials, each as mean [95% CI])."""
    return _table(runs, "lost / dup. exec / dup. effects",
                  lambda cell: " / ".join(str(_cell_text(cell, f)) for f in OVERVIEW_FIELDS))


def recheck_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: does ``summary.json`` equal the checker's recomputation from ``events.jsonl``?"""
    return pd.DataFrame({
        "backend": runs["backend"],
        "scenario": runs["scenario"],
        "recomputed summary": ["equal" if ok else "DIFFERS" for ok in runs["rechecked"]],
        "differences": ["; ".join(d) for d in runs["differences"]],
    })


def notes_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's notes and n/a or error reason, one row per note."""
    rows = []
    for r in runs.itertuples():
        if isinstance(r.reason, str) and r.reason:  # (pandas stores a missing reason as NaN)
            rows.append({"backend": r.backend, "scenario": r.scenario, "note": f"{r.status}: {r.reason}"})
        rows += [{"backend": r.backend, "scenario": r.scenario, "note": n} for n in r.notes
                 if not n.startswith("parameters:")]
    return pd.DataFrame(rows, columns=["backend", "scenario", "note"])


BACKENDS_INDEX = {name: i for i, name in enumerate(BACKENDS)}  # one colour per backend in every plot


def _applied(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "n/a"]


def _grouped_bars(ax, runs: pd.DataFrame, field: str, title: str, ylabel: str) -> None:
    """One group per scenario, one bar per backend, each bar labelled (a zero bar is the answer);
    a cell with trials is a bar at the mean with its 95% CI as an error bar."""
    backends, scenarios = backend_order(runs["backend"]), scenario_order(runs["scenario"])
    width = 0.8 / max(1, len(backends))
    colors = plt.get_cmap("tab10")
    cells = cell_estimates(runs, field).dropna(subset=["mean"])
    for i, backend in enumerate(backends):
        mine = cells[cells["backend"] == backend]
        xs = [scenarios.index(s) + (i - (len(backends) - 1) / 2) * width for s in mine["scenario"]]
        ys = [float(v) for v in mine["mean"]]
        errors = None
        if (mine["n"] > 1).any():
            errors = [[y - lo for y, lo in zip(ys, mine["lo"])], [hi - y for y, hi in zip(ys, mine["hi"])]]
        bars = ax.bar(xs, ys, width=width, label=backend, color=colors(BACKENDS_INDEX.get(backend, i) % 10),
                      yerr=errors, capsize=2 if errors else 0)
        ax.bar_label(bars, labels=[f"{y:,.0f}" if y >= 10 else f"{y:.3g}" for y in ys], fontsize="x-small", padding=1)
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]) * 1.15)
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def plot_anomalies(runs: pd.DataFrame):
    """Lost jobs, duplicate executions and duplicate effects, by scenario and backend."""
    runs = _applied(runs)
    fig, axes = plt.subplots(3, 1, figsize=(11, 9.5), squeeze=False)
    for ax, (field, label) in zip(axes[:, 0], (("lost", "lost jobs (produced, never took effect)"),
                                               ("duplicate_executions", "duplicate executions (extra finish)"),
                                               ("duplicate_effects", "duplicate effects (extra result accepted)"))):
        _grouped_bars(ax, runs, field, label, "jobs")
    axes[0, 0].legend(fontsize="small", ncol=4, loc="upper left")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_recovery(runs: pd.DataFrame):
    """Recovery time (fault start -> every job the fault interrupted took effect) by scenario and backend."""
    runs = _applied(runs)
    fig, ax = plt.subplots(figsize=(11, 4))
    _grouped_bars(ax, runs, "recovery_ms", "recovery: fault start -> every interrupted job took effect", "ms")
    ax.legend(fontsize="small", ncol=4, loc="upper left")
    fig.tight_layout()
    plt.close(fig)
    return fig


def load_events(run_dir: str | os.PathLike) -> list[dict]:
    """A run's ``events.jsonl`` (``AnalysisError`` if it cannot be read)."""
    try:
        return checker.load_events(Path(run_dir) / checker.EVENTS_FILE)
    except checker.CheckerError as exc:
        raise AnalysisError(str(exc)) from None


def optional_events(run_dir: str | os.PathLike) -> list[dict] | None:
    """The run's events when it has an ``events.jsonl``, else ``None``."""
    return load_events(run_dir) if (Path(run_dir) / checker.EVENTS_FILE).is_file() else None


def latency_series(events: list[dict]) -> tuple[float, list[tuple[float, float]], list[tuple[float, float, str]]]:
    """``(t0, [(seconds since t0 at first effect, latency ms)], [(start s, end s, label)])``: the
    run's first event time, each completed job's produce -> first effect latency, and each
    fault window (an unhealed fault ends with the history)."""
    produced, first_effect = {}, {}
    for e in sorted(events, key=lambda e: e["t"]):
        if e["ev"] == "produce":
            produced.setdefault(e.get("job"), e["t"])
        elif e["ev"] == "effect":
            first_effect.setdefault(e.get("job"), e["t"])
    t0 = min((e["t"] for e in events), default=0.0)
    points = sorted(
        (first_effect[j] - t0, max(0.0, first_effect[j] - produced[j]) * 1000.0) for j in first_effect if j in produced
    )
    t_end = max((e["t"] for e in events), default=t0)
    windows = []
    open_: dict[tuple, list[float]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e["t"]):
        key = (e.get("fault"), e.get("target"))
        if e["ev"] == "fault_start":
            open_[key].append(e["t"])
        elif e["ev"] == "fault_end" and open_[key]:
            windows.append((open_[key].pop(0) - t0, e["t"] - t0, f"{key[0]} {key[1] or ''}".strip()))
    for key, starts in open_.items():
        windows += [(s - t0, t_end - t0, f"{key[0]} {key[1] or ''}".strip()) for s in starts]
    return t0, points, windows


def latency_over_time(events: list[dict]) -> pd.DataFrame:
    """Per completed job: ``t_s`` (first effect, seconds since the run's first event) and ``latency_ms``."""
    _, points, _ = latency_series(events)
    return pd.DataFrame(points, columns=["t_s", "latency_ms"])


def fault_windows(events: list[dict]) -> pd.DataFrame:
    """Each fault: ``start_s``, ``end_s`` (seconds since the run's first event; unhealed faults end
    with the history) and ``label`` (``fault target``)."""
    _, _, windows = latency_series(events)
    return pd.DataFrame(windows, columns=["start_s", "end_s", "label"])


def shade_faults(ax, windows: pd.DataFrame, offset_s: float = 0.0) -> None:
    for w in windows.itertuples():
        ax.axvspan(w.start_s + offset_s, w.end_s + offset_s, color="tab:red", alpha=0.15, label=w.label)


def plot_latency_over_time(runs: pd.DataFrame, scenario: str):
    """Per backend that ran ``scenario``: each job's produce -> first effect latency at the
    time of its first effect, with the fault windows shaded."""
    chosen = _applied(runs)
    chosen = chosen[chosen["scenario"] == scenario]
    if chosen.empty:
        raise AnalysisError(f"no run of scenario {scenario!r} to plot")
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.3 * len(chosen) + 0.6), squeeze=False)
    for ax, run in zip(axes[:, 0], chosen.itertuples()):
        events = load_events(run.dir)
        points, windows = latency_over_time(events), fault_windows(events)
        shade_faults(ax, windows)
        if not points.empty:
            ax.plot(points["t_s"], points["latency_ms"], ".", markersize=4)
            ax.set_ylim(0, points["latency_ms"].max() * 1.15 + 1)
        trial = "" if pd.isna(run.trial) else f" trial {run.trial}"
        ax.set_title(f"{run.backend}{trial} ({run.status})", fontsize="medium")
        ax.set_ylabel("latency ms")
        if not windows.empty:
            ax.legend(fontsize="x-small", loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the run started (each job at its first effect)")
    fig.suptitle(f"{scenario}: produce -> first effect, fault windows shaded")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # leave the suptitle its own line
    plt.close(fig)
    return fig


def executions(events: list[dict]) -> pd.DataFrame:
    """Every execution of every job: ``job``, ``worker``, ``attempt``, ``start``, ``end``
    (its ``finish``; NaN when it never finished: the worker died or the run ended),
    and ``effect`` (the result of this execution was accepted), times in Unix seconds."""
    rows: list[dict] = []
    running: dict[tuple, list[dict]] = defaultdict(list)  # (job, worker) -> started, not finished
    finished: dict[tuple, dict] = {}  # (job, worker) -> its latest finished execution
    for e in sorted(events, key=lambda e: e["t"]):
        key = (e.get("job"), e.get("worker"))
        if e["ev"] == "start":
            row = {"job": key[0], "worker": key[1], "attempt": e.get("attempt"), "start": e["t"],
                   "end": math.nan, "effect": False}
            rows.append(row)
            running[key].append(row)
        elif e["ev"] == "finish" and running[key]:
            finished[key] = running[key].pop(0)
            finished[key]["end"] = e["t"]
        elif e["ev"] == "effect" and key in finished:
            finished[key]["effect"] = True
    return pd.DataFrame(rows, columns=["job", "worker", "attempt", "start", "end", "effect"])


def plot_executions(run_dir: str | os.PathLike, max_jobs: int = 25):
    """The jobs that ran more than once or never finished a run: one row per job, one bar per
    execution (coloured by worker; hatched when it never finished), a black mark where a
    result took effect, fault windows shaded. This is the seed's "processed twice", drawn.

    An execution that never finished ends where its worker was killed (a ``sigkill`` fault
    on that worker), else with the run.
    """
    events = load_events(run_dir)
    runs = executions(events)
    counts = runs.groupby("job").size() if not runs.empty else pd.Series(dtype=int)
    unfinished = set(runs.loc[runs["end"].isna(), "job"])
    jobs = sorted(set(counts[counts > 1].index) | unfinished)[:max_jobs]
    t0 = min((e["t"] for e in events), default=0.0)
    t_end = max((e["t"] for e in events), default=t0)
    kills = [(e["t"], e.get("target")) for e in events if e["ev"] == "fault_start" and e.get("fault") == "sigkill"]
    drawn = runs[runs["job"].isin(jobs)]
    workers = sorted(drawn["worker"].dropna().unique())
    colors = {w: plt.get_cmap("tab10")(k % 10) for k, w in enumerate(workers)}
    fig, ax = plt.subplots(figsize=(10, 0.5 * max(3, len(jobs)) + 1.4))
    shade_faults(ax, fault_windows(events))
    effects = [e for e in events if e["ev"] == "effect"]
    for y, job in enumerate(jobs):
        mine = drawn[drawn["job"] == job]
        height = 0.8 / len(mine)  # one lane per execution, so overlapping runs stay visible
        for i, r in enumerate(mine.itertuples()):
            end = r.end
            if math.isnan(end):
                end = min((t for t, target in kills if target == r.worker and t >= r.start), default=t_end)
            lane = y - 0.4 + height * (i + 0.5)
            ax.barh(lane, max(end - r.start, 0.01), left=r.start - t0, height=height * 0.9, color=colors[r.worker],
                    hatch="//" if math.isnan(r.end) else None, edgecolor="black", linewidth=0.3)
        xs = [e["t"] - t0 for e in effects if e.get("job") == job]
        ax.plot(xs, [y] * len(xs), "k|", markersize=16, markeredgewidth=2)
    ax.set_yticks(range(len(jobs)), jobs, fontsize="small")
    ax.set_xlim(0, max(t_end - t0, 1.0))
    ax.set_ylim(len(jobs) - 0.5 if jobs else 0.5, -0.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[w]) for w in workers]
    handles.append(plt.Line2D([], [], color="k", marker="|", linestyle="", markersize=10, markeredgewidth=2))
    ax.legend(handles, [f"run on {w}" for w in workers] + ["effect"], fontsize="x-small", loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    ax.set_xlabel("seconds since the run started (hatched: never finished)")
    run_dir = Path(run_dir)
    title = f"{run_dir.parent.name} / {run_dir.name}: jobs that ran more than once or never finished"
    ax.set_title(title if jobs else title + " (none)", fontsize="medium")
    fig.tight_layout()
    plt.close(fig)
    return fig
