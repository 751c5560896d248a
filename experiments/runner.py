"""``python -m experiments run``: the failure-experiment matrix, backend x scenario.

For each backend that answers, each scenario runs once: workers, a steady load, the
fault, the heal, a drain (see ``experiments.scenarios.base``). Each run writes
``OUT/<backend>/<scenario>/events.jsonl`` and ``summary.json``, the latter computed by
the checker from the events alone. With ``--trials N`` (N > 1) each cell runs N times,
with seeds ``seed .. seed+N-1``, into ``OUT/<backend>/<scenario>/trial-<k>/`` (k = 1..N),
and ``OUT/<backend>/<scenario>/aggregate.json`` gives each figure's mean and 95% CI
(``experiments.aggregate``). Unreachable backends are skipped with a one-line
reason; scenarios that do not apply to a backend are recorded as ``n/a``. The command
ends with a table: whether the backend's confirms are replicated, lost, duplicate
executions, duplicate effects, p99 latency, recovery.

Servers (``experiments.topologies``): the backends run one after the other, and each
backend's topology -- logqueue's 3 nodes, a replicated baseline's private cluster, a
private server -- is started once, for the first of its cells that runs, printed as
``<backend>: the cluster started in X s``, and reused by every later scenario and trial
of the backend, with its proxy hub (which carries the cluster's peer links); it is
stopped after the backend's last cell, and on Ctrl-C, SIGTERM or an error. Between two
cells the runner heals every link, continues every paused node, restarts every node that
is down and waits until every node serves and one leads; each cell notes the start time,
that the servers were started once for the run (for which cell), and which nodes were
restarted before it (down after which cell). Each cell still has its own queue, client
links and ``cluster.jsonl``. A single-node backend keeps two topologies apart, chosen by
what the scenario needs: the machine's shared servers for the cells that do not kill the
broker (as every cell ran before servers were reused), and one private server, started
once, for those that do (``broker-restart``); a clustered backend has one cluster for all.

Exit status: 0 when every run finished (``ok`` or ``n/a``), 1 when a run failed, 2 for
bad arguments, 3 when no backend was reachable (or, for ``--sink`` plain, idempotent or
fenced, PostgreSQL was not: one line says how to start it).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import fields, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from baselines import registry
from baselines.base import Backend, BackendError
from baselines.plugins import PluginLoadError
from experiments import aggregate
from experiments import scenarios as scenario_registry
from experiments.checker import confirms_label, write_summary
from experiments.clusterlog import CLUSTER_FILE, ClusterLog
from experiments.recorder import EventLog
from experiments.scenarios import jobs
from experiments.scenarios.base import QUICK, Params, RunContext, Work
from experiments.sinks import KINDS, SinkError, connect
from experiments.topologies import SERVERS_DIR, Topologies
from logqueue.workers import WorkerLoadError, load_function

PARAM_HELP = {
    "jobs": "jobs produced per run",
    "job_s": "seconds each job runs",
    "workers": "worker processes per run (>= 2)",
    "heartbeat_s": "heartbeat interval (connection heartbeat / lease extension)",
    "timeout_s": "ack timeout / lease / visibility timeout",
    "max_attempts": "deliveries before a job is dead-lettered",
    "prefetch": "unacknowledged jobs the broker may push to one worker",
    "load_s": "seconds over which the jobs are produced",
    "fault_start_s": "seconds after the load starts when the fault begins",
    "fault_s": "how long the fault lasts (scenarios raise it to outlast their detector unless set)",
    "drain_s": "longest wait, after the heal, for every job to take effect",
    "seed": "picks the worker a targeted fault hits, and the nemesis schedule",
    "nemesis_s": "how long the nemesis scenario's load and random faults go on",
}


def _summary(scenario: str) -> str:
    try:
        return scenario_registry.get(scenario).summary
    except PluginLoadError as exc:
        return f"(cannot be loaded: {exc})"


def build_parser() -> argparse.ArgumentParser:
    epilog = "scenarios:\n" + "\n".join(f"  {name:<20} {_summary(name)}" for name in scenario_registry.names())
    parser = argparse.ArgumentParser(
        prog="python -m experiments run",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run failure scenarios against backends, record each run's events and check them. "
                    "Writes OUT/<backend>/<scenario>/{events.jsonl,summary.json}; then see "
                    "`python -m experiments report OUT`.",
    )
    parser.add_argument("--backends", default="all", help="NAME,NAME or 'all' (default): " + ", ".join(
        n for n in registry.names() if n not in registry.NOT_IN_ALL))
    parser.add_argument("--scenarios", default="all", help="NAME,NAME or 'all' (default): " + ", ".join(
        scenario_registry.names()))
    parser.add_argument("--out", required=True, help="results directory")
    parser.add_argument("--logqueue-cluster", metavar="HOST:PORT,...",
                        help="run logqueue against these running nodes (e.g. docker-compose's) instead of a local "
                             "3-node cluster of the run's own; node faults are then n/a")
    parser.add_argument("--servers-dir", metavar="DIR",
                        help="where the servers the run starts itself (clusters, private brokers) keep their data "
                             "and logs, a directory per backend (default OUT/.servers)")
    parser.add_argument("--quick", action="store_true", help="small runs (40 jobs, short faults): what `make demo` uses")
    parser.add_argument("--func", default=jobs.DEFAULT_FUNCTION, metavar="MODULE:FUNCTION",
                        help="the worker function every run's workers call, fn(payload) or fn(payload, ctx) -> bytes "
                             f"(default {jobs.DEFAULT_FUNCTION}: sleep --job-s, return a digest); the harness adds "
                             "what a scenario needs around the call (the slow job's delay) and writes its result to "
                             "the sink")
    parser.add_argument("--payloads", metavar="FILE",
                        help="the function's payloads, one per line, taken in turn for the --jobs jobs "
                             "(default: generated, seq=N;sleep=JOB_S)")
    parser.add_argument("--sink", choices=KINDS, default="file",
                        help="where a worker writes each effect before it acks: file (the run's results.jsonl, "
                             "default), or a PostgreSQL table of the run's own at $LOGQUEUE_POSTGRES_URL: plain (a row "
                             "per write), idempotent (job id unique, ON CONFLICT DO NOTHING), fenced (a row per job "
                             "keeping the highest fencing token; a lower one refused). Effects counted are the rows")
    parser.add_argument("--trials", type=int, default=1, metavar="N",
                        help="run each cell N times (seeds seed..seed+N-1) into OUT/<backend>/<scenario>/trial-<k>/ "
                             "and write the cell's aggregate.json (mean and 95%% CI per figure); default 1: one run, "
                             "no trial directories")
    defaults = Params()
    for f in fields(Params):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)), default=None,
                            metavar="S" if f.name.endswith("_s") else "N", help=f"{PARAM_HELP[f.name]} (default {getattr(defaults, f.name)}, "
                                              f"--quick {getattr(QUICK, f.name)})")
    return parser


def params_from(args: argparse.Namespace) -> tuple[Params, set[str]]:
    """The base parameters (``--quick`` or full) overridden by the explicit options."""
    base = QUICK if args.quick else Params()
    explicit = {f.name for f in fields(Params) if getattr(args, f.name) is not None}
    return replace(base, **{name: getattr(args, name) for name in explicit}), explicit


def checked_params(args: argparse.Namespace) -> tuple[Params, set[str]]:
    """:func:`params_from`, validated with ``--trials``; raises ``ValueError`` with a one-line reason."""
    params, explicit = params_from(args)
    params.validate()
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    return params, explicit


def external_servers(logqueue_cluster: str | None) -> dict[str, str]:
    """``{server: addresses}`` of servers the user runs and named on the command line."""
    return {"logqueue": logqueue_cluster} if logqueue_cluster else {}


def probe(backend: str, logqueue_cluster: str | None = None) -> str | None:
    """``None`` when ``backend`` can be used here, else a one-line reason."""
    try:
        cls = registry.get(backend)
    except BackendError as exc:
        return str(exc)
    return cls.probe(external_servers(logqueue_cluster))


def fresh_run_dir(run_dir: Path) -> None:
    """Empty ``run_dir`` (an earlier run's files must not mix with this one's)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def record_status(run_dir: Path, status: str, reason: str, work: Work = Work(), cls: type[Backend] | None = None) -> None:
    """A run that did not happen: its history is its ``setup`` (with ``cls``'s confirms) and one ``status`` event."""
    with EventLog(run_dir / "events.jsonl") as log:
        log.record("setup", **work.setup(), **({} if cls is None else {"confirms": cls.confirms()}))
        log.record("status", status=status, reason=reason)


def cell_label(backend: str, scenario: str, trial: int | None) -> str:
    return f"{backend} / {scenario}" + ("" if trial is None else f" #{trial}")


def run_one(backend: str, scenario_name: str, params: Params, explicit: set[str], out: Path, on_progress,
            logqueue_cluster: str | None = None, trial: int | None = None, work: Work = Work(),
            topologies: Topologies | None = None) -> dict:
    """Run one (backend, scenario), or one trial of it, and return its checked summary.

    ``topologies``: the run's started servers, which this cell reuses (or starts for the later
    cells); without, the cell starts its own and stops them at its end."""
    run_dir = out / backend / scenario_name
    if trial is not None:
        run_dir = aggregate.trial_dir(run_dir, trial)
    if topologies is None:  # a lone cell (the demo runs cells side by side): its servers under its own directory
        with Topologies(run_dir / SERVERS_DIR, external_servers(logqueue_cluster), announce=lambda line: None) as own:
            return run_one(backend, scenario_name, params, explicit, out, on_progress, logqueue_cluster, trial, work,
                           own)
    fresh_run_dir(run_dir)
    try:
        scenario = scenario_registry.get(scenario_name)
    except PluginLoadError as exc:  # a broken plug-in: this run fails with the one line, the others go on
        record_status(run_dir, "error", str(exc))
        return write_summary(run_dir, backend, scenario_name)
    cls = registry.get(backend)
    topology = topologies.topology(cls, scenario)
    reason = scenario.applies(cls)
    if reason is None and scenario.node_faults:
        reason = topology.node_faults
    if reason is None and work.sink == "fenced" and not cls.fencing_token:
        reason = f"the fenced sink needs a fencing token, and {backend}'s deliveries carry none (no exact delivery counter)"
    if reason is not None:
        record_status(run_dir, "n/a", reason, work, cls)
        return write_summary(run_dir, backend, scenario_name)
    params = scenario.adjust(params, explicit)
    ctx = None
    timeline: list[ClusterLog] = []

    def watch() -> None:  # RUN_DIR/cluster.jsonl from the cell's start on, for raft-timeline.ipynb
        if topology.timeline_addresses():
            timeline.append(ClusterLog(run_dir / CLUSTER_FILE, topology.timeline_addresses()).start())

    # Client libraries in this process (the producer's) log reconnects and tracebacks while
    # faults are on: they go to the run's runner.log, not over the progress display.
    log_handler = logging.FileHandler(run_dir / "runner.log", mode="w")
    log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    saved_handlers, root.handlers = root.handlers, [log_handler]
    try:
        hub, notes = topologies.prepare(cls, scenario, topology, cell_label(backend, scenario_name, trial), watch)
        ctx = RunContext(backend, scenario_name, params, run_dir, topology, hub, on_progress, work)
        ctx.note(f"parameters: {params}")
        for note in notes:
            ctx.note(note)
        scenario.run(ctx)
    except Exception as exc:  # one broken run must not stop the matrix; its history says why
        if ctx is None:
            record_status(run_dir, "error", f"{type(exc).__name__}: {' '.join(str(exc).split())}", work, cls)
        else:
            ctx.log.record("status", status="error", reason=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    finally:
        if ctx is not None:
            ctx.close()
        for log in timeline:
            log.close()
        root.handlers = saved_handlers
        log_handler.close()
    return write_summary(run_dir, backend, scenario_name)


def _cell(value, unit="") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def results_table(summaries: list[dict], skipped: dict[str, str], work: Work = Work()) -> Table:
    table = Table(title=f"failure experiments: {work.func}, sink {work.sink}", show_lines=False)
    for column in ("backend", "confirms", "scenario", "status", "jobs", "lost", "dup. exec", "dup. effects", "p99 ms",
                   "recovery ms"):
        table.add_column(column, justify="left" if column in ("backend", "confirms", "scenario", "status") else "right")
    for s in summaries:
        confirms = confirms_label(s.get("confirms"))
        if s["status"] == "n/a":
            table.add_row(s["backend"], confirms, s["scenario"], "n/a", *[""] * 6)
            continue
        lost_style = "bold red" if s["lost"] else ""
        table.add_row(
            s["backend"], confirms, s["scenario"], s["status"], _cell(s["jobs"]),
            f"[{lost_style}]{s['lost']}[/]" if lost_style else str(s["lost"]),
            _cell(s["duplicate_executions"]), _cell(s["duplicate_effects"]),
            _cell((s.get("latency_ms") or {}).get("p99")), _cell(s.get("recovery_ms")),
        )
    for backend in skipped:
        table.add_row(backend, "", "(all)", "unavailable", *[""] * 6)
    return table


def aggregate_table(aggregates: list[dict], skipped: dict[str, str],
                    sweep: tuple[str, list[str]] | None = None) -> Table:
    """One row per cell: mean [95% CI] over its trials; ``sweep`` = (parameter, its value per row)."""
    table = Table(title="failure experiments (mean [95% CI] over trials)", show_lines=False)
    first = () if sweep is None else (sweep[0],)
    for column in ("backend", "confirms", "scenario", *first, "trials", "lost", "dup. exec", "dup. effects",
                   "P(dup. effect)", "unexpected", "faults", "p99 ms", "recovery ms"):
        table.add_column(column, justify="left" if column in ("backend", "confirms", "scenario", "trials") else "right",
                         no_wrap=True)
    for i, a in enumerate(aggregates):
        trials = ", ".join(f"{n} {status}" for status, n in a["statuses"].items())
        value = () if sweep is None else (sweep[1][i],)
        counts = [aggregate.fmt(a[k]) for k in ("lost", "duplicate_executions", "duplicate_effects")]
        table.add_row(a["backend"], confirms_label(a.get("confirms")), a["scenario"], *value, trials, *counts, aggregate.fmt(a["p_duplicate_effect"], 2),
                      aggregate.fmt(a["unexpected"]), aggregate.fmt(a["faults"]),
                      aggregate.fmt(a["latency_ms"]["p99"], 0), aggregate.fmt(a["recovery_ms"], 0))
    for backend in skipped:
        table.add_row(backend, "", "(all)", *[""] * len(first), "unavailable")
    return table


def make_console() -> Console:
    console = Console()
    if not console.is_terminal:  # a log or a pipe: keep the table's columns whole
        console = Console(width=200)
    return console


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the matrix like Ctrl-C: workers and nodes are cleaned up


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    console = make_console()
    try:
        backends = registry.parse_backends(args.backends)
        scenario_names = scenario_registry.parse_scenarios(args.scenarios)
        params, explicit = checked_params(args)
        load_function(args.func)  # a name that does not resolve is bad input, before any run
        work = Work(args.func, jobs.read_payloads(args.payloads) if args.payloads else (), args.sink)
    except (ValueError, WorkerLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if work.sink != "file":
        try:
            connect().close()
        except SinkError as exc:
            print(f"error: --sink {work.sink}: {exc}", file=sys.stderr)
            return 3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    skipped: dict[str, str] = {}
    for backend in backends:
        reason = probe(backend, args.logqueue_cluster)
        if reason is not None:
            skipped[backend] = reason
            console.print(f"[yellow]skipping {backend}[/]: {reason}")
    usable = [b for b in backends if b not in skipped]
    if not usable:
        console.print("[red]no backend is reachable; nothing to run[/]")
        return 3

    summaries: list[dict] = []
    aggregates: list[dict] = []
    started = time.monotonic()
    columns = (TextColumn("{task.description:<42}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Absolute: a private cluster's nodes run in their own directory, and their config paths
    # must not be relative to the runner's.
    with Progress(*columns, console=console, transient=False) as progress, \
            Topologies(Path(args.servers_dir).absolute() if args.servers_dir else out.absolute() / SERVERS_DIR,
                       external_servers(args.logqueue_cluster), progress.console.print) as topologies:
        overall = progress.add_task("all runs", total=len(usable) * len(scenario_names) * args.trials)
        for backend in usable:
            for name in scenario_names:
                # One run writes today's layout; several write trial-<k>/ and the cell's aggregate.
                trials = [None] if args.trials == 1 else list(range(1, args.trials + 1))
                if args.trials > 1:
                    fresh_run_dir(out / backend / name)
                for trial in trials:
                    label = cell_label(backend, name, trial)
                    task = progress.add_task(label, total=params.jobs)

                    def on_progress(done: int, total: int, task=task) -> None:
                        progress.update(task, completed=done, total=total)

                    trial_params = params if trial is None else replace(params, seed=params.seed + trial - 1)
                    try:
                        summary = run_one(backend, name, trial_params, explicit, out.absolute(), on_progress,
                                          args.logqueue_cluster, trial, work, topologies)
                    except KeyboardInterrupt:  # run_one has stopped its workers; leaving the block stops the servers
                        progress.stop()
                        console.print(f"[red]interrupted[/] during {label}; finished runs are in {out}")
                        return 130
                    summaries.append(summary)
                    status = summary["status"]
                    progress.update(task, completed=summary["completed"] if status == "ok" else params.jobs,
                                    description=f"{label}: {status}")
                    progress.advance(overall)
                if args.trials > 1:
                    aggregates.append(aggregate.write_aggregate(out / backend / name))
            topologies.close(backend)  # its last cell has run
    console.print(results_table(summaries, skipped, work) if args.trials == 1 else aggregate_table(aggregates, skipped))
    failed = [s for s in summaries if s["status"] not in ("ok", "n/a")]
    for s in failed:
        console.print(f"[red]{s['backend']} / {s['scenario']} failed[/]: {s.get('reason', '')}")
    console.print(f"results in {out} ({time.monotonic() - started:.0f} s); "
                  f"report: python -m experiments report {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
