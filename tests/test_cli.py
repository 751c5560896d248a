"""The `logqueue` command: help, one-line errors, and every form against a real cluster."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from cluster_util import json_lines, make_cluster, run_cli, wait_for  # noqa: F401
from logqueue.client import Client
from logqueue.local_cluster import free_ports


@pytest.mark.parametrize("argv", [
    ["--help"], ["node", "--help"], ["cluster", "up", "--help"], ["status", "--help"], ["log", "append", "--help"],
    ["log", "read", "--help"], ["member", "add", "--help"], ["leader", "transfer", "--help"],
])
def test_help_explains_every_command(argv):
    r = run_cli(*argv)
    assert r.returncode == 0 and "usage: logqueue" in r.stdout and len(r.stdout) > 200


@pytest.mark.parametrize("argv, message", [
    (["node", "--id", "1", "--listen", "127.0.0.1:1", "--peers", "1=nohost", "--data-dir", "d"], "expected HOST:PORT"),
    (["node", "--id", "0", "--listen", "127.0.0.1:1", "--peers", "1=h:1", "--data-dir", "d"], "positive integer"),
    (["node", "--id", "1", "--listen", "127.0.0.1:1", "--peers", "1=h:1", "--data-dir", "d",
      "--election-timeout-ms", "500-100"], "LOW <= HIGH"),
    (["node", "--id", "1", "--listen", "127.0.0.1:1", "--peers", "1=h:2", "--data-dir", "d"], "but --listen is"),
    (["node", "--id", "1", "--listen", "127.0.0.1:1", "--peers", "2=h:2", "--data-dir", "d",
      "--heartbeat-ms", "400"], "below the election timeout"),
    (["node", "--id", "1", "--listen", "127.0.0.1:1", "--peers", "2=h:2", "--data-dir", "d",
      "--raft-variant", "etcd"], "invalid choice: 'etcd'"),
    (["log", "append", "--cluster", "127.0.0.1:1", "--count", "1", "--secret-file", "/nonexistent"],
     "cannot read secret file"),
    (["log", "append", "--cluster", "127.0.0.1:1", "--from-file", "/nonexistent"], "cannot read /nonexistent"),
    (["status", "--cluster", ""], "no node address"),
    (["log", "append", "--cluster", "127.0.0.1:1"], "one of the arguments"),
])
def test_bad_input_is_one_line_without_a_traceback(argv, message):
    r = run_cli(*argv)
    assert r.returncode in (1, 2)
    assert message in r.stderr and "Traceback" not in r.stderr
    # One line, or argparse's usage block followed by one error line.
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 or lines[0].startswith("usage: logqueue"), r.stderr
    assert re.match(r"logqueue( [a-z]+)*: error: ", lines[-1]) and message in lines[-1], r.stderr


@pytest.mark.parametrize("variant, expected", [
    ([], dict(pre_vote=True, check_quorum=True, step_down_restarts_timer=True)),
    (["--raft-variant", "paper"], dict(pre_vote=False, check_quorum=False, step_down_restarts_timer=False)),
])
def test_the_raft_variant_option_configures_the_nodes_raft_core(variant, expected):
    from logqueue.cli import build_parser
    from logqueue.cli.node import node_config

    args = build_parser().parse_args(["node", "--id", "1", "--listen", "127.0.0.1:1", "--peers", "2=h:2",
                                      "--data-dir", "d", "--election-timeout-ms", "150-200", "--tick-ms", "1",
                                      "--heartbeat-ms", "75", *variant])
    core = node_config(args, 1, args.listen, dict(args.peers), args.data_dir).raft_config()
    assert {k: getattr(core, k) for k in expected} == expected
    assert core.election_ticks == (150, 200) and core.heartbeat_ticks == 75  # the other options still apply


def test_cluster_up_passes_the_raft_variant_on_to_its_nodes():
    from logqueue.cli import build_parser
    from logqueue.cli.cluster import node_options

    args = build_parser().parse_args(["cluster", "up", "--nodes", "3", "--base-port", "7000", "--data-dir", "d",
                                      "--raft-variant", "paper"])
    extra = node_options(args)["extra_args"]
    assert extra[extra.index("--raft-variant") + 1] == "paper"


def test_an_unreachable_cluster_is_a_one_line_error():
    (port,) = free_ports(1)
    r = run_cli("log", "append", "--cluster", f"127.0.0.1:{port}", "--count", "1", "--timeout", "0.5")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "no leader answered" in r.stderr


def test_status_exits_1_when_no_node_answers():
    (port,) = free_ports(1)
    for args in ((), ("--json",)):
        r = run_cli("status", "--cluster", f"127.0.0.1:{port}", "--timeout", "1", *args)
        assert r.returncode == 1 and "unreachable" in r.stdout, r


def test_status_exits_1_when_the_nodes_answer_but_none_leads(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    r = run_cli("status", "--cluster", cluster.addresses[follower])
    assert r.returncode == 1 and "follower" in r.stdout
    assert run_cli("status", "--cluster", cluster.addresses[leader]).returncode == 0


def test_a_node_refuses_a_public_listen_without_a_secret_in_one_line(tmp_path):
    (port,) = free_ports(1)
    args = ("node", "--id", "1", "--listen", f"0.0.0.0:{port}", "--peers", f"1=0.0.0.0:{port}",
            "--data-dir", str(tmp_path / "d"))
    r = run_cli(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"refusing to listen on 0.0.0.0:{port} without --secret-file" in r.stderr and "--insecure" in r.stderr
    # --insecure says the operator knows: the node starts and serves.
    p = subprocess.Popen([sys.executable, "-m", "logqueue", *args, "--insecure"], stderr=subprocess.DEVNULL)
    try:
        with Client(f"127.0.0.1:{port}", timeout=20) as c:
            assert c.status()["role"] == "leader"
    finally:
        p.kill()
        p.wait()


def test_sigkill_of_cluster_up_leaves_no_node_running(tmp_path):
    (base,) = free_ports(1)
    if base > 65000:
        base = 20000 + base % 20000
    p = subprocess.Popen([sys.executable, "-m", "logqueue", "cluster", "up", "--nodes", "3", "--base-port", str(base),
                          "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [p.stdout.readline() for _ in range(4)]
        assert lines[3].startswith("cluster: "), lines
        pids = [int(line.split(" pid ")[1].split()[0]) for line in lines[:3]]
        with Client(lines[3].split(": ", 1)[1].strip(), timeout=20) as c:
            c.status()  # the nodes run and elected a leader
        p.kill()
        p.wait()
        for pid in pids:
            wait_for(lambda: not _pid_alive(pid), 10, f"node process {pid} to die with its launcher")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_every_form_against_a_real_cluster(make_cluster, tmp_path):
    cluster = make_cluster(3)
    cluster.leader()
    spec = ",".join(cluster.addresses.values())

    r = run_cli("status", "--cluster", spec, "--json")
    rows = json.loads(r.stdout)
    assert r.returncode == 0  # a leader was found
    assert {row["role"] for row in rows} == {"leader", "follower"}
    for row in rows:
        assert {"id", "address", "role", "term", "leader_id", "commit_index", "last_index", "applied_index",
                "pid"} <= set(row)
    table = run_cli("status", "--cluster", spec).stdout
    assert "leader" in table and "follower" in table

    lines = ["first line", "second ünïcode line", "third"]
    src = tmp_path / "records.txt"
    src.write_text("\n".join(lines) + "\n")
    out = json.loads(run_cli("log", "append", "--cluster", spec, "--from-file", str(src)).stdout)
    assert out["appended"] == 3 and out["last_index"] - out["first_index"] == 2
    gen = json.loads(run_cli("log", "append", "--cluster", spec, "--count", "50", "--payload-bytes", "64").stdout)
    assert gen["appended"] == 50 and gen["first_index"] > out["last_index"]

    cluster.wait_applied([1, 2, 3], gen["last_index"])
    reads = [run_cli("log", "read", "--node", cluster.addresses[i], "--from", "1").stdout for i in (1, 2, 3)]
    assert reads[0] == reads[1] == reads[2]
    rows = json_lines(reads[0])
    assert [r["data"] for r in rows[:3]] == lines and all("kind" not in r for r in rows)
    assert all(len(r["data"]) == 64 for r in rows[3:]) and len(rows) == 53
    window = json_lines(run_cli("log", "read", "--node", cluster.addresses[2], "--from",
                                str(out["first_index"] + 1), "--max", "2").stdout)
    assert [r["index"] for r in window] == [out["first_index"] + 1, out["first_index"] + 2]
    everything = json_lines(run_cli("log", "read", "--node", cluster.addresses[1], "--all").stdout)
    assert {"noop"} <= {r.get("kind") for r in everything}

    leader = cluster.leader()
    target = next(i for i in (1, 2, 3) if i != leader)
    r = run_cli("leader", "transfer", "--cluster", spec, "--to", str(target))
    assert r.returncode == 0 and json.loads(r.stdout) == {"leader": target}
    assert cluster.leader() == target


def test_binary_records_are_read_back_as_base64(make_cluster):
    cluster = make_cluster(3)
    with Client(list(cluster.addresses.values())) as c:
        (index,) = c.append([b"\xff\x00\xfe"])
    cluster.wait_applied([1], index)
    rows = json_lines(run_cli("log", "read", "--node", cluster.addresses[1], "--from", str(index)).stdout)
    assert rows == [{"index": index, "term": rows[0]["term"], "data": "/wD+", "encoding": "base64"}]


def test_cluster_up_starts_nodes_and_stops_them_on_ctrl_c(tmp_path):
    (base,) = free_ports(1)
    if base > 65000:
        base = 20000 + base % 20000
    p = subprocess.Popen([sys.executable, "-m", "logqueue", "cluster", "up", "--nodes", "3", "--base-port", str(base),
                          "--data-dir", str(tmp_path), "--election-timeout-ms", "150-300", "--heartbeat-ms", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # as a shell's `cmd &` starts it: Ctrl-C must stop it all the same
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = [p.stdout.readline() for _ in range(4)]
        assert lines[3].startswith("cluster: ") and f"127.0.0.1:{base + 2}" in lines[3]
        pids = [int(line.split(" pid ")[1].split()[0]) for line in lines[:3]]
        spec = lines[3].split(": ", 1)[1].strip()
        with Client(spec) as c:
            assert c.append([b"up"])[0] > 0
        p.send_signal(signal.SIGINT)
        assert p.wait(15) == 0
        for pid in pids:
            wait_for(lambda: not _pid_alive(pid), 5, f"node process {pid} to exit")
        assert (tmp_path / "node-1").is_dir()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_secret_file_protects_the_cluster(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-cluster-secret\n")
    ports = free_ports(3)
    addrs = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    peers = ",".join(f"{i}={a}" for i, a in addrs.items())
    procs = [subprocess.Popen([sys.executable, "-m", "logqueue", "node", "--id", str(i), "--listen", a, "--peers",
                               peers, "--data-dir", str(tmp_path / f"n{i}"), "--secret-file", str(secret),
                               "--election-timeout-ms", "150-300", "--heartbeat-ms", "30"],
                              stderr=subprocess.DEVNULL) for i, a in addrs.items()]
    try:
        spec = ",".join(addrs.values())
        deadline = time.monotonic() + 15
        while True:
            r = run_cli("log", "append", "--cluster", spec, "--count", "3", "--secret-file", str(secret),
                        "--timeout", "5")
            if r.returncode == 0 or time.monotonic() > deadline:
                break
        assert r.returncode == 0, r.stderr
        r = run_cli("status", "--cluster", addrs[1], "--json")
        assert json.loads(r.stdout)[0]["role"] == "unreachable"
        r = run_cli("log", "append", "--cluster", spec, "--count", "1", "--timeout", "2")
        assert r.returncode == 1 and "\n" == r.stderr[-1] and r.stderr.count("\n") == 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
