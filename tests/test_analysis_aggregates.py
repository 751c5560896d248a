"""Aggregates as tables and sweep curves with CI bands, from hand-built trial histories."""
from __future__ import annotations

import json

import pytest

from baselines import registry
from experiments import aggregate
from experiments.aggregate_report import has_aggregates, write_aggregate_report
from experiments.checker import write_summary
from experiments.analysis.aggregates import SweepAnalysisError, cell_table, load_aggregates, plot_cells, plot_sweep
from tests.test_aggregate import duplicated
from tests.test_checker import happy, write_events


def make_cell(cell, histories):
    setup = [{"t": 0.5, "ev": "setup", "confirms": registry.get(cell.parent.name).confirms()}]
    for k, events in enumerate(histories, start=1):
        write_events(aggregate.trial_dir(cell, k) / "events.jsonl", setup + events)
        write_summary(aggregate.trial_dir(cell, k))
    aggregate.write_aggregate(cell)


@pytest.fixture
def sweep(tmp_path):
    """timeout_s=1: every trial duplicates on redis-list, none on logqueue; timeout_s=2: one trial in three."""
    out = tmp_path / "sweep"
    plan = {"1": [True, True, True], "2": [True, False, False]}
    for value, dups in plan.items():
        make_cell(out / f"timeout_s={value}" / "redis-list" / "slow-consumer",
                  [duplicated("a", 1.0) if d else happy("a", 1.0) for d in dups])
        make_cell(out / f"timeout_s={value}" / "logqueue" / "slow-consumer", [happy("a", 1.0)] * 3)
    (out / "sweep.json").write_text(json.dumps({"param": "timeout_s", "values": ["1", "2"], "command": "x"}))
    return out


def test_load_aggregates_of_a_sweep(sweep):
    points = load_aggregates(sweep)
    assert list(points["value"]) == [1.0, 1.0, 2.0, 2.0]  # the sweep's order of values
    redis = points[points["backend"] == "redis-list"].set_index("value")
    assert redis.loc[1.0, "p_duplicate_effect"] == 1.0 and redis.loc[2.0, "p_duplicate_effect"] == pytest.approx(0.333)
    lo, hi = aggregate.wilson_ci(1, 3)
    assert (redis.loc[2.0, "p_duplicate_effect_lo"], redis.loc[2.0, "p_duplicate_effect_hi"]) == (round(lo, 3),
                                                                                                  round(hi, 3))
    assert redis.loc[1.0, "duplicate_effects_n"] == 3 and "latency_p99_ms" in points


def test_cell_table_shows_mean_and_interval(sweep):
    table = cell_table(load_aggregates(sweep))
    assert list(table.columns[:4]) == ["backend", "confirms", "scenario", "timeout_s"]
    row = table[(table["backend"] == "redis-list") & (table["timeout_s"] == "2")].iloc[0]
    assert row["P(at least one duplicate effect)"] == "0.33 [0.06, 0.79]"
    assert row["lost jobs"] == "0"
    assert row["confirms"] == "not replicated (1 node)"
    assert set(table[table["backend"] == "logqueue"]["confirms"]) == {"replicated: 2 of 3 nodes"}


def test_the_runners_aggregate_table_says_whether_confirms_are_replicated(sweep):
    import io

    from rich.console import Console

    from experiments.runner import aggregate_table

    cells = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/*/*/aggregate.json"))]
    console = Console(file=io.StringIO(), width=300)
    console.print(aggregate_table(cells, {"redis-streams": "down"}))
    lines = console.file.getvalue().splitlines()
    assert "confirms" in lines[2]
    assert all("replicated: 2 of 3 nodes" in line for line in lines if "logqueue" in line)
    assert all("not replicated (1 node)" in line for line in lines if "redis-list" in line)


def test_plot_sweep_draws_a_curve_and_a_band_per_backend(sweep):
    fig = plot_sweep(load_aggregates(sweep), "p_duplicate_effect", "slow-consumer", x_per=2.0, xlabel="x")
    (ax,) = fig.axes
    assert sorted(line.get_label() for line in ax.get_lines()) == ["logqueue", "redis-list"]
    assert len(ax.collections) == 2  # the CI bands
    redis = next(line for line in ax.get_lines() if line.get_label() == "redis-list")
    assert list(redis.get_xdata()) == [0.5, 1.0] and list(redis.get_ydata()) == [1.0, pytest.approx(0.333)]
    assert len(plot_sweep(load_aggregates(sweep), ["redeliveries", "duplicate_effects"]).axes) == 2  # a panel each


def test_plain_results_are_no_sweep(tmp_path):
    make_cell(tmp_path / "out" / "redis-list" / "slow-consumer", [happy("a", 1.0)] * 2)
    points = load_aggregates(tmp_path / "out")
    assert len(points) == 1 and points["param"].isna().all()
    with pytest.raises(SweepAnalysisError, match="not a sweep"):
        plot_sweep(points, "lost")
    with pytest.raises(SweepAnalysisError, match="no aggregate.json"):
        load_aggregates(tmp_path / "empty")


def test_plot_cells_draws_error_bars(tmp_path):
    out = tmp_path / "out"
    make_cell(out / "redis-list" / "slow-consumer", [duplicated("a", 1.0), happy("a", 1.0), duplicated("a", 1.0)])
    make_cell(out / "logqueue" / "slow-consumer", [happy("a", 1.0)] * 3)
    fig = plot_cells(load_aggregates(out), ["duplicate_effects"])
    (ax,) = fig.axes
    heights = sorted(round(bar.get_height(), 3) for bar in ax.patches)
    assert heights == [0.0, 0.667]
    (redis_bars,) = [c for c in ax.containers if c.get_label() == "redis-list"]
    (lo, hi), = [seg[:, 1] for seg in redis_bars.errorbar.lines[2][0].get_segments()]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)  # the bootstrap interval of 1, 0, 1


def test_aggregate_report_of_a_sweep(sweep):
    report = write_aggregate_report(sweep).read_text()
    assert "A sweep of `timeout_s` over 1, 2" in report and "    x" in report  # the command, as recorded
    assert "| redis-list | not replicated (1 node) | slow-consumer | 2 | 0 |" in report and "0.33 [0.06, 0.79]" in report
    assert (sweep / "sweep-slow-consumer.png").stat().st_size > 0
    assert report.count("equal to its recomputation") == 4 and "differs" not in report


def test_aggregate_report_of_trials_names_a_cell_that_no_longer_rechecks(tmp_path):
    out = tmp_path / "out"
    cell = out / "redis-list" / "slow-consumer"
    make_cell(cell, [duplicated("a", 1.0), happy("a", 1.0)])
    assert has_aggregates(out) and not has_aggregates(tmp_path)
    write_events(aggregate.trial_dir(cell, 2) / "events.jsonl", duplicated("a", 1.0))  # history edited afterwards
    report = write_aggregate_report(out).read_text()
    assert (out / "trials.png").exists()
    assert "`redis-list/slow-consumer`: **differs**: " in report and "p_duplicate_effect" in report


def test_experiments_report_gives_a_sweep_the_aggregated_report(sweep, capsys):
    from experiments import report

    assert report.main([str(sweep)]) == 0
    assert "A sweep of `timeout_s`" in (sweep / "report.md").read_text()
