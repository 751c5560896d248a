"""The Raft timeline of a logqueue run: ``cluster.jsonl`` as leaders, terms and leaderless windows."""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd

from experiments.analysis.discovery import AnalysisError
from experiments.analysis.failures import fault_windows, shade_faults
from experiments.clusterlog import CLUSTER_FILE, UNREACHABLE
from experiments.recorder import JsonlError, read_jsonl

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
        shade_faults(ax, windows, offset)
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
