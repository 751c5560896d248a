"""The report on a synthetic results directory: files, table rows, plots, errors."""
from __future__ import annotations

import json
import subprocess
import sys

from baselines import registry
from experiments.checker import write_summary
from experiments.analysis import latency_series
from experiments.report import main
from experiments.runner import run_one
from experiments.scenarios.base import QUICK

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(root, backend, scenario, events):
    """A run of ``backend`` with ``events``, after the setup event the runner writes (the class's confirms)."""
    run = root / backend / scenario
    run.mkdir(parents=True)
    setup = {"t": 0.0, "ev": "setup", "confirms": registry.get(backend).confirms()}
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [setup, *events]))
    write_summary(run)
    return run


def history(n_jobs: int, duplicate: bool) -> list[dict]:
    events = [{"t": 100.0, "ev": "fault_start", "fault": "blackhole", "target": "w1"}]
    for i in range(n_jobs):
        t = 99.0 + i * 0.1
        job = f"j{i}"
        events += [
            {"t": t, "ev": "produce", "job": job},
            {"t": t + 0.05, "ev": "deliver", "job": job, "worker": "w1", "attempt": 1},
            {"t": t + 0.3 + (1.0 if i == 5 else 0), "ev": "finish", "job": job, "worker": "w1", "attempt": 1},
            {"t": t + 0.3 + (1.5 if i == 5 else 0), "ev": "effect", "job": job, "worker": "w1", "attempt": 1},
        ]
    if duplicate:
        events += [{"t": 102.0, "ev": "finish", "job": "j5", "worker": "w2", "attempt": 2},
                   {"t": 102.1, "ev": "effect", "job": "j5", "worker": "w2", "attempt": 2}]
    events.append({"t": 101.0, "ev": "fault_end", "fault": "blackhole", "target": "w1"})
    return events


def test_report_on_synthetic_results(tmp_path, capsys):
    write_run(tmp_path, "logqueue", "consumer-partition", history(20, duplicate=False))
    write_run(tmp_path, "redis-list", "consumer-partition", history(20, duplicate=True))
    write_run(tmp_path, "redis-list", "leader-crash",
              [{"t": 1.0, "ev": "status", "status": "n/a", "reason": "redis runs a single node here"}])
    assert main([str(tmp_path)]) == 0
    assert str(tmp_path / "report.md") in capsys.readouterr().out
    md = (tmp_path / "report.md").read_text()
    assert "| redis-list | not replicated (1 node) | consumer-partition | ok | 20 | 0 | 1 | 1 |" in md
    assert "| logqueue | replicated: 2 of 3 nodes | consumer-partition | ok | 20 | 0 | 0 | 0 |" in md
    assert "| redis-list | not replicated (1 node) | leader-crash | n/a |" in md
    assert "n/a: redis runs a single node here" in md
    assert "duplicate-effect x1" in md
    assert "**differs**" not in md
    for png in ("anomalies.png", "recovery.png", "latency-consumer-partition.png"):
        assert (tmp_path / png).read_bytes().startswith(PNG)
        assert f"]({png})" in md
    # n/a runs get no latency plot.
    assert not (tmp_path / "latency-leader-crash.png").exists()


def test_report_flags_a_tampered_summary(tmp_path):
    run = write_run(tmp_path, "redis-list", "slow-consumer", history(6, duplicate=True))
    summary = json.loads((run / "summary.json").read_text())
    summary["duplicate_effects"] = 0
    (run / "summary.json").write_text(json.dumps(summary))
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "**differs**" in md and "duplicate_effects: recorded 0, recomputed 1" in md


def test_latency_series_shades_fault_windows():
    t0, points, windows = latency_series(history(10, duplicate=False))
    assert t0 == 99.0
    assert windows == [(1.0, 2.0, "blackhole w1")]
    assert len(points) == 10 and max(p[1] for p in points) > 1500


def test_report_errors_are_one_line(tmp_path):
    for args in ([str(tmp_path / "missing")], [str(tmp_path)]):
        out = subprocess.run([sys.executable, "-m", "experiments", "report", *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert out.stderr.startswith("error: ") and out.stderr.strip().count("\n") == 0


def test_a_run_records_what_its_backends_class_declares_a_confirm_promises(tmp_path, monkeypatch):
    """The runner takes the confirms from the class, never from the name: redis-list declaring
    other numbers gets them in its history, its summary and the report."""
    cls = registry.get("redis-list")
    monkeypatch.setattr(cls, "replicas", 4)
    monkeypatch.setattr(cls, "confirmed_on", 3)
    # n/a (the shared Redis takes no node faults), so no server is needed; the setup is recorded all the same.
    summary = run_one("redis-list", "leader-crash", QUICK, set(), tmp_path, lambda done, total: None)
    assert summary["status"] == "n/a"
    assert summary["confirms"] == {"replicas": 4, "confirmed_on": 3, "durability": cls.durability}
    assert main([str(tmp_path)]) == 0
    assert "| redis-list | replicated: 3 of 4 nodes | leader-crash | n/a |" in (tmp_path / "report.md").read_text()
