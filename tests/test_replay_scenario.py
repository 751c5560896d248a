"""``replay`` end to end: logqueue's log gives a new reader every job back, a queue gives none."""
from __future__ import annotations

import json

from experiments.runner import main


def test_a_new_reader_gets_the_whole_history_back_from_the_log_and_nothing_from_a_queue(tmp_path):
    from conftest import require_server

    require_server("redis")
    code = main(["--backends", "logqueue,redis-streams", "--scenarios", "replay", "--quick", "--jobs", "12",
                 "--out", str(tmp_path)])
    assert code == 0
    log = json.loads((tmp_path / "logqueue" / "replay" / "summary.json").read_text())
    queue = json.loads((tmp_path / "redis-streams" / "replay" / "summary.json").read_text())
    assert log["status"] == queue["status"] == "ok"
    assert log["jobs"] == 12 and log["replayed"] == 12
    assert queue["jobs"] == 12 and queue["replayed"] == 0
