"""One named queue: where its retained jobs are in the log, producer de-duplication, its
consumer groups.

Offsets start at 0 and grow by one per enqueued job. Only jobs at offsets >= ``base`` are
retained (see ``trim``); producer dedup entries live exactly as long as their job.

The payloads stay in the log (see ``_log``). The queue keeps a sparse index, as Kafka's
offset index: run ``k`` covers offsets ``run_off[k]`` up to the next run's first offset
(the last run up to ``end``), and offset ``o`` of it is the command at position
``run_pos[k] + o - run_off[k]`` of the entry ``run_idx[k]``. A batch of enqueues in one
request is one run, so the index costs a few words per request, not per job.
"""
from __future__ import annotations

from array import array
from bisect import bisect_right

from ._group import Group

_UNSEEN = -1  # below every valid seq (seqs are >= 0)


def _key(item):
    """Sort key for client-chosen ids, which may be str or int."""
    return (isinstance(item[0], str), item[0])


class _Seqs:
    """One producer's retained seqs -> offsets, as runs of consecutive (seq, offset).

    Runs are appended in offset order; a seq not above every earlier one goes to
    ``loose`` (a producer that does not count up), so lookups stay exact."""

    __slots__ = ("seq0", "off0", "count", "loose")

    def __init__(self) -> None:
        self.seq0, self.off0, self.count = array("q"), array("q"), array("q")
        self.loose: dict[int, int] = {}

    def get(self, seq: int) -> int | None:
        k = bisect_right(self.seq0, seq) - 1
        if k >= 0 and seq < self.seq0[k] + self.count[k]:
            return self.off0[k] + seq - self.seq0[k]
        return self.loose.get(seq)

    def add(self, seq: int, offset: int) -> None:
        if self.seq0:
            top = self.seq0[-1] + self.count[-1]
            if seq == top and offset == self.off0[-1] + self.count[-1]:
                self.count[-1] += 1
                return
            if seq < top:
                self.loose[seq] = offset
                return
        self.seq0.append(seq)
        self.off0.append(offset)
        self.count.append(1)

    def __len__(self) -> int:
        return sum(self.count) + len(self.loose)

    def drop_below(self, base: int) -> int:
        """Forget the seqs of offsets < ``base``; returns the highest seq forgotten (or -1)."""
        top = _UNSEEN
        k = 0
        while k < len(self.off0) and self.off0[k] + self.count[k] <= base:
            top = max(top, self.seq0[k] + self.count[k] - 1)
            k += 1
        del self.seq0[:k], self.off0[:k], self.count[:k]
        if self.off0 and self.off0[0] < base:
            cut = base - self.off0[0]
            top = max(top, self.seq0[0] + cut - 1)
            self.seq0[0] += cut
            self.off0[0] += cut
            self.count[0] -= cut
        for seq in [s for s, o in self.loose.items() if o < base]:
            del self.loose[seq]
            top = max(top, seq)
        return top

    def dump(self) -> list:
        return [self.seq0.tobytes(), self.off0.tobytes(), self.count.tobytes(), sorted(self.loose.items())]

    @classmethod
    def load(cls, image: list) -> "_Seqs":
        seqs = cls()
        for arr, raw in zip((seqs.seq0, seqs.off0, seqs.count), image[:3]):
            arr.frombytes(raw)
        seqs.loose = {s: o for s, o in image[3]}
        return seqs


class Queue:
    """Retained jobs of one queue (as log locators) plus its groups."""

    def __init__(self, log=None):
        self.log = log
        self.base = 0  # first retained offset
        self.end = 0  # the next offset to be assigned (= number of jobs ever enqueued)
        self.run_off, self.run_idx, self.run_pos = array("q"), array("q"), array("q")
        self.producers: dict = {}  # producer_id -> _Seqs, for retained jobs only
        self.trimmed_seq: dict = {}  # producer_id -> highest seq whose job was trimmed
        self.groups: dict[str, Group] = {}
        self.duplicates = 0  # enqueues answered from the dedup table

    def enqueue(self, at: tuple[int, int], payload: bytes, producer_id, seq: int | None) -> tuple[int, bool] | None:
        """Append the job carried by the command at ``at``; returns (offset, duplicate),
        or None when ``seq`` is too old to tell."""
        offset = self.end
        if producer_id is not None:
            seqs = self.producers.get(producer_id)
            if seqs is not None:
                first = seqs.get(seq)
                if first is not None:
                    self.duplicates += 1
                    return first, True
            if seq <= self.trimmed_seq.get(producer_id, _UNSEEN):
                return None
            if seqs is None:
                seqs = self.producers[producer_id] = _Seqs()
            seqs.add(seq, offset)
        index, pos = at
        runs = self.run_off
        if not (runs and self.run_idx[-1] == index and self.run_pos[-1] + offset - runs[-1] == pos):
            runs.append(offset)
            self.run_idx.append(index)
            self.run_pos.append(pos)
        if self.log.pins:
            self.log.pin(at, payload)
        self.end += 1
        return offset, False

    def locator(self, offset: int) -> tuple[int, int]:
        """Where the retained job at ``offset`` is in the log."""
        k = bisect_right(self.run_off, offset) - 1
        return self.run_idx[k], self.run_pos[k] + offset - self.run_off[k]

    def payload(self, offset: int) -> bytes:
        return self.log.payload(self.locator(offset))

    def payloads(self, start: int, stop: int) -> list[bytes]:
        """Payloads of the retained offsets ``start <= offset < stop``, read a run (the
        commands of one entry) at a time."""
        out: list[bytes] = []
        runs, last = self.run_off, len(self.run_off) - 1
        k = bisect_right(runs, start) - 1
        offset = start
        while offset < stop:
            n = min(stop, runs[k + 1] if k < last else self.end) - offset
            out += self.log.payloads((self.run_idx[k], self.run_pos[k] + offset - runs[k]), n)
            offset += n
            k += 1
        return out

    def first_needed_index(self) -> int | None:
        """The lowest log index a retained job or record of this queue needs (a
        settlement always comes after its job's enqueue), None if nothing is retained."""
        return self.run_idx[0] if self.base < self.end else None

    def group(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = Group(self.base, log=self.log)
        return group

    def trim(self, retention: int, chunk: int) -> None:
        """Drop jobs and records more than ``retention`` offsets behind the end.

        A job is kept until every claiming group has settled it, so a queue nobody has
        claimed from yet keeps everything (groups used only in log mode do not count).
        Trimming happens in steps of ``chunk`` offsets so that its array moves stay cheap.
        """
        horizon = self.end - retention
        bound = None
        for group in self.groups.values():
            if group.claiming:
                group.trim(horizon, chunk)  # each group's records depend on that group only
                bound = group.lwm if bound is None else min(bound, group.lwm)
        if bound is None:
            return
        new_base = min(bound, horizon)
        if new_base - self.base < chunk:
            return
        for producer_id in list(self.producers):
            seqs = self.producers[producer_id]
            top = seqs.drop_below(new_base)
            if not len(seqs):
                del self.producers[producer_id]
            if top > self.trimmed_seq.get(producer_id, _UNSEEN):
                self.trimmed_seq[producer_id] = top
        if self.log.pins:
            for offset in range(self.base, new_base):
                self.log.unpin(self.locator(offset))
        k = bisect_right(self.run_off, new_base) - 1
        del self.run_off[:k], self.run_idx[:k], self.run_pos[:k]
        self.base = new_base

    def retained_dedup(self) -> int:
        return sum(len(s) for s in self.producers.values())

    def dump(self) -> list:
        return [
            self.base,
            self.end,
            [self.run_off.tobytes(), self.run_idx.tobytes(), self.run_pos.tobytes()],
            sorted(([p, s.dump()] for p, s in self.producers.items()), key=_key),
            sorted(([p, s] for p, s in self.trimmed_seq.items()), key=_key),
            self.duplicates,
            [[name, self.groups[name].dump()] for name in sorted(self.groups)],
        ]

    @classmethod
    def load(cls, image: list, log) -> "Queue":
        queue = cls(log)
        queue.base, queue.end, runs, producers, trimmed, queue.duplicates, groups = image
        for arr, raw in zip((queue.run_off, queue.run_idx, queue.run_pos), runs):
            arr.frombytes(raw)
        queue.producers = {p: _Seqs.load(s) for p, s in producers}
        queue.trimmed_seq = {p: s for p, s in trimmed}
        queue.groups = {name: Group.load(g, log) for name, g in groups}
        return queue
