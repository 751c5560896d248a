"""experiments.analysis (what the notebooks call) on small histories written here, and
experiments.clusterlog against an address nobody listens on."""
from __future__ import annotations

import json
import math
import os
import socket
import time

import matplotlib.figure
from matplotlib.container import BarContainer
import pytest

from experiments import analysis, checker
from experiments.clusterlog import ClusterLog

T = 1_700_000_000.0


def write_run(out, backend, scenario, events, status=None):
    """``out/backend/scenario/{events.jsonl, summary.json}``, the summary from the checker."""
    run = out / backend / scenario
    run.mkdir(parents=True)
    with open(run / "events.jsonl", "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
        if status:
            f.write(json.dumps({"t": T, "ev": "status", "status": status[0], "reason": status[1]}) + "\n")
    checker.write_summary(run, backend, scenario)
    return run


def crash_history(t=T):
    """Two jobs; w1 is SIGKILLed mid-j1 at t+1.0, w2 redelivers it and it takes effect at t+3.0."""
    return [
        {"t": t + 0.0, "ev": "produce", "job": "j0"},
        {"t": t + 0.1, "ev": "produce", "job": "j1"},
        {"t": t + 0.2, "ev": "deliver", "job": "j0", "worker": "w2", "attempt": 1},
        {"t": t + 0.2, "ev": "start", "job": "j0", "worker": "w2", "attempt": 1},
        {"t": t + 0.3, "ev": "finish", "job": "j0", "worker": "w2", "attempt": 1},
        {"t": t + 0.3, "ev": "effect", "job": "j0", "worker": "w2", "attempt": 1},
        {"t": t + 0.5, "ev": "deliver", "job": "j1", "worker": "w1", "attempt": 1},
        {"t": t + 0.5, "ev": "start", "job": "j1", "worker": "w1", "attempt": 1},
        {"t": t + 1.0, "ev": "fault_start", "fault": "sigkill", "target": "w1"},
        {"t": t + 2.9, "ev": "deliver", "job": "j1", "worker": "w2", "attempt": 2},
        {"t": t + 2.9, "ev": "start", "job": "j1", "worker": "w2", "attempt": 2},
        {"t": t + 3.0, "ev": "finish", "job": "j1", "worker": "w2", "attempt": 2},
        {"t": t + 3.0, "ev": "effect", "job": "j1", "worker": "w2", "attempt": 2},
        {"t": t + 4.0, "ev": "fault_end", "fault": "sigkill", "target": "w1"},
    ]


def partition_history(t=T):
    """w1 is cut off while running j0; w2 runs it again; w1's late result also takes effect."""
    return [
        {"t": t + 0.0, "ev": "produce", "job": "j0"},
        {"t": t + 0.1, "ev": "deliver", "job": "j0", "worker": "w1", "attempt": 1},
        {"t": t + 0.1, "ev": "start", "job": "j0", "worker": "w1", "attempt": 1},
        {"t": t + 0.2, "ev": "fault_start", "fault": "blackhole", "target": "w1"},
        {"t": t + 2.0, "ev": "deliver", "job": "j0", "worker": "w2", "attempt": 2},
        {"t": t + 2.0, "ev": "start", "job": "j0", "worker": "w2", "attempt": 2},
        {"t": t + 2.1, "ev": "finish", "job": "j0", "worker": "w2", "attempt": 2},
        {"t": t + 2.1, "ev": "effect", "job": "j0", "worker": "w2", "attempt": 2},
        {"t": t + 3.0, "ev": "finish", "job": "j0", "worker": "w1", "attempt": 1},
        {"t": t + 3.5, "ev": "fault_end", "fault": "blackhole", "target": "w1"},
        {"t": t + 3.6, "ev": "effect", "job": "j0", "worker": "w1", "attempt": 1},
        {"t": t + 3.6, "ev": "ack", "job": "j0", "worker": "w1", "attempt": 1},
    ]


@pytest.fixture
def out(tmp_path):
    """A results directory: two backends (directory order != registry order), two scenarios
    (alphabetical order != DESIGN order), one n/a run."""
    out = tmp_path / "q"
    write_run(out, "nats-jetstream", "slow-consumer", crash_history())
    write_run(out, "nats-jetstream", "leader-crash", [], status=("n/a", "single broker node"))
    write_run(out, "rabbitmq-classic", "slow-consumer", partition_history())
    write_run(out, "rabbitmq-classic", "leader-crash", [], status=("n/a", "single broker node"))
    return out


# --- the failure matrix --------------------------------------------------------------------


def test_load_runs_orders_by_registry_and_design_and_rechecks(out):
    runs = analysis.load_runs(out)
    assert list(zip(runs["backend"], runs["scenario"])) == [
        ("rabbitmq-classic", "slow-consumer"), ("rabbitmq-classic", "leader-crash"),
        ("nats-jetstream", "slow-consumer"), ("nats-jetstream", "leader-crash")]
    assert runs["rechecked"].all()
    rabbit = runs.iloc[0]
    assert (rabbit["duplicate_executions"], rabbit["duplicate_effects"], rabbit["lost"]) == (1, 1, 0)
    nats = runs.iloc[2]
    assert nats["recovery_ms"] == pytest.approx(2000.0)  # fault at +1.0, the interrupted j1 took effect at +3.0
    assert nats["latency_max_ms"] == pytest.approx(2900.0)


def test_a_summary_that_disagrees_with_its_events_is_flagged(out):
    path = out / "nats-jetstream" / "slow-consumer" / "summary.json"
    summary = json.loads(path.read_text())
    summary["lost"] = 5
    path.write_text(json.dumps(summary))
    runs = analysis.load_runs(out)
    bad = runs[~runs["rechecked"]]
    assert list(bad["backend"]) == ["nats-jetstream"]
    table = analysis.recheck_table(runs)
    row = table[table["backend"] == "nats-jetstream"].iloc[0]
    assert row["recomputed summary"] == "DIFFERS" and "lost: recorded 5, recomputed 0" in row["differences"]


def test_matrix_and_overview_show_na_cells(out):
    runs = analysis.load_runs(out)
    table = analysis.matrix(runs, "duplicate_effects")
    assert list(table.index) == ["rabbitmq-classic", "nats-jetstream"]
    assert list(table.columns) == ["slow-consumer", "leader-crash"]
    assert table.loc["rabbitmq-classic", "slow-consumer"] == 1
    assert table.loc["nats-jetstream", "leader-crash"] == "n/a"
    assert analysis.overview(runs).loc["rabbitmq-classic", "slow-consumer"] == "0 / 1 / 1"
    notes = analysis.notes_table(runs)
    assert "n/a: single broker node" in set(notes["note"])


def test_load_runs_errors_are_one_line(tmp_path):
    with pytest.raises(analysis.AnalysisError, match="no runs under"):
        analysis.load_runs(tmp_path)
    run = write_run(tmp_path, "logqueue", "consumer-crash", crash_history())
    (run / "summary.json").write_text("{not json")
    with pytest.raises(analysis.AnalysisError, match="cannot read .*summary.json") as info:
        analysis.load_runs(tmp_path)
    assert "\n" not in str(info.value)


def test_analysis_error_renders_as_one_line_in_jupyter():
    assert analysis.AnalysisError("no results")._render_traceback_() == ["error: no results"]


def test_latency_and_fault_windows_are_relative_to_the_first_event():
    events = crash_history(T + 0.5)
    points = analysis.latency_over_time(events)
    assert list(points["t_s"]) == pytest.approx([0.3, 3.0])
    assert list(points["latency_ms"]) == pytest.approx([300.0, 2900.0])
    windows = analysis.fault_windows(events)
    assert windows.to_dict("records") == [{"start_s": pytest.approx(1.0), "end_s": pytest.approx(4.0),
                                           "label": "sigkill w1"}]


def test_executions_pair_start_finish_and_effect():
    crash = analysis.executions(crash_history())
    j1 = crash[crash["job"] == "j1"]
    assert list(j1["worker"]) == ["w1", "w2"]
    assert math.isnan(j1.iloc[0]["end"]) and not j1.iloc[0]["effect"]  # killed mid-job
    assert j1.iloc[1]["end"] == pytest.approx(T + 3.0) and j1.iloc[1]["effect"]
    both = analysis.executions(partition_history())
    assert list(both["worker"]) == ["w1", "w2"]
    assert list(both["effect"]) == [True, True]  # the late ack of w1 also took effect: a duplicate effect


def test_plots_return_closed_figures_with_the_runs_content(out):
    import matplotlib.pyplot as plt

    runs = analysis.load_runs(out)
    anomalies = analysis.plot_anomalies(runs)
    assert isinstance(anomalies, matplotlib.figure.Figure)
    assert not plt.get_fignums()  # closed in pyplot: a notebook shows the returned figure once
    labels = [t.get_text() for ax in anomalies.axes for t in ax.texts]
    assert labels.count("1") == 2  # rabbitmq-classic's duplicate execution and duplicate effect
    assert [t.get_text() for t in anomalies.axes[0].get_xticklabels()] == ["slow-consumer"]  # n/a runs left out

    latency = analysis.plot_latency_over_time(runs, "slow-consumer")
    assert [ax.get_title() for ax in latency.axes] == ["rabbitmq-classic (ok)", "nats-jetstream (ok)"]
    assert all(len(ax.patches) == 1 for ax in latency.axes)  # one shaded fault window each
    with pytest.raises(analysis.AnalysisError, match="no run of scenario 'replay'"):
        analysis.plot_latency_over_time(runs, "replay")

    recovery = analysis.plot_recovery(runs)
    assert "2,000" in [t.get_text() for t in recovery.axes[0].texts]

    gantt = analysis.plot_executions(out / "nats-jetstream" / "slow-consumer")
    assert [t.get_text() for t in gantt.axes[0].get_yticklabels()] == ["j1"]  # j0 ran once and finished
    bars = [p for p in gantt.axes[0].patches if p.get_hatch()]
    assert len(bars) == 1  # w1's run of j1 never finished:
    assert (bars[0].get_x(), bars[0].get_width()) == pytest.approx((0.5, 0.5))  # it ends where w1 was killed
    assert not plt.get_fignums()


def test_newest_results_dir_and_env(tmp_path):
    old = write_run(tmp_path / "results" / "old", "logqueue", "consumer-crash", crash_history())
    new = write_run(tmp_path / "results" / "nested" / "new", "logqueue", "consumer-crash", crash_history())
    os.utime(old / "events.jsonl", (time.time() - 100, time.time() - 100))
    assert analysis.newest_results_dir(tmp_path / "results") == tmp_path / "results" / "nested" / "new"
    os.utime(new / "events.jsonl", (time.time() - 200, time.time() - 200))
    assert analysis.newest_results_dir(tmp_path / "results") == tmp_path / "results" / "old"
    assert analysis.results_dir({"LOGQUEUE_RESULTS": str(tmp_path)}) == tmp_path
    with pytest.raises(analysis.AnalysisError, match="LOGQUEUE_RESULTS=.* is not a directory"):
        analysis.results_dir({"LOGQUEUE_RESULTS": str(tmp_path / "missing")})
    with pytest.raises(analysis.AnalysisError, match="no results under"):
        analysis.newest_results_dir(tmp_path / "results" / "old" / "logqueue")


def test_timeline_run_prefers_leader_crash(tmp_path):
    for scenario in ("consumer-crash", "leader-crash"):
        run = write_run(tmp_path, "logqueue", scenario, crash_history())
        (run / "cluster.jsonl").write_text("")
    env = {"LOGQUEUE_TIMELINE": str(tmp_path)}
    assert analysis.timeline_run(env) == tmp_path / "logqueue" / "leader-crash"
    env = {"LOGQUEUE_TIMELINE": str(tmp_path / "logqueue" / "consumer-crash")}
    assert analysis.timeline_run(env) == tmp_path / "logqueue" / "consumer-crash"
    (tmp_path / "logqueue" / "leader-crash" / "cluster.jsonl").unlink()
    (tmp_path / "logqueue" / "consumer-crash" / "cluster.jsonl").unlink()
    with pytest.raises(analysis.AnalysisError, match="no logqueue run with a cluster.jsonl"):
        analysis.timeline_run({"LOGQUEUE_TIMELINE": str(tmp_path)})


# --- the benchmark -------------------------------------------------------------------------


BENCH = {
    "logqueue": {"status": "ok", "messages": 100, "payload_bytes": 100, "window": 10, "consumers": 2,
                 "publish_per_s": 1000.0, "consume_per_s": 800.0, "end_to_end_per_s": 500.0,
                 "p50_ms": 5.0, "p99_ms": 20.0, "max_ms": 25.0, "duplicates": 0, "durability": "majority"},
    "redis-list": {"status": "unavailable", "reason": "redis: connection refused"},
}


def test_bench_load_table_and_plots(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    bench = analysis.load_bench(path)
    table = analysis.bench_table(bench)
    assert table.loc["redis-list", "reason"] == "redis: connection refused"
    assert table.loc["logqueue", "publish_per_s"] == 1000.0
    fig = analysis.plot_throughput(bench)
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert heights == [500.0, 800.0, 1000.0]  # the unavailable backend has no bars
    latency = analysis.plot_bench_latency(bench)
    assert sorted(p.get_height() for p in latency.axes[0].patches) == [5.0, 20.0, 25.0]


def test_bench_errors(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"experiment": "raft-election-timing"}))
    with pytest.raises(analysis.AnalysisError, match="is not a bench result"):
        analysis.load_bench(path)
    path.write_text(json.dumps({"redis-list": BENCH["redis-list"]}))
    with pytest.raises(analysis.AnalysisError, match="no backend finished the benchmark"):
        analysis.plot_throughput(analysis.load_bench(path))
    with pytest.raises(analysis.AnalysisError, match="LOGQUEUE_BENCH=.* is not a file"):
        analysis.bench_file({"LOGQUEUE_BENCH": str(tmp_path / "missing.json")})


# --- election timing -----------------------------------------------------------------------


def election_result(source, ranges, max_ms=10_000):
    def summary(trials):
        from experiments.election_results import summarize

        return summarize(trials)

    return {"experiment": "raft-election-timing", "source": source, "nodes": 5, "trials_per_range": 4,
            "max_ms": max_ms, "ranges": [{"range": name, "summary": summary(trials), "trials": trials}
                                         for name, trials in ranges.items()]}


def test_election_cdf_counts_timeouts_in_the_denominator():
    result = election_result("simulator", {"150-200": [{"ms": 300.0, "terms": 1}, {"ms": 200.0, "terms": 1},
                                                       {"ms": None, "terms": 9}, {"ms": 250.0, "terms": 2}]})
    cdf = analysis.election_cdf(result)
    assert list(cdf["ms"]) == [200.0, 250.0, 300.0]
    assert list(cdf["percent"]) == [25.0, 50.0, 75.0]


def test_paper_comparison_puts_each_claim_next_to_the_same_statistic(tmp_path):
    slow = [{"ms": None, "terms": 30}] * 3 + [{"ms": 9000.0, "terms": 12}]
    fast = [{"ms": 180.0, "terms": 1}, {"ms": 200.0, "terms": 1}, {"ms": 260.0, "terms": 1}, {"ms": 400.0, "terms": 2}]
    paths = []
    for name, result in (("a.json", election_result("simulator", {"150-150": slow, "150-200": fast})),
                         ("b.json", election_result("real nodes", {"150-155": fast}))):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(result))
    results = analysis.load_elections(paths)
    table = analysis.paper_comparison(results).set_index("range")
    assert table.loc["150-150", "paper ms"] == ">10000"
    assert table.loc["150-150", "simulator, 4 trials"] == "> 10000"  # the median fell on a timed-out trial
    assert table.loc["150-200", "simulator, 4 trials"] == "400"  # the worst case, like the paper's 513
    assert table.loc["150-155", "real nodes, 4 trials"] == "200"  # the median, like the paper's 287
    assert table.loc["150-200", "real nodes, 4 trials"] == "not run"
    fig = analysis.plot_election_cdfs(results)
    assert len(fig.axes) == 2
    assert [len(ax.get_lines()) for ax in fig.axes] == [4, 3]  # a CDF per range + the two paper markers


def test_load_elections_rejects_other_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    with pytest.raises(analysis.AnalysisError, match="is not an election-timing result"):
        analysis.load_elections([path])
    with pytest.raises(analysis.AnalysisError, match="no election-timing result"):
        analysis.election_files({"LOGQUEUE_ELECTIONS": str(tmp_path)})
    with pytest.raises(analysis.AnalysisError, match="neither a file nor a directory"):
        analysis.election_files({"LOGQUEUE_ELECTIONS": str(tmp_path / "nope")})


# --- the Raft timeline ---------------------------------------------------------------------


def poll(t, *views):
    """One poll: views are (node, role, term, leader_id, commit) or (node, "unreachable")."""
    lines = []
    for v in views:
        if v[1] == "unreachable":
            lines.append({"t": t, "node": v[0], "role": "unreachable"})
        else:
            node, role, term, leader, commit = v
            lines.append({"t": t, "node": node, "role": role, "term": term, "leader_id": leader,
                          "commit_index": commit, "applied_index": commit, "last_index": commit})
    return lines


def leader_crash_log():
    """Node 1 leads term 1, is killed at +1.0; node 2 leads term 2 from +1.5; node 1 returns as follower.
    At +2.5 node 3 claims to lead term 1 as well: a made-up Election Safety violation, which the
    leader of the poll ignores (an older term than node 2's) and leaders_per_term reports."""
    return [
        *poll(T + 0.0, (1, "follower", 0, None, 0), (2, "follower", 0, None, 0), (3, "follower", 0, None, 0)),
        *poll(T + 0.2, (1, "candidate", 1, None, 0), (2, "follower", 1, None, 0), (3, "follower", 0, None, 0)),
        *poll(T + 0.5, (1, "leader", 1, 1, 1), (2, "follower", 1, 1, 1), (3, "follower", 1, 1, 1)),
        *poll(T + 1.0, (1, "unreachable"), (2, "follower", 1, 1, 5), (3, "follower", 1, 1, 5)),
        *poll(T + 1.3, (1, "unreachable"), (2, "candidate", 2, None, 5), (3, "follower", 1, 1, 5)),
        *poll(T + 1.5, (1, "unreachable"), (2, "leader", 2, 2, 6), (3, "follower", 2, 2, 6)),
        *poll(T + 2.0, (1, "follower", 2, 2, 6), (2, "leader", 2, 2, 9), (3, "follower", 2, 2, 9)),
        *poll(T + 2.5, (1, "follower", 2, 2, 9), (2, "leader", 2, 2, 9), (3, "leader", 1, 3, 9)),
    ]


def write_cluster_log(run, lines, tail=""):
    run.mkdir(parents=True, exist_ok=True)
    (run / "cluster.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + tail)


def test_leader_changes_and_leaderless_windows(tmp_path):
    write_cluster_log(tmp_path, leader_crash_log(), tail='{"t": 1700000003.0, "no')  # torn last line
    log = analysis.load_cluster_log(tmp_path)
    changes = analysis.leader_changes(log)
    assert changes[["t_s", "term", "leader"]].to_dict("records") == [
        {"t_s": 0.5, "term": 1, "leader": 1}, {"t_s": 1.5, "term": 2, "leader": 2}]
    gaps = analysis.leaderless_windows(log)
    assert list(gaps["start_s"]) == [0.0, 1.0]
    assert list(gaps["duration_ms"]) == [500.0, 500.0]
    assert gaps["term_before"].isna().iloc[0] and gaps["term_before"].iloc[1] == 1
    assert list(gaps["term_after"]) == [1, 2]
    events = [{"t": T + 0.9, "ev": "fault_start", "fault": "sigkill", "target": "node-1"},
              {"t": T + 1.9, "ev": "fault_end", "fault": "sigkill", "target": "node-1"}]
    story = analysis.timeline_story(log, events)
    assert list(story["what"]) == [
        "no leader (the cluster starts)", "node 1 leads term 1", "fault begins: sigkill node-1",
        "no leader (the leader of term 1 is gone)", "node 2 leads term 2", "fault ends: sigkill node-1"]
    fig = analysis.plot_timeline(log, events, "leader-crash")
    roles, terms, commits = fig.axes
    assert [t.get_text() for t in roles.texts] == ["T1: n1", "T2: n2"]
    assert len(terms.get_lines()) == 3 + 2  # a term line per node + the two leader marks
    assert sum(1 for p in commits.patches) == 1  # the fault window


def test_cluster_log_errors(tmp_path):
    with pytest.raises(analysis.AnalysisError, match="cannot read .*cluster.jsonl"):
        analysis.load_cluster_log(tmp_path)
    (tmp_path / "cluster.jsonl").write_text('{"t": 1, "node": 1, "role": "leader"}\nnot json\n{"t": 2}\n')
    with pytest.raises(analysis.AnalysisError, match="cluster.jsonl:2: not a JSON object"):
        analysis.load_cluster_log(tmp_path)


def test_cluster_log_records_a_node_that_does_not_answer(tmp_path):
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    path = tmp_path / "cluster.jsonl"
    recorder = ClusterLog(path, {7: address}, interval_s=0.02).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not path.exists() or path.read_text().count("\n") < 3):
        time.sleep(0.02)
    recorder.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) >= 3
    assert {(x["node"], x["role"]) for x in lines} == {(7, "unreachable")}
    assert lines[0]["t"] == pytest.approx(time.time(), abs=15)
    count = len(lines)
    time.sleep(0.1)
    assert len(path.read_text().splitlines()) == count  # closed: no more polls


def test_bench_ratios_and_leaders_per_term(tmp_path):
    path = tmp_path / "bench.json"
    other = {**BENCH["logqueue"], "publish_per_s": 2000.0, "consume_per_s": 400.0, "end_to_end_per_s": 500.0}
    path.write_text(json.dumps({**BENCH, "rabbitmq-quorum": other}))
    ratios = analysis.bench_ratios(analysis.load_bench(path))
    assert ratios.loc["rabbitmq-quorum"].to_dict() == {"publish": 0.5, "consume": 2.0, "end-to-end": 1.0}
    assert list(ratios.index) == ["rabbitmq-quorum"]  # the unavailable backend has no ratio
    with pytest.raises(analysis.AnalysisError, match="redis-list did not finish the benchmark"):
        analysis.bench_ratios(analysis.load_bench(path), "redis-list")

    write_cluster_log(tmp_path, leader_crash_log())
    table = analysis.leaders_per_term(analysis.load_cluster_log(tmp_path))
    assert table.to_dict("records") == [{"term": 1, "leaders": [1, 3], "one leader": False},
                                        {"term": 2, "leaders": [2], "one leader": True}]


def test_bench_curves_and_native_table():
    row = {**BENCH["logqueue"], "command": "python -m experiments bench --rates 10,90",
           "latency_vs_load": [{"rate_pct": 10, "offered_per_s": 50.0, "latency_messages": 9, "p50_ms": 2.0,
                                "p90_ms": 3.0, "p99_ms": 4.0, "p999_ms": 4.0, "max_ms": 4.5, "hdr": "x"},
                               {"rate_pct": 90, "offered_per_s": 450.0, "latency_messages": 9, "p50_ms": 7.0,
                                "p90_ms": 9.0, "p99_ms": 30.0, "p999_ms": 31.0, "max_ms": 32.0, "hdr": "x"}],
           "consume_vs_consumers": [{"consumers": 4, "consume_per_s": 900.0}, {"consumers": 1, "consume_per_s": 300.0}],
           "native": {"publish_per_s": 2000.0, "consume_per_s": 400.0}}
    bench = analysis.bench_frame({"logqueue": row, "redis-list": BENCH["redis-list"]})
    assert analysis.bench_command(bench) == "python -m experiments bench --rates 10,90"
    load = analysis.latency_vs_load(bench)
    assert list(load["p99_ms"]) == [4.0, 30.0] and "hdr" not in load
    fig = analysis.plot_latency_vs_load(bench)
    p50_line = fig.axes[0].lines[0]
    assert list(p50_line.get_xdata()) == [10, 90] and list(p50_line.get_ydata()) == [2.0, 7.0]
    assert list(fig.axes[0].lines[1].get_ydata()) == [4.0, 30.0]  # the band's p99 edge
    scaling = analysis.plot_consume_scaling(bench)
    assert list(scaling.axes[0].lines[0].get_xdata()) == [1, 4]  # sorted by consumers
    native = analysis.native_table(bench)
    assert native.loc["logqueue", "publish x native"] == 0.5 and native.loc["logqueue", "consume x native"] == 2.0
    plain = analysis.bench_frame({"logqueue": BENCH["logqueue"]})
    assert analysis.bench_command(plain) == ""
    for fn, match in ((analysis.latency_vs_load, "--rates"), (analysis.consume_vs_consumers, "--consumers"),
                      (analysis.native_table, "--native")):
        with pytest.raises(analysis.AnalysisError, match=match):
            fn(plain)


@pytest.fixture
def trials(tmp_path):
    """``rabbitmq-classic/slow-consumer`` run with 3 trials (duplicate effects 1, 1, 0) and its
    aggregate, and an n/a cell, as ``experiments run --trials 3`` lays them out."""
    from experiments import aggregate

    out = tmp_path / "t"
    cell = out / "rabbitmq-classic" / "slow-consumer"
    for k, history in enumerate((partition_history(), partition_history(), crash_history()), start=1):
        checker.write_summary(write_run(cell.parent, cell.name, f"trial-{k}", history), *cell.parts[-2:])
    aggregate.write_aggregate(cell)
    na = out / "rabbitmq-classic" / "leader-crash"
    for k in (1, 2, 3):
        checker.write_summary(write_run(na.parent, na.name, f"trial-{k}", [], status=("n/a", "single broker node")),
                              *na.parts[-2:])
    aggregate.write_aggregate(na)
    return out


def test_trials_are_runs_and_cells_show_mean_and_ci(trials):
    runs = analysis.load_runs(trials)
    assert list(zip(runs["scenario"], runs["trial"])) == [
        ("slow-consumer", 1), ("slow-consumer", 2), ("slow-consumer", 3),
        ("leader-crash", 1), ("leader-crash", 2), ("leader-crash", 3)]
    assert runs["rechecked"].all()
    table = analysis.matrix(runs, "duplicate_effects")
    assert table.loc["rabbitmq-classic", "slow-consumer"] == "0.7 [0.0, 1.0]"  # the aggregate's bootstrap CI
    assert table.loc["rabbitmq-classic", "leader-crash"] == "n/a"
    assert analysis.overview(runs).loc["rabbitmq-classic", "slow-consumer"] == "0 / 0.7 [0.0, 1.0] / 0.7 [0.0, 1.0]"
    recorded = json.loads((trials / "rabbitmq-classic" / "slow-consumer" / "aggregate.json").read_text())
    (row,) = analysis.cell_estimates(runs, "duplicate_effects").itertuples()
    assert [row.mean, [row.lo, row.hi], row.n] == [recorded["duplicate_effects"][k] for k in ("mean", "ci95", "n")]


def test_a_cell_with_trials_is_a_bar_at_its_mean_with_an_error_bar(trials):
    runs = analysis.load_runs(trials)
    anomalies = analysis.plot_anomalies(runs)
    effects = anomalies.axes[2]
    (bar,) = effects.patches
    assert bar.get_height() == pytest.approx(0.667, abs=1e-3)
    (bars,) = [c for c in effects.containers if isinstance(c, BarContainer)]
    (errorbar,) = bars.errorbar.lines[2]  # the vertical line from lo to hi
    assert errorbar.get_segments()[0][:, 1] == pytest.approx([0.0, 1.0])
    single = analysis.plot_anomalies(analysis.load_runs(write_run(trials.parent / "q", "rabbitmq-classic",
                                                                  "slow-consumer", partition_history()).parents[1]))
    assert all(c.errorbar is None for c in single.axes[2].containers)  # one run per cell: no error bar


def test_newest_results_dir_finds_a_run_with_trials(tmp_path, trials):
    root = trials.parent
    old = write_run(root / "old", "logqueue", "consumer-crash", crash_history())
    os.utime(old / "events.jsonl", (time.time() - 100, time.time() - 100))
    assert analysis.newest_results_dir(root) == trials
