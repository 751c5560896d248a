"""``python -m experiments smoke`` and the worker process's command line, as a user runs them."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from conftest import require_server


def run(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_smoke_reports_each_backend_as_json():
    require_server("redis")
    done = run("experiments", "smoke", "--backends", "redis-streams,celery-redis,stub,logqueue", "--jobs", "30", "--json")
    rows = {r["backend"]: r for r in json.loads(done.stdout)}
    assert list(rows) == ["redis-streams", "celery-redis", "stub", "logqueue"]
    for name in ("redis-streams", "celery-redis", "logqueue"):  # smoke runs its own local logqueue cluster
        assert rows[name]["status"] == "ok", rows[name]
        assert (rows[name]["produced"], rows[name]["completed"], rows[name]["duplicates"]) == (30, 30, 0)
    assert rows["stub"]["status"] == "unavailable" and "in-process" in rows["stub"]["reason"]
    assert done.returncode == 0, done.stderr


def test_smoke_prints_a_table():
    require_server("nats")
    done = run("experiments", "smoke", "--backends", "nats-jetstream", "--jobs", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nats-jetstream" in done.stdout and "ok" in done.stdout


def test_smoke_rejects_unknown_backend_in_one_line():
    done = run("experiments", "smoke", "--backends", "kafka")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown backend 'kafka'" in done.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_with_broker_down_exits_with_one_line():
    port = _closed_port()
    done = run("experiments.worker", "--backend", "redis-list", "--queue", "q", "--func", "echo", "--worker-id", "w",
               env={"LOGQUEUE_REDIS_URL": f"127.0.0.1:{port}"}, timeout=60)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert f"redis-list: cannot reach redis at 127.0.0.1:{port}" in done.stderr and "start it with" in done.stderr


def test_worker_rejects_bad_arguments_in_one_line():
    done = run("experiments.worker", "--backend", "redis-list", "--queue", "q", "--func", "nope:fn", "--worker-id", "w")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot import module 'nope'" in done.stderr
    done = run("experiments.worker", "--backend", "stub", "--queue", "q", "--func", "echo", "--worker-id", "w")
    assert done.returncode == 3 and "in-process backend" in done.stderr


def test_worker_help_explains():
    done = run("experiments.worker", "--help")
    assert done.returncode == 0 and "--timeout-s" in done.stdout and "SIGTERM" in done.stdout


def test_worker_stops_cleanly_on_sigterm(tmp_path):
    """A generic worker and a Celery worker both finish, settle and exit 0 on SIGTERM."""
    import signal
    import time
    import uuid

    from baselines import registry
    from baselines.base import BackendConfig
    from experiments.recorder import read_jsonl

    require_server("redis")
    for name in ("redis-list", "celery-redis"):
        backend = registry.get(name)(BackendConfig(queue=f"t-sigterm-{uuid.uuid4().hex[:8]}"))
        backend.connect()
        events = tmp_path / f"{name}.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "experiments.worker", "--backend", name, "--queue",
                                 backend.config.queue, "--func", "echo", "--worker-id", "w", "--events", str(events)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            job = backend.enqueue(b"x")
            deadline = time.monotonic() + 30
            while not (events.exists() and any(e["ev"] == "ack" and e["job"] == job for e in read_jsonl(events))):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            backend.delete()
            backend.close()
