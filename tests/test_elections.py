"""The election-timing experiment: the simulator's and the real nodes' versions (small, bounded runs)."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from experiments import elections as real
from experiments import sim_elections as sim
from experiments.election_results import summarize
from logqueue.raft import Role
from logqueue.sim.elections import PAPER, ElectionCluster


def run_sim(tmp_path, *args: str, name: str = "sim.json") -> dict:
    out = tmp_path / name
    assert sim.main([*args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def check_shape(result: dict, source: str, nodes: int, ranges: list[str], trials: int) -> None:
    assert result["experiment"] == sim.EXPERIMENT and result["source"].startswith(source)
    assert result["nodes"] == nodes and result["trials_per_range"] == trials
    assert [r["range"] for r in result["ranges"]] == ranges
    for r in result["ranges"]:
        assert len(r["trials"]) == trials == r["summary"]["trials"]
        assert r["heartbeat_ms"] == r["low_ms"] // 2  # as in the paper
        for t in r["trials"]:
            assert t["terms"] >= 1
            # A follower times out at least low - heartbeat after the crash (it heard the last
            # heartbeat at most one interval before it).
            assert t["ms"] is None or t["ms"] >= r["low_ms"] - r["heartbeat_ms"] - 1


def test_simulator_shows_split_votes_without_randomness_and_none_above_a_second_with_it(tmp_path):
    result = run_sim(tmp_path, "--ranges", "150-150,150-300", "--trials", "40", "--seed", "3", "--setup", "logqueue",
                     "--delay-ms", "5-10")
    check_shape(result, "simulator", 5, ["150-150", "150-300"], 40)
    fixed, wide = (r["summary"] for r in result["ranges"])
    assert fixed["split_vote_trials"] > 0
    assert wide["timed_out"] == 0 and wide["max_ms"] < 1000
    assert fixed["p50_ms"] > wide["p50_ms"]


def test_simulator_is_deterministic_per_seed_and_the_setup_chooses_the_core_configuration(tmp_path):
    args = ("--ranges", "150-200", "--trials", "10", "--seed", "11")
    a = run_sim(tmp_path, *args, name="a.json")
    b = run_sim(tmp_path, *args, name="b.json")
    assert a["ranges"] == b["ranges"]
    ours = run_sim(tmp_path, *args, "--setup", "logqueue", name="logqueue.json")
    paper = {"setup": "paper", "pre_vote": False, "check_quorum": False, "step_down_restarts_timer": False,
             "staggered_logs": True}
    assert paper.items() <= a["settings"].items()  # the default is the paper's setup
    assert {"pre_vote": True, "check_quorum": True, "step_down_restarts_timer": True,
            "staggered_logs": False}.items() <= ours["settings"].items()


def test_the_paper_setup_crashes_the_leader_uniformly_within_its_heartbeat_interval():
    hb = 75
    cluster = ElectionCluster(5, (150, 200), hb, (1, 14), 10_000, random.Random(4), PAPER)
    crashes = [cluster.trial()["crash_ms"] for _ in range(120)]
    assert all(0 <= c < hb for c in crashes)
    # Uniform: each third of the interval gets a fair share (expected 40 of 120 each).
    thirds = [sum(1 for c in crashes if k * hb / 3 <= c < (k + 1) * hb / 3) for k in range(3)]
    assert min(thirds) >= 25, thirds


def test_the_paper_setup_leaves_the_followers_logs_of_different_lengths_while_they_follow():
    cluster = ElectionCluster(5, (150, 155), 75, (1, 14), 10_000, random.Random(2), PAPER)
    lead = cluster.settle(limit_ticks=10_000)
    cluster._stagger_logs(lead)
    for _ in range(3 * 75):  # heartbeats go on, the withheld entries do not
        cluster.step()
    followers = [n.raft for n in cluster.members.values() if n is not lead]
    assert lead.raft.role is Role.LEADER and all(f.leader_id == lead.id for f in followers)
    lengths = sorted(f.last_index for f in followers)
    assert lengths == list(range(lengths[0], lengths[0] + 4)) and lead.raft.last_index == lengths[-1]


def test_trials_past_max_ms_are_timed_out_and_count_as_slowest():
    summary = summarize([{"ms": 100.0, "terms": 1}, {"ms": None, "terms": 9}])
    assert summary["timed_out"] == 1 and summary["elected"] == 1
    assert summary["p50_ms"] == 100.0 and summary["max_ms"] is None
    assert summary["split_vote_trials"] == 1


@pytest.mark.parametrize("args, message", [
    (["--ranges", "300-150"], "bad range '300-150'"),
    (["--ranges", "150-300", "--trials", "0"], "--trials must be at least 1"),
    (["--ranges", "150-300", "--heartbeat-ms", "200"], "--heartbeat-ms must be positive"),
    (["--ranges", "150-300", "--delay-ms", "x"], "--delay-ms"),
])
def test_simulator_bad_arguments_are_one_line_errors(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "experiments", "sim-elections", "--out", str(tmp_path / "x.json"), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_cluster_whose_candidates_stay_in_step_is_a_one_line_error(tmp_path):
    # The paper's setup with a fixed timeout: no candidate ever gets ahead of the others.
    proc = subprocess.run([sys.executable, "-m", "experiments", "sim-elections", "--ranges", "150-150", "--trials", "1",
                           "--seed", "1", "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no stable leader" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_rejects_a_file_that_is_not_an_election_result(tmp_path):
    other = tmp_path / "other.json"
    other.write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "experiments", "elections", "--ranges", "150-300", "--trials", "1",
                           "--out", str(tmp_path / "x.json"), "--compare", str(other)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not an election-timing result" in proc.stderr and "Traceback" not in proc.stderr


def test_help_of_both_commands_explains_the_measurement():
    for cmd in (["experiments", "sim-elections"], ["experiments", "elections"]):
        proc = subprocess.run([sys.executable, "-m", *cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0
        assert "heartbeat" in proc.stdout and "--ranges" in proc.stdout and "--compare" in proc.stdout


def test_real_nodes_small_run_measures_from_the_logs_and_plots_beside_the_simulator(tmp_path):
    simulated = run_sim(tmp_path, "--nodes", "3", "--ranges", "150-300", "--trials", "20", "--seed", "5")
    out, plot = tmp_path / "real.json", tmp_path / "both.png"
    nodes_dir = tmp_path / "nodes"
    code = real.main(["--nodes", "3", "--ranges", "150-300", "--trials", "2", "--max-ms", "5000", "--out", str(out),
                      "--compare", str(tmp_path / "sim.json"), "--plot", str(plot), "--seed", "1", "--setup", "paper",
                      "--keep-dir", str(nodes_dir)])
    assert code == 0
    result = json.loads(out.read_text())
    check_shape(result, "real nodes (paper setup)", 3, ["150-300"], 2)
    assert result["settings"]["tick_ms"] == 1
    # The same fields as the simulator's paper setup, except the logs, which live nodes keep caught up.
    assert {"setup": "paper", "pre_vote": False, "check_quorum": False, "step_down_restarts_timer": False,
            "staggered_logs": False}.items() <= result["settings"].items()
    # Every node, the restarted ones too, ran the paper's variant (each start logs its variant).
    logs = sorted((nodes_dir / "range-150-300").glob("node-*.log"))
    assert len(logs) == 3
    for log in logs:
        starts = re.findall(r"listening on .*raft variant (\w+)\)", log.read_text())
        assert starts and set(starts) == {"paper"}, (log, starts)
    for t in result["ranges"][0]["trials"]:
        assert t["by"] == "log"  # the precise measurement, not the poll's
        # Detection within the highest timeout, up to two split-vote rounds, plus 2 s for a loaded machine.
        assert t["ms"] is not None and t["ms"] < 3 * 300 + 2000
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert simulated["ranges"][0]["summary"]["timed_out"] == 0


def test_real_nodes_with_a_link_delay_take_the_extra_round_trips(tmp_path):
    out = tmp_path / "delayed.json"
    delay = 4
    assert real.main(["--nodes", "3", "--ranges", "100-150", "--trials", "2", "--link-delay-ms", str(delay),
                      "--out", str(out), "--seed", "2", "--setup", "logqueue"]) == 0
    result = json.loads(out.read_text())
    check_shape(result, "real nodes (logqueue setup, +4 ms", 3, ["100-150"], 2)
    assert result["settings"]["link_delay_ms"] == [delay, delay]
    assert {"setup": "logqueue", "pre_vote": True, "check_quorum": True,
            "step_down_restarts_timer": True}.items() <= result["settings"].items()
    for t in result["ranges"][0]["trials"]:
        # A follower hears the last heartbeat `delay` after it was sent and times out no
        # sooner than low - heartbeat after the crash; then a pre-vote and a vote round trip.
        assert t["ms"] is not None and t["ms"] >= 100 - 50 + 5 * delay - 1


def test_the_paper_setup_puts_the_150_155_median_near_the_papers_and_the_logqueue_setup_far_above(tmp_path):
    """Figure 16's 150-155 ms median is 287 ms; the paper's setup gives ~255 ms over 1000
    trials, the core as logqueue nodes run it (PreVote, timer restarted, equal logs) ~480 ms.
    60 trials' medians spread (175-300 ms over seeds 1-8): the band is wide, the seed fixed."""
    args = ("--ranges", "150-155", "--trials", "60", "--seed", "5")
    paper = run_sim(tmp_path, *args, name="paper.json")["ranges"][0]["summary"]
    ours = run_sim(tmp_path, *args, "--setup", "logqueue", "--delay-ms", "5-10", name="ours.json")["ranges"][0]["summary"]
    assert 0.7 * 287 <= paper["p50_ms"] <= 1.3 * 287, paper
    assert ours["p50_ms"] > max(paper["p50_ms"], 1.2 * 287), ours


def test_a_link_delay_is_a_constant_or_a_uniform_range():
    from experiments.faults.proxy import Mode

    assert real.parse_link_delay("0") is None
    assert real.parse_link_delay("7") == Mode("delay", 7.0)
    assert real.parse_link_delay("1-14") == Mode("delay", 7.5, 6.5)
    for bad in ("x", "-3", "14-1"):
        with pytest.raises(ValueError):
            real.parse_link_delay(bad)
