"""Scripted interaction tests of the Raft core (etcd's datadriven style).

Each file in tests/raft_scripts is a list of commands with the output each must print
(see tests/raft_script.py). `pytest tests/test_raft_scripts.py --rewrite` writes the
actual outputs back into the files; review the change with `git diff`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from raft_script import ScriptError, run_script

SCRIPTS = sorted((Path(__file__).parent / "raft_scripts").glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path, rewrite: bool) -> None:
    expected, actual = run_script(path)
    if rewrite:
        path.write_text(actual)
        return
    assert actual == expected, f"{path.name} differs; rerun with --rewrite and review the diff"


def test_a_wrong_expected_output_is_reported(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text("new 3\n----\nok\n\ncampaign 1\n----\n1: leader in term 1\n")
    expected, actual = run_script(script)
    assert expected != actual
    assert actual.endswith("campaign 1\n----\n1: candidate in term 1\n")
    script.write_text(actual)  # what --rewrite does
    assert run_script(script)[0] == actual


def test_comments_and_blank_lines_survive_a_rewrite(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    text = "# a comment\n\nnew 1\n----\n\n# another\ncampaign 1\n----\nstale\n\n# trailing\n"
    script.write_text(text)
    assert run_script(script)[1] == text.replace("new 1\n----\n", "new 1\n----\nok\n").replace(
        "stale", "1: leader in term 1"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("new 3\nstatus\n----\n", "s.txt: line 1: command 'new 3' is not followed by '----'"),
        ("new 3\n----\n\nfly 1\n----\n", "s.txt:4: fly 1: unknown command 'fly'"),
        ("new 3\n----\n\ntick 9\n----\n", "s.txt:4: tick 9: no node 9 (nodes: [1, 2, 3])"),
        ("new 3\n----\n\ndeliver 1-2\n----\n", "s.txt:4: deliver 1-2: a link is SRC->DST"),
        ("new 3\n----\n\npropose 1\n----\n", "s.txt:4: propose 1: propose needs at least 2 argument(s)"),
        ("new 3 max-inflight=0\n----\n", "s.txt:1: new 3 max-inflight=0: max_inflight must be at least 1"),
    ],
)
def test_script_mistakes_are_named_with_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    script = tmp_path / "s.txt"
    script.write_text(text)
    with pytest.raises(ScriptError) as err:
        run_script(script)
    assert str(err.value).startswith(message)


def test_figure7_followers_are_each_repaired_after_at_most_one_rejection() -> None:
    # Issue 18 (etcd's findConflictByTerm hints): counted on the actual run, not the
    # expected text, so a --rewrite cannot hide a regression.
    _, actual = run_script(Path(__file__).parent / "raft_scripts" / "figure7.txt")
    rejections = Counter(line.split("->")[0] for line in actual.splitlines() if "AppResp" in line and "rejected" in line)
    assert rejections and max(rejections.values()) <= 1, rejections
