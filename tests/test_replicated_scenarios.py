"""leader-crash on each replicated baseline's own private cluster, end to end through the runner.

One small run per backend: the runner starts the cluster, the scenario SIGKILLs the node
the system names as the queue's leader (the fault event names it as the system does), a
new leader takes over, the run is rechecked from its events, and no broker process is
left behind.
"""
from __future__ import annotations

import json
import re

import pytest

from baselines import registry
from experiments.checker import recheck
from experiments.runner import main
from conftest import RABBITMQ_CLUSTERS
from test_private_clusters import processes_under

pytestmark = RABBITMQ_CLUSTERS

BACKENDS = ["rabbitmq-quorum-cluster", "nats-jetstream-cluster", "redis-sentinel"]
SMALL = ["--quick", "--jobs", "24", "--load-s", "2", "--fault-start-s", "0.6", "--drain-s", "60"]
# How each system names its nodes (see baselines/servers): the fault's target must be one of these.
NODE_NAME = {
    "rabbitmq-quorum-cluster": r"lq[0-9a-f]{6}-[123]@(localhost|10\.\d+\.\d+\.\d+)",  # on loopback, in a namespace
    "nats-jetstream-cluster": r"lq[0-9a-f]{6}-[123]",
    "redis-sentinel": r"redis-[123]",
}
# The promise of a majority-replicated confirm: one crash loses no confirmed job. Redis's
# asynchronous replication makes no such promise, so its losses are reported, not asserted.
NO_LOSS = {"rabbitmq-quorum-cluster", "nats-jetstream-cluster"}


@pytest.fixture(scope="module")
def leader_crash(tmp_path_factory):
    unavailable = [r for r in (registry.get(b).probe() for b in BACKENDS) if r]
    if unavailable:
        pytest.skip(unavailable[0])
    out = tmp_path_factory.mktemp("replicated")
    code = main(["--backends", ",".join(BACKENDS), "--scenarios", "leader-crash", "--out", str(out), *SMALL])
    return out, code


@pytest.mark.parametrize("backend", BACKENDS)
def test_leader_crash_kills_the_reported_leader_and_fails_over(leader_crash, backend):
    out, code = leader_crash
    assert code == 0
    run = out / backend / "leader-crash"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok", summary["notes"]
    assert recheck(run) == []
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    [fault] = [e for e in events if e["ev"] == "fault_start"]
    assert re.fullmatch(NODE_NAME[backend], fault["target"])
    [failover] = [e["text"] for e in events if e["ev"] == "note" and e["text"].startswith("leader ")]
    killed, successor = re.match(r"leader (\S+) killed; (\S+) leads after", failover).groups()
    assert killed == fault["target"] and successor != killed
    assert any(re.fullmatch(r"the cluster started in \d+\.\d s", n) for n in summary["notes"])
    assert summary["completed"] == summary["jobs"] - summary["lost"]
    assert summary["confirms"]["replicas"] == 3 and summary["confirms"]["confirmed_on"] == 2
    if backend in NO_LOSS:
        assert summary["lost"] == 0


def test_no_broker_process_is_left_behind(leader_crash):
    out, _ = leader_crash
    assert processes_under(out) == []
