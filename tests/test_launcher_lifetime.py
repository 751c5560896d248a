"""Launchers' children die with them, even when the launcher is SIGKILLed (issue 17 part 3):
an experiment's worker processes (PR_SET_PDEATHSIG), a run's private server and a private
cluster (the Reaper)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from baselines.servers.nodes import process_state
from conftest import IN_CI, RABBITMQ_CLUSTERS, require_server
from test_private_clusters import processes_under

pytestmark = RABBITMQ_CLUSTERS

# How long a dead launcher's child may take to go: the kernel signals at once (PDEATHSIG), the
# Reaper as soon as its pipe closes; the margin is for a loaded machine.
GONE_S = 20.0


@contextlib.contextmanager
def launched(script: str):
    """Run ``script`` (it prints one line of fields, then sleeps); yields those fields, and
    SIGKILLs the launcher when the block ends (also when it fails)."""
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        yield launcher.stdout.readline().split()
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        launcher.stdout.close()


def run_launcher(script: str) -> list[int]:
    """Run ``script`` (it prints the pids to watch, then sleeps), SIGKILL it; returns those pids."""
    with launched(script) as fields:
        pids = [int(p) for p in fields]
        assert pids, f"the launcher printed no pids: {fields!r}"
        assert all(process_state(p) not in (b"", b"Z") for p in pids)
    return pids


def wait_gone(pids: list[int]) -> list[int]:
    """The pids among ``pids`` still running (not gone, not a zombie) after up to ``GONE_S``;
    those are SIGKILLed before returning (a failing test leaves nothing behind either)."""
    deadline = time.monotonic() + GONE_S
    while True:
        alive = [p for p in pids if process_state(p) not in (b"", b"Z")]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return alive


def require_redis_server() -> None:
    if not shutil.which("redis-server"):
        (pytest.fail if IN_CI else pytest.skip)("redis-server is not installed (apt-get install redis-server)")


def test_experiment_worker_dies_with_its_sigkilled_launcher(tmp_path):
    require_server("redis")
    events = tmp_path / "events.jsonl"
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from experiments.worker import spawn\n"
        f"w = spawn('w1', 'redis-streams', 'lifetime-{time.time_ns()}', 'echo', Path({str(tmp_path / 'w1.log')!r}),"
        f" events={str(events)!r})\n"
        # Consuming (past its imports and its connect): the serve loop runs until it is stopped.
        f"while not Path({str(events)!r}).exists() and w.alive(): time.sleep(0.05)\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    pids = run_launcher(script)
    assert wait_gone(pids) == [], (tmp_path / "w1.log").read_text()


def test_private_server_dies_with_its_sigkilled_launcher(tmp_path):
    require_redis_server()
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from baselines.servers import REDIS\n"
        "from baselines.servers.private import PrivateServerTopology\n"
        "t = PrivateServerTopology(REDIS)\n"
        f"t.start(Path({str(tmp_path)!r}))\n"
        "print(t.process().pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    pids = run_launcher(script)
    assert wait_gone(pids) == []
    assert processes_under(tmp_path) == []


def test_private_cluster_dies_with_its_sigkilled_launcher(tmp_path):
    require_redis_server()
    script = (
        "import time\n"
        "from baselines.servers.redis_sentinel import RedisSentinelCluster\n"
        f"c = RedisSentinelCluster({str(tmp_path)!r}).start()\n"
        "print(*[n.pid for n in [*c.nodes.values(), *c.sentinels.values()]], flush=True)\n"
        "time.sleep(600)\n"
    )
    pids = run_launcher(script)
    assert len(pids) == 6  # 3 data nodes + 3 Sentinels
    assert wait_gone(pids) == []
    assert processes_under(tmp_path) == []


def test_a_sigkilled_experiments_run_leaves_no_node_or_worker_behind(tmp_path):
    """The runner keeps a backend's cluster for all its cells: SIGKILLed during one, its nodes
    (``logqueue.lifetime``) and the cell's workers (PDEATHSIG) go with it."""
    out = tmp_path / "out"
    runner = subprocess.Popen([sys.executable, "-m", "experiments", "run", "--backends", "logqueue", "--scenarios",
                               "consumer-crash,slow-consumer", "--quick", "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # 3 nodes and 3 workers, each naming the results directory (data or events path).
        while len(children := set(processes_under(out)) - {runner.pid}) < 6:
            assert runner.poll() is None and time.monotonic() < deadline, "the run did not get its workers going"
            time.sleep(0.05)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert wait_gone(sorted(children)) == []
    assert processes_under(out) == []


def test_rabbitmq_cluster_in_namespaces_goes_with_its_sigkilled_launcher(tmp_path):
    """The nodes, the epmd daemons they start in their namespaces, the namespaces and their links."""
    from baselines.servers import netns

    why = netns.unavailable()
    if why:
        (pytest.fail if IN_CI else pytest.skip)(why)
    script = (
        "import time\n"
        "from baselines.servers.rabbitmq_cluster import RabbitMQCluster\n"
        f"c = RabbitMQCluster({str(tmp_path)!r}, namespaces=True).start()\n"
        "n = c.network\n"
        "print(*[p.pid for p in c.nodes.values()], *[n.namespace(i) for i in (1, 2, 3)],"
        " *[n.host_link(i) for i in (1, 2, 3)], flush=True)\n"
        "time.sleep(600)\n"
    )
    with launched(script) as fields:
        assert len(fields) == 9, fields
        pids, names = [int(p) for p in fields[:3]], fields[3:]
        in_namespaces = [int(p) for ns in names[:3] for p in subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()]
        assert set(pids) < set(in_namespaces)  # and an epmd in each
    assert wait_gone(in_namespaces) == []
    assert processes_under(tmp_path) == []
    deadline = time.monotonic() + GONE_S
    while (left := [n for n in names if os.path.exists(f"/run/netns/{n}") or os.path.exists(f"/sys/class/net/{n}")]):
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.05)
