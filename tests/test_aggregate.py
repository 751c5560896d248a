"""Trials -> aggregate.json: bootstrap and Wilson intervals, and the recheck from the trials' events."""
from __future__ import annotations

import json

import pytest

from experiments import aggregate
from experiments.checker import check, main, recheck_aggregate, write_summary
from tests.test_checker import ev, happy, write_events


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    values = [0.0, 1.0, 1.0, 3.0, 0.0, 2.0, 0.37, 1.91, 2.53, 0.08, 1.29, 2.71]
    lo, hi = aggregate.bootstrap_ci(values)
    assert all(aggregate.bootstrap_ci(values) == [lo, hi] for _ in range(3))  # seeded: the same every time
    assert min(values) <= lo < sum(values) / len(values) < hi <= max(values)
    assert aggregate.bootstrap_ci([4.0, 4.0]) == [4.0, 4.0]
    assert aggregate.bootstrap_ci([7.0]) == [7.0, 7.0]


def test_more_trials_give_a_narrower_interval():
    few = aggregate.bootstrap_ci([0.0, 1.0] * 3)
    many = aggregate.bootstrap_ci([0.0, 1.0] * 50)
    assert many[1] - many[0] < few[1] - few[0]


def test_wilson_interval_known_values():
    # 0 of 3: [0, z^2 / (n + z^2)]; 3 of 3 mirrors it; 5 of 10 is symmetric about 0.5.
    lo, hi = aggregate.wilson_ci(0, 3)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(3.8415 / 6.8415, abs=1e-4)
    assert aggregate.wilson_ci(3, 3) == pytest.approx([1 - hi, 1.0])
    lo, hi = aggregate.wilson_ci(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def duplicated(job, t):
    """A job whose first run was redelivered and both runs took effect."""
    return happy(job, t) + [ev(t + 0.5, "deliver", job, "w2", attempt=2), ev(t + 0.6, "finish", job, "w2", attempt=2),
                            ev(t + 0.7, "effect", job, "w2", attempt=2)]


def test_aggregate_of_trials():
    trials = [
        check(happy("a", 1.0) + happy("b", 1.0, latency=0.3), "x", "y"),
        check(duplicated("a", 1.0) + happy("b", 1.0), "x", "y"),
        check(happy("a", 1.0) + [ev(1.0, "produce", "b")], "x", "y"),  # b lost
        check([ev(1.0, "status", status="error", reason="broker vanished")], "x", "y"),
    ]
    a = aggregate.aggregate(trials)
    assert a["trials"] == 4 and a["statuses"] == {"ok": 3, "error": 1}
    assert a["reasons"] == ["broker vanished"]
    # Figures over the three ok trials only.
    assert a["jobs"] == {"mean": 2.0, "ci95": [2.0, 2.0], "n": 3}
    assert a["lost"]["mean"] == pytest.approx(1 / 3, abs=1e-3) and a["lost"]["n"] == 3
    assert a["lost"]["ci95"] == [0.0, 1.0]
    assert a["duplicate_effects"]["mean"] == pytest.approx(0.333)
    assert a["p_duplicate_effect"]["count"] == 1 and a["p_duplicate_effect"]["n"] == 3
    assert a["p_duplicate_effect"]["ci95"] == [round(x, 3) for x in aggregate.wilson_ci(1, 3)]
    assert a["latency_ms"]["max"]["n"] == 3
    # No fault interrupted anything: recovery has no value in any trial.
    assert a["recovery_ms"] == {"mean": None, "ci95": None, "n": 0}
    assert a["faults"] == {"mean": 0.0, "ci95": [0.0, 0.0], "n": 3}


def test_aggregate_of_no_trials_is_an_error():
    with pytest.raises(ValueError):
        aggregate.aggregate([])


def test_trial_dirs_in_numeric_order(tmp_path):
    for k in (1, 2, 10):
        (tmp_path / f"trial-{k}").mkdir()
    (tmp_path / "trial-x").mkdir()
    assert [p.name for p in aggregate.trial_dirs(tmp_path)] == ["trial-1", "trial-2", "trial-10"]
    assert aggregate.trial_dirs(tmp_path / "trial-1") == [tmp_path / "trial-1"]  # a single run is its own trial


def test_aggregate_is_rechecked_from_the_trials_events(tmp_path, capsys):
    cell = tmp_path / "out" / "redis-list" / "slow-consumer"
    histories = [happy("a", 1.0), duplicated("a", 1.0), happy("a", 1.0, latency=0.4)]
    for k, events in enumerate(histories, start=1):
        write_events(aggregate.trial_dir(cell, k) / "events.jsonl", events)
        assert write_summary(aggregate.trial_dir(cell, k))["backend"] == "redis-list"  # named from the cell
    recorded = aggregate.write_aggregate(cell)
    assert recorded["trials"] == 3 and recorded["scenario"] == "slow-consumer"
    assert recheck_aggregate(cell) == []
    assert main([str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("ok      ") == 4 and "aggregate.json" in out
    # Tamper with a trial's events: its summary and the aggregate no longer recompute.
    write_events(aggregate.trial_dir(cell, 1) / "events.jsonl", duplicated("a", 1.0))
    assert any(line.startswith("p_duplicate_effect:") for line in recheck_aggregate(cell))
    assert main([str(tmp_path / "out")]) == 1
    assert capsys.readouterr().out.count("MISMATCH") == 2


def test_fmt():
    assert aggregate.fmt({"mean": 0.0, "ci95": [0.0, 0.0], "n": 3}) == "0"
    assert aggregate.fmt({"mean": 1.333, "ci95": [0.0, 3.0], "n": 3}) == "1.3 [0.0, 3.0]"
    assert aggregate.fmt({"mean": None, "ci95": None, "n": 0}) == "-"
    assert json.loads(json.dumps(aggregate.proportion([]))) == {"mean": None, "ci95": None, "n": 0, "count": 0}
