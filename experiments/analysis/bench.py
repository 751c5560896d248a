"""The benchmark: a ``python -m experiments bench`` result as a table, ratios and plots."""
from __future__ import annotations

import json
import math
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


def _bench_bars(ax, ok: pd.DataFrame, figures, fmt: str) -> None:
    """One group of bars per backend, one bar per ``(column, label)`` of ``figures``, labelled with ``fmt``."""
    width = 0.8 / len(figures)
    for j, (column, label) in enumerate(figures):
        xs = [x + (j - (len(figures) - 1) / 2) * width for x in range(len(ok))]
        bars = ax.bar(xs, ok[column], width=width, label=label)
        ax.bar_label(bars, labels=[format(v, fmt) for v in ok[column]], fontsize="x-small", padding=1)
    ax.set_xticks(range(len(ok)), ok.index, rotation=20, ha="right")
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
