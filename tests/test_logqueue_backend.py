"""What the ``logqueue`` Backend adds to the shared contract (tests/test_baselines_contract.py):
cluster addressing, one-line unavailability, idempotent enqueues by job id, the job
envelope, fenced acks, prefetch, generations on delete. Real 3-node cluster (session).
"""
from __future__ import annotations

import socket
import time
import uuid

import pytest

from baselines.base import AckError, BackendConfig, BackendUnavailable
from baselines.logqueue import START_HINT, LogqueueBackend, unwrap, wrap
from logqueue.client import Client, Producer


@pytest.fixture
def addresses(logqueue_cluster) -> str:
    return ",".join(logqueue_cluster.addresses.values())


@pytest.fixture
def backends(addresses):
    """``open_(**knobs)`` -> a connected backend on a fresh queue (or ``queue=``); closed after."""
    opened = []

    def open_(queue: str | None = None, **knobs) -> LogqueueBackend:
        b = LogqueueBackend(BackendConfig(queue=queue or f"t-lq-{uuid.uuid4().hex[:10]}", **knobs))
        b.connect()
        opened.append(b)
        return b

    yield open_
    for b in opened:
        b.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_one_line_naming_it_and_how_to_start_one():
    address = f"127.0.0.1:{_closed_port()}"
    backend = LogqueueBackend(BackendConfig(queue="q", addresses={"logqueue": address}))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        backend.connect()
    message = str(err.value)
    assert "\n" not in message and address in message and START_HINT in message
    assert time.monotonic() - started < 5
    backend.close()


def test_config_address_wins_over_the_environment(addresses, monkeypatch):
    monkeypatch.setenv("LOGQUEUE_CLUSTER", f"127.0.0.1:{_closed_port()}")
    backend = LogqueueBackend(BackendConfig(queue=f"t-{uuid.uuid4().hex[:8]}", addresses={"logqueue": addresses}))
    backend.connect()
    try:
        assert backend.enqueue(b"x")
    finally:
        backend.close()


def test_a_retried_job_id_is_one_job_even_through_a_new_backend(backends, addresses):
    first = backends()
    again = backends(queue=first.config.queue)
    assert first.enqueue(b"payload", job_id="j-1") == again.enqueue(b"payload", job_id="j-1") == "j-1"
    first.enqueue(b"payload", job_id="j-2")
    with Client(addresses) as c:
        assert c.query("stats", queue=first.log_queue, group="workers")["enqueued"] == 2


def test_jobs_without_the_envelope_are_delivered_with_their_offset_as_id(backends, addresses):
    b = backends()
    with Client(addresses) as c:
        Producer(c, b.log_queue).enqueue_many([b"plain", wrap("named", b"wrapped")])
    consumer = b.consumer("w")
    first, second = consumer.receive(5), consumer.receive(5)
    assert (first.job_id, first.payload) == ("0", b"plain")
    assert (second.job_id, second.payload) == ("named", b"wrapped")
    first.ack()
    second.ack()
    consumer.close()
    assert unwrap(b"\x00lqjob\x01garbage", 7) == ("7", b"\x00lqjob\x01garbage")


def test_late_ack_and_heartbeat_of_a_lost_lease_say_fenced(backends):
    b = backends(timeout_s=0.5)
    job = b.enqueue(b"slow")
    c1, c2 = b.consumer("w1"), b.consumer("w2")
    d1 = c1.receive(5)
    d2 = c2.receive(10)
    assert d2.job_id == job and d2.attempt == 2
    for settle in (d1.heartbeat, d1.ack):
        with pytest.raises(AckError) as err:
            settle()
        assert str(err.value).startswith("fenced:")
    d2.ack(b"result")
    c1.close()
    c2.close()


def test_prefetch_claims_a_batch_and_every_job_is_delivered_once(backends, addresses):
    b = backends(prefetch=50)
    ids = b.enqueue_many([f"job-{i}".encode() for i in range(300)], window=100)
    assert len(set(ids)) == 300
    consumer = b.consumer("w")
    seen = []
    while len(seen) < 300:
        d = consumer.receive(5)
        assert d is not None
        seen.append(d.job_id)
        d.ack(d.payload)
    consumer.close()
    assert sorted(seen) == sorted(ids)
    with Client(addresses) as c:
        s = c.query("stats", queue=b.log_queue, group="workers")
    assert (s["completed"], s["redelivered"], s["in_flight"]) == (300, 0, 0)


def test_delete_starts_a_new_generation_and_the_log_keeps_the_old_one(backends, addresses):
    b = backends()
    b.enqueue(b"old")
    old_queue = b.log_queue
    b.delete()
    assert b.log_queue != old_queue
    fresh = backends(queue=b.config.queue)
    assert fresh.log_queue == b.log_queue
    assert fresh.consumer("w").receive(0.3) is None
    fresh.enqueue(b"new")
    d = fresh.consumer("w2").receive(5)
    assert d.payload == b"new"
    d.ack()
    with Client(addresses) as c:
        ((_, data),) = c.query("read", queue=old_queue, from_offset=0, max_count=10)
    assert unwrap(bytes(data))[1] == b"old"


def test_replay_reads_every_job_again_after_they_were_consumed(backends):
    b = backends(timeout_s=5.0)
    assert type(b).keeps_history
    jobs = [b.enqueue(f"job-{i}".encode()) for i in range(3)]
    consumer = b.consumer("w")
    for _ in jobs:
        consumer.receive(5.0).ack(b"done")
    consumer.close()
    assert b.replay(10) == [b"job-0", b"job-1", b"job-2"]  # the log forgets nothing it delivered
