"""The private clusters of baselines/servers: start, leader through the system's API, SIGKILL it,
a new leader, pause/resume, stop -- and no process left behind, even when the launcher is SIGKILLed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from baselines.servers.nats_cluster import NatsCluster
from baselines.servers.nodes import ClusterUnavailable, process_state
from baselines.servers.rabbitmq_cluster import RabbitMQCluster
from baselines.servers.redis_sentinel import RedisSentinelCluster
from conftest import IN_CI, RABBITMQ_CLUSTERS

pytestmark = RABBITMQ_CLUSTERS

QUEUE = "t-leader"


def processes_under(path: Path) -> list[int]:
    """PIDs whose command line, environment or working directory names ``path`` (the cluster's run directory).

    (Redis rewrites its command line, but runs in its ``dir``; NATS names its store on the
    command line; RabbitMQ's nodes have it in their environment.)"""
    needle = str(path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            cwd = os.readlink(f"/proc/{entry}/cwd").encode()
        except OSError:
            continue
        if process_state(int(entry)) != b"Z" and (needle in cmdline or needle in environ or cwd.startswith(needle)):
            found.append(int(entry))
    return found


def started(cluster):
    try:
        return cluster.start()
    except ClusterUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def declare_quorum_queue(cluster: RabbitMQCluster) -> None:
    import pika

    host, port = cluster.addresses[0].split(":")
    conn = pika.BlockingConnection(pika.ConnectionParameters(host, int(port)))
    try:
        conn.channel().queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum",
                                                                     "x-quorum-initial-group-size": 3})
    finally:
        conn.close()


def declare_r3_stream(cluster: NatsCluster) -> None:
    from nats.js.api import RetentionPolicy, StorageType

    cluster.ask(lambda js: js.add_stream(name=QUEUE, subjects=[QUEUE], num_replicas=3,
                                         retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE))


CASES = {
    "rabbitmq": (RabbitMQCluster, declare_quorum_queue, QUEUE),
    "nats": (NatsCluster, declare_r3_stream, QUEUE),
    "redis-sentinel": (RedisSentinelCluster, lambda cluster: None, None),
}


@pytest.mark.parametrize("system", list(CASES))
def test_leader_sigkill_fails_over_and_stop_leaves_nothing(system, tmp_path):
    cls, declare, queue = CASES[system]
    cluster = cls(tmp_path)
    try:
        started(cluster)
        assert cluster.start_seconds > 0
        assert "up in" in (tmp_path / "start.txt").read_text()
        assert len({n.pid for n in cluster.nodes.values()}) == 3 and all(n.up() for n in cluster.nodes.values())
        # Whatever a node writes to its working directory (an Erlang crash dump) stays in the run directory.
        assert all(os.readlink(f"/proc/{n.pid}/cwd").startswith(str(tmp_path)) for n in cluster.nodes.values())
        declare(cluster)
        leader = cluster.wait_leader(30.0, queue)
        assert leader in cluster.nodes
        if system == "rabbitmq":  # every member's Raft state and log, as follower-lag's catch-up reads them
            members = cluster.members(queue)
            assert sorted(members) == sorted(cluster.nodes)
            assert members[leader]["state"] == "leader" and all(m["log_index"] > 0 for m in members.values())
        cluster.kill(leader)
        assert not cluster.nodes[leader].alive()
        successor = cluster.wait_leader(60.0, queue, exclude=leader)
        assert successor != leader and successor in cluster.nodes
        cluster.restart(leader)
        assert cluster.nodes[leader].up()
        other = next(n for n in cluster.nodes if n != successor)
        cluster.pause(other)
        assert process_state(cluster.nodes[other].pid) == b"T"
        cluster.resume(other)
        assert process_state(cluster.nodes[other].pid) != b"T" and cluster.nodes[other].up()
    finally:
        cluster.stop()
    assert processes_under(tmp_path) == []


@pytest.mark.parametrize("cls, package", [(RabbitMQCluster, "rabbitmq-server"), (NatsCluster, "nats-server"),
                                          (RedisSentinelCluster, "redis-server")])
def test_missing_binary_is_one_line_naming_the_package(cls, package, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("baselines.servers.rabbitmq_cluster.SERVER", str(tmp_path / "none"))
    with pytest.raises(ClusterUnavailable) as err:
        cls(tmp_path).start()
    assert "\n" not in str(err.value) and f"apt-get install {package}" in str(err.value)


def test_cli_prints_the_client_environment_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "baselines.servers", "redis-sentinel", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        header = proc.stdout.readline()
        if not header.startswith("#"):
            proc.wait(30)
            message = proc.stderr.read()
            pytest.fail(message) if IN_CI or "not installed" not in message else pytest.skip(message)
        exports = [proc.stdout.readline().strip() for _ in range(2)]
        assert "nodes up in" in header
        assert exports[0].startswith("export LOGQUEUE_REDIS_SENTINEL=127.0.0.1:")
        assert exports[1] == "export LOGQUEUE_REDIS_SENTINEL_MASTER=lq"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert processes_under(tmp_path) == []


def test_cli_rejects_an_unknown_system(tmp_path):
    done = subprocess.run([sys.executable, "-m", "baselines.servers", "kafka", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'kafka'" in done.stderr
