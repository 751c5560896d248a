"""Property tests of the work-queue state machine against a reference model.

A hypothesis rule-based test drives ``QueueMachine`` with entries of several commands
from several workers and groups: claims (and replayed claim requests), heartbeats,
completions and failures with current and stale tokens, retried and reordered producer
appends, malformed commands, lease expiry (the stamped time advances), "leader changes"
(index gaps and stamps that go backwards, which the machine must clamp), and
snapshot -> restore in the middle of a run.

``Model`` is a deliberately naive oracle (a dict per offset, full scans): every answer
of the machine must equal the model's, and so must every counter of ``stats``. On top:
no offset is ever completed twice, a fenced holder never overwrites a result, equal
histories give equal snapshot bytes, and once one worker keeps claiming and completing,
every job ends completed exactly once (or dead-lettered, if it ran out of attempts).

``TestCompacting`` runs the same with a tiny retention, so that compaction (dropped
payloads, results and dedup entries) happens all the time.
"""
from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logqueue.queue import QueueMachine
from logqueue.queue import commands as c

Q = "q"
GROUPS = ("g1", "g2", "late")
WORKERS = ("w1", "w2", "w3")
PRODUCERS = ("p1", "p2")
LEASES = (50, 200, 1_000)
MAX_LEASE = max(LEASES)


class Off:
    """What the model knows about one offset in one group."""

    def __init__(self):
        self.state = "new"  # new | leased | expired | released | done | dead
        self.attempts = 0
        self.token = 0
        self.worker = None
        self.expires = 0
        self.max_attempts = 0


class GroupModel:
    def __init__(self):
        self.claiming = False
        self.start = 0
        self.offs: dict[int, Off] = {}
        self.count = Counter()
        self.replies: dict[tuple, list] = {}  # (worker, request_id) -> [(offset, token, attempt)]

    def off(self, offset: int) -> Off:
        return self.offs.setdefault(offset, Off())

    def lwm(self, end: int) -> int:
        offset = self.start
        while offset < end and self.off(offset).state in ("done", "dead"):
            offset += 1
        return offset


class Model:
    """A naive reference implementation of DESIGN.md's work queue, one command at a time."""

    def __init__(self):
        self.payloads: list[bytes] = []
        self.dedup: dict[tuple, int] = {}
        self.groups: dict[str, GroupModel] = {}
        self.now = 0
        self.duplicates = 0

    @property
    def end(self) -> int:
        return len(self.payloads)

    def begin(self, now_ms: int) -> None:
        self.now = max(self.now, now_ms)
        for g in self.groups.values():
            for o in g.offs.values():
                if o.state == "leased" and o.expires <= self.now:
                    g.count["expired"] += 1
                    if o.max_attempts and o.attempts >= o.max_attempts:
                        o.state = "dead"
                        g.count["dead_lettered"] += 1
                    else:
                        o.state = "expired"

    def apply(self, cmd: dict, index: int, bounds: dict) -> dict:
        """The expected answer (without "message"). ``bounds`` holds the retention bounds
        observed before the entry: ``base`` and per group ``rbase``."""
        op = cmd.get("op")
        if cmd.get("bad"):
            return {"error": c.BAD_REQUEST}
        if op == "enqueue":
            return self._enqueue(cmd, bounds["base"])
        if op == "commit_offset":
            if cmd["offset"] > self.end:
                return {"error": c.BAD_REQUEST}
            self.groups.setdefault(cmd["group"], GroupModel())
            return {"ok": True}
        if op == "claim":
            return self._claim(cmd, index, bounds["base"])
        g = self.groups.get(cmd["group"])
        if op == "heartbeat":
            return self._heartbeat(g, cmd)
        return self._settle(g, cmd, bounds["rbase"].get(cmd["group"], 0))

    def _enqueue(self, cmd, base):
        key = (cmd["producer_id"], cmd["seq"])
        if key in self.dedup and self.dedup[key] >= base:
            self.duplicates += 1
            return {"offset": self.dedup[key], "duplicate": True}
        forgotten = [s for (p, s), o in self.dedup.items() if p == key[0] and o < base]
        if forgotten and key[1] <= max(forgotten):
            return {"error": c.STALE_SEQ}
        self.dedup[key] = self.end
        self.payloads.append(cmd["payload"])
        return {"offset": self.end - 1}

    def _claim(self, cmd, index, base):
        g = self.groups.setdefault(cmd["group"], GroupModel())
        rid = cmd.get("request_id")
        if rid is not None and (cmd["worker"], rid) in g.replies:
            jobs = g.replies[(cmd["worker"], rid)]
            return {"jobs": [[o, t, self.payloads[o] if o >= base else b"", a] for o, t, a in jobs], "duplicate": True}
        if not g.claiming:
            g.claiming, g.start = True, base
        free = [
            offset
            for offset in range(g.start, self.end)
            if g.off(offset).state in ("new", "expired", "released") and g.off(offset).token != index
        ]
        granted = []
        for offset in free[: cmd["max_jobs"]]:
            o = g.off(offset)
            o.attempts += 1
            o.state, o.token, o.worker = "leased", index, cmd["worker"]
            o.expires = self.now + cmd["lease_ms"]
            o.max_attempts = cmd.get("max_attempts") or 0
            g.count["claimed"] += 1
            g.count["redelivered"] += o.attempts > 1
            granted.append((offset, index, o.attempts))
        if rid is not None:
            g.replies[(cmd["worker"], rid)] = granted
        return {"jobs": [[o, t, self.payloads[o], a] for o, t, a in granted]}

    def _heartbeat(self, g, cmd):
        extended, lost = [], []
        for offset in cmd["offsets"]:
            o = g.offs.get(offset) if g else None
            if o and o.state in ("leased", "expired") and o.token == cmd["token"] and o.worker == cmd["worker"]:
                o.state, o.expires = "leased", self.now + cmd["lease_ms"]
                extended.append(offset)
            else:
                lost.append(offset)
        return {"extended": extended, "lost": lost}

    def _settle(self, g, cmd, rbase):
        offset, token, is_fail = cmd["offset"], cmd["token"], cmd["op"] == "fail"
        o = g.offs.get(offset) if g else None
        retained = not (g and g.claiming and offset < rbase)
        if is_fail and o and o.state == "dead" and o.token == token and retained:  # a retried fail
            return {"ok": True, "dead_lettered": True, "attempts": o.attempts}
        if offset >= self.end:
            return {"error": c.NOT_FOUND}
        if not retained:
            return {"error": c.COMPACTED}
        if o and o.state == "dead":
            return {"error": c.DEAD_LETTERED}
        if o and o.state == "done":
            if o.token == token:
                return {"error": c.ALREADY_DONE}
            g.count["fenced"] += 1
            return {"error": c.FENCED}
        if is_fail and o and o.state == "released" and o.token == token:
            return {"ok": True, "dead_lettered": False, "attempts": o.attempts, "duplicate": True}
        if o is None or o.token != token or o.state not in ("leased", "expired"):
            if g is not None:
                g.count["fenced"] += 1
            return {"error": c.FENCED}
        if not is_fail:
            o.state = "done"
            o.result = cmd["result"]
            g.count["completed"] += 1
            return {"ok": True}
        g.count["failed"] += 1
        if o.max_attempts and o.attempts >= o.max_attempts:
            o.state = "dead"
            g.count["dead_lettered"] += 1
            return {"ok": True, "dead_lettered": True, "attempts": o.attempts}
        o.state = "released"
        return {"ok": True, "dead_lettered": False, "attempts": o.attempts}


def _strip(answer: dict) -> dict:
    if "error" in answer:
        message = answer.get("message")
        assert isinstance(message, str) and message and "\n" not in message, answer
        return {"error": answer["error"]}
    return answer


class QueueRun(RuleBasedStateMachine):
    retention = 1_000_000
    first_groups = ("g1", "g2")

    def __init__(self):
        super().__init__()
        self.m = QueueMachine(retention_jobs=self.retention, request_window=10_000)
        self.model = Model()
        self.index = 0
        self.clock = 10_000  # the current leader's clock
        self.history: list[tuple[int, int, list]] = []
        self.issued: list[tuple[str, str, int, int]] = []  # (group, worker, offset, token)
        self.rids: dict[tuple, list] = {}
        self.seqs = Counter()
        self.accepted = Counter()  # (group, offset) -> successful completes seen
        self.active = list(self.first_groups)  # "late" joins during the run

    # --- driving ---------------------------------------------------------------------------

    def bounds(self) -> dict:
        stats = {name: self.m.stats(Q, name) for name in GROUPS}
        return {
            "base": stats["g1"]["first_retained"],
            "rbase": {name: s["results_from"] for name, s in stats.items()},
        }

    def run_entry(self, make_commands) -> list[dict]:
        """Apply one entry; ``make_commands(index)`` yields commands one at a time, each
        predicted by the model before the next is made (it may use the model's state)."""
        self.index += 1
        index, stamp, bounds = self.index, self.clock, self.bounds()
        self.model.begin(stamp)
        commands, expected = [], []
        for cmd in make_commands(index):
            commands.append(cmd)
            expected.append(self.model.apply(cmd, index, bounds))
            if cmd.get("op") == "claim" and "jobs" in expected[-1] and "duplicate" not in expected[-1]:
                self.issued += [(cmd["group"], cmd["worker"], o, t) for o, t, _, _ in expected[-1]["jobs"]]
        wire = [{k: v for k, v in cmd.items() if k != "bad"} for cmd in commands]
        answers = self.m.apply(index, stamp, wire)
        self.history.append((index, stamp, wire))
        assert [_strip(a) for a in answers] == expected, (wire, answers, expected)
        for cmd, answer in zip(commands, answers):
            if cmd["op"] == "complete" and answer == {"ok": True}:
                self.accepted[(cmd["group"], cmd["offset"])] += 1
        return answers

    def draw_command(self, data, index: int) -> dict:
        kind = data.draw(
            st.sampled_from(["enqueue"] * 3 + ["claim"] * 3 + ["complete"] * 3 + ["heartbeat", "fail", "stale", "bad", "commit", "retry", "unknown"])
        )
        if kind in ("enqueue", "retry"):
            producer = data.draw(st.sampled_from(PRODUCERS))
            # new seqs, reordered seqs and gaps; or a retry of a seq that may be long gone
            top = self.seqs[producer] + 2 if kind == "enqueue" else max(0, self.seqs[producer] - 1)
            seq = data.draw(st.integers(0, top))
            self.seqs[producer] = max(self.seqs[producer], seq + 1)
            return c.enqueue(Q, b"job-%s-%d" % (producer.encode(), seq), producer, seq)
        if kind == "claim" or not self.issued and kind != "bad":
            group, worker = data.draw(st.sampled_from(self.active)), data.draw(st.sampled_from(WORKERS))
            used = self.rids.setdefault((group, worker), [])
            rid = data.draw(st.sampled_from([None, "new"] + used[-3:]))
            if rid == "new":
                rid = f"{worker}-{len(used)}"
                used.append(rid)
            return c.claim(
                Q, group, worker,
                max_jobs=data.draw(st.integers(0, 4)),
                lease_ms=data.draw(st.sampled_from(LEASES)),
                request_id=rid,
                max_attempts=data.draw(st.sampled_from([None, None, 0, 1, 2, 3])),
            )
        if kind == "bad":
            return dict(c.claim(Q, "g1", "w1", max_jobs=-1, lease_ms=5), bad=True)
        if kind == "commit":
            return c.commit_offset(Q, data.draw(st.sampled_from(GROUPS)), data.draw(st.integers(0, self.model.end + 1)))
        if kind == "unknown":  # an offset not enqueued yet, or a group nobody claims from
            group = data.draw(st.sampled_from(GROUPS + ("nobody",)))
            return c.complete(Q, group, data.draw(st.integers(0, self.model.end + 2)), index - 1, b"?")
        # act on a claim: recent ones mostly, any (stale) one sometimes
        recent = self.issued[-8:] if kind != "stale" else self.issued
        group, worker, offset, token = data.draw(st.sampled_from(recent))
        if kind == "heartbeat":
            worker = data.draw(st.sampled_from([worker, worker, "w3"]))
            mates = sorted({o for g, w, o, t in recent if (g, t) == (group, token)} | {offset})
            return c.heartbeat(Q, group, worker, mates, token, data.draw(st.sampled_from(LEASES)))
        if kind == "fail":
            return c.fail(Q, group, offset, token, f"{worker} gave up")
        return c.complete(Q, group, offset, token, b"%s@%d by %s" % (b"%d" % offset, token, worker.encode()))

    # --- rules -----------------------------------------------------------------------------

    @rule(data=st.data(), size=st.integers(1, 4))
    def entry(self, data, size):
        self.run_entry(lambda index: (self.draw_command(data, index) for _ in range(size)))

    @rule(dt=st.integers(1, 1_500))
    def tick(self, dt):
        self.clock += dt

    @rule(back=st.integers(0, 400), gap=st.integers(1, 3))
    def leader_change(self, back, gap):
        # the new leader's clock may lag; its first entries follow a no-op and a gap
        self.clock -= back
        self.index += gap

    @precondition(lambda self: "late" not in self.active and self.model.end > 3)
    @rule()
    def late_group_joins(self):
        # it starts from the first retained offset: the whole history when nothing was dropped
        self.active.append("late")
        self.run_entry(lambda index: [c.claim(Q, "late", "w1", 2, 200)])

    @rule()
    def snapshot_and_restore(self):
        data = self.m.snapshot()
        self.m = QueueMachine.restore(data)
        assert self.m.snapshot() == data

    @precondition(lambda self: self.issued)
    @rule(data=st.data())
    def same_entry_claim_fail_claim(self, data):
        group = data.draw(st.sampled_from(self.active))

        def commands(index):
            yield c.claim(Q, group, "w1", 1, 100)
            mine = [o for g, w, o, t in self.issued if (g, t) == (group, index)]
            if mine:
                yield c.fail(Q, group, mine[0], index)
                yield c.claim(Q, group, "w2", 1, 100)

        self.run_entry(commands)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def counters_match_the_model(self):
        for name in GROUPS:
            g = self.model.groups.get(name) or GroupModel()
            s = self.m.stats(Q, name)
            offs = [g.off(o) for o in range(g.start, self.model.end)] if g.claiming else []
            expected = {
                "enqueued": self.model.end,
                "completed": g.count["completed"],
                "dead_lettered": g.count["dead_lettered"],
                "redelivered": g.count["redelivered"],
                "fenced": g.count["fenced"],
                "claimed": g.count["claimed"],
                "expired": g.count["expired"],
                "failed": g.count["failed"],
                "in_flight": sum(o.state == "leased" for o in offs),
                "duplicates": self.model.duplicates,
            }
            assert {k: s[k] for k in expected} == expected, name
            if g.claiming:
                assert s["low_water_mark"] == g.lwm(self.model.end)
                assert s["backlog"] == sum(o.state in ("new", "expired", "released") for o in offs)

    @invariant()
    def completed_at_most_once_with_the_first_result(self):
        assert all(n <= 1 for n in self.accepted.values())
        for name, g in self.model.groups.items():
            s = self.m.stats(Q, name)
            got = self.m.results(Q, name)
            want = [
                (o, g.offs[o].result, g.offs[o].token, g.offs[o].attempts)
                for o in sorted(g.offs)
                if g.offs[o].state == "done" and o >= s["results_from"]
            ]
            assert [(r["offset"], r["result"], r["token"], r["attempts"]) for r in got] == want

    @invariant()
    def retention_is_bounded_and_never_drops_unsettled_jobs(self):
        s = self.m.stats(Q, "g1")
        claiming = [g for g in self.model.groups.values() if g.claiming]
        if claiming:
            keep = min([g.lwm(self.model.end) for g in claiming] + [self.model.end - self.retention])
            assert keep - self.m._chunk < s["first_retained"] <= max(keep, 0)
        assert self.m.read(Q, 0, 3) == [
            (o, self.model.payloads[o]) for o in range(s["first_retained"], min(self.model.end, s["first_retained"] + 3))
        ]

    def teardown(self):
        self.drain()
        replayed = QueueMachine(retention_jobs=self.retention, request_window=10_000)
        for index, stamp, commands in self.history:
            replayed.apply(index, stamp, commands)
        assert replayed.snapshot() == self.m.snapshot(), "equal histories, different snapshots"

    def drain(self):
        """One worker that keeps running: every job ends completed exactly once (or dead)."""
        for name in GROUPS:
            if name not in self.model.groups or not self.model.groups[name].claiming:
                continue
            for _ in range(self.model.end + 2):
                # every other lease runs out meanwhile (the clock may lag the machine's now)
                self.clock = max(self.clock, self.model.now) + MAX_LEASE + 1
                (answer,) = self.run_entry(lambda index: [c.claim(Q, name, "steady", 10, MAX_LEASE)])
                if not answer["jobs"]:
                    break
                results = self.run_entry(
                    lambda index: [c.complete(Q, name, o, t, b"steady %d" % o) for o, t, _, _ in answer["jobs"]]
                )
                assert all(r == {"ok": True} for r in results)
            s = self.m.stats(Q, name)
            assert s["in_flight"] == 0 and s["backlog"] == 0
            assert s["completed"] + s["dead_lettered"] == s["enqueued"] - self.model.groups[name].start
            done = {o for (g, o), n in self.accepted.items() if g == name}
            states = self.model.groups[name].offs
            assert done == {o for o, off in states.items() if off.state == "done"}
            assert all(states[o].state in ("done", "dead") for o in range(self.model.groups[name].start, self.model.end))


QueueRun.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestQueueModel = QueueRun.TestCase


class CompactingRun(QueueRun):
    retention = 3
    first_groups = ("g1",)  # compaction waits for every claiming group: fewer compact sooner


CompactingRun.TestCase.settings = QueueRun.TestCase.settings
TestCompacting = CompactingRun.TestCase
