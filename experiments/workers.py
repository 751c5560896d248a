"""Worker functions shared by every backend in the experiments: ``fn(payload) -> result``."""
from __future__ import annotations

import hashlib
import time


def echo(payload: bytes) -> bytes:
    """Return the payload unchanged."""
    return payload


def digest(payload: bytes) -> bytes:
    """Return the hex SHA-256 of the payload: a deterministic result to check."""
    return hashlib.sha256(payload).hexdigest().encode()


def sleepy(payload: bytes) -> bytes:
    """Sleep for the seconds named in a payload of the form ``b"sleep=<s>;..."``, then digest it."""
    head = payload.split(b";", 1)[0]
    if head.startswith(b"sleep="):
        time.sleep(float(head[6:]))
    return digest(payload)
