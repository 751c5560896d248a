"""``experiments run --trials N`` against a real broker: the layout, the seeds, the aggregate and its recheck."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from baselines import registry
from experiments.checker import main as recheck_main
from experiments.checker import recheck, recheck_aggregate
from experiments.runner import main
from tests.conftest import require_server

SMALL = ["--quick", "--jobs", "16", "--load-s", "1.5", "--fault-start-s", "0.5", "--drain-s", "40"]
CELL = ("redis-streams", "slow-consumer")


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    require_server("redis")
    out = tmp_path_factory.mktemp("trials")
    code = main(["--backends", CELL[0], "--scenarios", CELL[1], "--trials", "2", "--seed", "5", "--out", str(out), *SMALL])
    return out, code


def test_each_trial_has_its_own_directory_and_seed(two_trials):
    out, code = two_trials
    assert code == 0
    cell = out.joinpath(*CELL)
    assert sorted(p.name for p in cell.iterdir()) == ["aggregate.json", "trial-1", "trial-2"]
    for k, seed in ((1, 5), (2, 6)):
        summary = json.loads((cell / f"trial-{k}" / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["jobs"] == 16
        assert any(f"seed={seed}," in note for note in summary["notes"])
        assert recheck(cell / f"trial-{k}") == []


def test_the_aggregate_has_every_figure_and_rechecks(two_trials, capsys):
    out, _ = two_trials
    cell = out.joinpath(*CELL)
    a = json.loads((cell / "aggregate.json").read_text())
    assert a["trials"] == 2 and a["statuses"] == {"ok": 2}
    assert a["confirms"] == registry.get(CELL[0]).confirms()  # the report's confirms column comes from it
    for figure in ("lost", "duplicate_executions", "duplicate_effects", "recovery_ms", "faults"):
        assert set(a[figure]) == {"mean", "ci95", "n"} and a[figure]["n"] == 2
    assert a["faults"]["mean"] == 1.0
    # redis-streams without lease extension: the slow job's first run always takes effect late.
    assert a["p_duplicate_effect"]["count"] == 2
    assert recheck_aggregate(cell) == []
    assert recheck_main([str(out)]) == 0
    assert "MISMATCH" not in capsys.readouterr().out


def test_one_trial_keeps_the_single_run_layout(two_trials):
    out, _ = two_trials
    # Running the same cell once replaces the trials with today's layout: no trial dirs, no aggregate.
    assert main(["--backends", CELL[0], "--scenarios", CELL[1], "--out", str(out), *SMALL]) == 0
    cell = out.joinpath(*CELL)
    assert (cell / "summary.json").exists() and (cell / "events.jsonl").exists()
    assert not any(p.name.startswith("trial-") or p.name == "aggregate.json" for p in cell.iterdir())


def test_bad_trials_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments", "run", "--out", str(tmp_path), "--trials", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --trials must be >= 1, got 0"
