"""The storage micro-benchmark runs and reports every policy (figures are not asserted)."""
from __future__ import annotations

import pytest

from logqueue.storage.bench import main


def test_bench_reports_each_policy(tmp_path, capsys):
    assert main(["--entries", "300", "--batch", "50", "--payload-bytes", "10", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for row in ("memory", "disk always", "disk batch", "disk off"):
        assert row in out
    assert list(tmp_path.iterdir()) == []  # its data dirs are removed


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--batch", "0"])
    assert exc.value.code == 2 and "--batch: must be positive, not 0" in capsys.readouterr().err
