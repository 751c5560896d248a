"""What the notebooks compute: load recorded results, re-check them, tabulate and plot.

The notebooks in ``notebooks/`` only call this package (``from experiments import analysis``),
so everything here is importable, unit-tested and usable from a plain script. One module
per job: ``discovery`` (finding the inputs), ``failures`` (the failure matrix), ``bench``,
``elections`` and ``timeline`` (the Raft timeline of a logqueue run); their names are all
here. Four kinds of input, each found through an
environment variable (a notebook reads it) or, when unset, the newest one under
``results/``:

- a failure-experiment directory (``LOGQUEUE_RESULTS``): ``OUT/<backend>/<scenario>/``
  with ``events.jsonl`` and ``summary.json`` (``python -m experiments run --out OUT``);
- a benchmark JSON (``LOGQUEUE_BENCH``): ``python -m experiments bench --out FILE``;
- election-timing JSONs (``LOGQUEUE_ELECTIONS``, comma-separated files or directories):
  ``python -m experiments elections`` / ``python -m experiments sim-elections``;
- a logqueue run with a ``cluster.jsonl`` (``LOGQUEUE_TIMELINE``: the run directory, or a
  results directory in which ``logqueue/leader-crash`` is taken): see
  ``experiments.clusterlog``.

Tables are pandas DataFrames. Plot functions return a matplotlib ``Figure`` that is
already closed in pyplot, so a notebook cell that ends with the call shows it exactly
once and a script can ``savefig`` it. Bad input raises :class:`AnalysisError`, whose
message is one line (and which Jupyter shows as that line, without a traceback).
"""
from __future__ import annotations

from experiments.analysis.discovery import (
    RESULTS_ENV,
    BENCH_ENV,
    ELECTIONS_ENV,
    TIMELINE_ENV,
    ELECTION_EXPERIMENT,
    AnalysisError,
    results_root,
    newest_results_dir,
    results_dir,
    bench_file,
    election_files,
    TIMELINE_SCENARIOS,
    timeline_run,
    backend_order,
    scenario_order,
)
from experiments.analysis.failures import (
    RUN_COLUMNS,
    load_runs,
    cell_estimates,
    matrix,
    overview,
    recheck_table,
    notes_table,
    BACKENDS_INDEX,
    plot_anomalies,
    plot_recovery,
    load_events,
    optional_events,
    latency_series,
    latency_over_time,
    fault_windows,
    shade_faults,
    plot_latency_over_time,
    executions,
    plot_executions,
)
from experiments.analysis.bench import (
    BENCH_RATES,
    BENCH_LATENCIES,
    load_bench,
    bench_frame,
    bench_table,
    bench_ratios,
    plot_throughput,
    plot_bench_latency,
    plot_bench,
    LOAD_QUANTILES,
    bench_command,
    latency_vs_load,
    consume_vs_consumers,
    native_table,
    backend_label,
    plot_latency_vs_load,
    plot_consume_scaling,
)
from experiments.analysis.elections import (
    PAPER_SETUP,
    PAPER_FIGURE16,
    load_elections,
    result_labels,
    election_summary,
    election_cdf,
    paper_comparison,
    plot_election_cdfs,
)
from experiments.analysis.timeline import (
    ROLE_COLORS,
    load_cluster_log,
    leaders_per_term,
    leader_changes,
    leaderless_windows,
    timeline_story,
    plot_timeline,
)

__all__ = [
    "RESULTS_ENV",
    "BENCH_ENV",
    "ELECTIONS_ENV",
    "TIMELINE_ENV",
    "ELECTION_EXPERIMENT",
    "AnalysisError",
    "results_root",
    "newest_results_dir",
    "results_dir",
    "bench_file",
    "election_files",
    "TIMELINE_SCENARIOS",
    "timeline_run",
    "backend_order",
    "scenario_order",
    "RUN_COLUMNS",
    "load_runs",
    "cell_estimates",
    "matrix",
    "overview",
    "recheck_table",
    "notes_table",
    "BACKENDS_INDEX",
    "plot_anomalies",
    "plot_recovery",
    "load_events",
    "optional_events",
    "latency_series",
    "latency_over_time",
    "fault_windows",
    "shade_faults",
    "plot_latency_over_time",
    "executions",
    "plot_executions",
    "BENCH_RATES",
    "BENCH_LATENCIES",
    "load_bench",
    "bench_frame",
    "bench_table",
    "backend_label",
    "bench_ratios",
    "plot_throughput",
    "plot_bench_latency",
    "plot_bench",
    "PAPER_SETUP",
    "PAPER_FIGURE16",
    "load_elections",
    "result_labels",
    "election_summary",
    "election_cdf",
    "paper_comparison",
    "plot_election_cdfs",
    "ROLE_COLORS",
    "load_cluster_log",
    "leaders_per_term",
    "leader_changes",
    "leaderless_windows",
    "timeline_story",
    "plot_timeline",
]
