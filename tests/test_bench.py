"""``python -m experiments bench``: output shape and sanity (not speed), bounded runs."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from baselines.base import AckError, BackendConfig
from baselines.stub import StubBackend
from experiments import bench
from tests.conftest import require_server

FIGURES = ("publish_per_s", "consume_per_s", "mixed_publish_per_s", "end_to_end_per_s", "offered_per_s",
           "p50_ms", "p99_ms", "max_ms")


def run_bench(tmp_path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "bench.json"
    code = bench.main([*args, "--out", str(out), "--quiet"])
    return code, json.loads(out.read_text())


def check_ok_row(row: dict, messages: int) -> None:
    assert row["status"] == "ok", row.get("reason")
    for key in FIGURES:
        assert row[key] > 0, key
    assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    # The offered load is half the measured maximum, and the latency phase used it.
    assert row["offered_per_s"] == pytest.approx(row["end_to_end_per_s"] / 2, rel=0.01)
    assert 1 <= row["latency_messages"] <= messages
    assert row["messages"] == messages and row["duplicates"] == 0 and row["ack_errors"] == 0


def test_stub_backend_runs_every_phase_and_writes_json_and_plot(tmp_path):
    plot = tmp_path / "bench.png"
    code, results = run_bench(tmp_path, "--backends", "stub", "--messages", "400", "--payload-bytes", "16",
                              "--window", "50", "--consumers", "2", "--latency-seconds", "0.3", "--plot", str(plot))
    assert code == 0
    assert list(results) == ["stub"]
    check_ok_row(results["stub"], 400)
    assert results["stub"]["window"] == 50 and results["stub"]["consumers"] == 2
    assert results["stub"]["durability"] == StubBackend.durability  # the class's own line
    assert plot.read_bytes().startswith(b"\x89PNG")


BENCH_FUNCTION = """
import os

def fn(payload, ctx):
    if ctx.attempt != 1 or ctx.backend != "stub":
        raise ValueError("unexpected context")
    with open(os.environ["BENCH_FN_LOG"], "a") as f:
        f.write(f"{len(payload)}\\n")
    return payload[::-1]
"""


def test_a_worker_function_runs_on_every_delivery(tmp_path, monkeypatch):
    (tmp_path / "benchmod.py").write_text(BENCH_FUNCTION)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BENCH_FN_LOG", str(tmp_path / "calls"))
    code, results = run_bench(tmp_path, "--backends", "stub", "--messages", "200", "--payload-bytes", "16",
                              "--window", "50", "--consumers", "2", "--latency-seconds", "0.3", "--func", "benchmod:fn")
    assert code == 0
    check_ok_row(results["stub"], 200)
    assert results["stub"]["func"] == "benchmod:fn" and results["stub"]["func_errors"] == 0
    calls = (tmp_path / "calls").read_text().split()
    # The consume and mixed phases, then latency; the function sees the bytes after the header.
    assert len(calls) >= 400 and set(calls) == {"11"}


def test_curves_closed_loop_and_hdr_latency_on_the_stub(tmp_path):
    from hdrh.histogram import HdrHistogram

    code, results = run_bench(tmp_path, "--backends", "stub", "--messages", "600", "--payload-bytes", "16,64",
                              "--consumers", "1,3", "--rates", "20,50,80", "--clients", "2",
                              "--latency-seconds", "0.3", "--warmup-seconds", "0.1")
    assert code == 0
    row = results["stub"]
    check_ok_row(row, 600)
    assert [p["rate_pct"] for p in row["latency_vs_load"]] == [20, 50, 80]
    for point in row["latency_vs_load"]:
        assert point["offered_per_s"] == pytest.approx(row["end_to_end_per_s"] * point["rate_pct"] / 100, rel=0.01)
        assert point["warmup_messages"] >= 1 and point["latency_messages"] >= 1  # the warm-up is left out
        assert point["p50_ms"] <= point["p90_ms"] <= point["p99_ms"] <= point["p999_ms"] <= point["max_ms"]
        hist = HdrHistogram.decode(point["hdr"])
        assert hist.get_total_count() == point["latency_messages"]
        # max_ms is rounded to 0.01 ms (5 us either way) and the histogram holds whole us to 3 digits
        assert hist.get_max_value() == pytest.approx(point["max_ms"] * 1000, rel=0.002, abs=6)
    assert row["p99_ms"] == row["latency_vs_load"][1]["p99_ms"]  # the headline is the 50% point
    assert [p["consumers"] for p in row["consume_vs_consumers"]] == [1, 3]
    assert [p["payload_bytes"] for p in row["throughput_vs_payload"]] == [16, 64]
    assert all(p["consume_per_s"] > 0 for p in row["consume_vs_consumers"] + row["throughput_vs_payload"])
    closed = row["closed_loop"]
    assert closed["clients"] == 2 and closed["completed_per_s"] > 0 and closed["latency_messages"] >= 1
    assert closed["p50_ms"] <= closed["p99_ms"] <= closed["max_ms"]


def test_latency_summary_is_nearest_rank_over_every_sample():
    summary = bench.latency_summary([float(x) for x in range(1000, 0, -1)])
    assert (summary["p50_ms"], summary["p90_ms"], summary["p99_ms"], summary["p999_ms"], summary["max_ms"]) == \
        (500, 900, 990, 999, 1000)


def test_unreachable_backend_is_reported_not_fatal(tmp_path, monkeypatch):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("LOGQUEUE_REDIS_URL", closed)
    code, results = run_bench(tmp_path, "--backends", "redis-streams,stub", "--messages", "50",
                              "--latency-seconds", "0.2")
    assert code == 0  # unavailable is not a failure of the run
    row = results["redis-streams"]
    assert row["status"] == "unavailable"
    assert closed in row["reason"] and "\n" not in row["reason"]
    assert results["stub"]["status"] == "ok"


@pytest.mark.parametrize("args, message", [
    (["--payload-bytes", "4"], "--payload-bytes must be at least 5"),
    (["--backends", "nosuch"], "unknown backend 'nosuch'"),
    (["--window", "0"], "--window must be at least 1"),
    (["--cluster", "nohost"], "--cluster"),
    (["--func", "no_such_module:fn"], "--func: cannot import module 'no_such_module'"),
    (["--consumers", "2,0"], "--consumers must be at least 1"),
    (["--payload-bytes", "100,3"], "--payload-bytes must be at least 5"),
    (["--rates", "50,0"], "--rates must be positive"),
    (["--rates", "x"], "--rates"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "experiments", "bench", "--out", str(tmp_path / "x.json"), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_help_explains_the_phases():
    proc = subprocess.run([sys.executable, "-m", "experiments", "bench", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    for word in ("publish", "consume", "mixed", "latency", "--window", "--consumers", "--cluster", "--native-rounds"):
        assert word in proc.stdout
    # each fairness rule is stated in --help
    for rule in ("the same payloads", "the same publish window W, prefetch, ack batch and number of consumers",
                 "no auto-ack", "own measured maximum", "warm-up is excluded for all",
                 "alternating with the adapter round by round", "replicated and single-node rows are told apart"):
        assert rule in " ".join(proc.stdout.split()), rule


def test_payloads_are_the_same_for_every_backend_and_carry_phase_and_index():
    a, b = bench.make_payloads(2, 10, 100), bench.make_payloads(2, 10, 100)
    assert a == b and all(len(p) == 100 for p in a)
    assert [bench.HEADER.unpack_from(p) for p in a] == [(2, i) for i in range(10)]
    assert len({p[bench.HEADER.size:] for p in a}) == 1  # the same bytes after the header


def test_tally_counts_each_index_once_and_ignores_other_phases():
    t = bench.Tally(phase=3, n=2)
    t.record(bench.HEADER.pack(3, 0), 1.0)
    t.record(bench.HEADER.pack(3, 0), 2.0)  # a redelivery
    t.record(bench.HEADER.pack(1, 1), 2.5)  # a stray message of another phase
    assert (t.count, t.duplicates, t.done.is_set()) == (1, 1, False)
    t.record(bench.HEADER.pack(3, 1), 3.0)
    assert t.done.is_set() and (t.first_ack, t.last_ack) == (1.0, 3.0)


def test_default_ack_many_reports_each_refused_ack():
    backend = StubBackend(BackendConfig(queue=f"bench-{uuid.uuid4().hex[:8]}", timeout_s=0.05))
    backend.connect()
    try:
        backend.enqueue(b"job")
        consumer = backend.consumer("w")
        first = consumer.receive(1.0)
        again = None
        deadline = time.monotonic() + 5
        while again is None and time.monotonic() < deadline:  # the lease expires; the job comes back
            again = consumer.receive(0.05)
        assert again is not None and again.job_id == first.job_id
        answers = consumer.ack_many([first, again])
        assert isinstance(answers[0], AckError) and answers[1] is None
    finally:
        backend.delete()


def test_real_backends_and_a_local_logqueue_cluster(tmp_path):
    """All four phases on the real servers and on a logqueue cluster the bench starts itself."""
    for server in ("rabbitmq", "redis", "nats"):
        require_server(server)
    names = ["logqueue", "rabbitmq-quorum", "redis-streams", "nats-jetstream"]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "bench", "--backends", ",".join(names), "--messages", "300",
         "--window", "100", "--consumers", "2", "--latency-seconds", "0.3", "--phase-timeout-s", "60",
         "--out", str(tmp_path / "bench.json"), "--quiet"],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert list(results) == names
    for name in names:
        check_ok_row(results[name], 300)
    assert "logqueue / rabbitmq-quorum: publish" in proc.stdout  # the ratio lines


class StubReference:
    """A reference client for the stub (the stub's own calls), so ``--native`` runs end to end in-process."""

    def __init__(self, backend) -> None:
        self.backend = backend

    calls: list[str] = []  # the test's record of who ran when

    def publish(self, payloads, window) -> None:
        self.calls.append("reference")
        self.payloads = list(payloads)

    def consume(self, n, consumers, prefetch, ack_batch, timeout_s) -> float:
        assert n == len(self.payloads)
        return 0.01  # seconds, as a reference measures them

    def delete(self) -> None:
        pass


def test_native_rounds_alternate_and_the_ratio_is_the_median_of_the_rounds(tmp_path, monkeypatch):
    from experiments import bench_native

    monkeypatch.setattr(bench_native, "REFERENCES", [(StubBackend, StubReference)])
    order = StubReference.calls
    real_drain = bench._drain
    monkeypatch.setattr(bench, "_drain", lambda *a: order.append("adapter") or real_drain(*a))
    code, results = run_bench(tmp_path, "--backends", "stub", "--messages", "200", "--payload-bytes", "16",
                              "--latency-seconds", "0.2", "--warmup-seconds", "0", "--native", "--native-rounds", "3")
    assert code == 0
    row = results["stub"]
    assert order == ["adapter", "reference", "reference", "adapter", "adapter", "reference"]
    rounds = row["native"]["rounds"]
    assert len(rounds) == 3
    for what in ("publish", "consume"):
        ratios = sorted(r[f"adapter_{what}_per_s"] / r[f"{what}_per_s"] for r in rounds)
        assert row["x_native"][what] == round(ratios[1], 2)
        assert row["native"][f"{what}_per_s"] == round(sorted(r[f"{what}_per_s"] for r in rounds)[1], 1)
    assert bench.native_ratios(row) == (row["x_native"]["publish"], row["x_native"]["consume"])
    from experiments import analysis

    table = analysis.native_table(analysis.bench_frame(results))
    assert table.loc["stub", "publish x native"] == row["x_native"]["publish"] and table.loc["stub", "rounds"] == 3
    assert row["replicas"] == StubBackend.replicas


def test_replicated_rows_are_labelled_and_their_confirm_is_printed():
    from experiments import analysis

    results = {"logqueue": {"status": "ok", "replicas": 3, "durability": "majority fsync"},
               "redis-list": {"status": "ok", "replicas": 1, "durability": "XADD reply"}}
    assert bench.confirm_lines(results) == ["logqueue (3 nodes): majority fsync", "redis-list (1 node): XADD reply"]
    frame = analysis.bench_frame(results)
    assert [analysis.backend_label(b, row) for b, row in frame.iterrows()] == ["logqueue (3 nodes)", "redis-list"]


@pytest.mark.parametrize("name", ["rabbitmq-quorum", "rabbitmq-classic"])
def test_rabbitmq_reference_acks_every_message_including_a_partial_last_batch(name):
    """The native reference settles all N (N not a multiple of the ack batch, so every consumer's
    last acks come from the per-read flush) and leaves its queue empty."""
    require_server("rabbitmq")
    from baselines import registry
    from experiments import bench_native

    n, consumers, prefetch, ack_batch = 1003, 3, 100, 50
    backend = registry.get(name)(BackendConfig(queue=f"bench-ref-{uuid.uuid4().hex[:8]}", prefetch=prefetch))
    ref = bench_native.RabbitMQReference(backend)
    try:
        ref.publish(bench.make_payloads(bench.PUBLISH, n, 100), window=200)
        assert ref.consume(n, consumers, prefetch, ack_batch, timeout_s=30) > 0
        conn = backend.open_connection()
        left = conn.channel().queue_declare(ref.queue, passive=True).method.message_count
        conn.close()
        assert left == 0
    finally:
        ref.delete()
