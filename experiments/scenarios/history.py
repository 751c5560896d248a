"""A live view of a run's ``events.jsonl`` while it is being written (by many processes).

The runner polls it to decide when to inject a fault (e.g. "worker w1 is mid-job") and
when the drain is over. It only reads the file; the checker alone computes figures.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict


class LiveHistory:
    """Incrementally reads complete lines appended to ``path``; call :meth:`poll` to catch up."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._offset = 0
        self._partial = b""
        self.produced: set[str] = set()
        self.job_of_seq: dict[int, str] = {}  # the producer's sequence number -> the backend's job id
        self.effected: set[str] = set()
        self.finishes = 0
        # worker -> {job: start count not yet matched by a finish}
        self.running: dict[str, dict[str, int]] = defaultdict(dict)

    def poll(self) -> None:
        """Read whatever was appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next poll
        for raw in lines:
            if raw.strip():
                try:
                    self._apply(json.loads(raw))
                except ValueError:
                    continue

    def _apply(self, e: dict) -> None:
        ev, job, worker = e.get("ev"), e.get("job"), e.get("worker")
        if ev == "produce":
            self.produced.add(job)
            if "seq" in e:
                self.job_of_seq[e["seq"]] = job
        elif ev in ("effect", "write"):  # write: accepted by a PostgreSQL sink, read back as effects at the end
            self.effected.add(job)
        elif ev == "start" and worker is not None:
            jobs = self.running[worker]
            jobs[job] = jobs.get(job, 0) + 1
        elif ev == "finish" and worker is not None:
            self.finishes += 1
            jobs = self.running[worker]
            if jobs.get(job, 0) > 1:
                jobs[job] -= 1
            else:
                jobs.pop(job, None)

    def busy(self, worker: str) -> bool:
        """True when ``worker`` has started a job it has not finished."""
        return bool(self.running.get(worker))

    def in_flight(self, workers) -> int:
        """Jobs started and not finished by any of ``workers``."""
        return sum(len(self.running.get(w, {})) for w in workers)

    def unfinished(self) -> set[str]:
        """Produced jobs with no effect yet."""
        return self.produced - self.effected
