"""The work queue end to end: real `logqueue` node, `produce` and `worker` processes (issue 4).

Each test runs its own 3-node cluster and `logqueue worker` processes that run a plug-in
function from a module on PYTHONPATH, faults them (SIGKILL, SIGSTOP, the leader killed),
and checks with `logqueue queue results/stats` that every job was completed exactly once
with the function's result for its payload.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cluster_util import json_lines, make_cluster, run_cli, wait_for  # noqa: F401

pytestmark = pytest.mark.slow

PLUGIN = textwrap.dedent('''
    """Test plug-in: sleeps as the payload says (``...;sleep=S``), returns pid:sha256(payload)."""
    import hashlib
    import os
    import time


    def work(payload: bytes) -> bytes:
        for part in payload.split(b";"):
            if part.startswith(b"sleep="):
                time.sleep(float(part[6:]))
        return f"{os.getpid()}:{hashlib.sha256(payload).hexdigest()}".encode()
''')


def expected(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


class Workers:
    """`logqueue worker` processes of one test; all killed at the end."""

    def __init__(self, root, cluster) -> None:
        self.root = root
        self.cluster = cluster
        self.procs: list[subprocess.Popen] = []
        (root / "lqplugin.py").write_text(PLUGIN)

    def start(self, queue: str, *extra: str) -> subprocess.Popen:
        n = len(self.procs)
        argv = [sys.executable, "-m", "logqueue", "worker", "--cluster", ",".join(self.cluster.addresses.values()),
                "--queue", queue, "--group", "g", "--func", "lqplugin:work", "--name", f"w{n}", *extra]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.root), os.environ.get("PYTHONPATH", "")])}
        with open(self.root / f"worker-{n}.out", "wb") as out, open(self.root / f"worker-{n}.err", "wb") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> dict:
        """SIGTERM; the worker finishes its jobs and prints its counts."""
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        assert proc.wait(30) == 0, self.stderr(proc)
        n = self.procs.index(proc)
        return json.loads((self.root / f"worker-{n}.out").read_text())

    def stderr(self, proc: subprocess.Popen) -> str:
        return (self.root / f"worker-{self.procs.index(proc)}.err").read_text(errors="replace")

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait(10)


@pytest.fixture
def workers(tmp_path):
    made: list[Workers] = []

    def make(cluster) -> Workers:
        made.append(Workers(tmp_path, cluster))
        return made[-1]

    yield make
    for w in made:
        w.kill_all()


def cli(cluster, *args: str) -> subprocess.CompletedProcess:
    done = run_cli(*args, "--cluster", ",".join(cluster.addresses.values()))
    assert done.returncode == 0, done.stderr
    return done


def stats(cluster, queue: str) -> dict:
    return json.loads(cli(cluster, "queue", "stats", "--queue", queue, "--group", "g", "--json").stdout)


def query_stats(cluster, queue: str) -> dict:
    return cluster.client.query("stats", queue=queue, group="g")


def check_exactly_once(cluster, queue: str, n: int) -> list[dict]:
    """Every job completed once, with the function's result for its payload; nothing in flight."""
    jobs = {row["offset"]: row["payload"].encode()
            for row in json_lines(cli(cluster, "queue", "read", "--queue", queue, "--from", "0").stdout)}
    assert sorted(jobs) == list(range(n))
    results = json_lines(cli(cluster, "queue", "results", "--queue", queue, "--group", "g").stdout)
    assert [r["offset"] for r in results] == list(range(n)), "each offset exactly once, in order"
    for r in results:
        assert r["result"].split(":")[1] == expected(jobs[r["offset"]]), r
    s = stats(cluster, queue)
    assert (s["enqueued"], s["completed"], s["in_flight"], s["dead_lettered"], s["backlog"]) == (n, n, 0, 0, 0), s
    return results


def test_acceptance_2000_jobs_three_workers_one_sigkilled(make_cluster, workers, tmp_path):
    cluster = make_cluster(3)
    cluster.leader()
    lines = [f"job-{i};sleep=0.002" for i in range(2000)]
    (tmp_path / "jobs.txt").write_text("\n".join(lines) + "\n")
    produced = json.loads(cli(cluster, "produce", "--queue", "q", "--from-file", str(tmp_path / "jobs.txt")).stdout)
    assert produced == {"enqueued": 2000, "first_offset": 0, "last_offset": 1999}

    w = workers(cluster)
    knobs = ("--concurrency", "2", "--lease-ms", "1500", "--heartbeat-ms", "300")
    procs = [w.start("q", *knobs)]
    wait_for(lambda: query_stats(cluster, "q")["completed"] >= 50, 30, "the first worker to get going")
    procs += [w.start("q", *knobs) for _ in range(2)]
    wait_for(lambda: query_stats(cluster, "q")["completed"] >= 300, 30, "the others to join")
    assert all(p.poll() is None for p in procs)
    procs[0].kill()  # SIGKILL mid-run: its leased jobs go to the others when the leases expire
    procs[0].wait(10)
    wait_for(lambda: query_stats(cluster, "q")["completed"] == 2000, 60, "all 2000 jobs completed")
    survivors = [w.stop(p) for p in procs[1:]]
    results = check_exactly_once(cluster, "q", 2000)
    assert all(s["fenced"] == 0 and s["unsettled"] == 0 for s in survivors)
    assert 0 < sum(s["completed"] for s in survivors) < 2000  # the killed worker had completed some
    pids = {r["result"].split(":")[0] for r in results}
    assert str(procs[1].pid) in pids and str(procs[2].pid) in pids


def test_sigstopped_worker_past_its_lease_is_fenced_and_the_result_is_the_other_workers(
        make_cluster, workers, tmp_path):
    cluster = make_cluster(3)
    cluster.leader()
    (tmp_path / "one.txt").write_text("the-job;sleep=1.5\n")
    cli(cluster, "produce", "--queue", "q", "--from-file", str(tmp_path / "one.txt"))
    w = workers(cluster)
    knobs = ("--lease-ms", "800", "--heartbeat-ms", "200")
    paused = w.start("q", *knobs)
    wait_for(lambda: query_stats(cluster, "q")["in_flight"] == 1, 15, "the first worker to claim the job")
    paused.send_signal(signal.SIGSTOP)
    other = w.start("q", *knobs)
    wait_for(lambda: query_stats(cluster, "q")["completed"] == 1, 20, "the second worker to complete the job")
    paused.send_signal(signal.SIGCONT)
    wait_for(lambda: query_stats(cluster, "q")["fenced"] == 1, 15, "the late completion to be fenced")

    late, winner = w.stop(paused), w.stop(other)
    assert (late["completed"], late["fenced"]) == (0, 1), late
    assert (winner["completed"], winner["fenced"]) == (1, 0), winner
    assert "fenced" in w.stderr(paused)
    (result,) = check_exactly_once(cluster, "q", 1)
    assert result["result"].split(":")[0] == str(other.pid)
    assert result["attempts"] == 2


def test_leader_sigkilled_while_workers_run(make_cluster, workers):
    cluster = make_cluster(3)
    cluster.leader()
    cli(cluster, "produce", "--queue", "q", "--count", "1000", "--payload-bytes", "40")
    w = workers(cluster)
    procs = [w.start("q", "--concurrency", "2", "--lease-ms", "3000", "--heartbeat-ms", "500") for _ in range(3)]
    wait_for(lambda: query_stats(cluster, "q")["completed"] >= 100, 30, "the workers to get going")
    leader = cluster.leader()
    cluster.kill(leader)
    cluster.leader(among=[i for i in (1, 2, 3) if i != leader], timeout=10)
    wait_for(lambda: query_stats(cluster, "q")["completed"] == 1000, 60, "all 1000 jobs completed")
    for p in procs:
        assert w.stop(p)["unsettled"] == 0
    check_exactly_once(cluster, "q", 1000)
