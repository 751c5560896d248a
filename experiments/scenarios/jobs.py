"""The worker function every scenario runs, on every backend: ``experiments.scenarios.jobs:work``.

A payload is ``b"seq=<n>;sleep=<s>[;slow=<s>;once=<path>]"``. The job sleeps ``sleep``
seconds and returns the SHA-256 of its payload (a deterministic result). A job with
``slow`` and ``once`` is the slow-consumer scenario's slow job: its *first* execution
anywhere (the one that creates the marker file ``once`` with O_EXCL) sleeps ``slow``
seconds instead; every redelivery runs at normal speed, so what the history shows is the
timeout redelivery while that first run goes on, not a job that can never finish.
"""
from __future__ import annotations

import hashlib
import os
import time


def payload(seq: int, sleep_s: float, slow_s: float = 0.0, once: str = "") -> bytes:
    """Build a job payload (see the module docstring)."""
    text = f"seq={seq};sleep={sleep_s:g}"
    if slow_s > 0 and once:
        text += f";slow={slow_s:g};once={once}"
    return text.encode()


def _fields(data: bytes) -> dict[str, str]:
    fields = {}
    for part in data.decode(errors="replace").split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    return fields


def _first_run(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def work(data: bytes) -> bytes:
    """Sleep as the payload says, return ``sha256(payload)`` in hex."""
    fields = _fields(data)
    seconds = float(fields.get("sleep", 0) or 0)
    if "slow" in fields and "once" in fields and _first_run(fields["once"]):
        seconds = float(fields["slow"])
    if seconds > 0:
        time.sleep(seconds)
    return hashlib.sha256(data).hexdigest().encode()
