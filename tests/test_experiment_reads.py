"""`python -m experiments reads` on real nodes: linearizable reads are never stale."""
from __future__ import annotations

import pytest

from experiments import reads

pytestmark = pytest.mark.slow


def test_linearizable_reads_never_lag_and_every_combination_is_measured():
    rows = reads.measure(3, seconds=0.5, readers=1)
    assert {(r["kind"], r["target"]) for r in rows} == {(k, t) for k in reads.KINDS for t in ("leader", "follower")}
    assert all(r["reads"] > 0 for r in rows), rows
    assert all(r["stale_reads"] == 0 and r["lag_max"] == 0 for r in rows if r["kind"] == "linearizable"), rows
    text = reads.table(rows)
    assert text.count("\n") == 1 + len(rows) and "| 3 | linearizable | follower |" in text


def test_bad_arguments_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        reads.main(["--nodes", "1"])
    assert exit_.value.code == 2
    assert "at least 2 nodes" in capsys.readouterr().err
