"""`python -m experiments demo`: runs what is available, says what is not, writes the report."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import require_server


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
    assert "report written" in text and "report.md" in text
    report = (out / "report.md").read_text()
    assert "logqueue is unavailable" not in text
    assert "| logqueue | consumer-crash | ok |" in report
    assert "| logqueue | leader-crash | ok |" in report
    assert "| redis-list | consumer-crash | ok |" in report
    assert "| redis-list | leader-crash | n/a |" in report
    assert (out / "anomalies.png").exists() and (out / "latency-consumer-crash.png").exists()


def test_demo_rejects_unknown_names_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments", "demo", "--scenarios", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
