"""Unit tests of each work-queue command, its answers and its error codes."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logqueue.queue import QueueMachine
from logqueue.queue import commands as c

Q, G = "jobs", "workers"


class Log:
    """Feeds a machine entries with growing indexes; `now` is set explicitly."""

    def __init__(self, **config):
        self.m = QueueMachine(**config)
        self.index = 0
        self.now = 1_000

    def apply(self, *commands, now=None, gap=1):
        self.index += gap
        if now is not None:
            self.now = now
        return self.m.apply(self.index, self.now, list(commands))

    def one(self, command, **kw):
        return self.apply(command, **kw)[0]

    def enqueue(self, n, producer="p"):
        first = self.m.stats(Q, G)["enqueued"]
        return self.apply(*[c.enqueue(Q, b"job%d" % (first + i), producer, first + i) for i in range(n)])


def test_enqueue_offsets_start_at_zero_and_dedup_by_producer_seq():
    log = Log()
    assert log.apply(c.enqueue(Q, b"a", "p", 0), c.enqueue(Q, b"b", "p", 1)) == [{"offset": 0}, {"offset": 1}]
    # a retried append, in a later entry and out of order, returns the first offset
    assert log.apply(c.enqueue(Q, b"b", "p", 1), c.enqueue(Q, b"a", "p", 0)) == [
        {"offset": 1, "duplicate": True},
        {"offset": 0, "duplicate": True},
    ]
    assert log.one(c.enqueue(Q, b"a", "other", 0)) == {"offset": 2}  # seqs are per producer
    assert log.one(c.enqueue("elsewhere", b"a", "p", 0)) == {"offset": 0}  # and per queue
    assert log.one(c.enqueue(Q, b"anon")) == {"offset": 3}  # no producer: no dedup
    assert log.one(c.enqueue(Q, b"anon")) == {"offset": 4}
    assert log.m.read(Q, 0, 10) == [(0, b"a"), (1, b"b"), (2, b"a"), (3, b"anon"), (4, b"anon")]
    assert log.m.stats(Q, G)["duplicates"] == 2


@pytest.mark.parametrize(
    "command, field",
    [
        ({"op": "enqueue", "queue": Q, "payload": "text"}, "payload"),
        ({"op": "enqueue", "queue": "", "payload": b"x"}, "queue"),
        ({"op": "enqueue", "queue": Q, "payload": b"x", "producer_id": "p"}, "seq"),
        ({"op": "enqueue", "queue": Q, "payload": b"x", "producer_id": 1.5, "seq": 0}, "producer_id"),
        ({"op": "claim", "queue": Q, "group": G, "worker": "w", "max_jobs": -1, "lease_ms": 10}, "max_jobs"),
        ({"op": "claim", "queue": Q, "group": G, "worker": "w", "max_jobs": 1, "lease_ms": 0}, "lease_ms"),
        ({"op": "claim", "queue": Q, "group": G, "worker": "w", "max_jobs": True, "lease_ms": 5}, "max_jobs"),
        ({"op": "claim", "queue": Q, "worker": "w", "max_jobs": 1, "lease_ms": 5}, "group"),
        ({"op": "heartbeat", "queue": Q, "group": G, "worker": "w", "offsets": [0, "1"], "token": 1, "lease_ms": 5}, "offsets"),
        ({"op": "complete", "queue": Q, "group": G, "offset": 0, "token": 1, "result": None}, "result"),
        ({"op": "fail", "queue": Q, "group": G, "offset": 0, "token": 1, "reason": 7}, "reason"),
        ({"op": "commit_offset", "queue": Q, "group": G, "offset": -3}, "offset"),
    ],
)
def test_malformed_fields_answer_bad_request_naming_the_field(command, field):
    (answer,) = Log().apply(command)
    assert answer["error"] == c.BAD_REQUEST
    assert repr(field) in answer["message"] and "\n" not in answer["message"]


def test_unknown_op_and_non_map_commands_answer_bad_request():
    log = Log()
    unknown, not_a_map, odd_op, ok = log.apply({"op": "purge", "queue": Q}, [1, 2], {"op": [1]}, c.enqueue(Q, b"x"))
    assert unknown["error"] == c.BAD_REQUEST and "purge" in unknown["message"]
    assert not_a_map["error"] == odd_op["error"] == c.BAD_REQUEST
    assert ok == {"offset": 0}  # a bad command does not spoil its neighbours


def test_apply_refuses_an_index_that_does_not_grow():
    m = QueueMachine()
    m.apply(5, 0, [])
    with pytest.raises(ValueError, match="must be an integer > last applied index 5"):
        m.apply(5, 0, [])


def test_claim_gives_lowest_offsets_with_the_entry_index_as_token():
    log = Log()
    log.enqueue(5)
    (a,) = log.apply(c.claim(Q, G, "w1", 2, 100), gap=7)
    assert a == {"jobs": [[0, 8, b"job0", 1], [1, 8, b"job1", 1]]}
    b, d = log.apply(c.claim(Q, G, "w2", 2, 100), c.claim(Q, G, "w3", 9, 100))
    assert [j[0] for j in b["jobs"]] == [2, 3] and [j[0] for j in d["jobs"]] == [4]
    assert {j[1] for j in b["jobs"] + d["jobs"]} == {9}  # one entry, one token
    assert log.one(c.claim(Q, G, "w4", 3, 100)) == {"jobs": []}
    assert log.one(c.claim(Q, G, "w4", 0, 100)) == {"jobs": []}
    s = log.m.stats(Q, G)
    assert (s["in_flight"], s["backlog"], s["claimed"], s["redelivered"]) == (5, 0, 5, 0)


def test_claim_before_any_enqueue_waits_for_jobs():
    log = Log()
    assert log.one(c.claim(Q, G, "w", 3, 100)) == {"jobs": []}
    log.enqueue(1)
    assert [j[0] for j in log.one(c.claim(Q, G, "w", 3, 100))["jobs"]] == [0]


def test_replayed_claim_request_returns_the_first_answer_without_claiming_again():
    log = Log()
    log.enqueue(4)
    first = log.one(c.claim(Q, G, "w", 2, 100, request_id="r1"))
    replay = log.one(c.claim(Q, G, "w", 2, 100, request_id="r1"))
    assert replay == {"jobs": first["jobs"], "duplicate": True}
    other = log.one(c.claim(Q, G, "x", 2, 100, request_id="r1"))  # request ids are per worker
    assert [j[0] for j in other["jobs"]] == [2, 3]
    assert log.m.stats(Q, G)["claimed"] == 4


def test_request_table_is_bounded_per_worker():
    log = Log(request_window=2)
    log.enqueue(10)
    for rid in ("a", "b", "c"):
        log.one(c.claim(Q, G, "w", 1, 100, request_id=rid))
    assert log.one(c.claim(Q, G, "w", 1, 100, request_id="c"))["duplicate"] is True
    fresh = log.one(c.claim(Q, G, "w", 1, 100, request_id="a"))  # forgotten: a new claim
    assert "duplicate" not in fresh and fresh["jobs"][0][0] == 3


def test_least_recent_workers_request_tables_are_forgotten():
    log = Log(max_workers=2)
    log.enqueue(10)
    for worker in ("w1", "w2", "w3"):
        log.one(c.claim(Q, G, worker, 1, 100, request_id="r"))
    assert "duplicate" in log.one(c.claim(Q, G, "w3", 1, 100, request_id="r"))
    assert "duplicate" not in log.one(c.claim(Q, G, "w1", 1, 100, request_id="r"))


def test_expired_lease_is_claimed_again_with_larger_token_and_attempt():
    log = Log()
    log.enqueue(1)
    (job,) = log.one(c.claim(Q, G, "w1", 1, 100), now=1_000)["jobs"]
    assert log.one(c.claim(Q, G, "w2", 1, 100), now=1_099) == {"jobs": []}  # still live
    (again,) = log.one(c.claim(Q, G, "w2", 1, 100), now=1_100)["jobs"]  # lease passed
    assert again[0] == 0 and again[1] > job[1] and again[3] == 2 and again[2] == b"job0"
    s = log.m.stats(Q, G)
    assert (s["redelivered"], s["expired"], s["in_flight"]) == (1, 1, 1)


def test_time_inside_never_goes_backwards():
    log = Log()
    log.enqueue(1)
    log.one(c.claim(Q, G, "w1", 1, 100), now=1_000)
    log.apply(now=5_000)  # the lease expired at this stamp
    # a new leader stamps an earlier time: the machine keeps 5_000
    (job,) = log.one(c.claim(Q, G, "w2", 1, 100), now=1_050)["jobs"]
    assert job[3] == 2
    assert log.m.now == 5_000


def test_heartbeat_extends_live_leases_and_reports_lost_ones():
    log = Log()
    log.enqueue(3)
    (claim,) = log.apply(c.claim(Q, G, "w", 2, 100), now=1_000)
    token = claim["jobs"][0][1]
    answer = log.one(c.heartbeat(Q, G, "w", [0, 1, 2, 9], token, 500), now=1_050)
    assert answer == {"extended": [0, 1], "lost": [2, 9]}
    assert log.one(c.heartbeat(Q, G, "intruder", [0], token, 500)) == {"extended": [], "lost": [0]}
    assert log.one(c.heartbeat(Q, G, "w", [0], token + 1, 500)) == {"extended": [], "lost": [0]}
    assert log.one(c.claim(Q, G, "x", 5, 100), now=1_400) == {"jobs": [[2, log.index, b"job2", 1]]}
    assert log.one(c.heartbeat("nope", G, "w", [0], token, 5)) == {"extended": [], "lost": [0]}
    assert "nope" not in log.m.queue_names()  # a command about nothing creates nothing


def test_heartbeat_after_expiry_revives_a_claim_nobody_overtook():
    log = Log()
    log.enqueue(1)
    token = log.one(c.claim(Q, G, "w", 1, 100), now=1_000)["jobs"][0][1]
    assert log.one(c.heartbeat(Q, G, "w", [0], token, 100), now=1_200) == {"extended": [0], "lost": []}
    assert log.one(c.claim(Q, G, "x", 1, 100), now=1_250) == {"jobs": []}
    assert log.m.stats(Q, G)["in_flight"] == 1


def test_complete_succeeds_once_and_keeps_the_first_result():
    log = Log()
    log.enqueue(2)
    token = log.one(c.claim(Q, G, "w", 2, 100))["jobs"][0][1]
    assert log.one(c.complete(Q, G, 0, token, b"r0")) == {"ok": True}
    again = log.one(c.complete(Q, G, 0, token, b"other"))
    assert again["error"] == c.ALREADY_DONE
    assert log.m.results(Q, G) == [{"offset": 0, "attempts": 1, "token": token, "result": b"r0"}]
    s = log.m.stats(Q, G)
    assert (s["completed"], s["in_flight"], s["low_water_mark"]) == (1, 1, 1)


def test_stale_token_is_fenced_and_never_overwrites_the_result():
    log = Log()
    log.enqueue(1)
    old = log.one(c.claim(Q, G, "slow", 1, 100), now=1_000)["jobs"][0][1]
    new = log.one(c.claim(Q, G, "fast", 1, 100), now=2_000)["jobs"][0][1]
    fenced = log.one(c.complete(Q, G, 0, old, b"late"))
    assert fenced["error"] == c.FENCED and str(new) in fenced["message"]
    assert log.one(c.complete(Q, G, 0, new, b"good")) == {"ok": True}
    assert log.one(c.complete(Q, G, 0, old, b"late"))["error"] == c.FENCED
    assert [r["result"] for r in log.m.results(Q, G)] == [b"good"]
    assert log.m.stats(Q, G)["fenced"] == 2


def test_late_completion_counts_when_nobody_claimed_the_job_again():
    log = Log()
    log.enqueue(1)
    token = log.one(c.claim(Q, G, "w", 1, 100), now=1_000)["jobs"][0][1]
    assert log.one(c.complete(Q, G, 0, token, b"r"), now=9_000) == {"ok": True}
    assert log.one(c.claim(Q, G, "x", 1, 100)) == {"jobs": []}  # no redelivery of a done job


def test_complete_of_unclaimed_or_unknown_offsets():
    log = Log()
    log.enqueue(2)
    assert log.one(c.complete(Q, G, 1, 1, b"r"))["error"] == c.FENCED  # never claimed
    assert log.one(c.complete(Q, G, 2, 1, b"r"))["error"] == c.NOT_FOUND
    assert log.one(c.complete("nope", G, 0, 1, b"r"))["error"] == c.NOT_FOUND
    assert log.one(c.fail(Q, G, 7, 1))["error"] == c.NOT_FOUND


def test_fail_releases_at_once_and_the_next_claim_has_a_larger_token():
    log = Log()
    log.enqueue(2)
    token = log.one(c.claim(Q, G, "w", 1, 10_000))["jobs"][0][1]
    failed, claimed = log.apply(c.fail(Q, G, 0, token, "boom"), c.claim(Q, G, "x", 1, 100))
    (job,) = claimed["jobs"]
    assert failed == {"ok": True, "dead_lettered": False, "attempts": 1}
    assert job[0] == 0 and job[1] > token and job[3] == 2
    assert log.one(c.fail(Q, G, 0, token))["error"] == c.FENCED  # x holds it now
    assert log.one(c.complete(Q, G, 0, token, b"r"))["error"] == c.FENCED
    assert log.m.stats(Q, G)["failed"] == 1


def test_an_offset_is_never_claimed_twice_in_one_entry():
    # claim, fail and claim again in one entry would hand out the same token twice
    log = Log()
    log.enqueue(2)
    first, failed, second = log.apply(
        c.claim(Q, G, "w", 1, 100), c.fail(Q, G, 0, log.index + 1), c.claim(Q, G, "x", 1, 100)
    )
    assert failed["ok"] and first["jobs"][0][0] == 0
    assert [j[0] for j in second["jobs"]] == [1]
    assert log.one(c.fail(Q, G, 0, first["jobs"][0][1]))["duplicate"] is True  # a retried fail
    assert log.one(c.complete(Q, G, 0, first["jobs"][0][1], b"r"))["error"] == c.FENCED
    (job,) = log.one(c.claim(Q, G, "x", 1, 100))["jobs"]
    assert job[0] == 0 and job[1] == log.index and job[3] == 2


def test_fail_on_the_last_attempt_dead_letters_the_job():
    log = Log()
    log.enqueue(2)
    for attempt in (1, 2):
        (job,) = log.one(c.claim(Q, G, "w", 1, 100, max_attempts=2))["jobs"]
        assert job[:1] + job[3:] == [0, attempt]
        answer = log.one(c.fail(Q, G, 0, job[1], f"crash {attempt}"))
    assert answer == {"ok": True, "dead_lettered": True, "attempts": 2}
    assert log.one(c.fail(Q, G, 0, job[1])) == answer  # retried fail
    assert log.one(c.complete(Q, G, 0, job[1], b"r"))["error"] == c.DEAD_LETTERED
    assert [j[0] for j in log.one(c.claim(Q, G, "w", 5, 100))["jobs"]] == [1]  # never 0 again
    assert log.m.dead_letters(Q, G) == [{"offset": 0, "attempts": 2, "token": job[1], "reason": "crash 2"}]
    s = log.m.stats(Q, G)
    assert (s["dead_lettered"], s["low_water_mark"], s["completed"]) == (1, 1, 0)


def test_lease_expiry_on_the_last_attempt_dead_letters_the_job():
    log = Log()
    log.enqueue(1)
    log.one(c.claim(Q, G, "w", 1, 100, max_attempts=1), now=1_000)
    assert log.one(c.claim(Q, G, "w", 1, 100), now=1_100) == {"jobs": []}
    assert log.m.dead_letters(Q, G)[0]["reason"] == "lease expired"
    assert log.m.stats(Q, G)["dead_lettered"] == 1


def test_groups_are_independent_and_a_new_group_replays_from_offset_zero():
    log = Log()
    log.enqueue(3)
    jobs = log.one(c.claim(Q, G, "w", 3, 100))["jobs"]
    log.apply(*[c.complete(Q, G, off, tok, b"done") for off, tok, _, _ in jobs])
    assert log.m.stats(Q, G)["completed"] == 3
    replay = log.one(c.claim(Q, "auditors", "a", 10, 100))["jobs"]
    assert [(j[0], j[2], j[3]) for j in replay] == [(0, b"job0", 1), (1, b"job1", 1), (2, b"job2", 1)]
    assert log.m.stats(Q, "auditors")["completed"] == 0
    assert log.m.stats(Q, "never-seen")["backlog"] == 3


def test_log_mode_read_and_commit_offset():
    log = Log()
    log.enqueue(5)
    assert log.m.read(Q, 3, 10) == [(3, b"job3"), (4, b"job4")]
    assert log.m.read(Q, 1, 2) == [(1, b"job1"), (2, b"job2")]
    assert log.m.read("nope", 0, 10) == []
    assert log.one(c.commit_offset(Q, "reader", 4)) == {"ok": True}
    assert log.m.stats(Q, "reader")["committed_offset"] == 4
    assert log.one(c.commit_offset(Q, "reader", 6))["error"] == c.BAD_REQUEST
    with pytest.raises(ValueError, match="from_offset must be an integer >= 0"):
        log.m.read(Q, -1, 1)


def test_snapshot_restore_round_trip_and_corrupt_snapshots():
    log = Log()
    log.enqueue(4)
    jobs = log.one(c.claim(Q, G, "w", 3, 100, request_id=1, max_attempts=3))["jobs"]
    log.apply(c.complete(Q, G, jobs[1][0], jobs[1][1], b"r"), c.fail(Q, G, jobs[2][0], jobs[2][1]))
    data = log.m.snapshot()
    restored = QueueMachine.restore(data)
    assert restored.snapshot() == data
    assert restored.stats(Q, G) == log.m.stats(Q, G)
    nxt = [c.claim(Q, G, "w", 5, 100), c.claim(Q, G, "w", 5, 100, request_id=1)]
    assert restored.apply(log.index + 1, log.now, nxt) == log.m.apply(log.index + 1, log.now, nxt)
    assert restored.snapshot() == log.m.snapshot()
    for bad in (b"", b"\xc1", msgpack.packb({"version": 99})):
        with pytest.raises(ValueError, match="not a queue snapshot"):
            QueueMachine.restore(bad)


def test_retention_drops_old_settled_history_and_says_so():
    log = Log(retention_jobs=4)
    log.enqueue(20)
    jobs = log.one(c.claim(Q, G, "w", 20, 1_000))["jobs"]
    done = log.apply(*[c.complete(Q, G, off, tok, b"r%d" % off) for off, tok, _, _ in jobs[:18]])
    assert all(a == {"ok": True} for a in done)
    s = log.m.stats(Q, G)
    assert s["low_water_mark"] == 18 and s["first_retained"] >= 20 - 4 - 1
    assert log.m.read(Q, 0, 100)[0][0] == s["first_retained"]
    assert [r["offset"] for r in log.m.results(Q, G)] == list(range(s["results_from"], 18))
    assert log.one(c.complete(Q, G, 0, jobs[0][1], b"x"))["error"] == c.COMPACTED
    # unsettled jobs are never dropped
    assert log.one(c.complete(Q, G, 19, jobs[19][1], b"r19")) == {"ok": True}
    assert log.one(c.enqueue(Q, b"old", "p", 0))["error"] == c.STALE_SEQ
    assert log.one(c.enqueue(Q, b"old", "p", 19)) == {"offset": 19, "duplicate": True}
    # a group that starts now sees what is retained
    first = log.one(c.claim(Q, "late", "w", 1, 100))["jobs"][0][0]
    assert first == log.m.stats(Q, "late")["first_retained"]


def test_unsettled_jobs_hold_retention_back():
    log = Log(retention_jobs=2)
    log.enqueue(3)
    log.one(c.claim(Q, G, "w", 1, 100))  # offset 0 in flight
    log.enqueue(10)
    assert log.m.read(Q, 0, 1) == [(0, b"job0")]
    assert log.m.footprint()["jobs"] == 13


def test_command_helpers_build_msgpack_friendly_dicts_the_machine_accepts():
    commands = [
        c.enqueue(Q, b"x", "p", 0),
        c.claim(Q, G, "w", 1, 100, request_id="r", max_attempts=2),
        c.heartbeat(Q, G, "w", (0,), 2, 100),
        c.complete(Q, G, 0, 2, b"r"),
        c.fail(Q, G, 0, 2, "why"),
        c.commit_offset(Q, G, 1),
    ]
    assert [cmd["op"] for cmd in commands] == list(c.OPS)
    wire = msgpack.unpackb(msgpack.packb(commands, use_bin_type=True), raw=False)
    m = QueueMachine()
    m.apply(1, 0, wire[:1])
    answers = m.apply(2, 0, wire[1:])
    assert not any(c.is_error(a) for a in answers[:3]), answers
    assert answers[3]["error"] == c.ALREADY_DONE
    assert {a.get("error") for a in answers} <= c.ERROR_CODES | {None}


def test_each_group_keeps_its_own_results_while_a_slow_group_holds_jobs_back():
    log = Log(retention_jobs=4)
    log.enqueue(3)
    log.one(c.claim(Q, "slow", "s", 1, 100_000))  # holds offset 0 for a long time
    log.enqueue(17)
    for _ in range(4):
        jobs = log.one(c.claim(Q, "fast", "f", 5, 100_000))["jobs"]
        log.apply(*[c.complete(Q, "fast", o, t, b"ok") for o, t, _, _ in jobs])
    fast, slow = log.m.stats(Q, "fast"), log.m.stats(Q, "slow")
    assert fast["completed"] == 20 and fast["results_from"] >= 20 - 4 - log.m._chunk
    assert slow["first_retained"] == 0 and log.m.read(Q, 0, 1) == [(0, b"job0")]
    # the order groups were created in (lost by a snapshot) changes nothing
    restored = QueueMachine.restore(log.m.snapshot())
    more = [c.enqueue(Q, b"x%d" % i) for i in range(5)] + [c.claim(Q, "fast", "f", 9, 10), c.claim(Q, "slow", "s", 9, 10)]
    assert restored.apply(log.index + 1, log.now, more) == log.m.apply(log.index + 1, log.now, more)
    assert restored.snapshot() == log.m.snapshot()


def test_seq_without_producer_is_refused():
    (answer,) = Log().apply({"op": "enqueue", "queue": Q, "payload": b"x", "seq": 3})
    assert answer["error"] == c.BAD_REQUEST and "producer_id" in answer["message"]


FIELDS = ["op", "queue", "group", "worker", "payload", "producer_id", "seq", "max_jobs", "lease_ms", "request_id",
          "max_attempts", "offsets", "offset", "token", "result", "reason"]
VALUES = st.one_of(
    st.sampled_from(list(c.OPS) + [Q, G]), st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=False),
    st.text(max_size=3), st.binary(max_size=3), st.lists(st.integers(-1, 3), max_size=3), st.just({"x": 1}),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=10), VALUES), max_size=6))
def test_garbage_commands_never_raise_and_only_use_documented_codes(commands):
    m = QueueMachine()
    m.apply(1, 0, [c.enqueue(Q, b"x", "p", 0), c.claim(Q, G, "w", 1, 10)])
    answers = m.apply(2, 5, commands)
    assert len(answers) == len(commands)
    for answer in answers:
        assert answer.get("error", c.BAD_REQUEST) in c.ERROR_CODES
    assert QueueMachine.restore(m.snapshot()).snapshot() == m.snapshot()
