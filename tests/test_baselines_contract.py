"""The Backend contract, run against every backend on the real servers.

Each test gets a unique queue and deletes it afterwards. Timeouts are short (1-2 s) so
the whole suite stays bounded; RabbitMQ's ack timeout is real (the adapter sets the
node's consumer_timeout and a short channel tick, see baselines/rabbitmq.py).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from baselines import registry
from baselines.base import AckError, BackendConfig, BackendUnavailable
from experiments.recorder import read_jsonl
from conftest import require_server

SERVER_OF = {
    "rabbitmq-classic": "rabbitmq",
    "rabbitmq-quorum": "rabbitmq",
    "celery-rabbitmq": "rabbitmq",
    "redis-list": "redis",
    "redis-streams": "redis",
    "celery-redis": "redis",
    "nats-jetstream": "nats",
}
# Replicated backends: the session fixture that starts their private cluster, and the
# BackendConfig.addresses key that names it.
CLUSTERS = {
    "rabbitmq-quorum-cluster": ("rabbitmq_quorum_cluster", "rabbitmq-cluster"),
    "nats-jetstream-cluster": ("nats_cluster", "nats-cluster"),
    "redis-sentinel": ("redis_sentinel_cluster", "redis-sentinel"),
}
# Backends whose broker refuses the ack of a delivery that timed out and was redelivered.
# JetStream acks by stream sequence and kombu's Redis emulation acks by tag: both accept it.
FENCED = {"stub", "rabbitmq-classic", "rabbitmq-quorum", "celery-rabbitmq", "redis-list", "redis-streams", "logqueue",
          "rabbitmq-quorum-cluster", "redis-sentinel"}
# Backends whose deliveries carry a fencing token (an exact delivery counter, logqueue's claim token).
TOKENED = {"rabbitmq-quorum", "redis-streams", "nats-jetstream", "logqueue", "rabbitmq-quorum-cluster",
           "redis-sentinel", "nats-jetstream-cluster"}
# Backends with a per-job lease that Delivery.heartbeat extends.
LEASED = ["stub", "redis-list", "redis-streams", "nats-jetstream", "logqueue", "nats-jetstream-cluster", "redis-sentinel"]
ALL = registry.names()


def _available(name: str, request) -> None:
    if name == "logqueue":
        request.getfixturevalue("logqueue_cluster")  # a real 3-node cluster for the session
    if name in SERVER_OF:
        require_server(SERVER_OF[name])
    if name in CLUSTERS:
        request.getfixturevalue(CLUSTERS[name][0])


@pytest.fixture
def make(request, monkeypatch):
    """``make(name, **knobs)`` -> a connected backend on a fresh queue, deleted after the test.

    (``monkeypatch`` first: the cluster fixtures export their addresses through it, and those
    must outlive the backends' deletion here.)"""
    made = []

    def factory(name: str, queue: str | None = None, **knobs):
        _available(name, request)
        queue = queue or f"t-{name}-{uuid.uuid4().hex[:10]}"
        backend = registry.get(name)(BackendConfig(queue=queue, **knobs))
        backend.connect()
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        try:
            backend.delete()
        finally:
            backend.close()


@pytest.fixture
def consumers():
    """Consumers opened by a test, closed after it (before the backends are deleted)."""
    opened = []

    def open_(backend, worker_id: str = "w"):
        c = backend.consumer(worker_id)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


def receive_from(cs, timeout_s: float):
    """Poll several consumers in turn until one yields a delivery or the time is up."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for c in cs:
            d = c.receive(0.2)
            if d is not None:
                return d
    return None


@pytest.mark.parametrize("name", ALL)
def test_enqueue_consume_ack(name, make, consumers):
    b = make(name)
    ids = [b.enqueue(f"job-{i}".encode()) for i in range(3)]
    assert len(set(ids)) == 3
    c = consumers(b)
    seen = {}
    for _ in ids:
        d = c.receive(5)
        assert d is not None
        assert d.attempt == 1
        seen[d.job_id] = d.payload
        d.ack(b"done")
    assert seen == {job: f"job-{i}".encode() for i, job in enumerate(ids)}
    assert c.receive(0.5) is None


@pytest.mark.parametrize("name", ALL)
def test_given_job_id_is_kept(name, make, consumers):
    b = make(name)
    assert b.enqueue(b"x", job_id="my-job-1") == "my-job-1"
    d = consumers(b).receive(5)
    assert d.job_id == "my-job-1"
    d.ack()


@pytest.mark.parametrize("name", ALL)
def test_payloads_round_trip_exactly(name, make, consumers):
    b = make(name)
    payloads = {b"": None, bytes(range(256)) * 3: None, os.urandom(1 << 20): None}
    for p in payloads:
        payloads[p] = b.enqueue(p)
    c = consumers(b)
    got = {}
    for _ in payloads:
        d = c.receive(10)
        got[d.job_id] = d.payload
        d.ack()
    assert got == {job: p for p, job in payloads.items()}


@pytest.mark.parametrize("name", ALL)
def test_nack_redelivers_with_next_attempt(name, make, consumers):
    b = make(name, max_attempts=5)
    job = b.enqueue(b"retry me")
    c = consumers(b)
    d1 = c.receive(5)
    d1.nack(requeue=True)
    d2 = c.receive(5)
    assert (d2.job_id, d2.payload, d2.attempt) == (job, b"retry me", 2)
    d2.ack()
    assert c.receive(0.5) is None


@pytest.mark.parametrize("name", ALL)
def test_max_attempts_dead_letters(name, make, consumers):
    b = make(name, max_attempts=2)
    job = b.enqueue(b"poison")
    c = consumers(b)
    for attempt in (1, 2):
        d = c.receive(5)
        assert (d.job_id, d.attempt) == (job, attempt)
        d.nack(requeue=True)
    assert c.receive(1.0) is None
    deadline = time.monotonic() + 5
    while b.dead_letters() != [job] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b.dead_letters() == [job]


@pytest.mark.parametrize("name", ALL)
def test_nack_without_requeue_dead_letters_at_once(name, make, consumers):
    b = make(name, max_attempts=5)
    job = b.enqueue(b"reject")
    c = consumers(b)
    c.receive(5).nack(requeue=False)
    assert c.receive(0.5) is None
    assert b.dead_letters() == [job]


# Backends whose ack timeout belongs to the consumer's channel (RabbitMQ's consumer_timeout,
# read when the channel opens), not to the job: the second holder gets a channel of its own.
CHANNEL_TIMEOUT = {"rabbitmq-classic", "rabbitmq-quorum", "celery-rabbitmq"}


@pytest.mark.parametrize("name", ALL)
def test_unacked_job_is_redelivered_after_timeout(name, make, consumers):
    b = make(name, timeout_s=1.0, heartbeat_s=0.5)
    job = b.enqueue(b"slow")
    c1 = consumers(b, "w1")
    d1 = receive_from([c1], 5)
    started = time.monotonic()
    second = b
    if name in CHANNEL_TIMEOUT:
        # The second holder's channel opens under a long timeout, so a loaded machine's delay
        # between its delivery and its ack cannot close it too; only the broker's timeout of
        # c1's channel (never polled again) can redeliver the job to it.
        second = registry.get(name)(BackendConfig(queue=b.config.queue, timeout_s=120.0, heartbeat_s=0.5))
        second.connect()
    try:
        c2 = consumers(second, "w2")
        holders = [c2] if name in CHANNEL_TIMEOUT else [c1, c2]
        d2 = receive_from(holders, 15)  # never acked, never heartbeated
        waited = time.monotonic() - started
        assert d2 is not None and d2.job_id == job
        assert d2.attempt >= 2
        assert waited >= 0.9  # not before the timeout
        if name in TOKENED:
            assert d2.token > d1.token >= 1, "the redelivered copy must carry a higher fencing token"
        else:
            assert d1.token is d2.token is None
        if name in FENCED:
            if name in CHANNEL_TIMEOUT:
                # AMQP refuses the ack by closing c1's channel (an ack has no reply): the client can
                # refuse it only once that close has reached it, which may come a moment after the
                # redelivery on c2's connection; c1 reads it while nothing comes (c2's long timeout
                # keeps its copy meanwhile).
                assert receive_from([c1], 1.0) is None
            with pytest.raises(AckError):
                d1.ack()
        else:
            d1.ack()  # accepted by this broker (see FENCED); it must not break the redelivered copy's settle
        d2.ack()  # the current holder's ack must succeed
        assert receive_from(holders, 1.5) is None
    finally:
        if second is not b:
            second.close()


@pytest.mark.parametrize("name", LEASED)
def test_heartbeat_keeps_the_job(name, make, consumers):
    b = make(name, timeout_s=1.0, heartbeat_s=0.3)
    job = b.enqueue(b"long")
    c1, c2 = consumers(b, "w1"), consumers(b, "w2")
    d = c1.receive(5)
    end = time.monotonic() + 2.5  # 2.5 x the timeout
    while time.monotonic() < end:
        d.heartbeat()
        assert c2.receive(0.3) is None
    d.ack()
    assert d.job_id == job
    assert receive_from([c1, c2], 1.5) is None


@pytest.mark.parametrize("name", ALL)
def test_redelivery_after_worker_process_is_sigkilled(name, make, consumers, tmp_path):
    if name == "stub":
        pytest.skip("stub is in-process only: there is no worker process to SIGKILL")
    b = make(name, timeout_s=2.0, heartbeat_s=1.0)
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.worker", "--backend", name, "--queue", b.config.queue,
         "--func", "experiments.workers:sleepy", "--worker-id", "victim", "--events", str(events),
         "--results", str(tmp_path / "results.jsonl"), "--timeout-s", "2", "--heartbeat-s", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        job = b.enqueue(b"sleep=60;job")
        deadline = time.monotonic() + 30
        while not (events.exists() and any(e["ev"] == "start" for e in read_jsonl(events))):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the worker never started the job"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    d = receive_from([consumers(b)], 20)
    assert d is not None and d.job_id == job and d.payload == b"sleep=60;job"
    assert d.attempt >= 2
    d.ack()


CONTEXT_FUNCTION = """
import json, os

def fn(payload, ctx):
    with open(os.environ["CTX_LOG"], "a") as f:
        f.write(json.dumps(ctx.__dict__) + "\\n")
    if ctx.attempt == 1:
        raise RuntimeError("fail the first attempt so that the job is redelivered")
    return payload
"""


@pytest.mark.parametrize("name", ALL)
def test_worker_function_with_context(name, make, tmp_path, monkeypatch):
    """A ``(payload, ctx)`` function from outside the project runs in the worker (a real
    worker process, the stub's in-process loop) and sees its job, attempt, backend, lease
    deadline, and a fencing token that grows on redelivery where the backend has one."""
    b = make(name, timeout_s=5.0, heartbeat_s=1.0, max_attempts=5)
    (tmp_path / "ctxmod.py").write_text(CONTEXT_FUNCTION)
    log = tmp_path / "ctx.jsonl"
    monkeypatch.setenv("CTX_LOG", str(log))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    job = b.enqueue(b"with context")
    started = time.time()
    proc = stop = thread = None
    if b.multiprocess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.worker", "--backend", name, "--queue", b.config.queue,
             "--func", "ctxmod:fn", "--worker-id", "w", "--timeout-s", "5", "--heartbeat-s", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    else:
        from baselines.worker_loop import run_worker
        from logqueue.workers import load_function

        stop = threading.Event()
        thread = threading.Thread(target=run_worker, args=(b, load_function("ctxmod:fn"), "w"),
                                  kwargs={"stop_event": stop}, daemon=True)
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and len(log.read_text().splitlines()) >= 2):
            assert proc is None or proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the function did not run twice"
            time.sleep(0.1)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
            proc.stderr.close()
        if stop is not None:
            stop.set()
            thread.join(10)
    first, second = (json.loads(line) for line in log.read_text().splitlines()[:2])
    for ctx, attempt in ((first, 1), (second, 2)):
        assert (ctx["job_id"], ctx["attempt"], ctx["backend"]) == (job, attempt, name)
        assert started < ctx["lease_deadline"] <= time.time() + 5.0
    assert registry.get(name).fencing_token == (name in TOKENED)
    if name in TOKENED:
        assert second["token"] > first["token"] >= 1
    else:
        assert first["token"] is second["token"] is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", [n for n in ALL if n in SERVER_OF])
def test_down_broker_gives_one_line_error(name):
    address = f"127.0.0.1:{_closed_port()}"
    backend = registry.get(name)(BackendConfig(queue="t-down", addresses={SERVER_OF[name]: address}))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        backend.connect()
    message = str(err.value)
    assert "\n" not in message
    assert name in message and address in message and "start it with" in message
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("name", list(CLUSTERS))
def test_down_cluster_gives_one_line_error(name):
    address = f"127.0.0.1:{_closed_port()},127.0.0.1:{_closed_port()}"
    backend = registry.get(name)(BackendConfig(queue="t-down", addresses={CLUSTERS[name][1]: address}))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        backend.connect()
    message = str(err.value)
    assert "\n" not in message
    assert name in message and address in message and "start it with" in message
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("name", ALL)
def test_delete_leaves_nothing_behind(name, make, consumers):
    queue = f"t-{name}-{uuid.uuid4().hex[:10]}"
    b = make(name, queue=queue, max_attempts=1)
    b.enqueue(b"left over")
    b.enqueue(b"dead")
    consumers(b).receive(5).nack(requeue=False)
    b.delete()
    again = make(name, queue=queue)
    assert consumers(again, "w2").receive(0.5) is None
    assert again.dead_letters() == []


# Adapters whose consumers fetch up to ``prefetch`` deliveries per round trip and hold them.
BATCHED = ["rabbitmq-classic", "rabbitmq-quorum", "redis-list", "redis-streams", "nats-jetstream"]


@pytest.mark.parametrize("name", BATCHED)
def test_prefetched_batch_is_delivered_once_and_close_returns_the_rest(name, make, consumers):
    b = make(name, prefetch=10)
    c1 = consumers(b, "w1")
    assert c1.receive(0.3) is None  # an empty queue: a batch fetch that finds nothing is no error
    jobs = b.enqueue_many([b"job-%d" % i for i in range(25)])
    taken = [receive_from([c1], 5)]
    taken += [c1.receive(5) for _ in range(5)]
    assert None not in taken
    assert c1.ack_many(taken) == [None] * 6
    c1.close()  # what c1 fetched but never handed out goes back at once, not after timeout_s (30 s)
    c2 = consumers(b, "w2")
    rest = []
    for _ in range(len(jobs) - len(taken)):
        d = receive_from([c2], 10)
        assert d is not None, f"{len(rest)} of {len(jobs) - len(taken)} came back after the first consumer closed"
        d.ack()  # (a broker's prefetch holds back more than 10 unacked)
        rest.append(d)
    assert sorted(d.job_id for d in taken + rest) == sorted(jobs)
    assert c2.receive(0.3) is None


@pytest.mark.parametrize("name", BATCHED)
def test_batched_ack_settles_only_the_deliveries_given(name, make, consumers):
    b = make(name, prefetch=10, timeout_s=2.0, heartbeat_s=1.0)
    jobs = b.enqueue_many([b"first", b"second", b"third"])
    c1 = consumers(b, "w1")
    first, second, third = receive_from([c1], 5), c1.receive(5), c1.receive(5)
    assert [d.job_id for d in (first, second, third)] == jobs
    assert c1.ack_many([second]) == [None]  # not "everything up to second" (AMQP's multiple ack would be)
    third.ack()
    c1.close()
    again = receive_from([consumers(b, "w2")], 15)
    assert again is not None and again.job_id == first.job_id and again.payload == b"first"
    again.ack()


@pytest.mark.parametrize("name", ["redis-streams", "redis-sentinel"])
def test_batched_ack_refuses_exactly_the_entries_another_consumer_claimed(name, make, consumers):
    """One ``ack_many`` over owned and taken-over entries, out of order, with one of the
    consumer's own entries inside the batch's span left out: the taken ones are refused, the
    owned ones acked, the one left out still pending and its own."""
    timeout_s = 2.0
    b = make(name, prefetch=10, timeout_s=timeout_s, heartbeat_s=timeout_s / 4)
    b.enqueue_many([b"job-%d" % i for i in range(6)])
    c1, c2 = consumers(b, "w1"), consumers(b, "w2")
    held = [receive_from([c1], 5)] + [c1.receive(5) for _ in range(5)]
    assert None not in held
    kept, idle = held[0::2], held[1::2]  # c1 extends the leases of ``kept`` only
    taken = []
    end = time.monotonic() + timeout_s * 10
    while len(taken) < len(idle) and time.monotonic() < end:
        for d in kept:
            d.heartbeat()
        d = c2.receive(0.2)
        if d is not None:
            taken.append(d)
    assert sorted(d.job_id for d in taken) == sorted(d.job_id for d in idle)
    batch = [idle[2], kept[0], idle[1], kept[2]]  # kept[1] lies inside the batch's span but is not in it
    answers = c1.ack_many(batch)
    assert [a is None for a in answers] == [False, True, False, True]
    assert c1.ack_many([kept[1]]) == [None]
    assert c2.ack_many(taken) == [None] * len(taken)


@pytest.mark.parametrize("name", ["redis-streams", "redis-sentinel"])
def test_acked_entries_are_trimmed_but_never_a_pending_one(name, make, consumers):
    """``ack_many`` trims the stream below the group's oldest pending entry: the acked
    entries below it go (the stream does not grow with the history), none at or above it."""
    b = make(name, prefetch=100)
    b.enqueue_many([b"job-%d" % i for i in range(450)])
    holder, worker = consumers(b, "holder"), consumers(b, "worker")

    def work(n: int) -> None:
        while n > 0:
            batch = [receive_from([worker], 5)] + [worker.receive(0) for _ in range(min(n, 50) - 1)]
            assert None not in batch and worker.ack_many(batch) == [None] * len(batch)
            n -= len(batch)

    work(200)  # the worker's prefetch reads 200 entries exactly (two XREADGROUP COUNT 100)
    held = [receive_from([holder], 5)] + [holder.receive(0) for _ in range(99)]  # entries 200-299, pending
    work(150)
    assert 250 <= b._r.xlen(b.stream) <= 250 + 100  # what the oldest pending one spans, and part of one node
    assert [d.payload for d in held] == [b"job-%d" % i for i in range(200, 300)]
    assert holder.ack_many(held) == [None] * 100
    # Nothing pending: trimmed below this batch's highest entry (299); the 150 settled above it
    # go with a later ack.
    assert b._r.xlen(b.stream) <= 150 + 100
