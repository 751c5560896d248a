"""`python -m experiments demo`: runs what is available side by side, says what is not and how to start it,
writes the report."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.demo import cell_order
from experiments.recorder import read_jsonl
from tests.conftest import IN_CI, require_server


def span(run_dir) -> tuple[float, float]:
    times = [e["t"] for e in read_jsonl(run_dir / "events.jsonl")]
    return min(times), max(times)


def test_demo_on_one_broker_writes_a_report(tmp_path):
    require_server("redis")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "demo", "--backends", "redis-list,logqueue",
         "--scenarios", "consumer-crash,leader-crash", "--out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = " ".join(proc.stdout.split())
    assert "report written" in text and "report.md" in text and "4 cells" in text
    report = (out / "report.md").read_text()
    assert "logqueue is unavailable" not in text
    rows = {tuple(line.split(" | ")[i].strip("| ") for i in (0, 2, 3)) for line in report.splitlines()
            if line.startswith("| ") and line.count(" | ") > 3}  # (backend, scenario, status); [1] is confirms
    assert {("logqueue", "consumer-crash", "ok"), ("logqueue", "leader-crash", "ok"),
            ("redis-list", "consumer-crash", "ok"), ("redis-list", "leader-crash", "n/a")} <= rows
    assert (out / "anomalies.png").exists() and (out / "latency-consumer-crash.png").exists()
    # Side by side: the two backends' consumer-crash runs overlap in time.
    (a0, a1), (b0, b1) = span(out / "logqueue" / "consumer-crash"), span(out / "redis-list" / "consumer-crash")
    assert a0 < b1 and b0 < a1


def test_the_cells_that_start_clusters_go_first():
    assert cell_order(["redis-list", "logqueue", "rabbitmq-quorum-cluster"], ["a", "b"]) == [
        ("logqueue", "a"), ("rabbitmq-quorum-cluster", "a"), ("logqueue", "b"), ("rabbitmq-quorum-cluster", "b"),
        ("redis-list", "a"), ("redis-list", "b")]


def test_a_broker_it_cannot_reach_is_named_with_how_to_start_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket is
    env = {**os.environ, "LOGQUEUE_REDIS_URL": f"127.0.0.1:{port}"}
    proc = subprocess.run([sys.executable, "-m", "experiments", "demo", "--backends", "redis-list",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 3, text
    assert f"redis-list is unavailable: redis-list: cannot reach redis at 127.0.0.1:{port}" in text
    assert "start it with: redis-server" in text


def test_demo_rejects_unknown_names_in_one_line(tmp_path):
    for bad in (["--scenarios", "nope"], ["--parallel", "0"]):
        proc = subprocess.run([sys.executable, "-m", "experiments", "demo", *bad, "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_no_more_than_two_cells_of_one_backend_run_at_once(tmp_path, monkeypatch):
    """run_cells' schedule, with cells that only sleep: the third cell of a backend waits for a slot."""
    import time

    from rich.console import Console

    from experiments import demo

    log = []

    class Sleeper:
        def __init__(self, backend, scenario, out):
            self.backend, self.scenario, self.started, self.returncode = backend, scenario, time.monotonic(), None
            log.append(("start", backend, scenario))

        def poll(self):
            if self.returncode is None and time.monotonic() - self.started > 0.3:
                self.returncode = 0
                log.append(("end", self.backend, self.scenario))
            return self.returncode

        def summary(self):
            return {"status": "n/a", "backend": self.backend, "scenario": self.scenario}

    monkeypatch.setattr(demo, "Cell", Sleeper)
    cells = [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1")]
    summaries = demo.run_cells(cells, tmp_path, parallel=3, console=Console(file=io.StringIO()))
    assert [(s["backend"], s["scenario"]) for s in summaries] == cells
    assert log[:3] == [("start", "a", "1"), ("start", "a", "2"), ("start", "b", "1")]  # a/3 waits for an a
    running = 0
    for kind, backend, _ in log:
        running += (1 if kind == "start" else -1) if backend == "a" else 0
        assert running <= demo.PER_BACKEND


def test_a_cell_whose_servers_did_not_start_runs_once_more(tmp_path, monkeypatch):
    from rich.console import Console

    from experiments import demo

    starts = []

    class Failing:
        """a/1's servers fail to start every time; b/1 runs."""

        def __init__(self, backend, scenario, out):
            self.backend, self.scenario, self.started = backend, scenario, 0.0
            starts.append((backend, scenario))

        def poll(self):
            return 0

        def summary(self):
            if self.backend == "a":
                return {"status": "error", "reason": "ServerStartError: port taken", "backend": "a", "scenario": "1"}
            return {"status": "n/a", "backend": "b", "scenario": "1"}

    monkeypatch.setattr(demo, "Cell", Failing)
    summaries = demo.run_cells([("a", "1"), ("b", "1")], tmp_path, parallel=1, console=Console(file=io.StringIO()))
    assert starts == [("a", "1"), ("a", "1"), ("b", "1")]  # once more, and no more than that
    assert [s["status"] for s in summaries] == ["error", "n/a"]  # the second failure is reported


def test_a_relative_out_works_for_a_private_cluster(tmp_path):
    """make demo's default --out is relative; a private cluster's nodes run in their own directory."""
    from experiments import runner

    reason = runner.probe("redis-sentinel")
    if reason is not None:
        pytest.fail(reason) if IN_CI else pytest.skip(reason)
    proc = subprocess.run([sys.executable, "-m", "experiments", "demo", "--backends", "redis-sentinel",
                           "--scenarios", "consumer-crash", "--out", "results/demo"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "redis-sentinel / consumer-crash ok" in " ".join(proc.stdout.split())
