"""The event log and result sink: format, and many processes appending to one file."""
from __future__ import annotations

import base64
import json
import multiprocessing
import time

from baselines.base import BackendConfig
from baselines.stub import StubBackend
from experiments.recorder import EventLog, RecordingHooks, ResultSink, read_jsonl


def _append_many(path: str, writer: int, n: int) -> None:
    with EventLog(path) as log:
        for i in range(n):
            log.record("produce", job=f"{writer}-{i}", pad="x" * 3000)  # lines bigger than a pipe buffer


def test_many_processes_append_whole_lines(tmp_path):
    path = str(tmp_path / "events.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w, 300)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = open(path, "rb").read().split(b"\n")
    assert lines[-1] == b""
    events = [json.loads(line) for line in lines[:-1]]  # every line parses: no interleaving
    assert sorted(e["job"] for e in events) == sorted(f"{w}-{i}" for w in range(4) for i in range(300))


def test_event_fields(tmp_path):
    path = tmp_path / "sub" / "events.jsonl"
    before = time.time()
    with EventLog(path) as log:
        log.produce("j1")
        log.record("fault_start", fault="blackhole", target="w1")
    produce, fault = read_jsonl(path)
    assert produce["ev"] == "produce" and produce["job"] == "j1" and before <= produce["t"] <= time.time()
    assert "worker" not in produce and "attempt" not in produce
    assert fault == {"t": fault["t"], "ev": "fault_start", "fault": "blackhole", "target": "w1"}


def test_recording_hooks_write_every_step(tmp_path):
    b = StubBackend(BackendConfig(queue="recorder-hooks"))
    b.connect()
    try:
        b.enqueue(b"x", job_id="j1")
        d = b.consumer("w").receive(1)
        with EventLog(tmp_path / "e.jsonl") as log:
            hooks = RecordingHooks(log, "w7")
            hooks.deliver(d)
            hooks.start(d)
            hooks.finish(d, None, error="RuntimeError: no")
            hooks.effect(d, b"r")
            hooks.ack(d)
            hooks.ack_error(d, "channel closed")
            hooks.dead_letter("j1", 5, "max_attempts")
        events = read_jsonl(tmp_path / "e.jsonl")
    finally:
        b.delete()
    assert [e["ev"] for e in events] == ["deliver", "start", "finish", "effect", "ack", "ack_error", "dead_letter"]
    assert all(e["job"] == "j1" and e["worker"] == "w7" for e in events)
    assert [e["attempt"] for e in events] == [1, 1, 1, 1, 1, 1, 5]
    assert events[2]["error"] == "RuntimeError: no" and events[5]["reason"] == "channel closed"


def test_result_sink_keeps_exact_bytes(tmp_path):
    with ResultSink(tmp_path / "r.jsonl") as sink:
        sink.write("j1", "w1", b"\x00\xffabc")
        sink.write("j1", "w2", b"")
    rows = read_jsonl(tmp_path / "r.jsonl")
    assert [(r["job"], r["worker"], base64.b64decode(r["result"])) for r in rows] == [("j1", "w1", b"\x00\xffabc"), ("j1", "w2", b"")]


def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"ev":"a"}\n{"ev":"b"}\n{"ev":')
    assert read_jsonl(path) == [{"ev": "a"}, {"ev": "b"}]


def test_read_jsonl_has_one_rule_for_a_torn_tail(tmp_path):
    import pytest

    from experiments.recorder import JsonlError

    f = tmp_path / "x.jsonl"
    f.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')
    assert read_jsonl(f) == [{"a": 1}, {"a": 2}]  # the torn last line is left out
    f.write_bytes(b'{"a": 1}\n{"a": 2}')
    assert read_jsonl(f) == [{"a": 1}, {"a": 2}]  # a whole object, only its newline missing
    f.write_bytes(b'{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(JsonlError, match="x.jsonl:2: not a JSON object"):
        read_jsonl(f)
    f.write_bytes(b'{"a": 1}\n[1, 2]\n')
    with pytest.raises(JsonlError, match="x.jsonl:2: not a JSON object"):
        read_jsonl(f)
