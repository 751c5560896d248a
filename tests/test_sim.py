"""The deterministic simulator: many seeds hold, injected bugs are caught and replay."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections import defaultdict

import pytest

from logqueue.sim.__main__ import main as sim_main
from logqueue.sim.bugs import BUGS


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logqueue.sim", *args], capture_output=True, text=True, timeout=600)


def test_300_seeds_of_5_nodes_hold_every_guarantee_and_liveness():
    proc = run_cli(["--seeds", "300", "--nodes", "5", "--ticks", "3000"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "VIOLATION" not in proc.stdout
    summary = re.search(r"elections (\d+), entries committed (\d+), faults injected (\d+)", proc.stdout)
    elections, committed, faults = map(int, summary.groups())
    # The run did real work under real faults, not an idle cluster.
    assert elections > 300 and committed > 10_000 and faults > 10_000


def test_three_node_clusters_hold_too():
    proc = run_cli(["--seeds", "60", "--nodes", "3", "--start", "1000"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_injected_bug_is_caught_and_its_replay_reproduces_it(bug):
    proc = run_cli(["--seeds", "500", "--nodes", "5", "--inject-bug", bug])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    violation = next(line for line in proc.stdout.splitlines() if line.startswith("VIOLATION"))
    replay = next(line for line in proc.stdout.splitlines() if line.startswith("replay: "))
    argv = shlex.split(replay.removeprefix("replay: "))
    assert argv[:3] == ["python", "-m", "logqueue.sim"] and "--inject-bug" in argv
    again = run_cli(argv[3:])
    assert again.returncode == 1
    assert violation in again.stdout.splitlines()


def test_bad_arguments_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as exc:
        sim_main(["--seeds", "0"])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_trace_format(tmp_path):
    trace = tmp_path / "trace.jsonl"
    assert sim_main(["--seeds", "3", "--start", "7", "--nodes", "5", "--trace", str(trace)]) == 0
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    kinds = {e["ev"] for e in events}
    assert {"leader", "apply", "crash", "restart"} <= kinds
    for e in events:
        assert {"seed", "tick", "node", "ev"} <= e.keys()
        if e["ev"] == "leader":
            assert isinstance(e["term"], int) and isinstance(e["last_index"], int)
        if e["ev"] == "apply":
            assert isinstance(e["index"], int) and isinstance(e["term"], int)
            assert re.fullmatch(r"[0-9a-f]{64}", e["digest"])
        if e["ev"] == "snapshot_restore":
            assert isinstance(e["index"], int)
    # Applying is in order per node; after a restart it starts from the snapshot or 1.
    next_index: dict[tuple[int, int], int] = defaultdict(lambda: 1)
    applied: dict[tuple[int, int], tuple[int, str]] = {}
    for e in events:
        key = (e["seed"], e["node"])
        if e["ev"] == "restart":
            next_index[key] = 1
        elif e["ev"] == "snapshot_restore":
            next_index[key] = e["index"] + 1
        elif e["ev"] == "apply":
            assert e["index"] == next_index[key], e
            next_index[key] += 1
            # Every node applies the same entry at the same index (State Machine Safety).
            seen = applied.setdefault((e["seed"], e["index"]), (e["term"], e["digest"]))
            assert seen == (e["term"], e["digest"])
