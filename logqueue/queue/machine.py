"""``QueueMachine``: the deterministic work-queue state machine applied from the Raft log.

Every node applies the same entries in the same order and reaches the same state: no
I/O, no clock, no randomness in here. Time is the leader's stamp on each entry, kept
monotonic (``now = max(stamp, last now)``). The token of a claim is the Raft index of
the entry that carried it.

The log is the store: payloads, results and dead-letter reasons stay in the commands
that carried them; the machine keeps their locators (``_log``) and reads the values from
its log when a claim, a query or a replay needs them. Its snapshot holds only that
metadata (plus, for a ``MemoryLog``, the pinned values); ``needed_from`` says from which
log index on the log must be kept.

Retention and compaction (per queue, ``retention_jobs`` offsets):

* each group keeps per-offset bookkeeping only above its low-water mark (every offset
  below it is settled); results and dead-letter records, payloads and producer dedup
  entries are kept for the last ``retention_jobs`` offsets, and never dropped before
  every claiming group has settled them (a queue nobody claims from keeps everything);
* ``read`` starts at ``max(from_offset, first retained offset)``, ``results`` and
  ``dead_letters`` skip offsets whose records are gone (``stats`` reports both bounds);
* ``complete``/``fail`` on an offset whose record is gone answer ``compacted``;
  an enqueue whose (producer_id, seq) is at or below a forgotten seq of that producer
  answers ``stale_seq`` instead of risking a duplicate;
* a group that starts claiming after jobs were dropped starts at the first retained offset;
  a replayed claim answer names a dropped job with an empty payload.
"""
from __future__ import annotations

import msgpack

from logqueue.packing import packb

from . import _fields as f
from ._fields import BadRequest
from ._group import DEAD, DONE, Group
from ._log import MemoryLog
from ._queue import Queue
from .commands import BAD_REQUEST, STALE_SEQ, error

SNAPSHOT_VERSION = 2


class QueueMachine:
    """Named queues with consumer groups, applied from committed log entries.

    Args:
        retention_jobs: offsets of history kept per queue (payloads, results, dedup).
        request_window: claim request ids remembered per worker, for replays.
        max_workers: workers per group whose request ids are remembered (least recently
            claiming forgotten first).
        log: where payloads and results are read back from (see ``_log``); by default a
            ``MemoryLog`` that keeps them in memory and in the snapshot.
    """

    def __init__(self, *, retention_jobs: int = 1_000_000, request_window: int = 16, max_workers: int = 1024,
                 log=None):
        for name, value in (("retention_jobs", retention_jobs), ("request_window", request_window), ("max_workers", max_workers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.retention_jobs = retention_jobs
        self.request_window = request_window
        self.max_workers = max_workers
        self.log = MemoryLog() if log is None else log
        # trim in steps so that dropping a prefix of a list is amortised
        self._chunk = max(1, min(retention_jobs // 8, 65536))
        self.applied = 0  # index of the last applied entry
        self.now = 0  # invariant: never decreases
        self.queues: dict[str, Queue] = {}

    # --- the log ---------------------------------------------------------------------------

    def apply(self, index: int, now_ms: int, commands: list[dict], positions: list[int] | None = None) -> list[dict]:
        """Apply one committed entry carrying ``commands``; one result dict per command.

        ``positions[i]`` is where ``commands[i]`` is among the entry's commands, as the
        log reads them back (default: ``i``).

        Bad client input never raises: it answers ``{"error": code, "message": ...}``.

        Raises:
            ValueError: ``index`` is not larger than the last applied index (a runtime bug:
                tokens must grow).
        """
        if isinstance(index, bool) or not isinstance(index, int) or index <= self.applied:
            raise ValueError(f"entry index {index!r} must be an integer > last applied index {self.applied}")
        if isinstance(now_ms, bool) or not isinstance(now_ms, int):
            raise ValueError(f"now_ms must be an integer, got {now_ms!r}")
        self.applied = index
        now = self.now = max(self.now, now_ms)
        for queue in self.queues.values():
            for group in queue.groups.values():
                group.expire(now)
        if positions is None:
            positions = range(len(commands))
        results = [self._apply_one((index, pos), now, command) for pos, command in zip(positions, commands)]
        for queue in self.queues.values():
            queue.trim(self.retention_jobs, self._chunk)
        return results

    def _apply_one(self, at: tuple[int, int], now: int, command) -> dict:
        if not isinstance(command, dict):
            return error(BAD_REQUEST, "a command must be a map with an 'op'")
        op = command.get("op")
        handler = self._HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            return error(BAD_REQUEST, f"unknown op {op!r}; expected one of {', '.join(self._HANDLERS)}")
        try:
            return handler(self, at, now, command)
        except BadRequest as exc:
            return error(BAD_REQUEST, f"{op}: {exc}")

    def _queue(self, command: dict) -> Queue:
        name = f.text(command, "queue")
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = Queue(self.log)
        return queue

    def _existing(self, command: dict) -> tuple[Queue, Group]:
        """The queue and group a command names; stand-ins (not stored) when they do not
        exist, so that a command about nothing creates nothing."""
        queue = self.queues.get(f.text(command, "queue")) or Queue(self.log)
        group = queue.groups.get(f.text(command, "group"))
        return queue, group if group is not None else Group(queue.base, log=self.log)

    def _enqueue(self, at, now, command):
        payload = f.blob(command, "payload")
        producer_id = f.ident(command, "producer_id", optional=True)
        if producer_id is None and command.get("seq") is not None:
            raise BadRequest("'seq' needs a 'producer_id'")
        seq = None if producer_id is None else f.integer(command, "seq")
        queue = self._queue(command)
        outcome = queue.enqueue(at, payload, producer_id, seq)
        if outcome is None:
            return error(STALE_SEQ, f"seq {seq} of producer {producer_id!r} is older than the retained dedup window")
        offset, duplicate = outcome
        return {"offset": offset, "duplicate": True} if duplicate else {"offset": offset}

    def _claim(self, at, now, command):
        index = at[0]
        worker = f.ident(command, "worker")
        max_jobs = f.integer(command, "max_jobs")
        lease_ms = f.integer(command, "lease_ms", minimum=1)
        request_id = f.ident(command, "request_id", optional=True)
        max_attempts = f.integer(command, "max_attempts", optional=True)
        group_name = f.text(command, "group")
        queue = self._queue(command)
        group = queue.group(group_name)
        if request_id is not None:
            answer = group.replay(worker, request_id)
            if answer is not None:
                return {"jobs": self._jobs(queue, answer), "duplicate": True}
        group.begin(queue.base)
        granted = group.claim(index, now, worker, max_jobs, lease_ms, max_attempts, queue.end)
        if request_id is not None:
            group.remember(worker, request_id, granted, self.request_window, self.max_workers)
        return {"jobs": self._jobs(queue, granted)}

    @staticmethod
    def _jobs(queue: Queue, granted) -> list[list]:
        # a replayed answer may name a job settled and dropped since: its payload is gone
        return [
            [offset, token, queue.payload(offset) if offset >= queue.base else b"", attempt]
            for offset, token, attempt in granted
        ]

    def _heartbeat(self, at, now, command):
        worker = f.ident(command, "worker")
        offsets = f.integers(command, "offsets")
        token = f.integer(command, "token")
        lease_ms = f.integer(command, "lease_ms", minimum=1)
        return self._existing(command)[1].heartbeat(now, worker, offsets, token, lease_ms)

    def _complete(self, at, now, command):
        offset = f.integer(command, "offset")
        token = f.integer(command, "token")
        result = f.blob(command, "result")
        queue, group = self._existing(command)
        return group.complete(at, offset, token, result, queue.end)

    def _fail(self, at, now, command):
        offset = f.integer(command, "offset")
        token = f.integer(command, "token")
        reason = f.reason(command, "reason")
        dead_letter = command.get("dead_letter", False)
        if not isinstance(dead_letter, bool):
            raise BadRequest("'dead_letter' must be a boolean")
        queue, group = self._existing(command)
        return group.fail(at, offset, token, reason, queue.end, dead_letter)

    def _commit_offset(self, at, now, command):
        offset = f.integer(command, "offset")
        group_name = f.text(command, "group")
        queue = self._queue(command)
        if offset > queue.end:
            return error(BAD_REQUEST, f"commit_offset: offset {offset} is beyond the end of the queue ({queue.end})")
        queue.group(group_name).committed = offset
        return {"ok": True}

    _HANDLERS = {
        "enqueue": _enqueue,
        "claim": _claim,
        "heartbeat": _heartbeat,
        "complete": _complete,
        "fail": _fail,
        "commit_offset": _commit_offset,
    }

    # --- read-only queries (served after a ReadIndex, not through the log) ---------------

    def read(self, queue: str, from_offset: int, max_count: int) -> list[tuple[int, bytes]]:
        """Log mode: up to ``max_count`` jobs as (offset, payload) from ``from_offset`` on.

        Starts at the first retained offset when ``from_offset`` is below it; an unknown
        queue reads as empty."""
        _check_query(from_offset=from_offset, max_count=max_count)
        q = self.queues.get(queue)
        if q is None:
            return []
        start = max(from_offset, q.base)
        stop = min(q.end, start + max_count)
        return list(zip(range(start, stop), q.payloads(start, stop)))

    def stats(self, queue: str, group: str) -> dict:
        """Counters of one group on one queue (zeros for a group that does not exist).

        ``enqueued`` counts the queue's jobs ever; ``in_flight`` live leases; ``backlog``
        jobs waiting to be claimed; ``redelivered`` claims beyond a job's first;
        ``fenced`` refused completions/fails with a stale token."""
        q = self.queues.get(queue) or Queue(self.log)
        g = q.groups.get(group)
        if g is None:
            g = Group(q.base, log=self.log)
        return {
            "enqueued": q.end,
            "completed": g.completed,
            "in_flight": g.in_flight(),
            "dead_lettered": g.dead_lettered,
            "redelivered": g.redelivered,
            "fenced": g.fenced,
            "backlog": g.backlog(q.base, q.end),
            "claimed": g.claimed,
            "expired": g.expired,
            "failed": g.failed,
            "duplicates": q.duplicates,
            "low_water_mark": g.lwm if g.claiming else max(g.start, q.base),
            "first_retained": q.base,
            "results_from": g.rbase if g.claiming else max(g.start, q.base),
            "committed_offset": g.committed,
        }

    def results(self, queue: str, group: str, from_offset: int = 0, max_count: int | None = None) -> list[dict]:
        """Completed offsets of a group, in offset order, as dicts with ``offset``,
        ``attempts``, ``token`` and ``result`` (bytes). Offsets below ``results_from``
        (see ``stats``) are no longer retained and are skipped."""
        _check_query(from_offset=from_offset, max_count=0 if max_count is None else max_count)
        g = self._group_or_none(queue, group)
        if g is None:
            return []
        return [
            {"offset": offset, "attempts": attempts, "token": token, "result": result}
            for offset, (_, attempts, token, result) in g.settled(DONE, from_offset, max_count)
        ]

    def dead_letters(self, queue: str, group: str, from_offset: int = 0, max_count: int | None = None) -> list[dict]:
        """Dead-lettered offsets of a group, like ``results`` but with ``reason`` (str)."""
        _check_query(from_offset=from_offset, max_count=0 if max_count is None else max_count)
        g = self._group_or_none(queue, group)
        if g is None:
            return []
        return [
            {"offset": offset, "attempts": attempts, "token": token, "reason": reason}
            for offset, (_, attempts, token, reason) in g.settled(DEAD, from_offset, max_count)
        ]

    def queue_names(self) -> list[str]:
        """Names of the queues that exist, sorted."""
        return sorted(self.queues)

    def footprint(self) -> dict:
        """Per-offset records held in memory (for tests and monitoring): retained jobs,
        settled records, unsettled claim slots, producer dedup entries."""
        groups = [g for q in self.queues.values() for g in q.groups.values()]
        return {
            "jobs": sum(q.end - q.base for q in self.queues.values()),
            "records": sum(len(g.rindex) for g in groups),
            "slots": sum(len(g.slots) for g in groups),
            "dedup": sum(q.retained_dedup() for q in self.queues.values()),
        }

    def needed_from(self) -> int | None:
        """The lowest log index whose commands a retained job or record still needs
        (None: none); the log may drop everything below it."""
        needed = [i for i in (q.first_needed_index() for q in self.queues.values()) if i is not None]
        return min(needed, default=None)

    def retained_offsets(self) -> int:
        """Offsets of jobs retained over all queues (for monitoring)."""
        return sum(q.end - q.base for q in self.queues.values())

    def _group_or_none(self, queue: str, group: str):
        q = self.queues.get(queue)
        return None if q is None else q.groups.get(group)

    # --- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as msgpack; equal states give equal bytes. Payloads and results
        are in it only when the log is a ``MemoryLog``."""
        image = {
            "version": SNAPSHOT_VERSION,
            "config": [self.retention_jobs, self.request_window, self.max_workers],
            "applied": self.applied,
            "now": self.now,
            "queues": [[name, self.queues[name].dump()] for name in sorted(self.queues)],
            "log": self.log.dump(),
        }
        return packb(image)

    @classmethod
    def restore(cls, data: bytes, log=None) -> "QueueMachine":
        """Rebuild a machine from ``snapshot()`` bytes; ``log`` is where a snapshot taken
        without a ``MemoryLog`` reads its payloads from (the log it was taken on).

        Raises:
            ValueError: the bytes are not a queue snapshot of a supported version.
        """
        try:
            image = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if not isinstance(image, dict) or image.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"expected version {SNAPSHOT_VERSION}")
            retention, window, max_workers = image["config"]
            inline = image["log"]
            if inline is not None:
                log = MemoryLog.load(inline)
            elif log is None:
                raise ValueError("it keeps its payloads in a log, and none was given")
            machine = cls(retention_jobs=retention, request_window=window, max_workers=max_workers, log=log)
            machine.applied, machine.now = image["applied"], image["now"]
            machine.queues = {name: Queue.load(q, log) for name, q in image["queues"]}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, msgpack.UnpackException) as exc:
            raise ValueError(f"not a queue snapshot: {exc}") from None
        return machine


def _check_query(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
