"""What the notebooks compute: load recorded results, re-check them, tabulate and plot.

The notebooks in ``notebooks/`` only call this module, so everything here is importable,
unit-tested and usable from a plain script. Four kinds of input, each found through an
environment variable (a notebook reads it) or, when unset, the newest one under
``results/``:

- a failure-experiment directory (``LOGQUEUE_RESULTS``): ``OUT/<backend>/<scenario>/``
  with ``events.jsonl`` and ``summary.json`` (``python -m experiments run --out OUT``);
- a benchmark JSON (``LOGQUEUE_BENCH``): ``python -m experiments bench --out FILE``;
- election-timing JSONs (``LOGQUEUE_ELECTIONS``, comma-separated files or directories):
  ``python -m experiments elections`` / ``python -m logqueue.sim elections``;
- a logqueue run with a ``cluster.jsonl`` (``LOGQUEUE_TIMELINE``: the run directory, or a
  results directory in which ``logqueue/leader-crash`` is taken): see
  ``experiments.clusterlog``.

Tables are pandas DataFrames. Plot functions return a matplotlib ``Figure`` that is
already closed in pyplot, so a notebook cell that ends with the call shows it exactly
once and a script can ``savefig`` it. Bad input raises :class:`AnalysisError`, whose
message is one line (and which Jupyter shows as that line, without a traceback).
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd

from baselines.registry import BACKENDS
from experiments import checker
from experiments.clusterlog import CLUSTER_FILE, UNREACHABLE
from experiments.recorder import JsonlError, read_jsonl
from experiments.scenarios import SCENARIOS

RESULTS_ENV = "LOGQUEUE_RESULTS"
BENCH_ENV = "LOGQUEUE_BENCH"
ELECTIONS_ENV = "LOGQUEUE_ELECTIONS"
TIMELINE_ENV = "LOGQUEUE_TIMELINE"
ELECTION_EXPERIMENT = "raft-election-timing"  # the "experiment" field of an election-timing result


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message is one line that says what to do."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: a notebook shows one line.
        return [f"error: {self}"]


# --- finding the inputs --------------------------------------------------------------------


def results_root() -> Path:
    """The ``results/`` directory: in the working directory, its parent (a notebook runs in
    ``notebooks/``), or the checkout this module is in."""
    for base in (Path.cwd(), Path.cwd().parent, Path(__file__).resolve().parents[1]):
        if (base / "results").is_dir():
            return base / "results"
    raise AnalysisError("no results/ directory here; run `python -m experiments demo` first, or set the "
                        "environment variable to the input's path")


def _newest(paths: Iterable[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


def newest_results_dir(root: str | os.PathLike) -> Path:
    """The results directory under ``root`` (at any depth, or ``root`` itself) whose runs
    were written last; a results directory holds ``<backend>/<scenario>/events.jsonl``."""
    root = Path(root)
    latest: dict[Path, float] = {}
    for events in root.rglob(checker.EVENTS_FILE):
        out = events.parents[2]
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
                            "python -m logqueue.sim elections --out results/elections-sim.json")
    return sorted(newest.parent.glob("*election*.json"))


def _is_election_result(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("experiment") == ELECTION_EXPERIMENT
    except (OSError, ValueError, AttributeError):
        return False


TIMELINE_SCENARIOS = ("leader-crash", "broker-partition", "follower-lag", "rolling-restart", "broker-restart")


def timeline_run(env: Mapping[str, str] = os.environ) -> Path:
    """The logqueue run to draw: ``$LOGQUEUE_TIMELINE`` (a run directory with a
    ``cluster.jsonl``, or a results directory), else the newest results directory.

    In a results directory the first of ``logqueue/`` + :data:`TIMELINE_SCENARIOS` that has
    a ``cluster.jsonl`` is taken, else any logqueue run that has one.
    """
    base = Path(env[TIMELINE_ENV]) if env.get(TIMELINE_ENV) else results_dir(env)
    if not base.is_dir():
        raise AnalysisError(f"{TIMELINE_ENV}={base} is not a directory")
    if (base / CLUSTER_FILE).is_file():
        return base
    for scenario in TIMELINE_SCENARIOS:
        if (base / "logqueue" / scenario / CLUSTER_FILE).is_file():
            return base / "logqueue" / scenario
    found = sorted(base.glob(f"logqueue/*/{CLUSTER_FILE}"))
    if not found:
        raise AnalysisError(f"no logqueue run with a {CLUSTER_FILE} in {base}; run `python -m experiments run "
                            f"--backends logqueue --scenarios leader-crash --quick --out results/timeline`")
    return found[0].parent


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


# --- the failure matrix --------------------------------------------------------------------

RUN_COLUMNS = ["backend", "scenario", "status", "jobs", "completed", "lost", "duplicate_executions",
               "duplicate_effects", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "recovery_ms",
               "throughput_jobs_per_s", "replayed", "rechecked", "differences", "reason", "notes", "anomalies", "dir"]


def load_runs(out_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per run under ``out_dir``: the summary's figures, and whether it re-checks.

    ``anomalies`` is the summary's named anomalies (kind -> jobs); ``dir`` the run's directory.

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
        rows.append({
            "backend": summary.get("backend", run_dir.parent.name),
            "scenario": summary.get("scenario", run_dir.name),
            "status": summary.get("status", "ok"),
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
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    backends, scenarios = backend_order(runs["backend"]), scenario_order(runs["scenario"])
    key = runs["backend"].map(backends.index) * len(scenarios) + runs["scenario"].map(scenarios.index)
    return runs.iloc[key.argsort(kind="stable")].reset_index(drop=True)


def matrix(runs: pd.DataFrame, field: str) -> pd.DataFrame:
    """Backend x scenario table of ``field``; a run that is not ``ok`` shows its status."""
    cells = runs.apply(lambda r: r[field] if r["status"] == "ok" else r["status"], axis=1)
    table = pd.DataFrame({"backend": runs["backend"], "scenario": runs["scenario"], "cell": cells})
    table = table.pivot(index="backend", columns="scenario", values="cell")
    table = table.reindex(index=backend_order(runs["backend"]), columns=scenario_order(runs["scenario"]))
    table.columns.name = field
    return table.astype(object).where(table.notna(), "")


def overview(runs: pd.DataFrame) -> pd.DataFrame:
    """Backend x scenario, each cell ``lost / duplicate executions / duplicate effects``."""
    runs = runs.copy()
    runs["lost / dup. exec / dup. effects"] = [
        f"{r.lost} / {r.duplicate_executions} / {r.duplicate_effects}" for r in runs.itertuples()]
    return matrix(runs, "lost / dup. exec / dup. effects")


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
    """One group per scenario, one bar per backend, each bar labelled (a zero bar is the answer)."""
    backends, scenarios = backend_order(runs["backend"]), scenario_order(runs["scenario"])
    width = 0.8 / max(1, len(backends))
    colors = plt.get_cmap("tab10")
    for i, backend in enumerate(backends):
        mine = runs[(runs["backend"] == backend) & runs[field].notna()]
        xs = [scenarios.index(s) + (i - (len(backends) - 1) / 2) * width for s in mine["scenario"]]
        ys = [float(v) for v in mine[field]]
        bars = ax.bar(xs, ys, width=width, label=backend, color=colors(BACKENDS_INDEX.get(backend, i) % 10))
        ax.bar_label(bars, labels=[f"{y:,.0f}" if y >= 10 else f"{y:g}" for y in ys], fontsize="x-small", padding=1)
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


def _shade(ax, windows: pd.DataFrame, offset_s: float = 0.0) -> None:
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
        _shade(ax, windows)
        if not points.empty:
            ax.plot(points["t_s"], points["latency_ms"], ".", markersize=4)
            ax.set_ylim(0, points["latency_ms"].max() * 1.15 + 1)
        ax.set_title(f"{run.backend} ({run.status})", fontsize="medium")
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
    _shade(ax, fault_windows(events))
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


# --- the benchmark -------------------------------------------------------------------------

BENCH_RATES = (("publish_per_s", "publish"), ("consume_per_s", "consume"), ("end_to_end_per_s", "end-to-end"))
BENCH_LATENCIES = (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max"))


def load_bench(path: str | os.PathLike) -> pd.DataFrame:
    """A ``python -m experiments bench`` result: one row per backend (index), its figures as columns."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) and "status" in v for v in data.values()):
        raise AnalysisError(f"{path} is not a bench result (expected {{backend: {{\"status\": ...}}}})")
    bench = pd.DataFrame.from_dict(data, orient="index")
    bench.index.name = "backend"
    for column, _ in BENCH_RATES + BENCH_LATENCIES:
        if column not in bench:
            bench[column] = math.nan
    return bench


def bench_table(bench: pd.DataFrame) -> pd.DataFrame:
    """The figures that matter, rounded; what "confirmed" means per backend (``durability``);
    ``reason`` for backends that did not run."""
    columns = ["status"] + [c for c, _ in BENCH_RATES + BENCH_LATENCIES] + ["duplicates", "durability", "reason"]
    return bench.reindex(columns=columns).round(1)


def bench_ratios(bench: pd.DataFrame, reference: str = "logqueue") -> pd.DataFrame:
    """``reference``'s rates divided by every other finished backend's (> 1: ``reference`` is faster)."""
    ok = _ok(bench)
    if reference not in ok.index:
        raise AnalysisError(f"{reference} did not finish the benchmark; the finished ones: {', '.join(ok.index)}")
    columns = [c for c, _ in BENCH_RATES]
    ratios = ok.loc[[reference], columns].values / ok.loc[ok.index != reference, columns]
    ratios.columns = pd.Index([label for _, label in BENCH_RATES], name=f"{reference} / backend")
    return ratios.astype(float).round(2)


def _ok(bench: pd.DataFrame) -> pd.DataFrame:
    ok = bench[bench["status"] == "ok"]
    if ok.empty:
        raise AnalysisError("no backend finished the benchmark (every status is unavailable or failed)")
    return ok


def _bench_title(bench: pd.DataFrame) -> str:
    row = bench.iloc[0]
    return (f"{row.get('messages', '?')} messages of {row.get('payload_bytes', '?')} B, window {row.get('window', '?')}, "
            f"{row.get('consumers', '?')} consumers")


def plot_throughput(bench: pd.DataFrame):
    """Messages per second per backend: publish (confirmed), consume (acked), end-to-end (both at once)."""
    ok = _ok(bench)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(BENCH_RATES)
    for j, (column, label) in enumerate(BENCH_RATES):
        xs = [x + (j - (len(BENCH_RATES) - 1) / 2) * width for x in range(len(ok))]
        bars = ax.bar(xs, ok[column], width=width, label=label)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in ok[column]], fontsize="x-small", padding=1)
    ax.set_xticks(range(len(ok)), ok.index, rotation=20, ha="right")
    ax.set_ylabel("messages / s")
    ax.set_title(f"throughput ({_bench_title(ok)})", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_bench_latency(bench: pd.DataFrame):
    """End-to-end latency (due time -> ack) at half of each backend's maximum rate: p50, p99, max."""
    ok = _ok(bench)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(BENCH_LATENCIES)
    for j, (column, label) in enumerate(BENCH_LATENCIES):
        xs = [x + (j - (len(BENCH_LATENCIES) - 1) / 2) * width for x in range(len(ok))]
        bars = ax.bar(xs, ok[column], width=width, label=label)
        ax.bar_label(bars, labels=[f"{v:,.1f}" for v in ok[column]], fontsize="x-small", padding=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ok)), ok.index, rotation=20, ha="right")
    ax.set_ylabel("ms (log scale)")
    ax.set_title("latency at half the maximum end-to-end rate", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- election timing -----------------------------------------------------------------------

# Raft paper (Ongaro & Ousterhout, USENIX ATC 2014) §9.3, Figure 16 (top): 5 servers, a
# broadcast time of about 15 ms, 1000 trials per range, the leader crashed at a random
# point of its heartbeat interval. ``stat`` is the summary field the claim is about.
PAPER_SETUP = ("Raft paper §9.3, Figure 16: 5 servers, broadcast time about 15 ms, leader crashed at a uniformly "
               "random point of its heartbeat interval, 1000 trials per range")
PAPER_FIGURE16 = {
    "150-150": {"stat": "p50_ms", "paper_ms": 10_000.0, "above": True,
                "claim": "no randomness: elections consistently took longer than 10 s (many split votes)"},
    "150-155": {"stat": "p50_ms", "paper_ms": 287.0, "above": False,
                "claim": "5 ms of randomness: median downtime 287 ms"},
    "150-200": {"stat": "max_ms", "paper_ms": 513.0, "above": False,
                "claim": "50 ms of randomness: worst case 513 ms over 1000 trials"},
}


def load_elections(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Election-timing results (the JSON both election commands write), in the given order."""
    results = []
    for path in paths:
        path = Path(path)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"cannot read {path}: {exc}") from None
        if not isinstance(result, dict) or result.get("experiment") != ELECTION_EXPERIMENT:
            raise AnalysisError(f"{path} is not an election-timing result (no \"experiment\": \"{ELECTION_EXPERIMENT}\")")
        results.append({**result, "file": str(path)})
    if not results:
        raise AnalysisError("no election-timing result given")
    return results


def result_labels(results: list[dict]) -> list[str]:
    """A name per result: its source and trials per range, and its file when that is not unique."""
    labels = [f"{res['source']}, {res.get('trials_per_range', '?')} trials" for res in results]
    return [f"{label} ({Path(res.get('file', '?')).name})" if labels.count(label) > 1 else label
            for label, res in zip(labels, results)]


def election_summary(results: list[dict]) -> pd.DataFrame:
    """One row per (result, range): trials, p50/p90/p99/max, timed out, split-vote trials."""
    rows = []
    for label, res in zip(result_labels(results), results):
        for r in res["ranges"]:
            s = r["summary"]
            rows.append({"result": label, "range": r["range"], "heartbeat_ms": r.get("heartbeat_ms"),
                         **{k: s.get(k) for k in ("trials", "p50_ms", "p90_ms", "p99_ms", "max_ms", "timed_out",
                                                  "split_vote_trials")}})
    return pd.DataFrame(rows)


def election_cdf(result: dict) -> pd.DataFrame:
    """The empirical CDF of each range: ``range``, ``ms`` (sorted), ``percent`` of trials with a
    leader again by then. Timed-out trials are in the denominator only, so a curve that
    does not reach 100 % shows them."""
    rows = []
    for r in result["ranges"]:
        n = len(r["trials"])
        times = sorted(t["ms"] for t in r["trials"] if t["ms"] is not None)
        rows += [{"range": r["range"], "ms": ms, "percent": 100.0 * (k + 1) / n} for k, ms in enumerate(times)]
    return pd.DataFrame(rows, columns=["range", "ms", "percent"])


def paper_comparison(results: list[dict]) -> pd.DataFrame:
    """Each of the paper's three claims next to the same statistic in every result.

    A statistic that falls on a timed-out trial is shown as ``> max_ms`` (the trial was
    given up, so the time is only bounded below).
    """
    rows = []
    for name, claim in PAPER_FIGURE16.items():
        row = {"range": name, "paper": claim["claim"], "statistic": claim["stat"].removesuffix("_ms"),
               "paper ms": (">" if claim["above"] else "") + f"{claim['paper_ms']:g}"}
        for label, res in zip(result_labels(results), results):
            match = next((r for r in res["ranges"] if r["range"] == name), None)
            if match is None:
                value = "not run"
            else:
                v = match["summary"].get(claim["stat"])
                value = f"> {res.get('max_ms', '?')}" if v is None else f"{v:g}"
            row[label] = value
        rows.append(row)
    return pd.DataFrame(rows)


def plot_election_cdfs(results: list[dict]):
    """Figure 16 again: one panel per result, one CDF per timeout range (log time axis),
    with the paper's reported figures marked: a diamond at the 150-155 ms median (287 ms,
    50 %) and the 150-200 ms worst case (513 ms, 100 %), and the region beyond 10 s where
    the paper's 150-150 ms elections ended."""
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), squeeze=False, sharey=True)
    names = list(dict.fromkeys(r["range"] for res in results for r in res["ranges"]) | dict.fromkeys(PAPER_FIGURE16))
    colors = {name: plt.get_cmap("tab10")(k % 10) for k, name in enumerate(names)}
    all_ms = [t["ms"] for res in results for r in res["ranges"] for t in r["trials"] if t["ms"]]
    low = max(1.0, min(all_ms, default=100.0) * 0.8)
    high = max(max(all_ms, default=1000.0), 10_000.0) * 1.3
    for ax, label, res in zip(axes[0], result_labels(results), results):
        cdf = election_cdf(res)
        for name, part in cdf.groupby("range", sort=False):
            ax.step([part["ms"].iloc[0], *part["ms"]], [0.0, *part["percent"]], where="post",
                    color=colors[name], label=f"{name} ms")
        ax.axvspan(10_000, high, color=colors["150-150"], alpha=0.12, label="paper 150-150: > 10 s")
        ax.plot([287], [50], "D", color=colors["150-155"], markeredgecolor="black", label="paper 150-155: median 287")
        ax.plot([513], [100], "D", color=colors["150-200"], markeredgecolor="black", label="paper 150-200: max 513")
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(0, 102)
        ax.set_xlabel("time without a leader (ms)")
        ax.set_title(f"{label} per range, {res['nodes']} nodes", fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower right")
    axes[0][0].set_ylabel("cumulative percent of trials")
    fig.text(0.01, 0.005, f"diamonds and shading: {PAPER_SETUP}", fontsize="x-small", color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    plt.close(fig)
    return fig


# --- the Raft timeline of a logqueue run ---------------------------------------------------

ROLE_COLORS = {"leader": "tab:green", "candidate": "tab:orange", "follower": "tab:blue", UNREACHABLE: "lightgray"}


def load_cluster_log(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A run's ``cluster.jsonl`` as a DataFrame: ``time`` (Unix s), ``node``, ``role``,
    ``term``, ``leader_id``, ``commit_index``, ``applied_index``, ``last_index``
    (NaN where the node did not answer), sorted by time then node."""
    path = Path(run_dir) / CLUSTER_FILE
    try:
        rows = read_jsonl(path)
    except OSError as exc:
        raise AnalysisError(f"cannot read {path}: {exc.strerror or exc} (local logqueue runs of "
                            "`python -m experiments run` write it)") from None
    except JsonlError as exc:
        raise AnalysisError(str(exc)) from None
    for number, row in enumerate(rows, start=1):
        if "t" not in row or "node" not in row or "role" not in row:
            raise AnalysisError(f"{path}: line {number}: a line needs 't', 'node' and 'role'")
    if not rows:
        raise AnalysisError(f"{path} is empty")
    columns = ["t", "node", "role", "term", "leader_id", "commit_index", "applied_index", "last_index"]
    log = pd.DataFrame(rows).reindex(columns=columns).rename(columns={"t": "time"})
    return log.sort_values(["time", "node"], kind="stable").reset_index(drop=True)


def _polls(log: pd.DataFrame):
    """Each poll (every node's line at one time) in time order."""
    return log.groupby("time", sort=True)


def _poll_leader(poll: pd.DataFrame) -> tuple[int, int] | None:
    """(node, term) of the leader this poll shows: a node in role leader in the highest term any
    reachable node reported. An old leader cut off from the others still says "leader",
    but in an older term: it is not the cluster's leader."""
    up = poll[poll["role"] != UNREACHABLE]
    if up.empty:
        return None
    top = up["term"].max()
    leaders = up[(up["role"] == "leader") & (up["term"] == top)]
    return (int(leaders["node"].iloc[0]), int(top)) if not leaders.empty else None


def leaders_per_term(log: pd.DataFrame) -> pd.DataFrame:
    """Per term, every node that said it led it: Election Safety allows one. (``cluster.jsonl``
    samples the nodes, so this can miss a leader, never invent one.)"""
    leaders = log[log["role"] == "leader"]
    per_term = leaders.groupby("term")["node"].agg(lambda nodes: sorted({int(n) for n in nodes}))
    table = per_term.rename("leaders").reset_index()
    table["term"] = table["term"].astype(int)
    table["one leader"] = table["leaders"].map(len) == 1
    return table


def leader_changes(log: pd.DataFrame) -> pd.DataFrame:
    """Each leader the cluster had, when it was first seen: ``t_s`` (seconds since the cluster
    log began), ``term``, ``leader``."""
    rows, last = [], None
    t0 = float(log["time"].min())
    for time_, poll in _polls(log):
        lead = _poll_leader(poll)
        if lead is not None and lead != last:
            rows.append({"t_s": round(time_ - t0, 3), "term": lead[1], "leader": lead[0]})
            last = lead
    return pd.DataFrame(rows, columns=["t_s", "term", "leader"])


def leaderless_windows(log: pd.DataFrame) -> pd.DataFrame:
    """Intervals with no leader (see :func:`_poll_leader`): ``start_s`` (the first poll without)
    and ``end_s`` (the first poll with a leader again; NaN if none came) in seconds since the
    cluster log began, ``duration_ms``, and the leader's term before and after (``<NA>``: none,
    e.g. at start-up). Polls are ~50 ms apart, so the times are that coarse."""
    t0 = float(log["time"].min())
    rows, current = [], None
    prev_term = None
    for time_, poll in _polls(log):
        lead = _poll_leader(poll)
        if lead is None and current is None:
            current = {"start_s": round(time_ - t0, 3), "term_before": prev_term}
        elif lead is not None:
            if current is not None:
                rows.append({**current, "end_s": round(time_ - t0, 3), "term_after": lead[1]})
                current = None
            prev_term = lead[1]
    if current is not None:
        rows.append({**current, "end_s": math.nan, "term_after": None})
    out = pd.DataFrame(rows, columns=["start_s", "end_s", "term_before", "term_after"])
    out.insert(2, "duration_ms", ((out["end_s"] - out["start_s"]) * 1000).round(0))
    return out.astype({"term_before": "Int64", "term_after": "Int64"})


def timeline_story(log: pd.DataFrame, events: list[dict] | None = None) -> pd.DataFrame:
    """What happened, in order, for a student: faults beginning and ending, leaderless
    intervals, each new leader. ``t_s`` is seconds since the cluster log began."""
    t0 = float(log["time"].min())
    rows = []
    for w in leaderless_windows(log).itertuples():
        before = "the cluster starts" if pd.isna(w.term_before) else f"the leader of term {w.term_before} is gone"
        rows.append({"t_s": w.start_s, "what": f"no leader ({before})"})
    for c in leader_changes(log).itertuples():
        rows.append({"t_s": c.t_s, "what": f"node {c.leader} leads term {c.term}"})
    if events:
        first = min(e["t"] for e in events)
        for w in fault_windows(events).itertuples():
            rows.append({"t_s": first + w.start_s - t0, "what": f"fault begins: {w.label}"})
            rows.append({"t_s": first + w.end_s - t0, "what": f"fault ends: {w.label}"})
    story = pd.DataFrame(rows, columns=["t_s", "what"]).sort_values("t_s", kind="stable")
    story["t_s"] = story["t_s"].round(2)
    return story.reset_index(drop=True)


def _segments(times: list[float], values: list, t_end: float) -> list[tuple[float, float, object]]:
    """Runs of equal consecutive values: ``(start, width, value)``; the last lasts to ``t_end``."""
    out = []
    for t, v in zip(times, values):
        if out and out[-1][2] == v:
            continue
        if out:
            out[-1] = (out[-1][0], t - out[-1][0], out[-1][2])
        out.append((t, 0.0, v))
    if out:
        out[-1] = (out[-1][0], t_end - out[-1][0], out[-1][2])
    return out


def plot_timeline(log: pd.DataFrame, events: list[dict] | None = None, title: str = ""):
    """Three panels over the same time axis (seconds since the cluster log began):

    - each node's role (green leader, orange candidate -- PreVote included --, blue
      follower, grey unreachable), a dashed line and label where a new leader appears;
    - each node's current term;
    - each node's commit index (it stalls while there is no leader);

    with the run's fault windows (from its ``events.jsonl``) shaded on all three.
    """
    t0 = float(log["time"].min())
    t_end = float(log["time"].max()) - t0
    nodes = sorted(int(n) for n in log["node"].dropna().unique())
    windows = pd.DataFrame(columns=["start_s", "end_s", "label"])
    offset = 0.0
    if events:
        windows = fault_windows(events)
        offset = min(e["t"] for e in events) - t0
    fig, (roles, terms, commits) = plt.subplots(3, 1, figsize=(11, 8), sharex=True,
                                                gridspec_kw={"height_ratios": [1.2, 1, 1]})
    for ax in (roles, terms, commits):
        _shade(ax, windows, offset)
    for k, node in enumerate(nodes):
        mine = log[log["node"] == node]
        times = list(mine["time"] - t0)
        for start, width, role in _segments(times, list(mine["role"]), t_end):
            roles.broken_barh([(start, width)], (k - 0.4, 0.8), color=ROLE_COLORS.get(role, "black"))
        up = mine["role"] != UNREACHABLE
        # Nodes that agree draw the same line: thinner lines on top keep every node visible.
        width = 1.0 + 1.5 * (len(nodes) - 1 - k)
        terms.step(mine["time"] - t0, mine["term"].where(up), where="post", label=f"node {node}", linewidth=width)
        commits.step(mine["time"] - t0, mine["commit_index"].where(up), where="post", label=f"node {node}",
                     linewidth=width)
    for c in leader_changes(log).itertuples():
        for ax in (roles, terms, commits):
            ax.axvline(c.t_s, color="black", linestyle="--", linewidth=0.7)
        roles.annotate(f"T{c.term}: n{c.leader}", (c.t_s, len(nodes) - 0.45), fontsize="x-small",
                       xytext=(2, 0), textcoords="offset points", va="bottom")
    roles.set_yticks(range(len(nodes)), [f"node {n}" for n in nodes])
    roles.set_ylim(-0.6, len(nodes) + 0.1)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ROLE_COLORS.values()]
    fault_handle = [plt.Rectangle((0, 0), 1, 1, color="tab:red", alpha=0.15)] if not windows.empty else []
    roles.legend(handles + fault_handle, list(ROLE_COLORS) + (["fault"] if fault_handle else []),
                 fontsize="x-small", ncol=5, loc="upper left", bbox_to_anchor=(0, 1.3))
    roles.set_title(title or "roles (dashed: a new leader)", fontsize="medium", pad=26)
    terms.yaxis.set_major_locator(MaxNLocator(integer=True))
    terms.set_ylabel("term")
    terms.legend(fontsize="x-small", loc="upper left")
    commits.set_ylabel("commit index")
    commits.set_xlabel("seconds since the cluster log began")
    fig.tight_layout()
    plt.close(fig)
    return fig
