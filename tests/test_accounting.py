"""Jepsen's accounting: unexpected, recovered, indeterminate and faults, from hand-built and real histories."""
from __future__ import annotations

import uuid

from baselines import registry
from baselines.base import BackendConfig
from baselines.servers import Topology
from experiments.checker import check, check_dir
from experiments.faults.proxy import ProxyHub
from experiments.recorder import read_jsonl
from experiments.scenarios.base import Params, RunContext
from tests.conftest import require_server
from tests.test_checker import ev, happy


def test_a_clean_history_has_nothing_to_account_for():
    s = check(happy("a", 1.0), "x", "y")
    assert (s["unexpected"], s["recovered"], s["indeterminate"]) == (0, 0, 0)
    assert s["faults"] == []


def test_an_unknown_enqueue_that_took_effect_is_recovered_not_unexpected():
    events = happy("a", 1.0) + [
        ev(1.0, "enqueue_unknown", "b", reason="TimeoutError"),
        ev(1.5, "deliver", "b", "w1", attempt=1), ev(1.6, "finish", "b", "w1", attempt=1),
        ev(1.7, "effect", "b", "w1", attempt=1),
        ev(1.8, "enqueue_unknown", "c", reason="ConnectionError"),  # never took effect
    ]
    s = check(events, "x", "y")
    assert s["indeterminate"] == 2 and s["recovered"] == 1 and s["unexpected"] == 0
    # Never confirmed: neither a job of the run nor lost, and not a phantom.
    assert s["jobs"] == 1 and s["lost"] == 0 and s["anomalies"]["phantom"] == []
    assert s["notes"] == []


def test_a_retried_unknown_enqueue_that_was_confirmed_is_a_job():
    events = [ev(0.9, "enqueue_unknown", "a", reason="timeout")] + happy("a", 1.0)
    s = check(events, "x", "y")
    assert s["indeterminate"] == 0 and s["recovered"] == 0 and s["jobs"] == 1 and s["completed"] == 1


def test_an_effect_for_a_job_never_attempted_is_unexpected():
    events = happy("a", 1.0) + [ev(2.0, "effect", "ghost", "w1"), ev(2.1, "finish", "spook", "w1")]
    s = check(events, "x", "y")
    assert s["unexpected"] == 1  # the finish without an effect is a phantom, not an unexpected effect
    assert s["anomalies"]["phantom"] == ["ghost", "spook"]


def test_duplicate_effects_of_a_recovered_job_count():
    events = [ev(1.0, "enqueue_unknown", "b", reason="timeout"),
              ev(1.5, "effect", "b", "w1"), ev(2.5, "effect", "b", "w2")]
    s = check(events, "x", "y")
    assert s["recovered"] == 1 and s["duplicate_effects"] == 1 and s["anomalies"]["duplicate-effect"] == ["b"]


def test_faults_has_one_entry_per_fault_start():
    events = happy("a", 1.0) + [
        ev(1.1, "fault_start", fault="partition", target="w1"), ev(1.2, "fault_end", fault="partition", target="w1"),
        ev(1.3, "fault_start", fault="sigkill", target="node-2"),  # never ended: still counted
    ]
    assert len(check(events, "x", "y")["faults"]) == 2


def test_the_producer_records_an_enqueue_it_could_not_confirm(tmp_path):
    """Reset the producer's link mid-load: the send that broke is ``enqueue_unknown``, its retry a ``produce``."""
    require_server("redis")
    params = Params(jobs=30, load_s=1.5, fault_s=1.0, drain_s=60.0)
    hub = ProxyHub()
    topology = registry.get("redis-list").topology()
    topology.start(tmp_path, hub)
    ctx = RunContext("redis-list", "accounting", params, tmp_path, topology, hub)
    try:
        ctx.start_load(ctx.payload)
        assert ctx.wait_until(lambda: len(ctx.history.produced) >= 5, 10.0)
        ctx.cut(ctx.link_names(clients=["producer"]), mode="reset")
        # The client retries a reset on its own for a while; keep resetting until the enqueue has failed
        # and then a reconnect has too (connect() sends no job: it must record nothing).
        assert ctx.wait_until(lambda: "BackendUnavailable" in (ctx.producer_error or ""), 60.0)
        ctx.heal(ctx.link_names(clients=["producer"]))
        assert ctx.producer_done.wait(30.0)
    finally:
        ctx.close()
        topology.close()
        hub.close()
    events = read_jsonl(tmp_path / "events.jsonl")
    unknown = [e for e in events if e["ev"] == "enqueue_unknown"]
    assert unknown and all(e["reason"] for e in unknown)
    assert len(unknown) == 1  # the enqueue the reset broke; the refused reconnects sent nothing
    produced = {e["job"]: e["t"] for e in events if e["ev"] == "produce"}
    assert all(produced[e["job"]] > e["t"] for e in unknown)  # each retried and then confirmed
    s = check_dir(tmp_path, "redis-list", "accounting")
    assert s["jobs"] == 30 and s["indeterminate"] == 0 and s["recovered"] == 0


def test_redeliveries_count_deliveries_beyond_the_first():
    events = happy("a", 1.0) + [
        ev(1.0, "produce", "b"),
        ev(1.1, "deliver", "b", "w1", attempt=1),
        ev(2.1, "deliver", "b", "w2", attempt=2),  # requeued: w1 was cut off
        ev(3.1, "deliver", "b", "w3", attempt=3),
        ev(3.2, "effect", "b", "w3", attempt=3),
        ev(4.0, "deliver", "ghost", "w1"), ev(4.5, "deliver", "ghost", "w2"),  # never attempted: not counted
    ]
    s = check(events, "x", "broker-partition")
    assert s["redeliveries"] == 2 and s["duplicate_executions"] == 0


def test_prefetch_reaches_the_producer_and_the_workers(tmp_path):
    hub = ProxyHub()
    topology = registry.get("rabbitmq-classic").topology()
    topology.start(tmp_path, hub)
    ctx = RunContext("rabbitmq-classic", "prefetch", Params(prefetch=4), tmp_path, topology, hub)
    try:
        assert ctx.config("producer").prefetch == 4
        worker = ctx.start_worker("w1")
        assert worker.proc.args[worker.proc.args.index("--prefetch") + 1] == "4"
    finally:
        ctx.close()
        topology.close()
        hub.close()


def test_completions_the_log_holds_count_and_a_missing_effect_is_still_lost(tmp_path, logqueue_cluster):
    """logqueue's accepted completion is the effect: one whose worker died before recording it
    is read back from the log at the end of the run; a job the log never completed stays lost."""
    backend = registry.get("logqueue")(BackendConfig(queue=f"t-acct-{uuid.uuid4().hex[:8]}", timeout_s=30.0))
    backend.connect()
    ctx = RunContext("logqueue", "accounting", Params(), tmp_path, topology=Topology(), hub=None)
    try:
        for job in ("recorded", "unrecorded", "missing"):
            ctx.log.produce(backend.enqueue(b"x", job_id=job))
        consumer = backend.consumer("w1")
        for _ in range(3):
            d = consumer.receive(10.0)
            ctx.log.record("deliver", job=d.job_id, worker="w1", attempt=d.attempt)
            ctx.log.record("finish", job=d.job_id, worker="w1", attempt=d.attempt)
            if d.job_id != "missing":  # "missing": the worker died before its ack, nothing took effect
                d.ack(b"result")
            if d.job_id == "recorded":  # "unrecorded": died between the accepted ack and its effect event
                ctx.log.record("effect", job=d.job_id, worker="w1", attempt=d.attempt)
        consumer.close()
        ctx.record_backend_effects(backend)
    finally:
        backend.close()
        ctx.log.close()
    s = check_dir(tmp_path, "logqueue", "accounting")
    assert s["anomalies"]["lost"] == ["missing"]
    assert (s["completed"], s["duplicate_effects"], s["unexpected"]) == (2, 0, 0)
    events = read_jsonl(tmp_path / "events.jsonl")
    (read_back,) = [e for e in events if e["ev"] == "effect" and e.get("source") == "logqueue"]
    finish = next(e for e in events if e["ev"] == "finish" and e["job"] == "unrecorded")
    assert (read_back["job"], read_back["worker"], read_back["t"]) == ("unrecorded", "w1", finish["t"])
    assert any("read back as effects: unrecorded" in note for note in s["notes"])
