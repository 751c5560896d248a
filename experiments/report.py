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
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from baselines.registry import BACKENDS
from experiments.checker import EVENTS_FILE, SUMMARY_FILE, CheckerError, find_runs, load_events, recheck
from experiments.scenarios import SCENARIOS

ANOMALY_FIELDS = (("lost", "lost"), ("duplicate_executions", "duplicate executions"), ("duplicate_effects", "duplicate effects"))


class ReportError(ValueError):
    """The results directory cannot be reported on; the message is one line."""


def load_runs(out_dir: Path) -> list[dict]:
    """Every run under ``out_dir`` as ``{"dir", "summary", "events", "mismatches"}``."""
    runs = []
    for run_dir in find_runs(out_dir):
        try:
            summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ReportError(f"cannot read {run_dir / SUMMARY_FILE}: {exc}") from None
        try:
            events = load_events(run_dir / EVENTS_FILE)
            mismatches = recheck(run_dir)
        except CheckerError as exc:
            raise ReportError(str(exc)) from None
        runs.append({"dir": run_dir, "summary": summary, "events": events, "mismatches": mismatches})
    if not runs:
        raise ReportError(f"no runs under {out_dir} (expected {out_dir}/<backend>/<scenario>/{EVENTS_FILE})")
    return runs


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}"
    return f"{value}{unit}"


def _order(runs: list[dict]) -> tuple[list[str], list[str]]:
    """Backends in registry order and scenarios in DESIGN.md's order; unknown names last."""
    def ordered(names, known):
        rank = {name: i for i, name in enumerate(known)}
        return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))

    backends = ordered((r["summary"]["backend"] for r in runs), BACKENDS)
    scenarios = ordered((r["summary"]["scenario"] for r in runs), SCENARIOS)
    return backends, scenarios


def _grouped_bars(ax, runs: list[dict], field, title: str, ylabel: str) -> None:
    """One group of bars per scenario, one bar per backend; n/a runs are left out."""
    backends, scenarios = _order(runs)
    by_key = {(r["summary"]["backend"], r["summary"]["scenario"]): r["summary"] for r in runs}
    width = 0.8 / max(1, len(backends))
    for i, backend in enumerate(backends):
        xs, ys = [], []
        for j, scenario in enumerate(scenarios):
            s = by_key.get((backend, scenario))
            if s is None or s.get("status") == "n/a" or field(s) is None:
                continue
            xs.append(j + (i - (len(backends) - 1) / 2) * width)
            ys.append(field(s))
        bars = ax.bar(xs, ys, width=width, label=backend)
        # Print each value: a zero bar is invisible, but zero is the answer that matters.
        ax.bar_label(bars, labels=[_fmt(y) for y in ys], fontsize="x-small", padding=1)
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]) * 1.15)
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def plot_anomalies(runs: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(len(ANOMALY_FIELDS), 1, figsize=(11, 3.2 * len(ANOMALY_FIELDS)), squeeze=False)
    for ax, (key, label) in zip(axes[:, 0], ANOMALY_FIELDS):
        _grouped_bars(ax, runs, lambda s, k=key: s.get(k), label, "jobs")
    axes[0, 0].legend(fontsize="small", ncol=4, loc="upper left", bbox_to_anchor=(0, 1.35))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_recovery(runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 4))
    _grouped_bars(ax, runs, lambda s: s.get("recovery_ms"), "recovery: fault start -> every interrupted job took effect", "ms")
    ax.legend(fontsize="small", ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def latency_series(events: list[dict]) -> tuple[float, list[tuple[float, float]], list[tuple[float, float, str]]]:
    """``(t0, [(seconds since t0 at first effect, latency ms)], [(start s, end s, label)])``."""
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


def plot_latency(scenario: str, runs: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.4 * len(runs)), squeeze=False, sharex=False)
    for ax, run in zip(axes[:, 0], runs):
        _, points, windows = latency_series(run["events"])
        for start, end, label in windows:
            ax.axvspan(start, end, color="tab:red", alpha=0.15, label=label)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], ".", markersize=4)
            ax.set_ylim(0, max(p[1] for p in points) * 1.15 + 1)
        ax.set_title(f"{run['summary']['backend']} ({run['summary'].get('status', 'ok')})", fontsize="medium")
        ax.set_ylabel("latency ms")
        if windows:
            ax.legend(fontsize="x-small", loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the run started (job plotted at its first effect)")
    fig.suptitle(f"{scenario}: produce -> first effect, fault windows shaded")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # leave the suptitle its own line
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_markdown(runs: list[dict], plots: dict[str, str]) -> str:
    backends, scenarios = _order(runs)
    lines = [
        "# Failure experiments: report",
        "",
        "Each cell is one run: `OUT/<backend>/<scenario>/events.jsonl` checked into `summary.json` "
        "(definitions in `experiments/checker.py`). Latency is produce -> first effect; recovery is "
        "fault start -> every job the fault interrupted took effect; replayed is how many jobs a new "
        "reader got back from the start of the history.",
        "",
        "| backend | scenario | status | jobs | lost | dup. executions | dup. effects | p99 ms | recovery ms | replayed | recomputed |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    order = {(b, s): (bi, si) for bi, b in enumerate(backends) for si, s in enumerate(scenarios)}
    runs = sorted(runs, key=lambda r: order[(r["summary"]["backend"], r["summary"]["scenario"])])
    for r in runs:
        s = r["summary"]
        p99 = (s.get("latency_ms") or {}).get("p99")
        if s.get("status") == "n/a":
            cells = [s["backend"], s["scenario"], "n/a", "", "", "", "", "", "", "", "equal" if not r["mismatches"] else "**differs**"]
        else:
            cells = [
                s["backend"], s["scenario"], s.get("status", "ok"), _fmt(s.get("jobs")), _fmt(s.get("lost")),
                _fmt(s.get("duplicate_executions")), _fmt(s.get("duplicate_effects")), _fmt(p99),
                _fmt(s.get("recovery_ms")), _fmt(s.get("replayed")) if s["scenario"] == "replay" else "",
                "equal" if not r["mismatches"] else "**differs**",
            ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "## Plots", ""]
    for title, file in plots.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    lines += ["## Notes", ""]
    for r in runs:
        s = r["summary"]
        notes = ([f"n/a: {s.get('reason', '')}"] if s.get("status") == "n/a" else [])
        notes += ([f"{s.get('status')}: {s.get('reason', '')}"] if s.get("status") not in ("ok", "n/a") else [])
        notes += list(s.get("notes") or [])
        notes += [f"summary differs from recomputation: {m}" for m in r["mismatches"]]
        named = {k: v for k, v in (s.get("anomalies") or {}).items() if v}
        if named:
            notes.append("anomalies: " + ", ".join(f"{k} x{len(v)}" for k, v in named.items()))
        if notes:
            lines.append(f"- **{s['backend']} / {s['scenario']}**")
            lines += [f"  - {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path) -> Path:
    """Write ``report.md`` and the plots into ``out_dir``; returns the report's path.

    Raises:
        ReportError: no runs, or an unreadable summary / events file.
    """
    # Files only: no display on a server or in CI. Chosen here, not at import, so that a
    # notebook importing this module (experiments.analysis does) keeps its inline backend.
    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    runs = load_runs(out_dir)
    plots = {}
    plot_anomalies(runs, out_dir / "anomalies.png")
    plots["Lost jobs and duplicates"] = "anomalies.png"
    plot_recovery(runs, out_dir / "recovery.png")
    plots["Recovery time"] = "recovery.png"
    by_scenario: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        if r["summary"].get("status") != "n/a":
            by_scenario[r["summary"]["scenario"]].append(r)
    for scenario, scenario_runs in by_scenario.items():
        file = f"latency-{scenario}.png"
        plot_latency(scenario, scenario_runs, out_dir / file)
        plots[f"Latency over time: {scenario}"] = file
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
