"""Damaged write-ahead logs under real node processes: a torn tail is truncated and
the node catches up; damage before the tail stops the node with a one-line error that
names the file and offset."""
from __future__ import annotations

import pytest

from logqueue.raft.types import Entry
from logqueue.storage.records import encode_records

from cluster_util import check_logs, make_cluster, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def _last_segment(cluster, i):
    return sorted((cluster.root / f"node-{i}" / "wal").glob("*.wal"))[-1]


@pytest.mark.parametrize("written", [1, 12, -1])
def test_a_torn_tail_is_truncated_and_the_node_catches_up(make_cluster, written):
    cluster = make_cluster(3)
    cluster.leader()
    acked = cluster.client.append([b"torn-%d" % k for k in range(200)])
    cluster.wait_applied([1, 2, 3], acked[-1])
    victim = next(i for i in (1, 2, 3) if cluster.status(i)["role"] != "leader")
    status = cluster.status(victim)
    cluster.kill(victim)
    # A crash while writing the next record: only its first bytes reached the disk.
    # (Cutting an acknowledged record instead would break Raft's durability premise.)
    record = b"".join(encode_records([Entry(status["term"], status["last_index"] + 1, b"never acknowledged")])[0])
    with open(_last_segment(cluster, victim), "ab") as f:
        f.write(bytes(record[:written]))
    cluster.start(victim)
    more = cluster.client.append([b"after-%d" % k for k in range(50)])
    datas = [b"torn-%d" % k for k in range(200)] + [b"after-%d" % k for k in range(50)]
    cluster.wait_applied([victim], more[-1])
    check_logs(cluster, [1, 2, 3], datas)
    assert "torn tail" in cluster.log_text(victim)


def test_damage_before_the_tail_stops_the_node_with_the_file_and_offset(make_cluster):
    cluster = make_cluster(3)
    cluster.leader()
    acked = cluster.client.append([b"corrupt-%d" % k for k in range(300)])
    cluster.wait_applied([1, 2, 3], acked[-1])
    victim = next(i for i in (1, 2, 3) if cluster.status(i)["role"] != "leader")
    cluster.kill(victim)
    seg = _last_segment(cluster, victim)
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    cluster.start(victim)
    wait_for(lambda: not cluster.alive(victim), 10, "the node to refuse to start")
    assert cluster.procs[victim].returncode == 1
    text = cluster.log_text(victim)
    assert "Traceback" not in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("logqueue: error:")]
    assert seg.name in line and "offset" in line
    # The two others still serve.
    assert cluster.client.append([b"majority"])[0] > acked[-1]
