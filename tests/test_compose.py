"""docker-compose.yml: valid for Debian's docker-compose, and wired the way the runner needs."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from baselines.servers import SHARED
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def config() -> dict:
    """The compose file as docker-compose resolves it (anchors merged, $$ unescaped)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        reason = "docker-compose is not installed (make services installs Debian's docker-compose)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    out = subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, f"docker-compose config failed: {out.stderr}"
    return yaml.safe_load(out.stdout)


def test_every_service_the_runner_needs_is_defined(config):
    services = config["services"]
    assert {"rabbitmq", "redis", "nats", "logqueue-1", "logqueue-2", "logqueue-3", "runner"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    assert "-js" in services["nats"]["command"]
    assert set(services["runner"]["depends_on"]) >= {"rabbitmq", "redis", "nats", "logqueue-1", "logqueue-2", "logqueue-3"}


def test_logqueue_nodes_form_one_cluster(config):
    services = config["services"]
    for i in (1, 2, 3):
        node = services[f"logqueue-{i}"]
        command = " ".join(node["command"])
        assert re.search(rf"logqueue node --id {i} --listen 0\.0\.0\.0:7001 --peers \S+ --data-dir /data", command)
        # A node refuses a non-loopback --listen without a secret; compose says --insecure,
        # and publishes the port on the host's loopback only.
        assert "--insecure" in command or "--secret-file" in command
        assert all(str(p).startswith("127.0.0.1:") for p in node["ports"]), node["ports"]
        peers = dict(p.split("=") for p in node["environment"]["LOGQUEUE_PEERS"].split(","))
        assert peers == {str(j): f"logqueue-{j}:7001" for j in (1, 2, 3)}
        assert any(":/data" in str(v) for v in node["volumes"]), "node data must live on a volume"
        assert node["build"]


def test_runner_reaches_every_server_through_the_environment(config):
    services = config["services"]
    env = services["runner"]["environment"]
    # The variables the backends actually read (baselines.servers.SHARED) must all be set.
    for server, variable in ((s.name, s.env) for s in SHARED):
        host = urlsplit(env[variable]).hostname
        assert host == server and host in services, f"{variable} points at {host}, not the {server} service"
    for address in env["LOGQUEUE_CLUSTER"].split(","):
        host, _, port = address.rpartition(":")
        assert host in services and port == "7001"
    command = " ".join(services["runner"]["command"])
    assert "python -m experiments run" in command and "--out /results" in command
    assert "--logqueue-cluster $LOGQUEUE_CLUSTER" in command.replace("$$", "$")
    assert "python -m experiments report /results" in command


def test_dockerfile_installs_the_project():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    for package in ("logqueue", "baselines", "experiments"):
        assert f"COPY {package} ./{package}" in text
        assert (ROOT / package).is_dir()
    assert re.search(r"pip install .*\.\[brokers,experiments", text)


def test_the_replicated_baselines_clusters_are_wired(config):
    services = config["services"]
    rabbit = [f"rabbitmq-cluster-{i}" for i in (1, 2, 3)]
    cookies = {services[n]["environment"]["RABBITMQ_ERLANG_COOKIE"] for n in rabbit}
    assert len(cookies) == 1, "the nodes of one cluster share one Erlang cookie"
    for n in rabbit:
        assert services[n]["hostname"] == n
        args = services[n]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
        assert all(f"'rabbit@{m}'" in args for m in rabbit) and "cluster_nodes" in args
    for i in (1, 2, 3):
        command = services[f"nats-cluster-{i}"]["command"]
        assert "-js" in command and command[command.index("-n") + 1] == f"nats-cluster-{i}"
        routes = command[command.index("--routes") + 1].split(",")
        assert sorted(routes) == [f"nats://nats-cluster-{j}:6222" for j in (1, 2, 3) if j != i]
    for n in ("redis-primary", "redis-replica-1", "redis-replica-2"):
        command = " ".join(services[n]["command"])
        assert "--appendonly yes --appendfsync everysec" in command
        assert ("--replicaof redis-primary 6379" in command) == (n != "redis-primary")
    for i in (1, 2, 3):
        command = " ".join(services[f"redis-sentinel-{i}"]["command"])
        assert "sentinel monitor lq redis-primary 6379 2" in command and "--sentinel" in command
    env = services["runner"]["environment"]
    for variable, prefix in (("LOGQUEUE_RABBITMQ_CLUSTER", "rabbitmq-cluster-"), ("LOGQUEUE_NATS_CLUSTER", "nats-cluster-"),
                             ("LOGQUEUE_REDIS_SENTINEL", "redis-sentinel-")):
        hosts = [a.rpartition(":")[0] for a in env[variable].split(",")]
        assert hosts == [f"{prefix}{i}" for i in (1, 2, 3)] and all(h in services for h in hosts)
