"""The benchmark: a ``python -m experiments bench`` result as a table, ratios and plots."""
from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from experiments.analysis.discovery import AnalysisError


# --- the benchmark -------------------------------------------------------------------------

BENCH_RATES = (("publish_per_s", "publish"), ("consume_per_s", "consume"), ("end_to_end_per_s", "end-to-end"))
BENCH_LATENCIES = (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max"))


def load_bench(path: str | os.PathLike) -> pd.DataFrame:
    """A ``python -m experiments bench`` result file: one row per backend (index), its figures as columns."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {path}: {exc}") from None
    return bench_frame(data, str(path))


def bench_frame(data: object, source: str = "the bench result") -> pd.DataFrame:
    """The bench's results (``{backend: {"status": ..., figures}}``) as :func:`load_bench` returns them."""
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) and "status" in v for v in data.values()):
        raise AnalysisError(f"{source} is not a bench result (expected {{backend: {{\"status\": ...}}}})")
    bench = pd.DataFrame.from_dict(data, orient="index")
    bench.index.name = "backend"
    for column, _ in BENCH_RATES + BENCH_LATENCIES:
        if column not in bench:
            bench[column] = math.nan
    return bench


def bench_table(bench: pd.DataFrame) -> pd.DataFrame:
    """The figures that matter, rounded; what "confirmed" means per backend (``durability``);
    ``reason`` for backends that did not run."""
    columns = ["status", "replicas"] + [c for c, _ in BENCH_RATES + BENCH_LATENCIES] + ["duplicates", "durability",
                                                                                        "reason"]
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


def _bench_bars(ax, ok: pd.DataFrame, figures, fmt: str) -> None:
    """One group of bars per backend, one bar per ``(column, label)`` of ``figures``, labelled with ``fmt``."""
    width = 0.8 / len(figures)
    for j, (column, label) in enumerate(figures):
        xs = [x + (j - (len(figures) - 1) / 2) * width for x in range(len(ok))]
        bars = ax.bar(xs, ok[column], width=width, label=label)
        ax.bar_label(bars, labels=[format(v, fmt) for v in ok[column]], fontsize="x-small", padding=1)
    ax.set_xticks(range(len(ok)), [backend_label(b, row) for b, row in ok.iterrows()], rotation=20, ha="right")
    ax.legend(fontsize="small")


def _throughput(ax, ok: pd.DataFrame) -> None:
    _bench_bars(ax, ok, BENCH_RATES, ",.0f")
    ax.set_ylabel("messages / s")
    ax.set_title(f"throughput ({_bench_title(ok)})", fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)


def _latency(ax, ok: pd.DataFrame) -> None:
    _bench_bars(ax, ok, BENCH_LATENCIES, ",.1f")
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    ax.set_title("latency at half the maximum end-to-end rate", fontsize="medium")
    ax.grid(True, axis="y", which="both", alpha=0.3)


def _bench_figure(bench: pd.DataFrame, *panels, width: float = 10):
    ok = _ok(bench)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.5), squeeze=False)
    for ax, draw in zip(axes[0], panels):
        draw(ax, ok)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_throughput(bench: pd.DataFrame):
    """Messages per second per backend: publish (confirmed), consume (acked), end-to-end (both at once)."""
    return _bench_figure(bench, _throughput)


def plot_bench_latency(bench: pd.DataFrame):
    """End-to-end latency (due time -> ack) at half of each backend's maximum rate: p50, p99, max."""
    return _bench_figure(bench, _latency)


def plot_bench(bench: pd.DataFrame):
    """Both, side by side: what ``python -m experiments bench --plot`` writes."""
    return _bench_figure(bench, _throughput, _latency, width=18)


# --- the curves (``--rates``, ``--consumers``) and the native references (``--native``) ---------

LOAD_QUANTILES = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")


def bench_command(bench: pd.DataFrame) -> str:
    """The command line of the run that wrote ``bench`` ("" for files from before the bench recorded it)."""
    commands = bench["command"].dropna().unique() if "command" in bench else []
    return commands[0] if len(commands) else ""


def _points(bench: pd.DataFrame, column: str, option: str) -> pd.DataFrame:
    """The per-point lists of ``column`` (one dict per point) of every finished backend, one row per point."""
    rows = [{"backend": backend, **{k: v for k, v in point.items() if k != "hdr"}}
            for backend, points in _ok(bench).get(column, pd.Series(dtype=object)).items()
            if isinstance(points, list) for point in points]
    if not rows:
        raise AnalysisError(f"the bench result has no {column} (written by an older bench; rerun it, e.g. {option})")
    return pd.DataFrame(rows)


def latency_vs_load(bench: pd.DataFrame) -> pd.DataFrame:
    """One row per backend and offered load (``rate_pct`` of its own end-to-end maximum): the latency percentiles."""
    points = _points(bench, "latency_vs_load", "--rates 10,25,50,75,90")
    return points.reindex(columns=["backend", "rate_pct", "offered_per_s", "latency_messages", *LOAD_QUANTILES])


def consume_vs_consumers(bench: pd.DataFrame) -> pd.DataFrame:
    """One row per backend and consumer count: the consume rate with that many consumers."""
    points = _points(bench, "consume_vs_consumers", "--consumers 1,2,4,8")
    return points.reindex(columns=["backend", "consumers", "consume_per_s"]).sort_values("consumers",
                                                                                          kind="stable")


def native_table(bench: pd.DataFrame) -> pd.DataFrame:
    """Each adapter's publish and consume rates beside its broker's native reference client's, and the ratios.

    With rounds (``--native-rounds``), the rates are the rounds' medians and the ratios
    the bench's ``x_native`` (the median of each round's adapter / reference ratio).
    """
    ok = _ok(bench)
    rows = {}
    for backend, row in ok.iterrows():
        native = row.get("native")
        if not isinstance(native, dict):
            continue
        rounds = native.get("rounds") or [{"adapter_publish_per_s": row["publish_per_s"],
                                           "adapter_consume_per_s": row["consume_per_s"], **native}]
        ratios = row.get("x_native") if isinstance(row.get("x_native"), dict) else None
        rows[backend] = {
            "publish_per_s": pd.Series([r["adapter_publish_per_s"] for r in rounds]).median(),
            "native_publish_per_s": native["publish_per_s"],
            "consume_per_s": pd.Series([r["adapter_consume_per_s"] for r in rounds]).median(),
            "native_consume_per_s": native["consume_per_s"],
            "publish x native": ratios["publish"] if ratios else row["publish_per_s"] / native["publish_per_s"],
            "consume x native": ratios["consume"] if ratios else row["consume_per_s"] / native["consume_per_s"],
            "rounds": len(rounds)}
    if not rows:
        raise AnalysisError("the bench result has no native references (run the bench with --native)")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "backend"
    return table.round(2)


def backend_label(backend: str, row) -> str:
    """``name (N nodes)`` for a replicated row (its class's ``replicas`` > 1), the bare name otherwise."""
    replicas = row.get("replicas")
    return f"{backend} ({int(replicas)} nodes)" if isinstance(replicas, numbers.Real) and replicas > 1 else backend


def plot_latency_vs_load(bench: pd.DataFrame):
    """Latency against offered load per backend: the p50 line, a band up to p99 (dashed edge), log scale."""
    points = latency_vs_load(bench)
    fig, ax = plt.subplots(figsize=(9, 5))
    for backend, group in points.groupby("backend", sort=False):
        group = group.sort_values("rate_pct")
        (line,) = ax.plot(group["rate_pct"], group["p50_ms"], marker="o", label=backend_label(backend, bench.loc[backend]))
        ax.fill_between(group["rate_pct"], group["p50_ms"], group["p99_ms"], color=line.get_color(), alpha=0.15)
        ax.plot(group["rate_pct"], group["p99_ms"], color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("offered load (% of the backend's own measured end-to-end maximum)")
    ax.set_ylabel("latency, due time -> ack (ms): p50 line, band to p99")
    ax.set_title(f"latency vs offered load ({_bench_title(_ok(bench))})", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_consume_scaling(bench: pd.DataFrame):
    """Consume rate against the number of consumers, per backend."""
    points = consume_vs_consumers(bench)
    fig, ax = plt.subplots(figsize=(9, 5))
    for backend, group in points.groupby("backend", sort=False):
        ax.plot(group["consumers"], group["consume_per_s"], marker="o", label=backend_label(backend, bench.loc[backend]))
    counts = sorted(points["consumers"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("consumers (threads, one consumer each)")
    ax.set_ylabel("consume (acked messages / s)")
    ax.set_title(f"consume vs consumers ({_bench_title(_ok(bench))})", fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    plt.close(fig)
    return fig
