"""The checker over hand-built histories: each figure and each anomaly by name."""
from __future__ import annotations

import json

import pytest

from experiments.checker import CheckerError, check, check_dir, load_events, main, nearest_rank, recheck, write_summary


def ev(t, kind, job=None, worker=None, **extra):
    e = {"t": t, "ev": kind}
    if job is not None:
        e["job"] = job
    if worker is not None:
        e["worker"] = worker
    e.update(extra)
    return e


def happy(job, t, worker="w1", latency=0.1):
    """A job's clean life: produce, deliver, start, finish, effect, ack."""
    return [
        ev(t, "produce", job),
        ev(t + 0.01, "deliver", job, worker, attempt=1),
        ev(t + 0.02, "start", job, worker, attempt=1),
        ev(t + latency - 0.01, "finish", job, worker, attempt=1),
        ev(t + latency, "effect", job, worker, attempt=1),
        ev(t + latency + 0.01, "ack", job, worker, attempt=1),
    ]


def test_clean_history_has_no_anomalies():
    events = happy("a", 100.0) + happy("b", 100.5, latency=0.3)
    s = check(events, "stub", "steady")
    assert (s["jobs"], s["completed"], s["lost"]) == (2, 2, 0)
    assert s["duplicate_executions"] == 0 and s["duplicate_effects"] == 0
    assert s["latency_ms"] == {"p50": 100.0, "p99": 300.0, "max": 300.0}
    # 2 jobs from the first produce (100.0) to the last first effect (100.8).
    assert s["throughput_jobs_per_s"] == pytest.approx(2 / 0.8, abs=1e-3)
    assert all(v == [] for v in s["anomalies"].values())
    assert s["status"] == "ok" and s["recovery_ms"] is None and s["notes"] == []


def test_order_of_lines_does_not_matter():
    events = happy("a", 1.0) + happy("b", 2.0)
    assert check(list(reversed(events)), "x", "y") == check(events, "x", "y")


def test_lost_job():
    events = happy("a", 1.0) + [ev(1.5, "produce", "b"), ev(1.6, "deliver", "b", "w1", attempt=1)]
    s = check(events, "x", "y")
    assert s["lost"] == 1 and s["completed"] == 1
    assert s["anomalies"]["lost"] == ["b"]


def test_duplicate_execution_without_duplicate_effect():
    # Worker w1 ran the job, lost its lease, w2 ran it again; only w2's completion counted.
    events = [
        ev(1.0, "produce", "j"),
        ev(1.1, "deliver", "j", "w1", attempt=1),
        ev(1.2, "start", "j", "w1", attempt=1),
        ev(2.0, "deliver", "j", "w2", attempt=2),
        ev(2.1, "start", "j", "w2", attempt=2),
        ev(2.2, "finish", "j", "w2", attempt=2),
        ev(2.3, "effect", "j", "w2", attempt=2),
        ev(2.4, "ack", "j", "w2", attempt=2),
        ev(3.0, "finish", "j", "w1", attempt=1),
        ev(3.1, "ack_error", "j", "w1", attempt=1, reason="fenced"),
    ]
    s = check(events, "logqueue", "slow-consumer")
    assert s["duplicate_executions"] == 1 and s["duplicate_effects"] == 0
    assert s["anomalies"]["duplicate-execution"] == ["j"]
    assert s["anomalies"]["ack-error"] == ["j"]
    assert s["anomalies"]["late-ack"] == ["j"]  # refused, but late all the same


def test_duplicate_effect_and_late_ack():
    # The seed's consumer-partition: w1 is cut off, the job goes to w2, then w1's ack arrives.
    events = [
        ev(1.0, "produce", "j"),
        ev(1.1, "deliver", "j", "w1", attempt=1),
        ev(2.0, "deliver", "j", "w2", attempt=2),
        ev(2.2, "finish", "j", "w2", attempt=2),
        ev(2.3, "effect", "j", "w2", attempt=2),
        ev(2.4, "ack", "j", "w2", attempt=2),
        ev(3.0, "finish", "j", "w1", attempt=1),
        ev(3.05, "effect", "j", "w1", attempt=1),
        ev(3.1, "ack", "j", "w1", attempt=1),
    ]
    s = check(events, "redis-list", "consumer-partition")
    assert s["duplicate_executions"] == 1 and s["duplicate_effects"] == 1
    assert s["anomalies"]["duplicate-effect"] == ["j"]
    assert s["anomalies"]["late-ack"] == ["j"]
    assert s["completed"] == 1
    assert s["latency_ms"]["max"] == 1300.0  # to the first effect, not the duplicate


def test_the_redelivered_workers_ack_is_not_late():
    events = [
        ev(1.0, "produce", "j"),
        ev(1.1, "deliver", "j", "w1", attempt=1),
        ev(1.2, "effect", "j", "w1", attempt=1),
        ev(2.0, "deliver", "j", "w2", attempt=2),
        ev(2.3, "effect", "j", "w2", attempt=2),
        ev(2.4, "ack", "j", "w2", attempt=2),
    ]
    assert check(events, "x", "y")["anomalies"]["late-ack"] == []


def test_phantom_and_dead_letter():
    events = happy("a", 1.0) + [
        ev(2.0, "effect", "ghost", "w1"),
        ev(2.1, "produce", "poison"),
        ev(2.2, "dead_letter", "poison", "w1", attempt=5, reason="max attempts"),
    ]
    s = check(events, "x", "y")
    assert s["anomalies"]["phantom"] == ["ghost"]
    assert s["anomalies"]["dead-letter"] == ["poison"]
    assert s["anomalies"]["lost"] == ["poison"]
    assert s["jobs"] == 2 and s["duplicate_effects"] == 0
    assert any("without a produce" in n for n in s["notes"])


def test_recovery_counts_only_jobs_on_the_faulted_worker():
    events = [
        ev(1.0, "produce", "a"), ev(1.0, "produce", "b"),
        ev(1.1, "deliver", "a", "w1", attempt=1),
        ev(1.1, "deliver", "b", "w2", attempt=1),
        ev(1.5, "fault_start", fault="kill", target="w1"),
        ev(1.6, "effect", "b", "w2"),  # w2's job was not interrupted by killing w1
        ev(1.6, "fault_end", fault="kill", target="w1"),
        ev(3.0, "deliver", "a", "w2", attempt=2),
        ev(3.5, "effect", "a", "w2", attempt=2),
    ]
    s = check(events, "x", "consumer-crash")
    assert s["recovery_ms"] == 2000.0
    (fault,) = s["faults"]
    assert fault["interrupted"] == 1 and fault["duration_ms"] == pytest.approx(100.0)


def test_recovery_of_a_system_fault_waits_for_every_interrupted_job():
    events = [
        ev(1.0, "produce", "a"), ev(1.0, "produce", "b"), ev(1.0, "produce", "c"),
        ev(1.1, "deliver", "a", "w1"), ev(1.1, "deliver", "b", "w2"),
        ev(1.2, "effect", "c", "w1"),  # never delivered: not in flight
        ev(2.0, "fault_start", fault="kill", target="leader"),
        ev(2.5, "effect", "a", "w1"),
        ev(4.0, "effect", "b", "w2"),
        ev(5.0, "fault_end", fault="kill", target="leader"),
    ]
    s = check(events, "logqueue", "leader-crash")
    assert s["recovery_ms"] == 2000.0
    assert s["faults"][0]["interrupted"] == 2


def test_job_effected_before_the_fault_is_not_interrupted():
    events = happy("a", 1.0) + [ev(2.0, "fault_start", fault="blackhole", target="w1")]
    s = check(events, "x", "y")
    assert s["recovery_ms"] is None
    assert s["faults"][0]["end"] is None
    assert any("no job was in flight" in n for n in s["notes"])


def test_unrecovered_interrupted_job_is_noted():
    events = [
        ev(1.0, "produce", "a"), ev(1.1, "deliver", "a", "w1"),
        ev(1.5, "fault_start", fault="kill", target="w1"),
    ]
    s = check(events, "x", "y")
    assert s["recovery_ms"] is None and s["lost"] == 1
    assert any("never took effect" in n for n in s["notes"])


def test_worst_fault_is_the_recovery_time():
    events = []
    for i, (t0, t_eff) in enumerate([(10.0, 10.5), (20.0, 21.5)]):
        job = f"j{i}"
        events += [
            ev(t0 - 1, "produce", job), ev(t0 - 0.5, "deliver", job, "w1"),
            ev(t0, "fault_start", fault="restart", target="node-1"),
            ev(t_eff, "effect", job, "w1"),
            ev(t0 + 0.2, "fault_end", fault="restart", target="node-1"),
        ]
    s = check(events, "logqueue", "rolling-restart")
    assert [f["recovery_ms"] for f in s["faults"]] == [500.0, 1500.0]
    assert s["recovery_ms"] == 1500.0


def test_status_and_notes_come_from_events():
    events = [
        ev(1.0, "status", status="n/a", reason="no leader to crash: rabbitmq runs one node here"),
        ev(1.0, "note", text="hello"),
    ]
    s = check(events, "rabbitmq-classic", "leader-crash")
    assert s["status"] == "n/a" and "no leader" in s["reason"]
    assert s["notes"] == ["hello"] and s["jobs"] == 0 and s["latency_ms"] is None
    assert s["throughput_jobs_per_s"] is None


def test_replayed_counts_distinct_produced_jobs():
    events = happy("a", 1.0) + happy("b", 2.0) + [
        ev(5.0, "replay", "a", "replay"), ev(5.1, "replay", "a", "replay"), ev(5.2, "replay", "zz", "replay"),
    ]
    assert check(events, "logqueue", "replay")["replayed"] == 1
    assert check(happy("a", 1.0), "x", "y")["replayed"] == 0


def test_nearest_rank():
    values = [float(i) for i in range(1, 101)]
    assert nearest_rank(values, 0.5) == 50.0
    assert nearest_rank(values, 0.99) == 99.0
    assert nearest_rank([7.0], 0.99) == 7.0


def write_events(path, events, torn=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events) + torn)


def test_load_skips_a_torn_last_line_but_not_a_broken_middle(tmp_path):
    f = tmp_path / "events.jsonl"
    write_events(f, happy("a", 1.0), torn=b'{"t": 3.0, "ev": "eff')
    assert len(load_events(f)) == 6
    f.write_bytes(b'{"t": 1, "ev": "produce", "job": "a"}\nnot json\n{"t": 2, "ev": "x"}\n')
    with pytest.raises(CheckerError, match=r"events.jsonl:2"):
        load_events(f)
    f.write_bytes(b'{"ev": "produce"}\n')
    with pytest.raises(CheckerError, match="numeric 't'"):
        load_events(f)


def test_write_summary_then_recheck(tmp_path, capsys):
    run = tmp_path / "out" / "redis-list" / "consumer-crash"
    write_events(run / "events.jsonl", happy("a", 1.0) + happy("b", 1.2))
    summary = write_summary(run)
    assert summary["backend"] == "redis-list" and summary["scenario"] == "consumer-crash"
    assert recheck(run) == []
    assert check_dir(run) == json.loads((run / "summary.json").read_text())
    assert main([str(tmp_path / "out")]) == 0
    # Tamper with the summary: recheck names the field.
    summary["lost"] = 7
    (run / "summary.json").write_text(json.dumps(summary))
    assert recheck(run) == ["lost: recorded 7, recomputed 0"]
    assert main([str(tmp_path / "out")]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main([str(tmp_path / "empty")]) == 2
