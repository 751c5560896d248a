"""One consumer group's claims on one queue: leases, fencing tokens, settlements.

Everything that decides who may hold, extend, complete or fail an offset lives in this
module. An offset of a group moves through

    never claimed (>= fresh) -> LEASED <-> EXPIRED / RELEASED -> settled (DONE or DEAD)

* A claim's token is the Raft index of the entry that carried it. An offset is never
  claimed twice in one entry, so successive claims of an offset have strictly growing
  tokens and ``(offset, token)`` names exactly one claim.
* A token stays valid -- for ``heartbeat``, ``complete`` and ``fail`` -- until the offset
  is claimed again, released by ``fail``, or settled. Lease expiry alone only makes the
  offset claimable: a late completion that nobody has overtaken still counts.
* Settled offsets below the low-water mark ``lwm`` need no bookkeeping; their records
  (result or dead-letter reason) are kept only up to the queue's retention.
* A record is the locator of the command that settled the offset (see ``_log``): the
  result, reason and token are read back from the log, so a record costs two machine
  words, and nothing more unless it took several attempts or expired.
"""
from __future__ import annotations

import heapq
from array import array
from collections import OrderedDict

from .commands import ALREADY_DONE, COMPACTED, DEAD_LETTERED, FENCED, NOT_FOUND, error

LEASED, EXPIRED, RELEASED = 0, 1, 2  # Slot.state
DONE, DEAD = 0, 1  # kind of a settled record: (kind, attempts, token, result bytes | reason str)
_EXPIRED = -1  # record index of an offset dead-lettered by lease expiry (no command settled it)
LEASE_EXPIRED = "lease expired"


class Slot:
    """An offset claimed at least once by the group and not settled yet."""

    __slots__ = ("attempts", "token", "worker", "expires", "state", "max_attempts")

    def __init__(self, attempts=0, token=0, worker=None, expires=0, state=RELEASED, max_attempts=0):
        self.attempts = attempts
        self.token = token  # token of the latest claim
        self.worker = worker
        self.expires = expires  # live while now < expires (state LEASED)
        self.state = state
        self.max_attempts = max_attempts  # 0: unlimited; set by the latest claim

    def dump(self, offset: int) -> list:
        return [offset, self.attempts, self.token, self.worker, self.expires, self.state, self.max_attempts]


class Group:
    """Claim bookkeeping of one consumer group; see the module docstring for the rules."""

    def __init__(self, start: int, claiming: bool = False, log=None):
        # invariant: start <= rbase <= lwm <= fresh <= queue.end (once claiming)
        self.start = start  # first offset this group can see (the queue's base when it began)
        self.lwm = start  # every offset < lwm is settled
        self.fresh = start  # offsets >= fresh were never claimed by this group
        self.slots: dict[int, Slot] = {}  # keys in [lwm, fresh): claimed, not settled
        self.log = log
        # The record of offset rbase + i: rindex[i] == 0 not settled; _EXPIRED dead by
        # lease expiry; else settled by the command (rindex[i], rpos[i]) of the log, a
        # complete (DONE) when rpos[i] >= 0, a fail at position -rpos[i] - 1 (DEAD).
        self.rbase = start
        self.rindex, self.rpos = array("q"), array("q")
        self.expired_tokens: dict[int, int] = {}  # offset -> token, for _EXPIRED records
        self.tries: dict[int, int] = {}  # offset -> attempts of a record, when not 1
        self.expiry: list[tuple[int, int, int]] = []  # heap of (expires, offset, token); may hold stale entries
        self.released: list[int] = []  # heap of claimable offsets < fresh; may hold stale entries
        self.claiming = claiming  # a group only used in log mode holds nothing back
        self.committed: int | None = None  # log mode: the consumer's stored position
        # worker -> (request_id -> ((offset, token, attempt), ...)), least recently used first
        self.workers: OrderedDict = OrderedDict()
        self.claimed = self.completed = self.dead_lettered = self.redelivered = 0
        self.fenced = self.expired = self.failed = 0

    # --- time ----------------------------------------------------------------------------

    def expire(self, now: int) -> None:
        """Release (or dead-letter, on the last attempt) every lease with expires <= now."""
        heap = self.expiry
        while heap and heap[0][0] <= now:
            expires, offset, token = heapq.heappop(heap)
            slot = self.slots.get(offset)
            if slot is None or slot.state != LEASED or slot.token != token or slot.expires != expires:
                continue  # settled, released or extended since this entry was pushed
            self.expired += 1
            if slot.max_attempts and slot.attempts >= slot.max_attempts:
                self._settle(offset, slot, None)
                self.expired_tokens[offset] = token
                self.dead_lettered += 1
            else:
                slot.state = EXPIRED
                heapq.heappush(self.released, offset)
        if len(heap) > 4 * len(self.slots) + 4096:
            # Settled and extended leases leave stale entries until their time comes:
            # rebuild, so the heap follows what is in flight, not the claim rate x lease.
            # Pop order depends only on the (total) tuple order, so nothing observable changes.
            self.expiry = [(s.expires, o, s.token) for o, s in self.slots.items() if s.state == LEASED]
            heapq.heapify(self.expiry)

    # --- commands ------------------------------------------------------------------------

    def begin(self, base: int) -> None:
        """Start claiming; a group that so far only committed offsets starts at ``base``."""
        if not self.claiming:
            self.claiming = True
            self.start = self.lwm = self.fresh = self.rbase = max(self.start, base)

    def replay(self, worker, request_id) -> tuple | None:
        table = self.workers.get(worker)
        return None if table is None else table.get(request_id)

    def claim(
        self,
        index: int,
        now: int,
        worker,
        max_jobs: int,
        lease_ms: int,
        max_attempts: int,
        end: int,
    ) -> tuple[tuple[int, int, int], ...]:
        """Lease the lowest claimable offsets below ``end``; returns (offset, token, attempt)."""
        granted: list[tuple[int, int, int]] = []
        deferred = []
        expires = now + lease_ms
        while len(granted) < max_jobs and self.released:
            offset = heapq.heappop(self.released)
            slot = self.slots.get(offset)
            if slot is None or slot.state == LEASED:
                continue  # stale heap entry: settled or leased again since
            if slot.token == index:
                deferred.append(offset)  # released in this very entry: its next token must be larger
                continue
            granted.append(self._grant(offset, slot, index, worker, expires, max_attempts))
        while len(granted) < max_jobs and self.fresh < end:
            offset = self.fresh
            self.fresh += 1
            slot = self.slots[offset] = Slot()
            granted.append(self._grant(offset, slot, index, worker, expires, max_attempts))
        for offset in deferred:
            heapq.heappush(self.released, offset)
        return tuple(granted)

    def remember(self, worker, request_id, answer: tuple, window: int, max_workers: int) -> None:
        """Keep a claim's answer for replays: ``window`` request ids per worker, for the
        ``max_workers`` workers that claimed most recently."""
        table = self.workers.get(worker)
        if table is None:
            table = self.workers[worker] = OrderedDict()
            if len(self.workers) > max_workers:
                self.workers.popitem(last=False)
        else:
            self.workers.move_to_end(worker)
        table[request_id] = answer
        if len(table) > window:
            table.popitem(last=False)

    def heartbeat(self, now: int, worker, offsets: list[int], token: int, lease_ms: int) -> dict:
        extended, lost = [], []
        expires = now + lease_ms
        for offset in offsets:
            slot = self.slots.get(offset)
            if slot is None or slot.token != token or slot.worker != worker or slot.state == RELEASED:
                lost.append(offset)
                continue
            # an EXPIRED slot nobody has claimed again is revived: the holder is still current
            slot.state = LEASED
            if slot.expires != expires:
                slot.expires = expires
                heapq.heappush(self.expiry, (expires, offset, token))
            extended.append(offset)
        return {"extended": extended, "lost": lost}

    def complete(self, at: tuple[int, int], offset: int, token: int, result: bytes, end: int) -> dict:
        refused = self._check_settled(offset, token, end)
        if refused is not None:
            return refused
        slot = self.slots.get(offset)
        if slot is None or slot.token != token or slot.state == RELEASED:
            return self._fence(offset, token, slot)
        self._settle(offset, slot, at)
        if self.log.pins:
            self.log.pin(at, (token, result))
        self.completed += 1
        return {"ok": True}

    def fail(self, at: tuple[int, int], offset: int, token: int, reason: str, end: int, dead_letter: bool = False) -> dict:
        record = self.record(offset)
        if record is not None and record[0] == DEAD and record[2] == token:
            return {"ok": True, "dead_lettered": True, "attempts": record[1]}  # a retried fail
        refused = self._check_settled(offset, token, end)
        if refused is not None:
            return refused
        slot = self.slots.get(offset)
        if slot is not None and slot.token == token and slot.state == RELEASED:
            return {"ok": True, "dead_lettered": False, "attempts": slot.attempts, "duplicate": True}
        if slot is None or slot.token != token:
            return self._fence(offset, token, slot)
        self.failed += 1
        if dead_letter or (slot.max_attempts and slot.attempts >= slot.max_attempts):
            attempts = slot.attempts
            self._settle(offset, slot, (at[0], -at[1] - 1))
            if self.log.pins:
                self.log.pin(at, (token, reason))
            self.dead_lettered += 1
            return {"ok": True, "dead_lettered": True, "attempts": attempts}
        slot.state = RELEASED
        heapq.heappush(self.released, offset)
        return {"ok": True, "dead_lettered": False, "attempts": slot.attempts}

    # --- queries -------------------------------------------------------------------------

    def record(self, offset: int) -> tuple | None:
        """(kind, attempts, token, result | reason) of a settled retained offset, else None."""
        i = offset - self.rbase
        if not 0 <= i < len(self.rindex) or self.rindex[i] == 0:
            return None
        return self._record(offset, i)

    def _record(self, offset: int, i: int) -> tuple:
        index, pos = self.rindex[i], self.rpos[i]
        attempts = self.tries.get(offset, 1)
        if index == _EXPIRED:
            return (DEAD, attempts, self.expired_tokens[offset], LEASE_EXPIRED)
        if pos >= 0:
            return (DONE, attempts, *self.log.settlement((index, pos)))
        return (DEAD, attempts, *self.log.settlement((index, -pos - 1)))

    def _kind(self, i: int) -> int | None:
        index = self.rindex[i]
        if index == 0:
            return None
        return DONE if index != _EXPIRED and self.rpos[i] >= 0 else DEAD

    def in_flight(self) -> int:
        return sum(1 for slot in self.slots.values() if slot.state == LEASED)

    def backlog(self, base: int, end: int) -> int:
        """Offsets claimable now or later: never claimed, expired or released."""
        if not self.claiming:
            return end - max(self.start, base)
        return end - self.fresh + sum(1 for slot in self.slots.values() if slot.state != LEASED)

    def settled(self, kind: int, from_offset: int, max_count: int | None):
        """Yield (offset, record) of retained records of ``kind`` from ``from_offset`` on."""
        count = 0
        for i in range(max(0, from_offset - self.rbase), len(self.rindex)):
            if max_count is not None and count >= max_count:
                return
            if self._kind(i) == kind:
                count += 1
                offset = self.rbase + i
                yield offset, self._record(offset, i)

    # --- retention -----------------------------------------------------------------------

    def trim(self, bound: int, chunk: int) -> None:
        """Forget records below min(bound, lwm), in steps of at least ``chunk`` offsets."""
        drop = min(bound, self.lwm) - self.rbase
        if drop < chunk:
            return
        if self.log.pins:
            for i in range(drop):
                if self.rindex[i] > 0:
                    pos = self.rpos[i]
                    self.log.unpin((self.rindex[i], pos if pos >= 0 else -pos - 1))
        del self.rindex[:drop], self.rpos[:drop]
        self.rbase += drop
        for table in (self.expired_tokens, self.tries):
            for offset in [o for o in table if o < self.rbase]:
                del table[offset]

    # --- snapshot ------------------------------------------------------------------------

    def dump(self) -> list:
        """A canonical image: equal states give equal images, whatever stale heap entries."""
        return [
            self.start,
            self.lwm,
            self.fresh,
            self.rbase,
            [self.rindex.tobytes(), self.rpos.tobytes(), sorted(self.expired_tokens.items()), sorted(self.tries.items())],
            [slot.dump(offset) for offset, slot in sorted(self.slots.items())],
            self.claiming,
            self.committed,
            [[w, [[rid, [list(job) for job in answer]] for rid, answer in table.items()]] for w, table in self.workers.items()],
            [self.claimed, self.completed, self.dead_lettered, self.redelivered, self.fenced, self.expired, self.failed],
        ]

    @classmethod
    def load(cls, image: list, log) -> "Group":
        start, lwm, fresh, rbase, records, slots, claiming, committed, workers, counters = image
        group = cls(start, claiming, log)
        group.lwm, group.fresh, group.rbase, group.committed = lwm, fresh, rbase, committed
        rindex, rpos, expired, tries = records
        group.rindex.frombytes(rindex)
        group.rpos.frombytes(rpos)
        group.expired_tokens, group.tries = dict(expired), dict(tries)
        for offset, *fields in slots:
            group.slots[offset] = slot = Slot(*fields)
            if slot.state == LEASED:
                group.expiry.append((slot.expires, offset, slot.token))
            else:
                group.released.append(offset)
        heapq.heapify(group.expiry)
        heapq.heapify(group.released)
        group.workers = OrderedDict(
            (w, OrderedDict((rid, tuple(tuple(job) for job in answer)) for rid, answer in table)) for w, table in workers
        )
        (group.claimed, group.completed, group.dead_lettered, group.redelivered, group.fenced, group.expired, group.failed) = counters
        return group

    # --- internals -----------------------------------------------------------------------

    def _grant(self, offset: int, slot: Slot, token: int, worker, expires: int, max_attempts: int):
        slot.attempts += 1
        slot.token = token
        slot.worker = worker
        slot.expires = expires
        slot.state = LEASED
        slot.max_attempts = max_attempts
        heapq.heappush(self.expiry, (expires, offset, token))
        self.claimed += 1
        if slot.attempts > 1:
            self.redelivered += 1
        return (offset, token, slot.attempts)

    def _check_settled(self, offset: int, token: int, end: int) -> dict | None:
        """The refusal for an offset that cannot be completed or failed, else None."""
        if offset >= end:
            return error(NOT_FOUND, f"offset {offset} has not been enqueued (next offset is {end})")
        if self.claiming and offset < self.rbase:
            return error(COMPACTED, f"offset {offset} is below the group's retained history (from {self.rbase})")
        record = self.record(offset)
        if record is None:
            return None
        kind, _, winner, _ = record
        if kind == DEAD:
            return error(DEAD_LETTERED, f"offset {offset} was dead-lettered")
        if winner == token:
            return error(ALREADY_DONE, f"offset {offset} was already completed with token {token}")
        self.fenced += 1
        return error(FENCED, f"offset {offset} was completed under token {winner}, not {token}")

    def _fence(self, offset: int, token: int, slot: Slot | None) -> dict:
        self.fenced += 1
        if slot is None:
            return error(FENCED, f"offset {offset} is not claimed")
        if slot.token != token:
            return error(FENCED, f"offset {offset} is held under token {slot.token}, not {token}")
        return error(FENCED, f"the claim of offset {offset} under token {token} was released by fail")

    def _settle(self, offset: int, slot: Slot, at: tuple[int, int] | None) -> None:
        """Record ``offset`` as settled by the command at ``at`` (None: lease expiry)."""
        del self.slots[offset]
        i = offset - self.rbase
        gap = i + 1 - len(self.rindex)
        if gap > 0:
            zeros = bytes(8 * gap)
            self.rindex.frombytes(zeros)
            self.rpos.frombytes(zeros)
        if at is None:
            self.rindex[i] = _EXPIRED
        else:
            self.rindex[i], self.rpos[i] = at
        if slot.attempts != 1:
            self.tries[offset] = slot.attempts
        if offset == self.lwm:
            rindex, rbase = self.rindex, self.rbase
            lwm, top = self.lwm, self.rbase + len(rindex)
            while lwm < top and rindex[lwm - rbase] != 0:
                lwm += 1
            self.lwm = lwm
