"""One ``experiments run`` starts each backend's topology once and makes it whole between its cells."""
from __future__ import annotations

import json

from baselines import registry
from baselines.servers.logqueue_cluster import ClusterTopology
from experiments import scenarios
from experiments.clusterlog import CLUSTER_FILE
from experiments.runner import main
from experiments.scenarios.leader_crash import LeaderCrash
from experiments.topologies import Topologies
from test_private_clusters import processes_under

SMALL = ["--quick", "--jobs", "16", "--load-s", "1.5", "--fault-start-s", "0.5", "--fault-s", "2", "--drain-s", "40"]


def summary(out, backend, scenario) -> dict:
    return json.loads((out / backend / scenario / "summary.json").read_text())


def test_a_run_starts_the_cluster_once_and_restarts_the_node_a_cell_left_dead(tmp_path, monkeypatch):
    starts = []
    start = ClusterTopology.start

    def counted_start(self, run_dir, links=None):
        starts.append(run_dir)
        start(self, run_dir, links)

    def broken_heal(self, ctx):  # the cell fails with the leader it killed still down
        raise RuntimeError("the heal broke")

    monkeypatch.setattr(ClusterTopology, "start", counted_start)
    monkeypatch.setattr(LeaderCrash, "heal", broken_heal)
    code = main(["--backends", "logqueue", "--scenarios", "leader-crash,consumer-crash", "--out", str(tmp_path), *SMALL])
    assert code == 1  # the broken cell
    assert starts == [tmp_path / ".servers" / "logqueue"]
    crashed = summary(tmp_path, "logqueue", "leader-crash")
    assert crashed["status"] == "error" and "the heal broke" in crashed["reason"]
    [killed] = [f["target"] for f in crashed["faults"]]
    after = summary(tmp_path, "logqueue", "consumer-crash")
    assert after["status"] == "ok" and after["lost"] == 0, after.get("reason")
    assert any(n.startswith("the cluster started in ") for n in after["notes"])
    assert (f"the cluster was started once for the run, for logqueue / leader-crash; this cell reuses it, after "
            f"the runner restarted {killed} (down after logqueue / leader-crash)") in after["notes"]
    # The next cell began on three live nodes: its timeline's first poll after its setup has every node answering.
    run = tmp_path / "logqueue" / "consumer-crash"
    began = json.loads((run / "events.jsonl").open().readline())["t"]
    polls = [p for p in map(json.loads, (run / CLUSTER_FILE).open()) if p["t"] >= began]
    first = [p for p in polls if p["t"] == polls[0]["t"]]
    assert sorted(p["node"] for p in first) == [1, 2, 3] and "unreachable" not in {p["role"] for p in first}
    assert processes_under(tmp_path) == []  # stopped after the backend's last cell


def test_a_cell_gets_a_private_server_only_where_the_default_is_the_shared_ones(tmp_path):
    topologies = Topologies(tmp_path, {})
    restart, crash = scenarios.get("broker-restart"), scenarios.get("consumer-crash")
    assert topologies.key(registry.get("redis-list"), crash) == ("redis-list", False)
    assert topologies.key(registry.get("redis-list"), restart) == ("redis-list", True)
    for clustered in ("logqueue", "rabbitmq-quorum-cluster", "nats-jetstream-cluster", "redis-sentinel"):
        assert topologies.key(registry.get(clustered), restart) == (clustered, False)  # one cluster for all
