"""What a backend class says about its servers and node faults, and how the runner uses it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from baselines import get
from baselines.servers.logqueue_cluster import ClusterTopology, ExternalClusterTopology
from baselines.servers.private import PrivateServerTopology
from baselines.servers.topology import Topology
from experiments.runner import run_one
from experiments.scenarios.base import QUICK


def test_shared_servers_are_the_backends_own_and_take_no_node_faults(monkeypatch):
    monkeypatch.setenv("LOGQUEUE_REDIS_URL", "redis://10.1.2.3:6380/0")
    topology = get("redis-streams").topology()
    assert type(topology) is Topology and topology.nodes == []
    assert topology.servers() == {"redis": "10.1.2.3:6380"}
    assert topology.client_env({"redis": "127.0.0.1:9"}) == {"LOGQUEUE_REDIS_URL": "127.0.0.1:9"}
    assert "shared servers (redis)" in topology.node_faults


def test_private_servers_where_the_runner_can_start_them():
    assert isinstance(get("redis-list").topology(private=True), PrivateServerTopology)
    assert isinstance(get("nats-jetstream").topology(private=True), PrivateServerTopology)
    rabbit = get("rabbitmq-quorum").topology(private=True)
    assert rabbit.nodes == [] and rabbit.node_faults.startswith("rabbitmq-quorum needs RabbitMQ")


def test_logqueue_runs_its_own_cluster_or_the_users_nodes_without_node_faults():
    cls = get("logqueue")
    assert cls.replicas == 3 and cls.keeps_history
    own = cls.topology()
    assert isinstance(own, ClusterTopology) and own.nodes == [1, 2, 3] and own.node_faults is None
    external = cls.topology(external={"logqueue": "10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001"})
    assert isinstance(external, ExternalClusterTopology) and external.nodes == []
    assert "10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001 are not this runner's processes" in external.node_faults


def summary_of(out, backend, scenario, **kw) -> dict:
    run_one(backend, scenario, QUICK, set(), out, lambda done, total: None, **kw)
    return json.loads((out / backend / scenario / "summary.json").read_text())


def test_node_fault_scenarios_are_na_with_the_topologys_line(tmp_path):
    # No server is needed: each is decided from the class and its topology before anything starts.
    s = summary_of(tmp_path, "logqueue", "leader-crash", logqueue_cluster="10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001")
    assert s["status"] == "n/a" and "are not this runner's processes" in s["reason"]
    s = summary_of(tmp_path, "rabbitmq-classic", "broker-restart")
    assert s["status"] == "n/a" and s["reason"].startswith("rabbitmq-classic needs RabbitMQ")
    s = summary_of(tmp_path, "redis-list", "follower-lag")
    assert s["status"] == "n/a" and "no follower to fall behind" in s["reason"]


def test_smoke_starts_the_local_servers_a_backend_asks_for(tmp_path):
    # logqueue's local_servers: no cluster answers at the default addresses here, so the
    # smoke command starts one and points the backend and its worker process at it.
    env = {k: v for k, v in os.environ.items() if k != "LOGQUEUE_CLUSTER"}
    done = subprocess.run([sys.executable, "-m", "experiments", "smoke", "--backends", "logqueue", "--jobs", "10",
                           "--json"], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    (row,) = json.loads(done.stdout)
    assert row["status"] == "ok" and row["completed"] == 10, row
