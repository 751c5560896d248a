"""One named queue: the retained jobs, producer de-duplication, its consumer groups.

Offsets start at 0 and grow by one per enqueued job. Only jobs at offsets >= ``base`` are
retained (see ``trim``); producer dedup entries live exactly as long as their job.
"""
from __future__ import annotations

from ._group import Group

_UNSEEN = -1  # below every valid seq (seqs are >= 0)


def _key(item):
    """Sort key for client-chosen ids, which may be str or int."""
    return (isinstance(item[0], str), item[0])


class Queue:
    """Retained jobs of one queue plus its groups."""

    def __init__(self):
        self.base = 0  # offset of jobs[0]
        self.jobs: list[bytes] = []
        self.origins: list[tuple | None] = []  # (producer_id, seq) of jobs[i], or None
        self.producers: dict = {}  # producer_id -> {seq: offset}, for retained jobs only
        self.trimmed_seq: dict = {}  # producer_id -> highest seq whose job was trimmed
        self.groups: dict[str, Group] = {}
        self.duplicates = 0  # enqueues answered from the dedup table

    @property
    def end(self) -> int:
        """The next offset to be assigned (= number of jobs ever enqueued)."""
        return self.base + len(self.jobs)

    def enqueue(self, payload: bytes, producer_id, seq: int | None) -> tuple[int, bool] | None:
        """Append a job; returns (offset, duplicate), or None when ``seq`` is too old to tell."""
        if producer_id is not None:
            seqs = self.producers.get(producer_id)
            if seqs is not None and seq in seqs:
                self.duplicates += 1
                return seqs[seq], True
            if seq <= self.trimmed_seq.get(producer_id, _UNSEEN):
                return None
            if seqs is None:
                seqs = self.producers[producer_id] = {}
            seqs[seq] = self.end
        offset = self.end
        self.jobs.append(payload)
        self.origins.append(None if producer_id is None else (producer_id, seq))
        return offset, False

    def payload(self, offset: int) -> bytes:
        return self.jobs[offset - self.base]

    def group(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = Group(self.base)
        return group

    def trim(self, retention: int, chunk: int) -> None:
        """Drop jobs and records more than ``retention`` offsets behind the end.

        A job is kept until every claiming group has settled it, so a queue nobody has
        claimed from yet keeps everything (groups used only in log mode do not count).
        Trimming happens in steps of ``chunk`` offsets so that its list moves stay cheap.
        """
        horizon = self.end - retention
        bound = None
        for group in self.groups.values():
            if group.claiming:
                group.trim(horizon, chunk)  # each group's records depend on that group only
                bound = group.lwm if bound is None else min(bound, group.lwm)
        if bound is None:
            return
        drop = min(bound, horizon) - self.base
        if drop < chunk:
            return
        for origin in self.origins[:drop]:
            if origin is not None:
                producer_id, seq = origin
                seqs = self.producers[producer_id]
                del seqs[seq]
                if not seqs:
                    del self.producers[producer_id]
                if seq > self.trimmed_seq.get(producer_id, _UNSEEN):
                    self.trimmed_seq[producer_id] = seq
        del self.jobs[:drop]
        del self.origins[:drop]
        self.base += drop

    def dump(self) -> list:
        return [
            self.base,
            self.jobs,
            [None if o is None else list(o) for o in self.origins],
            sorted(([p, s] for p, s in self.trimmed_seq.items()), key=_key),
            self.duplicates,
            [[name, self.groups[name].dump()] for name in sorted(self.groups)],
        ]

    @classmethod
    def load(cls, image: list) -> "Queue":
        queue = cls()
        base, jobs, origins, trimmed, queue.duplicates, groups = image
        queue.base, queue.jobs = base, list(jobs)
        queue.origins = [None if o is None else tuple(o) for o in origins]
        for i, origin in enumerate(queue.origins):
            if origin is not None:
                queue.producers.setdefault(origin[0], {})[origin[1]] = base + i
        queue.trimmed_seq = {p: s for p, s in trimmed}
        queue.groups = {name: Group.load(g) for name, g in groups}
        return queue
