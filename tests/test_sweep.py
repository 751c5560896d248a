"""``experiments sweep``: the parameter's parsing, one-line errors, and one aggregate per value on a real broker."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.checker import main as recheck_main
from experiments.sweep import SweepError, main, matrix_cells, parse_param
from experiments.topologies import SERVERS_DIR
from tests.conftest import require_server
from tests.test_trials import SMALL


def test_parse_param_types_values_from_the_field():
    assert parse_param("timeout_s=1,2.5") == ("timeout_s", ["1", "2.5"])
    assert parse_param("fault-start-s=0") == ("fault_start_s", ["0"])
    assert parse_param("jobs=10, 20") == ("jobs", ["10", "20"])


@pytest.mark.parametrize("spec, message", [
    ("nope=1", "unknown parameter 'nope'"),
    ("jobs=1.5", "'1.5' is not an int"),
    ("timeout_s=x", "'x' is not a float"),
    ("timeout_s", "wants NAME=V1,V2"),
    ("timeout_s=", "no values given"),
    ("jobs=3,3", "given twice"),
])
def test_parse_param_refuses(spec, message):
    with pytest.raises(SweepError, match=message):
        parse_param(spec)


@pytest.mark.parametrize("args, message", [
    (["--param", "nope=1"], "error: --param: unknown parameter 'nope'; known: jobs, "),
    (["--param", "workers=2,1"], "error: --param workers=1: --workers must be at least 2"),
    (["--param", "timeout_s=1", "--timeout-s", "2"], "error: --timeout-s is the swept parameter"),
    (["--param", "jobs=2", "--scenarios", "nope"], "error: unknown scenario 'nope'"),
])
def test_bad_sweeps_are_one_line_errors_before_any_run(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "experiments", "sweep", "--out", str(tmp_path / "out"), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith(message) and out.stderr.strip().count("\n") == 0, out.stderr
    assert not (tmp_path / "out").exists()


def test_sweep_writes_one_aggregate_per_value(tmp_path, capsys):
    require_server("redis")
    out = tmp_path / "sweep"
    # One trial per value: the sweep still aggregates every cell.
    code = main(["--param", "timeout_s=1,2", "--backends", "redis-streams", "--scenarios", "slow-consumer",
                 "--out", str(out), *SMALL])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json", "timeout_s=1", "timeout_s=2"]
    recorded = json.loads((out / "sweep.json").read_text())
    assert recorded["param"] == "timeout_s" and recorded["values"] == ["1", "2"]
    assert recorded["command"].startswith("python -m experiments sweep --param timeout_s=1,2 --backends redis-streams")
    for value in ("1", "2"):
        cell = out / f"timeout_s={value}" / "redis-streams" / "slow-consumer"
        summary = json.loads((cell / "summary.json").read_text())
        assert any(f"timeout_s={float(value)}," in note for note in summary["notes"])
        a = json.loads((cell / "aggregate.json").read_text())
        assert a["trials"] == 1 and a["lost"]["n"] == 1
        assert a["p_duplicate_effect"]["count"] == 1
    assert "timeout_s" in capsys.readouterr().out  # the sweep's table has the parameter's column
    assert recheck_main([str(out)]) == 0


def test_a_sweep_aggregates_the_cells_and_not_the_runs_servers(tmp_path):
    for cell in ("logqueue/leader-crash", "redis-list/leader-crash", f"{SERVERS_DIR}/logqueue/nodes"):
        (tmp_path / cell).mkdir(parents=True)
    assert matrix_cells(tmp_path) == [tmp_path / "logqueue" / "leader-crash", tmp_path / "redis-list" / "leader-crash"]
