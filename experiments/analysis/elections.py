"""Election timing: results of ``python -m experiments elections`` / ``python -m experiments sim-elections``."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from experiments.analysis.discovery import AnalysisError, ELECTION_EXPERIMENT


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
