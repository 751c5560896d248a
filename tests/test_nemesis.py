"""The nemesis: its seeded schedule, shared links, the catalogue per topology, and real runs."""
from __future__ import annotations

import json
import random

import pytest

from baselines import registry
from baselines.servers import Topology
from experiments.checker import recheck
from experiments.recorder import read_jsonl
from experiments.runner import main
from experiments.scenarios.base import Params
from experiments.scenarios.nemesis import (BROKER_FAULTS, CLUSTER_FAULTS, EVENT, WORKER_FAULTS, Lane, Links, Nemesis,
                                           server_faults)
from tests.conftest import require_server


def draws(lane: Lane, n: int = 20) -> list:
    return [(lane.rng.choice(lane.kinds), lane.rng.uniform(0, 1)) for _ in range(n)]


def test_each_lane_draws_a_schedule_of_its_own_from_the_seed():
    assert draws(Lane("worker", WORKER_FAULTS, 7)) == draws(Lane("worker", WORKER_FAULTS, 7))
    assert draws(Lane("worker", WORKER_FAULTS, 7)) != draws(Lane("worker", WORKER_FAULTS, 8))
    assert draws(Lane("worker", WORKER_FAULTS, 7)) != draws(Lane("server", WORKER_FAULTS, 7))


def test_every_fault_lasts_past_its_detector():
    p = Params(heartbeat_s=1.0, timeout_s=3.0)
    nemesis, rng = Nemesis(), random.Random(0)
    for _ in range(200):
        assert nemesis.duration("worker-partition", p, rng) >= 3 * p.heartbeat_s + p.timeout_s + 1
        assert nemesis.duration("leader-partition", p, rng) >= 3 * p.heartbeat_s + p.timeout_s + 1
        assert nemesis.duration("worker-pause", p, rng) > p.timeout_s + 1  # past its lease
        assert nemesis.duration("leader-kill", p, rng) >= p.timeout_s
    assert set(EVENT) == set(WORKER_FAULTS) | set(CLUSTER_FAULTS) | set(BROKER_FAULTS)


def test_the_load_has_the_usual_rate_over_nemesis_s():
    p = Nemesis().adjust(Params(jobs=200, load_s=8.0, nemesis_s=60.0), set())
    assert (p.load_s, p.jobs) == (60.0, 1500)
    assert Nemesis().adjust(Params(jobs=10, nemesis_s=60.0), {"jobs"}).jobs == 10  # an explicit --jobs stays


def test_server_faults_are_those_the_topology_supports():
    assert server_faults(registry.get("logqueue").topology()) == CLUSTER_FAULTS
    assert server_faults(registry.get("redis-streams").topology()) == BROKER_FAULTS
    # The user's own nodes cannot be killed: only the clients' links can be cut.
    external = registry.get("logqueue").topology(external={"logqueue": "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"})
    assert server_faults(external) == BROKER_FAULTS
    nodes_it_may_not_touch = Topology(node_faults="the nodes are not ours")
    nodes_it_may_not_touch.nodes = [1, 2, 3]
    assert server_faults(nodes_it_may_not_touch) == BROKER_FAULTS


class RecordingContext:
    def __init__(self):
        self.calls = []

    def cut(self, links, mode="blackhole"):
        self.calls.append(("cut", sorted(links)))

    def heal(self, links):
        self.calls.append(("heal", sorted(links)))


def test_overlapping_faults_heal_a_shared_link_only_when_both_ended():
    ctx = RecordingContext()
    links = Links(ctx)
    links.cut(["w1->redis"])  # a worker partition
    links.cut(["w1->redis", "w2->redis", "producer->redis"])  # then the broker's
    links.heal(["w1->redis"])  # the worker partition ends: w1 stays cut off with everyone
    links.heal(["w1->redis", "w2->redis", "producer->redis"])
    assert ctx.calls[2:] == [("heal", []), ("heal", ["producer->redis", "w1->redis", "w2->redis"])]


def run_nemesis(tmp_path, backend: str, seed: int) -> tuple[dict, list[dict]]:
    out = tmp_path / "out"
    code = main(["--backends", backend, "--scenarios", "nemesis", "--nemesis-s", "16", "--heartbeat-s", "0.5",
                 "--timeout-s", "1.5", "--fault-start-s", "1", "--drain-s", "60", "--seed", str(seed),
                 "--out", str(out)])
    run = out / backend / "nemesis"
    assert code == 0, (run / "events.jsonl").read_text()[-2000:]
    assert recheck(run) == []
    return json.loads((run / "summary.json").read_text()), read_jsonl(run / "events.jsonl")


def intervals(events: list[dict], kinds) -> list[tuple[float, float]]:
    """(start, end) of each fault of ``kinds``, paired by fault and target."""
    starts, out = {}, []
    for e in events:
        if e["ev"] == "fault_start" and e["kind"] in kinds:
            starts[(e["fault"], e["target"])] = e["t"]
        elif e["ev"] == "fault_end" and (e["fault"], e["target"]) in starts:
            out.append((starts.pop((e["fault"], e["target"])), e["t"]))
    return sorted(out)


def assert_within_the_load(events: list[dict], load_s: float = 16.0) -> None:
    """No fault outlasts the load (each ends a little after its drawn length, never much)."""
    first = min(e["t"] for e in events if e["ev"] == "produce")
    assert all(e["t"] < first + load_s + 2.0 for e in events if e["ev"] == "fault_end")


def assert_one_at_a_time(events: list[dict], kinds) -> None:
    spans = intervals(events, kinds)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans


@pytest.mark.slow
def test_logqueue_survives_the_nemesis(tmp_path):
    s, events = run_nemesis(tmp_path, "logqueue", seed=1)
    assert s["status"] == "ok" and s["jobs"] == 400  # 25 jobs/s (200 over 8 s) for 16 s
    assert (s["lost"], s["duplicate_effects"], s["unexpected"]) == (0, 0, 0)
    kinds = {e["kind"] for e in events if e["ev"] == "fault_start"}
    assert len(s["faults"]) >= 3 and kinds <= set(WORKER_FAULTS) | set(CLUSTER_FAULTS)
    assert kinds & set(CLUSTER_FAULTS) and kinds & set(WORKER_FAULTS)
    assert all(f["end"] is not None for f in s["faults"])  # every fault was healed
    assert_one_at_a_time(events, CLUSTER_FAULTS)  # never more than one node of three
    assert_within_the_load(events)
    assert_one_at_a_time(events, WORKER_FAULTS)
    assert_within_the_load(events)


@pytest.mark.slow
def test_a_broker_backend_takes_the_nemesis(tmp_path):
    require_server("redis")
    s, events = run_nemesis(tmp_path, "redis-streams", seed=1)
    assert s["status"] == "ok" and s["unexpected"] == 0
    assert len(s["faults"]) >= 3 and all(f["end"] is not None for f in s["faults"])
    assert {e["kind"] for e in events if e["ev"] == "fault_start"} <= set(WORKER_FAULTS) | set(BROKER_FAULTS)
    assert_one_at_a_time(events, WORKER_FAULTS)
    assert_within_the_load(events)
