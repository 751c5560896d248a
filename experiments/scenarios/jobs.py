"""The jobs every scenario runs, on every backend: the harness around a worker function.

A scenario's job is an envelope, ``b"lqjob1 " + JSON header + b"\\n" + payload``: the
payload is the user's (``experiments run --payloads FILE``) or generated,
``b"seq=<n>;sleep=<s>"``, for the default function ``work``. The worker process runs
``Harness(fn)``: it opens the envelope and calls the function on the payload, after what
the scenario needs of it -- the slow-consumer scenario's slow job has ``slow`` and
``once`` in its header, and its *first* execution anywhere (the one that creates the
marker file ``once`` with O_EXCL) sleeps ``slow`` seconds before the call; every
redelivery runs at normal speed, so what the history shows is the timeout redelivery
while that first run goes on, not a job that can never finish. The effect, the result
written to the run's sink, is the worker loop's (``baselines.worker_loop``), as for any
function.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

from logqueue.client.context import JobContext
from logqueue.workers import WorkerFn, worker_function

DEFAULT_FUNCTION = "experiments.scenarios.jobs:work"
MAGIC = b"lqjob1 "


def generated(seq: int, sleep_s: float) -> bytes:
    """The generated payload of job ``seq`` for ``work``."""
    return f"seq={seq};sleep={sleep_s:g}".encode()


def read_payloads(path: str) -> tuple[bytes, ...]:
    """The payloads of ``--payloads FILE``: one per line (blank lines skipped); ``ValueError``
    (one line) for a file that cannot be read or holds none."""
    try:
        with open(path, "rb") as f:
            payloads = tuple(line.rstrip(b"\r\n") for line in f if line.strip())
    except OSError as exc:
        raise ValueError(f"--payloads {path}: {exc.strerror or exc}") from None
    if not payloads:
        raise ValueError(f"--payloads {path}: no payloads (one per line)")
    return payloads


def envelope(payload: bytes, slow_s: float = 0.0, once: str = "") -> bytes:
    """A job for ``Harness``: ``payload``, and (with ``slow_s`` and ``once``) the slow first run."""
    header = {"slow": slow_s, "once": once} if slow_s > 0 and once else {}
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + bytes(payload)


def open_envelope(data: bytes) -> tuple[dict, bytes]:
    """``(header, payload)``; ``ValueError`` for bytes that are not an envelope."""
    head, sep, payload = data.partition(b"\n")
    if not (head.startswith(MAGIC) and sep):
        raise ValueError("not a job envelope of experiments.scenarios.jobs (a job not produced by the runner)")
    return json.loads(head[len(MAGIC):]), payload


def _first_run(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


class Harness:
    """The worker function a scenario's worker runs: ``fn`` on the payload of the envelope,
    after the slow job's extra delay (see the module docstring)."""

    def __init__(self, fn) -> None:
        self.fn: WorkerFn = worker_function(fn)

    def __call__(self, data: bytes, ctx: JobContext) -> bytes:
        header, payload = open_envelope(data)
        if header.get("slow") and header.get("once") and _first_run(header["once"]):
            time.sleep(float(header["slow"]))
        return self.fn(payload, ctx)


def work(data: bytes) -> bytes:
    """The default function: sleep the ``sleep=<s>`` a generated payload names, return
    ``sha256(payload)`` in hex (a deterministic result)."""
    for part in data.decode(errors="replace").split(";"):
        key, sep, value = part.partition("=")
        if sep and key == "sleep" and float(value or 0) > 0:
            time.sleep(float(value))
    return hashlib.sha256(data).hexdigest().encode()
