"""Scripted interaction tests of the Raft core (etcd's datadriven style).

Each file in tests/raft_scripts is a list of commands with the output each must print
(see tests/raft_script.py). `pytest tests/test_raft_scripts.py --rewrite` writes the
actual outputs back into the files; review the change with `git diff`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from raft_script import run_script

SCRIPTS = sorted((Path(__file__).parent / "raft_scripts").glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path, rewrite: bool) -> None:
    expected, actual = run_script(path)
    if rewrite:
        path.write_text(actual)
        return
    assert actual == expected, f"{path.name} differs; rerun with --rewrite and review the diff"
