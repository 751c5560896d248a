"""Large payloads on real node processes (issue 17, part 4): byte-bounded batches and a
payload limit refused at once in one line."""
from __future__ import annotations

import time
import uuid

import pytest

from cluster_util import make_cluster, run_cli  # noqa: F401
from logqueue.client import Client

pytestmark = pytest.mark.slow

MB = 1_000_000


def test_produce_40_jobs_of_5_mb_is_split_into_frames_the_node_accepts(make_cluster):
    cluster = make_cluster(3)
    cluster.leader()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    r = run_cli("produce", "--cluster", cluster.spec, "--queue", queue, "--count", "40", "--payload-bytes",
                str(5 * MB), "--timeout", "120", timeout=300)
    assert r.returncode == 0, r.stderr
    assert cluster.client.query("stats", queue=queue, group="g")["backlog"] == 40


def test_a_payload_no_frame_can_carry_is_refused_at_once_in_one_line(make_cluster):
    cluster = make_cluster(1)
    cluster.leader()
    timeout_s = 60
    for argv in (["produce", "--queue", "q"], ["log", "append"]):
        started = time.monotonic()
        r = run_cli(*argv, "--cluster", cluster.spec, "--count", "1", "--payload-bytes", str(70 * MB),
                    "--timeout", str(timeout_s), timeout=300)
        elapsed = time.monotonic() - started
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"a payload of {70 * MB} bytes exceeds the maximum of" in r.stderr, r.stderr
        assert elapsed < timeout_s / 2, f"{argv[0]} took {elapsed:.1f} s: it retried instead of refusing"


def test_a_payload_over_the_nodes_maximum_is_refused_by_the_node_in_one_line(make_cluster):
    cluster = make_cluster(1, extra_args=("--max-payload-bytes", str(MB)))
    cluster.leader()
    for argv in (["produce", "--queue", "q"], ["log", "append"]):
        r = run_cli(*argv, "--cluster", cluster.spec, "--count", "1", "--payload-bytes", str(2 * MB),
                    "--timeout", "60", timeout=120)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"a payload of {2 * MB} bytes exceeds this node's maximum of {MB} bytes" in r.stderr, r.stderr
    with Client(cluster.spec, timeout=20) as c:  # a payload at the limit is fine
        assert c.append([b"x" * MB])
