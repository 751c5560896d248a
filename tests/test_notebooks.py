"""Every notebook in notebooks/ runs top to bottom, with nbclient, on results produced here.

The module's fixture makes fresh inputs with the project's own commands -- a small failure
run (logqueue and redis-list, leader-crash first, so that its timeline has the cluster's first
election, then consumer-crash), a tiny benchmark, and the
election-timing experiment in the simulator and on real nodes -- under ``TMP/results``,
then each notebook runs in a kernel of this interpreter (the venv's) with its working
directory in ``TMP/notebooks``: the failure-matrix and timeline notebooks find the results
the way a user's would (the newest directory under ``results/``), the others through
their environment variables.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import require_server
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from experiments import aggregate, analysis, checker

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = ("failure-matrix", "throughput", "raft-elections", "raft-timeline")

pytestmark = pytest.mark.timeout(600)


def run(argv: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """``{"root", "out", "env"}``: fresh results under ``root/results`` and the kernel's environment."""
    require_server("redis")
    root = tmp_path_factory.mktemp("notebooks")
    results = root / "results"
    out = results / "q"
    run(["-m", "experiments", "run", "--backends", "logqueue,redis-list", "--scenarios", "leader-crash,consumer-crash",
         "--quick", "--out", str(out)], root, 240)
    run(["-m", "experiments", "bench", "--backends", "logqueue,redis-list", "--messages", "300", "--window", "100",
         "--consumers", "2,1", "--rates", "25,75", "--latency-seconds", "1", "--quiet",
         "--out", str(results / "bench.json")], root, 120)
    elections = results / "elections"
    elections.mkdir()
    run(["-m", "experiments", "sim-elections", "--nodes", "5", "--ranges", "150-150,150-155,150-200", "--trials", "20", "--setup", "logqueue",
         "--seed", "1", "--out", str(elections / "elections-sim.json")], root, 60)
    run(["-m", "experiments", "elections", "--nodes", "3", "--ranges", "150-200", "--trials", "3", "--seed", "1",
         "--out", str(elections / "elections-real.json")], root, 120)
    (root / "notebooks").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGQUEUE_")}
    env.update(LOGQUEUE_BENCH=str(results / "bench.json"), LOGQUEUE_ELECTIONS=str(elections))
    return {"root": root, "out": out, "env": env}


def execute(name: str, inputs: dict, extra_env: dict | None = None) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>.ipynb`` in a fresh kernel; CellExecutionError on any error."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    book.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(book, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(inputs["root"] / "notebooks")}})
    client.execute(env={**inputs["env"], **(extra_env or {})})
    return book


def executed(name: str, inputs: dict) -> nbformat.NotebookNode:
    """The notebook run once per module on the fresh inputs (several tests read its outputs)."""
    books = inputs.setdefault("executed", {})
    if name not in books:
        books[name] = execute(name, inputs)
    return books[name]


@pytest.mark.parametrize("name", ALL)
def test_notebook_runs_on_fresh_results(name, inputs):
    book = executed(name, inputs)
    assert book.cells[-1].outputs[0]["text"].strip() == sys.executable  # the kernel is this venv's
    for cell in book.cells:
        if cell.cell_type != "code":
            continue
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert not [o for o in cell.outputs if o.get("name") == "stderr" and "Traceback" in o.get("text", "")]
        if cell.source.startswith("analysis.plot_"):
            assert len(images) == 1, f"{name}: {cell.source!r} showed {len(images)} figures"
        if "display(analysis.plot_" in cell.source:
            assert images, f"{name}: {cell.source!r} showed no figure"


def test_failure_matrix_found_the_new_results_and_they_recheck(inputs):
    book = executed("failure-matrix", inputs)
    printed = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert f"runs in {inputs['out']}" in printed
    assert "4 of 4 summaries equal their recomputation" in printed


def test_the_leader_crash_run_recorded_an_election(inputs):
    run_dir = inputs["out"] / "logqueue" / "leader-crash"
    log = analysis.load_cluster_log(run_dir)
    changes = analysis.leader_changes(log)
    assert len(changes) >= 2 and changes["term"].is_monotonic_increasing
    assert changes["leader"].iloc[-1] != changes["leader"].iloc[0]  # the crashed leader was replaced
    fault = next(e for e in analysis.load_events(run_dir) if e["ev"] == "fault_start")
    killed = int(fault["target"].removeprefix("node-"))
    assert killed == changes["leader"].iloc[-2]
    gaps = analysis.leaderless_windows(log)
    assert len(gaps) >= 2 and gaps["duration_ms"].iloc[1] > 0  # the start-up election, then the failover
    assert analysis.leaders_per_term(log)["one leader"].all()


def test_a_missing_input_is_one_line_in_the_notebook(inputs, tmp_path):
    with pytest.raises(CellExecutionError) as info:
        execute("throughput", inputs, {"LOGQUEUE_BENCH": str(tmp_path / "missing.json")})
    message = str(info.value)
    assert f"error: LOGQUEUE_BENCH={tmp_path / 'missing.json'} is not a file" in message
    assert "Traceback" not in message and "File " not in message


@pytest.mark.parametrize("name", ALL)
def test_notebooks_are_stored_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    assert book.metadata["kernelspec"]["name"] == "python3"
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: a cell has stored output"
    code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    assert "from experiments import analysis" in code
    assert "def " not in code and "import matplotlib" not in code  # the analysis lives in experiments.analysis


def test_failure_matrix_shows_mean_and_ci_of_a_run_with_trials(inputs, tmp_path):
    """Two trials of a real cell (the second with one effect taken out: a lost job), laid out as
    ``experiments run --trials 2`` writes them: the matrix shows each figure's mean [95% CI]."""
    cell = tmp_path / "t" / "redis-list" / "consumer-crash"
    for k in (1, 2):
        shutil.copytree(inputs["out"] / "redis-list" / "consumer-crash", cell / f"trial-{k}")
    events = cell / "trial-2" / "events.jsonl"
    lines = events.read_text().splitlines(keepends=True)
    effect = max(i for i, line in enumerate(lines) if '"ev":"effect"' in line.replace(" ", ""))
    events.write_text("".join(lines[:effect] + lines[effect + 1:]))
    for k in (1, 2):
        checker.write_summary(cell / f"trial-{k}")
    aggregate.write_aggregate(cell)
    book = execute("failure-matrix", inputs, {"LOGQUEUE_RESULTS": str(tmp_path / "t")})
    printed = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert "2 runs in" in printed and "(2 trials per cell)" in printed
    shown = "".join(o.get("data", {}).get("text/plain", "") for c in book.cells if c.cell_type == "code"
                    for o in c.outputs)
    assert "0.5 [0.0, 1.0] / 0 / 0" in shown  # lost: 0 and 1 over the two trials
    anomalies = next(c for c in book.cells if c.source.startswith("analysis.plot_anomalies"))
    assert [o for o in anomalies.outputs if "image/png" in o.get("data", {})]
