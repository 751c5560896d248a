"""The runner with the PostgreSQL sinks and with a user's own function, end to end on
the real brokers, logqueue cluster and PostgreSQL; the sinks' tables are checked with SQL."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from baselines import registry
from experiments.checker import recheck
from experiments.runner import main
from experiments.sinks import connect
from tests.conftest import require_server

SMALL = ["--quick", "--jobs", "24", "--load-s", "2", "--fault-start-s", "0.6", "--drain-s", "40"]
BACKENDS = ("redis-streams", "logqueue")  # a queue with a fencing token, and the log


def summary(out, backend, scenario) -> dict:
    return json.loads((out / backend / scenario / "summary.json").read_text())


def failed_cells(out) -> list[str]:
    """What the runner's table says of each cell that did not end ``ok`` (a failing run's assertion shows it)."""
    cells = [json.loads(path.read_text()) for path in sorted(out.glob("*/*/summary.json"))]
    return [f"{s['backend']}/{s['scenario']}: {s['status']}: {s.get('reason', '')}" for s in cells
            if s["status"] != "ok"]


def rows_per_job(table: str) -> dict[str, int]:
    with connect() as conn:
        return dict(conn.execute(f"SELECT job, count(*) FROM {table} GROUP BY job").fetchall())


@pytest.fixture(scope="module")
def sink_runs(tmp_path_factory):
    require_server("redis")
    require_server("postgres")
    runs = {}
    for sink in ("plain", "idempotent", "fenced"):
        out = tmp_path_factory.mktemp(sink)
        code = main(["--backends", ",".join(BACKENDS), "--scenarios", "slow-consumer", "--sink", sink,
                     "--out", str(out), *SMALL])
        runs[sink] = out, code
    yield runs
    with connect() as conn:  # each run made a table of its own in the shared database
        for out, _ in runs.values():
            for path in out.glob("*/*/summary.json"):
                table = json.loads(path.read_text())["sink"]["table"]
                if table:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sink", ["plain", "idempotent", "fenced"])
def test_the_summary_counts_the_rows_the_sink_holds(sink_runs, sink):
    out, code = sink_runs[sink]
    assert code == 0, failed_cells(out)
    for backend in BACKENDS:
        s = summary(out, backend, "slow-consumer")
        assert recheck(out / backend / "slow-consumer") == []
        assert s["status"] == "ok" and s["lost"] == 0 and s["jobs"] == 24
        assert s["sink"]["kind"] == sink and s["sink"]["database"].startswith("postgresql://")
        rows = rows_per_job(s["sink"]["table"])
        assert sum(rows.values()) == s["completed"] + s["duplicate_effects"]
        assert {job for job, n in rows.items() if n > 1} == set(s["anomalies"]["duplicate-effect"])
        if sink == "plain" and backend != "logqueue":
            # The slow first run's write comes after the redelivered copy's: two rows.
            assert s["duplicate_executions"] >= 1 and s["duplicate_effects"] >= 1
        else:
            assert max(rows.values()) == 1 and s["duplicate_effects"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_fenced_sink_refuses_the_stale_write(sink_runs):
    out, _ = sink_runs["fenced"]
    events = [json.loads(line) for line in (out / "redis-streams" / "slow-consumer" / "events.jsonl").open()]
    refused = [e for e in events if e["ev"] == "write_refused"]
    assert refused and all("kept its row" in e["reason"] for e in refused)


def test_fenced_is_na_where_a_backend_has_no_token(tmp_path):
    require_server("redis")
    require_server("postgres")
    assert not registry.get("redis-list").fencing_token
    assert main(["--backends", "redis-list", "--scenarios", "slow-consumer", "--sink", "fenced",
                 "--out", str(tmp_path), *SMALL]) == 0
    s = summary(tmp_path, "redis-list", "slow-consumer")
    assert s["status"] == "n/a" and "fencing token" in s["reason"] and s["sink"]["kind"] == "fenced"


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", "run", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_bad_sink_and_unreachable_postgres_are_one_line_errors(tmp_path):
    bad = run_cli("--out", str(tmp_path), "--sink", "upsert")
    assert bad.returncode == 2 and "invalid choice: 'upsert'" in bad.stderr
    env = {**os.environ, "LOGQUEUE_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/test"}
    down = run_cli("--out", str(tmp_path), "--backends", "stub", "--sink", "plain", env=env)
    assert down.returncode == 3 and down.stdout == ""
    assert down.stderr.count("\n") == 1 and "pg_ctlcluster --skip-systemctl-redirect" in down.stderr


USER_MODULE = """
import hashlib, json, os

def fn(payload, ctx):
    with open(os.environ["USER_FN_LOG"], "a") as f:
        f.write(json.dumps({"payload": payload.decode(), "backend": ctx.backend, "job": ctx.job_id}) + "\\n")
    return hashlib.sha256(payload).hexdigest().encode()
"""
SCENARIOS = ("consumer-crash", "slow-consumer", "consumer-partition")
# The function runs inside the worker harness, which is the same for every backend and every
# scenario: every backend under one scenario, and every scenario on one backend, cover it.
EVERY_BACKEND_UNDER, EVERY_SCENARIO_ON = "slow-consumer", "redis-streams"
# The clustered baselines are the single-node adapters given a list of nodes: the contract suite
# runs a user's function on each of them (test_worker_function_with_context); their private
# clusters would double this test's time for nothing more.
CLUSTERED = {"rabbitmq-quorum-cluster", "nats-jetstream-cluster", "redis-sentinel"}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_users_function_runs_on_their_payloads_on_every_backend_and_under_every_scenario(tmp_path):
    for server in ("rabbitmq", "redis", "nats"):
        require_server(server)
    (tmp_path / "mymod.py").write_text(USER_MODULE)
    payloads = [f"invoice {i}" for i in range(7)]
    (tmp_path / "payloads.txt").write_text("\n".join(payloads) + "\n")
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "USER_FN_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "out"
    backends = [b for b in registry.parse_backends("all") if b not in CLUSTERED]
    others = [sc for sc in SCENARIOS if sc != EVERY_BACKEND_UNDER]
    cells = [(b, EVERY_BACKEND_UNDER) for b in backends] + [(EVERY_SCENARIO_ON, sc) for sc in others]
    for backends_arg, scenarios in ((",".join(backends), EVERY_BACKEND_UNDER), (EVERY_SCENARIO_ON, ",".join(others))):
        done = subprocess.run(
            [sys.executable, "-m", "experiments", "run", "--func", "mymod:fn", "--payloads", str(tmp_path / "payloads.txt"),
             "--scenarios", scenarios, "--backends", backends_arg, "--out", str(out), *SMALL],
            capture_output=True, text=True, timeout=1700, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "failure experiments: mymod:fn, sink file" in done.stdout
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {c["payload"] for c in calls} == set(payloads)  # the user's payloads, never the envelope
    ran = {c["backend"] for c in calls}
    for backend, scenario in cells:
        s = summary(out, backend, scenario)
        assert s["func"] == "mymod:fn"
        assert s["status"] == "ok", (backend, scenario, s.get("reason"))
        assert s["lost"] == 0 and s["completed"] == s["jobs"] > 0, (backend, scenario)
    assert ran == set(backends)
