"""Producer, Consumer and Worker (logqueue.producer/consumer/worker) and the queue
commands of the CLI, against the session's real 3-node cluster (``logqueue_cluster``).

Every test uses a fresh queue name, so tests share the cluster without sharing state.
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid

import pytest

from cluster_util import json_lines, run_cli, wait_for
from logqueue.client import AsyncConsumer, Client, Consumer, JobContext, LeaseLost, Producer, Worker
from logqueue.queue import QueueMachine, commands


@pytest.fixture
def addresses(logqueue_cluster) -> str:
    return ",".join(logqueue_cluster.addresses.values())


@pytest.fixture
def client(addresses):
    with Client(addresses, timeout=20, attempt_timeout=1.0) as c:
        yield c


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def stats(client, queue, group="g") -> dict:
    return client.query("stats", queue=queue, group=group)


# --- Producer ----------------------------------------------------------------------------


def test_producer_keeps_order_and_a_rerun_with_the_same_id_adds_nothing(client, queue):
    payloads = [f"job-{i}".encode() for i in range(600)]
    first = Producer(client, queue, producer_id="p1", batch=100, window=4).enqueue_many(payloads)
    assert first == list(range(600))
    again = Producer(client, queue, producer_id="p1", batch=64, window=8).enqueue_many(payloads)
    assert again == first
    assert [bytes(p) for _, p in client.query("read", queue=queue, from_offset=0, max_count=1000)] == payloads
    s = stats(client, queue)
    assert (s["enqueued"], s["duplicates"]) == (600, 600)


def test_producers_with_different_ids_are_different_jobs(client, queue):
    assert Producer(client, queue).enqueue(b"x") == 0
    assert Producer(client, queue).enqueue(b"x") == 1


# --- Consumer ----------------------------------------------------------------------------


def test_a_lease_taken_over_fences_the_old_holder_and_the_new_one_completes_once(client, queue):
    Producer(client, queue).enqueue(b"job")
    old = Consumer(client, queue, "g", "old", lease_ms=300)
    new = Consumer(client, queue, "g", "new", lease_ms=5000)
    (job,) = old.claim(5)
    assert (job.offset, job.payload, job.attempt) == (0, b"job", 1)
    (again,) = new.claim_wait(5, timeout_s=5)  # claimable once the lease has expired
    assert (again.offset, again.attempt) == (0, 2) and again.token > job.token
    with pytest.raises(LeaseLost) as refused:
        old.complete(job, b"late")
    assert refused.value.code == commands.FENCED
    new.complete(again, b"mine")
    new.complete(again, b"mine")  # a retried completion by the holder is accepted
    assert old.held == {} and new.held == {}
    (row,) = client.query("results", queue=queue, group="g")
    assert (row["offset"], row["result"], row["token"], row["attempts"]) == (0, b"mine", again.token, 2)
    s = stats(client, queue)
    assert (s["completed"], s["fenced"], s["redelivered"]) == (1, 1, 1)


def test_complete_many_answers_each_job_and_its_claim_leaves_in_the_same_submit(client, queue):
    """A batch with a fenced job, an accepted one and one completed twice: each gets its own
    answer, and the claim sent with the batch (after it) leases the next jobs."""
    producer = Producer(client, queue)
    producer.enqueue_many([b"a", b"b"])
    old = Consumer(client, queue, "g", "old", lease_ms=300)
    new = Consumer(client, queue, "g", "new", lease_ms=30_000)
    first, second = old.claim(2)
    (taken,) = new.claim_wait(1, timeout_s=5)  # ``first`` once its lease expired (the lowest claimable)
    assert taken.offset == first.offset
    assert old.heartbeat([second]) == []  # its lease may have run out: nobody claimed it since, so it is revived
    producer.enqueue_many([b"c", b"d"])
    before = client.query("stats", queue=queue, group="g")["claimed"]
    errors, claimed = old.complete_many([first, second, second], [b"late", b"2", b"2"], claim=5)
    assert isinstance(errors[0], LeaseLost) and errors[0].code == commands.FENCED
    assert errors[1:] == [None, None]  # the repeat by the holder: already_done, accepted
    assert [j.offset for j in claimed] == [2, 3] and claimed[0].token > second.token
    assert sorted(old.held) == [2, 3]  # the settled and the fenced job are no longer held
    results = {row["offset"]: row["result"] for row in client.query("results", queue=queue, group="g")}
    assert results == {second.offset: b"2"}
    assert client.query("stats", queue=queue, group="g")["claimed"] == before + 2
    errors, claimed = new.complete_many([], [], claim=1)  # nothing to complete: the claim alone
    assert errors == [] and claimed == []


def test_consumers_sharing_a_client_each_get_their_answer_from_one_entry(addresses, queue):
    """Claims sent in one loop turn over one connection are applied in one entry, and the
    leader writes their answers together: each must reach its own caller on the first
    attempt (a lost answer would only come back from the retry, after ``attempt_timeout``)."""
    attempt_s = 30.0
    with Client(addresses, timeout=2 * attempt_s, attempt_timeout=attempt_s) as shared:
        Producer(shared, queue).enqueue_many([b"%d" % i for i in range(16)])

        async def claim_all() -> list[list]:
            consumers = [AsyncConsumer(shared.aio, queue, "g", f"w{i}") for i in range(16)]
            return await asyncio.wait_for(asyncio.gather(*(c.claim(1) for c in consumers)), attempt_s * 0.8)

        claimed = shared.run(claim_all())
    assert sorted(job.offset for jobs in claimed for job in jobs) == list(range(16))


def test_background_heartbeats_keep_the_lease_and_a_lost_lease_is_reported(client, queue):
    Producer(client, queue).enqueue(b"long")
    lease_s = 1.0  # ten heartbeats long: one heartbeat late by up to 0.9 s on a loaded machine still keeps it
    holder = Consumer(client, queue, "g", lease_ms=int(lease_s * 1000), heartbeat_ms=100)
    other = Consumer(client, queue, "g", lease_ms=5000)
    (job,) = holder.claim(1)
    assert other.claim_wait(1, timeout_s=2 * lease_s) == []  # two leases long
    holder.close()  # heartbeats stop: the lease runs out
    (taken,) = other.claim_wait(1, timeout_s=lease_s + 10)
    assert taken.offset == job.offset
    assert holder.heartbeat([job]) == [job] and job.lost
    other.complete(taken, b"done")


def test_an_idle_consumer_writes_nothing_and_sees_new_work_at_once(client, queue):
    c = Consumer(client, queue, "g", lease_ms=1000)
    assert c.claim_wait(1, timeout_s=0.2) == []  # one claim finds nothing
    before = client.status()["commit_index"]
    assert c.claim_wait(1, timeout_s=1.0) == []
    assert client.status()["commit_index"] == before, "an idle consumer wrote to the log"
    Producer(client, queue).enqueue(b"x")
    started = time.monotonic()
    (job,) = c.claim_wait(1, timeout_s=30)
    # Woken by the new work, not by the end of the wait (a loaded machine may take seconds).
    assert job.payload == b"x" and time.monotonic() - started < 10
    c.complete(job, b"")


def test_fail_requeues_then_dead_letters_on_the_last_attempt_or_at_once(client, queue):
    Producer(client, queue).enqueue_many([b"poison", b"reject"])
    c = Consumer(client, queue, "g", lease_ms=5000, max_attempts=2)
    first = c.claim(1)[0]
    assert c.fail(first, "boom") is False
    second = c.claim(1)[0]
    assert (second.offset, second.attempt) == (0, 2)
    assert c.fail(second, "boom again") is True
    reject = c.claim(1)[0]
    assert reject.offset == 1 and c.fail(reject, "no", dead_letter=True) is True
    assert [(d["offset"], d["reason"]) for d in client.query("dead_letters", queue=queue, group="g")] == [
        (0, "boom again"), (1, "no")]
    with pytest.raises(LeaseLost) as refused:
        c.complete(reject, b"too late")
    assert refused.value.code == commands.DEAD_LETTERED


def test_fail_with_dead_letter_in_the_state_machine():
    m = QueueMachine()
    m.apply(1, 0, [commands.enqueue("q", b"x")])
    ((_, token, _, _),) = m.apply(2, 0, [commands.claim("q", "g", "w", 1, 1000)])[0]["jobs"]
    assert m.apply(3, 0, [commands.fail("q", "g", 0, token, "bad", dead_letter=True)]) == [
        {"ok": True, "dead_lettered": True, "attempts": 1}]
    assert m.stats("q", "g")["dead_lettered"] == 1
    wrong = {**commands.fail("q", "g", 0, token), "dead_letter": "yes"}
    assert m.apply(4, 0, [wrong])[0]["error"] == commands.BAD_REQUEST


# --- Worker ------------------------------------------------------------------------------


def test_worker_runs_the_function_concurrently_and_fails_what_raises(client, queue):
    lock = threading.Lock()
    running = {"now": 0, "max": 0}

    def fn(payload: bytes) -> bytes:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        try:
            time.sleep(0.05)
            if payload == b"bad":
                raise RuntimeError("bad payload")
            return payload.upper()
        finally:
            with lock:
                running["now"] -= 1

    payloads = [f"job-{i}".encode() for i in range(15)] + [b"bad"]
    Producer(client, queue).enqueue_many(payloads)
    worker = Worker(client, queue, "g", fn, concurrency=3, lease_ms=5000, max_attempts=2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: stats(client, queue)["completed"] == 15 and stats(client, queue)["dead_lettered"] == 1,
                 20, "15 completed and 1 dead-lettered")
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert running["max"] == 3
    s = worker.stats
    assert (s.completed, s.failed, s.dead_lettered, s.fenced, s.unsettled) == (15, 2, 1, 0, 0)
    results = client.query("results", queue=queue, group="g")
    assert {r["offset"]: r["result"] for r in results} == {i: p.upper() for i, p in enumerate(payloads[:15])}


def test_stopping_a_worker_finishes_and_completes_the_job_in_hand(client, queue):
    Producer(client, queue).enqueue(b"slow")
    started = threading.Event()

    def fn(payload: bytes) -> bytes:
        started.set()
        time.sleep(0.5)
        return b"finished"

    worker = Worker(client, queue, "g", fn, lease_ms=5000)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(10)
    worker.stop()
    thread.join(10)
    assert not thread.is_alive() and worker.stats.completed == 1
    assert client.query("results", queue=queue, group="g")[0]["result"] == b"finished"


def test_a_prefetching_worker_holds_claimed_jobs_and_runs_them_before_it_stops(client, queue):
    Producer(client, queue).enqueue_many([f"job-{i}".encode() for i in range(20)])
    started = threading.Event()

    def fn(payload: bytes) -> bytes:
        started.set()
        time.sleep(0.1)
        return payload

    worker = Worker(client, queue, "g", fn, concurrency=1, prefetch=4, lease_ms=5000)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(10)
    wait_for(lambda: stats(client, queue)["in_flight"] == 5, 5, "one job running and four prefetched")
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    s = stats(client, queue)
    assert worker.stats.claimed == worker.stats.completed == s["completed"] >= 5
    assert (s["in_flight"], s["redelivered"]) == (0, 0)


def test_a_worker_function_taking_a_context_gets_the_claims_token(client, queue):
    Producer(client, queue).enqueue_many([b"fails once", b"fine"])
    seen = []

    def fn(payload: bytes, ctx: JobContext) -> bytes:
        seen.append((payload, ctx, time.time()))
        if payload == b"fails once" and ctx.attempt == 1:
            raise RuntimeError("again")
        return payload

    worker = Worker(client, queue, "g", fn, lease_ms=5000, max_attempts=3)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: stats(client, queue)["completed"] == 2, 20, "both jobs completed")
    finally:
        worker.stop()
        thread.join(10)
    runs = {(p, ctx.attempt): (ctx, t) for p, ctx, t in seen}
    assert sorted(runs) == [(b"fails once", 1), (b"fails once", 2), (b"fine", 1)]
    (first, _), (second, _) = runs[b"fails once", 1], runs[b"fails once", 2]
    assert (first.job_id, first.backend) == ("0", "logqueue") and runs[b"fine", 1][0].job_id == "1"
    assert second.token > first.token  # each claim has its own, later, fencing token
    for ctx, t in runs.values():
        assert t < ctx.lease_deadline <= t + 5.0


# --- the CLI -----------------------------------------------------------------------------


def lq(addresses, *args: str, ok: bool = True):
    done = run_cli(*args, "--cluster", addresses)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_cli_produce_read_stats_results_with_text_and_base64(client, addresses, queue, tmp_path):
    out = json.loads(lq(addresses, "produce", "--queue", queue, "--count", "3", "--payload-bytes", "64").stdout)
    assert out == {"enqueued": 3, "first_offset": 0, "last_offset": 2}
    Producer(client, queue).enqueue(b"\xff\xfe binary")
    rows = json_lines(lq(addresses, "queue", "read", "--queue", queue, "--from", "2", "--max", "5").stdout)
    assert [r["offset"] for r in rows] == [2, 3]
    assert len(rows[0]["payload"]) == 64 and "encoding" not in rows[0]
    assert rows[1]["encoding"] == "base64" and base64.b64decode(rows[1]["payload"]) == b"\xff\xfe binary"

    c = Consumer(client, queue, "g", lease_ms=5000)
    for job in c.claim(4):
        c.complete(job, b"\x00\xff" if job.offset == 3 else b"ok")
    results = json_lines(lq(addresses, "queue", "results", "--queue", queue, "--group", "g").stdout)
    assert [(r["offset"], r["attempts"], r["result"]) for r in results[:3]] == [(0, 1, "ok"), (1, 1, "ok"), (2, 1, "ok")]
    assert results[3]["encoding"] == "base64" and base64.b64decode(results[3]["result"]) == b"\x00\xff"
    assert isinstance(results[0]["token"], int)
    s = json.loads(lq(addresses, "queue", "stats", "--queue", queue, "--group", "g", "--json").stdout)
    for key in ("enqueued", "completed", "in_flight", "dead_lettered", "redelivered", "fenced"):
        assert key in s
    assert (s["enqueued"], s["completed"], s["in_flight"]) == (4, 4, 0)
    table = lq(addresses, "queue", "stats", "--queue", queue, "--group", "g").stdout
    assert "completed" in table and "4" in table


def test_cli_produce_rerun_with_producer_id_is_idempotent(addresses, queue, tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a\nb\nc\n")
    args = ("produce", "--queue", queue, "--from-file", str(jobs), "--producer-id", "batch-7")
    first = json.loads(lq(addresses, *args).stdout)
    again = json.loads(lq(addresses, *args).stdout)
    assert first == again == {"enqueued": 3, "first_offset": 0, "last_offset": 2}


def test_cli_dead_letters(client, addresses, queue):
    Producer(client, queue).enqueue(b"x")
    c = Consumer(client, queue, "g", lease_ms=5000)
    c.fail(c.claim(1)[0], "cannot", dead_letter=True)
    (row,) = json_lines(lq(addresses, "queue", "dead-letters", "--queue", queue, "--group", "g").stdout)
    assert (row["offset"], row["attempts"], row["reason"]) == (0, 1, "cannot")


@pytest.mark.parametrize("args, status, message", [
    (("worker", "--queue", "q", "--group", "g", "--func", "no_such_module_xyz:f"), 1, "cannot import module"),
    (("worker", "--queue", "q", "--group", "g", "--func", "json:no_such_function"), 1, "has no attribute"),
    (("worker", "--queue", "q", "--group", "g", "--func", "json:dumps", "--lease-ms", "500", "--heartbeat-ms", "500"),
     2, "must be below --lease-ms"),
    (("produce", "--queue", "q", "--from-file", "/no/such/file"), 2, "cannot read /no/such/file"),
    (("produce", "--queue", "q", "--count", "-3"), 2, "expected an integer"),
])
def test_cli_bad_input_is_one_line(addresses, args, status, message):
    done = lq(addresses, *args, ok=False)
    assert done.returncode == status
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and message in lines[-1], done.stderr
    if status == 1:  # argparse's usage errors (status 2) come after the usage line
        assert len(lines) == 1, done.stderr


@pytest.mark.parametrize("command", [
    ("queue", "stats", "--queue", "q", "--group", "g"),
    ("worker", "--queue", "q", "--group", "g", "--func", "json:dumps"),
])
def test_cli_unreachable_cluster_is_one_line(command):
    done = run_cli(*command, "--cluster", "127.0.0.1:1", "--timeout", "1")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no leader answered" in done.stderr, done.stderr


def test_cli_help_explains_the_queue_commands():
    for command, words in ((("produce",), "idempotency"), (("worker",), "heartbeat"),
                           (("queue", "results"), "base64"), (("queue", "read"), "log")):
        done = run_cli(*command, "--help")
        assert done.returncode == 0 and words in done.stdout
