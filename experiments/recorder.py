"""Experiment records: the event log, the hooks that fill it, and the result sink.

``events.jsonl`` holds one JSON object per line with ``t`` (Unix seconds), ``ev`` and,
where they apply, ``job``, ``worker``, ``attempt`` (see DESIGN.md, "Experiment records").
Many processes append to the same file: it is opened with ``O_APPEND`` and every line
goes out in a single ``write(2)``, so lines never interleave and a line written before a
process is SIGKILLed is kept (it is in the kernel, not in a Python buffer).
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

from baselines.base import Delivery
from baselines.hooks import WorkerHooks


class _AppendOnlyJsonl:
    """One JSON object per line, one ``write(2)`` per line, to a file opened with O_APPEND."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()  # guards close() against a concurrent write

    def _write(self, obj: dict) -> None:
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self.path} is closed")
            written = os.write(self._fd, line)
        if written != len(line):  # regular files write whole buffers; anything else is a broken log
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventLog(_AppendOnlyJsonl):
    """Appends experiment events to ``path`` (created with its directory if missing)."""

    def record(self, ev: str, job: str | None = None, worker: str | None = None, attempt: int | None = None, **extra) -> None:
        """Append ``{"t": now, "ev": ev, "job": ..., "worker": ..., "attempt": ..., **extra}``; ``None`` fields are left out."""
        obj = {"t": time.time(), "ev": ev}
        for key, value in (("job", job), ("worker", worker), ("attempt", attempt)):
            if value is not None:
                obj[key] = value
        obj.update(extra)
        self._write(obj)

    def produce(self, job: str, **extra) -> None:
        """The backend confirmed ``job`` (record it after ``enqueue`` returned)."""
        self.record("produce", job=job, **extra)


class RecordingHooks(WorkerHooks):
    """Worker hooks that write each step to an ``EventLog`` as ``worker_id``."""

    def __init__(self, log: EventLog, worker_id: str) -> None:
        self.log = log
        self.worker_id = worker_id

    def _rec(self, ev: str, d: Delivery, **extra) -> None:
        self.log.record(ev, job=d.job_id, worker=self.worker_id, attempt=d.attempt, **extra)

    def deliver(self, d: Delivery) -> None:
        self._rec("deliver", d)

    def start(self, d: Delivery) -> None:
        self._rec("start", d)

    def finish(self, d: Delivery, result: bytes | None, error: str | None = None) -> None:
        if error is None:
            self._rec("finish", d)
        else:
            self._rec("finish", d, error=error)

    def effect(self, d: Delivery, result: bytes) -> None:
        self._rec("effect", d)

    def ack(self, d: Delivery) -> None:
        self._rec("ack", d)

    def ack_error(self, d: Delivery, reason: str) -> None:
        self._rec("ack_error", d, reason=reason)

    def dead_letter(self, job_id: str, attempt: int | None = None, reason: str = "") -> None:
        self.log.record("dead_letter", job=job_id, worker=self.worker_id, attempt=attempt, reason=reason)


class ResultSink(_AppendOnlyJsonl):
    """The run's system of record for baseline jobs: JSONL of ``job``, ``worker``, ``result``.

    ``result`` is the worker function's bytes in base64. A line is written before the
    worker acks, so every acknowledged job has one, and a job redelivered after its line
    was written has two (a duplicate effect).
    """

    def write(self, job_id: str, worker_id: str, result: bytes) -> None:
        self._write({"t": time.time(), "job": job_id, "worker": worker_id, "result": base64.b64encode(result).decode()})


class JsonlError(ValueError):
    """A line of a JSON-lines file that is not a JSON object (and not a torn tail); names file and line."""


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every object of a JSON-lines file, in order; the one reader of the project's JSONL files.

    The one rule for a torn tail: a last line that has no newline and does not parse is a
    write cut short (its writer was killed mid-line, or is still writing it) and is left
    out. Blank lines are skipped. Any other line that is not a JSON object raises
    :class:`JsonlError` naming ``path:line``; ``OSError`` when the file cannot be read.
    """
    lines = Path(path).read_bytes().split(b"\n")
    out = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            if number == len(lines):  # after the last newline: torn
                break
            obj = None
        if not isinstance(obj, dict):
            raise JsonlError(f"{path}:{number}: not a JSON object")
        out.append(obj)
    return out
