"""End to end: a small matrix against a real broker, rechecked from the events, and the faults bite."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.checker import recheck
from experiments.runner import main
from tests.conftest import require_server

SMALL = ["--quick", "--jobs", "24", "--load-s", "2", "--fault-start-s", "0.6", "--drain-s", "40"]


@pytest.fixture(scope="module")
def redis_matrix(tmp_path_factory):
    require_server("redis")
    out = tmp_path_factory.mktemp("results")
    code = main(["--backends", "redis-list,logqueue", "--scenarios", "consumer-partition,slow-consumer,leader-crash",
                 "--out", str(out), *SMALL])
    return out, code


def summary(out, backend, scenario) -> dict:
    return json.loads((out / backend / scenario / "summary.json").read_text())


def test_matrix_completes_and_every_summary_is_recomputable(redis_matrix):
    out, code = redis_matrix
    assert code == 0
    for backend in ("redis-list", "logqueue"):
        for scenario in ("consumer-partition", "slow-consumer", "leader-crash"):
            assert recheck(out / backend / scenario) == [], (backend, scenario)


@pytest.mark.parametrize("scenario", ["consumer-partition", "slow-consumer"])
def test_the_fault_bites_a_queue_baseline(redis_matrix, scenario):
    out, _ = redis_matrix
    s = summary(out, "redis-list", scenario)
    assert s["status"] == "ok"
    assert s["jobs"] == 24 and s["lost"] == 0
    # The seed's anomaly: the job ran twice, the first worker's ack came late and was accepted.
    assert s["duplicate_executions"] >= 1 and s["duplicate_effects"] >= 1
    assert s["anomalies"]["late-ack"]
    assert s["recovery_ms"] is not None
    (fault,) = s["faults"]
    assert fault["end"] is not None and fault["interrupted"] >= 1


@pytest.mark.parametrize("scenario", ["consumer-partition", "slow-consumer"])
def test_the_log_fences_the_late_completion(redis_matrix, scenario):
    """The headline: the same fault re-executes the job on logqueue too, but its effect happens once."""
    out, _ = redis_matrix
    s = summary(out, "logqueue", scenario)
    assert s["status"] == "ok"
    assert s["jobs"] == 24 and s["lost"] == 0
    assert s["duplicate_executions"] >= 1  # the fault bit: a lease cannot tell slow from dead
    assert s["duplicate_effects"] == 0


def test_scenario_that_does_not_apply_is_na(redis_matrix):
    out, _ = redis_matrix
    s = summary(out, "redis-list", "leader-crash")
    assert s["status"] == "n/a" and "single broker node" in s["reason"]


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args in (["--backends", "nope"], ["--scenarios", "nope"], ["--workers", "1"], ["--jobs", "0"]):
        out = subprocess.run([sys.executable, "-m", "experiments", "run", "--out", str(tmp_path), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, args
        assert out.stderr.startswith("error: ") and out.stderr.strip().count("\n") == 0, out.stderr
