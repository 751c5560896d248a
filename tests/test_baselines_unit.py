"""The parts of baselines/ that need no server: config, registry, the worker loop (on the stub)."""
from __future__ import annotations

import threading
import time

import pytest

from baselines import registry
from baselines.base import BackendConfig, BackendUnavailable
from baselines.hooks import WorkerHooks
from baselines.stub import StubBackend
from baselines import worker_loop
from baselines.worker_loop import run_worker
from logqueue.workers import worker_function


def process(backend, delivery, fn, *args):
    """``worker_loop.process`` with a plain ``fn(payload)``, made a worker function as a loader would."""
    worker_loop.process(backend, delivery, worker_function(fn), *args)


class Trace(WorkerHooks):
    """Hooks that keep the order of what happened."""

    def __init__(self) -> None:
        self.steps: list[tuple] = []
        self.lock = threading.Lock()

    def _add(self, *step) -> None:
        with self.lock:
            self.steps.append(step)

    def deliver(self, d): self._add("deliver", d.job_id, d.attempt)
    def start(self, d): self._add("start", d.job_id)
    def finish(self, d, result, error=None): self._add("finish", d.job_id, result, error is not None)
    def effect(self, d, result): self._add("effect", d.job_id, result)
    def effect_refused(self, d, reason): self._add("effect_refused", d.job_id, reason)
    def ack(self, d): self._add("ack", d.job_id)
    def ack_error(self, d, reason): self._add("ack_error", d.job_id)
    def dead_letter(self, job_id, attempt=None, reason=""): self._add("dead_letter", job_id, attempt)


@pytest.fixture
def stub(request):
    b = StubBackend(BackendConfig(queue=f"unit-{request.node.name}", timeout_s=0.5, heartbeat_s=0.1, max_attempts=2))
    b.connect()
    yield b
    b.delete()


def test_config_rejects_bad_knobs_with_one_line():
    for bad in ({"queue": ""}, {"queue": "a b"}, {"queue": "q", "timeout_s": 0}, {"queue": "q", "prefetch": 0},
                {"queue": "q", "max_attempts": 1.5}, {"queue": "q", "addresses": {"redis": "nohost"}}):
        with pytest.raises(ValueError) as err:
            BackendConfig(**bad)
        assert "\n" not in str(err.value)


def test_addresses_come_from_environment(monkeypatch):
    monkeypatch.setenv("LOGQUEUE_RABBITMQ_URL", "amqp://guest:guest@10.0.0.5:5673/")
    monkeypatch.setenv("LOGQUEUE_REDIS_URL", "redis-host:7000")
    monkeypatch.delenv("LOGQUEUE_NATS_URL", raising=False)
    config = BackendConfig(queue="q", addresses={"nats": "127.0.0.1:14222"})
    assert config.addresses == {"rabbitmq": "10.0.0.5:5673", "redis": "redis-host:7000", "nats": "127.0.0.1:14222"}


def test_parse_backends():
    assert registry.parse_backends("redis-list, stub,redis-list") == ["redis-list", "stub"]
    everything = registry.parse_backends("all")
    assert "logqueue" in everything and "stub" not in everything and len(everything) == 11
    with pytest.raises(registry.UnknownBackend, match="unknown backend 'kafka'; known: logqueue"):
        registry.parse_backends("redis-list,kafka")
    with pytest.raises(registry.UnknownBackend):
        registry.parse_backends(" , ")


def test_unimportable_adapter_is_unavailable_not_a_crash(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "logqueue", "no_such_module_for_test:Backend")
    with pytest.raises(BackendUnavailable, match="logqueue: adapter module no_such_module_for_test cannot be imported"):
        registry.get("logqueue")


def test_process_orders_effect_before_ack_for_brokers(stub):
    job = stub.enqueue(b"abc")
    hooks, sink = Trace(), []

    class Sink:
        kind = "test"

        def write(self, job_id, worker_id, result, token):
            sink.append((job_id, worker_id, result))
            hooks._add("sink", job_id)
            return True

    process(stub, stub.consumer("w").receive(1), lambda p: p.upper(), "w", hooks, Sink())
    assert [s[0] for s in hooks.steps] == ["deliver", "start", "finish", "sink", "effect", "ack"]
    assert sink == [(job, "w", b"ABC")]


class Refusing:
    """A sink that keeps another write's row (``accept`` False) or whose write fails."""

    kind = "test"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def write(self, job_id, worker_id, result, token):
        if self.fail:
            raise OSError("connection lost")
        return False


def test_a_refused_write_is_no_effect_but_still_acked(stub):
    job = stub.enqueue(b"x")
    hooks = Trace()
    process(stub, stub.consumer("w").receive(1), lambda p: p, "w", hooks, Refusing())
    assert hooks.steps[3:] == [("effect_refused", job, "test sink kept its row (token None)"), ("ack", job)]


def test_a_failed_write_is_not_acked_so_the_job_comes_back(stub):
    job = stub.enqueue(b"x")
    hooks = Trace()
    process(stub, stub.consumer("w").receive(1), lambda p: p, "w", hooks, Refusing(fail=True))
    assert [s[0] for s in hooks.steps] == ["deliver", "start", "finish", "effect_refused"]
    assert "connection lost" in hooks.steps[-1][2]
    assert stub.consumer("other").receive(stub.config.timeout_s + 5).job_id == job


def test_effect_only_after_an_accepted_ack_when_the_ack_is_the_effect(stub):
    class AckIsEffect(StubBackend):
        effect_on_ack = True

    b = AckIsEffect(stub.config)
    b.connect()
    b.enqueue(b"late")
    stale = b.consumer("w").receive(1)
    stale.heartbeat = lambda: None  # cut off: cannot extend its lease
    b.consumer("other").receive(2).ack()  # waits out the lease, takes the job and completes it
    hooks = Trace()
    process(b, stale, lambda p: p, "w", hooks)
    assert [s[0] for s in hooks.steps] == ["deliver", "start", "finish", "ack_error"]

    b.enqueue(b"on time")
    hooks = Trace()
    process(b, b.consumer("w").receive(1), lambda p: p, "w", hooks)
    assert [s[0] for s in hooks.steps] == ["deliver", "start", "finish", "effect", "ack"]


def test_failing_function_is_nacked_then_dead_lettered(stub):
    job = stub.enqueue(b"boom")
    hooks = Trace()
    c = stub.consumer("w")

    def explode(payload: bytes) -> bytes:
        raise RuntimeError("no")

    for _ in range(2):
        process(stub, c.receive(1), explode, "w", hooks)
    assert c.receive(0.1) is None
    assert stub.dead_letters() == [job]
    assert ("dead_letter", job, 2) in hooks.steps
    assert not any(s[0] in ("effect", "ack") for s in hooks.steps)


def test_function_returning_non_bytes_counts_as_failure(stub):
    stub.enqueue(b"x")
    hooks = Trace()
    process(stub, stub.consumer("w").receive(1), lambda p: "text", "w", hooks)
    assert ("finish", hooks.steps[0][1], None, True) in hooks.steps


def test_heartbeat_thread_keeps_a_slow_job_leased(stub):
    stub.enqueue(b"slow")
    hooks = Trace()
    slow = lambda p: (threading.Event().wait(1.2), p)[1]  # 2.4x the 0.5 s lease
    process(stub, stub.consumer("w").receive(1), slow, "w", hooks)
    assert [s[0] for s in hooks.steps][-1] == "ack"


def test_late_ack_after_lease_expiry_is_an_ack_error(stub):
    stub.enqueue(b"x")
    d = stub.consumer("w").receive(1)
    stub.consumer("other").receive(2)  # waits out the lease and takes the job
    hooks = Trace()
    d.heartbeat = lambda: None  # a worker cut off from the broker cannot extend its lease
    process(stub, d, lambda p: p, "w", hooks)
    assert [s[0] for s in hooks.steps][-2:] == ["effect", "ack_error"]


def test_run_worker_with_threads_until_stopped(stub):
    ids = {stub.enqueue(str(i).encode()) for i in range(20)}
    hooks, stop = Trace(), threading.Event()
    t = threading.Thread(target=run_worker, args=(stub, lambda p: p, "w", hooks), kwargs={"concurrency": 3, "stop_event": stop})
    t.start()
    try:
        deadline = time.monotonic() + 5
        while {s[1] for s in hooks.steps if s[0] == "ack"} != ids and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()
    assert {s[1] for s in hooks.steps if s[0] == "ack"} == ids


def test_job_ids_are_unique_in_a_process_and_across_a_fork():
    import os

    from baselines.base import new_job_id

    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next ids must not repeat the parent's
        os.write(write, "".join(new_job_id() for _ in range(3)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read), os.close(write)
    parent = [new_job_id() for _ in range(3)]
    assert not {child[i:i + 32] for i in range(0, 96, 32)} & set(parent)
