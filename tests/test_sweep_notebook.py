"""notebooks/sweeps.ipynb runs top to bottom (nbclient) on a sweep built here, found the way a user's is."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from experiments.analysis.aggregates import SweepAnalysisError, sweep_dir
from tests.test_analysis_aggregates import sweep  # noqa: F401 (the fixture)

BOOK = Path(__file__).resolve().parents[1] / "notebooks" / "sweeps.ipynb"
pytestmark = pytest.mark.timeout(300)


def execute(cwd: Path, env: dict) -> nbformat.NotebookNode:
    book = nbformat.read(BOOK, as_version=4)
    NotebookClient(book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    return book


def outputs(book) -> str:
    return "\n".join(str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
                     for cell in book.cells if cell.cell_type == "code" for out in cell.outputs)


def test_the_notebook_finds_the_newest_sweep_under_results(tmp_path, sweep):  # noqa: F811
    (tmp_path / "results").mkdir()
    sweep.rename(tmp_path / "results" / "s1")
    (tmp_path / "notebooks").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGQUEUE_")}
    book = execute(tmp_path / "notebooks", env)
    text = outputs(book)
    assert "timeout_s = 1, 2" in text and "0.33 [0.06, 0.79]" in text
    images = [out for cell in book.cells if cell.cell_type == "code" for out in cell.outputs
              if "image/png" in out.get("data", {})]
    assert len(images) == 1  # one scenario: one figure of curves


def test_a_missing_sweep_is_one_line(tmp_path):
    with pytest.raises(SweepAnalysisError, match="is not a sweep"):
        sweep_dir({"LOGQUEUE_SWEEP": str(tmp_path)})
    (tmp_path / "notebooks").mkdir()
    with pytest.raises(CellExecutionError, match="is not a sweep"):
        execute(tmp_path / "notebooks", {**os.environ, "LOGQUEUE_SWEEP": str(tmp_path)})
