"""The command vocabulary of the work queue: constructors for command dicts, error codes.

A command is a plain dict with an ``"op"`` key and msgpack-friendly fields (str, int,
bytes, lists). Clients build them with the functions below so that field names are never
typed by hand; the runtime packs a list of them into one Raft entry and
``QueueMachine.apply`` returns one result dict per command. The machine validates every
field itself: these helpers only spell the dicts.

Every failed command answers ``{"error": <code>, "message": <one line>}`` with one of the
codes below.
"""
from __future__ import annotations

# --- error codes -------------------------------------------------------------------------
BAD_REQUEST = "bad_request"  # malformed command: unknown op, missing field, wrong type
NOT_FOUND = "not_found"  # the offset has not been enqueued (yet)
FENCED = "fenced"  # the token is not the offset's current claim: a newer claim exists,
#                    the claim was released by `fail`, or the token was never issued
ALREADY_DONE = "already_done"  # the offset was completed, by this very token
DEAD_LETTERED = "dead_lettered"  # the offset was dead-lettered: no more claims or completions
COMPACTED = "compacted"  # the offset is below the group's retained history (settled and dropped)
STALE_SEQ = "stale_seq"  # producer seq older than the retained dedup window: cannot tell
#                          whether it is a duplicate, so it is refused rather than doubled

ERROR_CODES = frozenset({BAD_REQUEST, NOT_FOUND, FENCED, ALREADY_DONE, DEAD_LETTERED, COMPACTED, STALE_SEQ})

OPS = ("enqueue", "claim", "heartbeat", "complete", "fail", "commit_offset")


def error(code: str, message: str) -> dict:
    """The result dict of a refused command."""
    return {"error": code, "message": message}


def is_error(result: dict) -> bool:
    """True when ``result`` (one element of ``QueueMachine.apply``'s answer) is an error."""
    return "error" in result


def enqueue(queue: str, payload: bytes, producer_id: str | int | None = None, seq: int | None = None) -> dict:
    """Append a job. With ``producer_id`` and ``seq``, a retried append never duplicates:
    the machine answers ``{"offset": first_offset, "duplicate": True}``.
    Answer: ``{"offset": int}``."""
    cmd = {"op": "enqueue", "queue": queue, "payload": payload}
    if producer_id is not None or seq is not None:
        cmd["producer_id"] = producer_id
        cmd["seq"] = seq
    return cmd


def claim(
    queue: str,
    group: str,
    worker: str,
    max_jobs: int,
    lease_ms: int,
    request_id: str | int | None = None,
    max_attempts: int | None = None,
) -> dict:
    """Lease up to ``max_jobs`` of the group's lowest claimable offsets for ``lease_ms``.

    Replaying the same ``(worker, request_id)`` returns the first answer. ``max_attempts``
    (absent or 0: unlimited) dead-letters a job whose lease expires or which fails on its
    last attempt. Answer: ``{"jobs": [[offset, token, payload, attempt], ...]}``."""
    cmd = {"op": "claim", "queue": queue, "group": group, "worker": worker, "max_jobs": max_jobs, "lease_ms": lease_ms}
    if request_id is not None:
        cmd["request_id"] = request_id
    if max_attempts is not None:
        cmd["max_attempts"] = max_attempts
    return cmd


def heartbeat(queue: str, group: str, worker: str, offsets: list[int], token: int, lease_ms: int) -> dict:
    """Extend the leases of ``offsets`` held by ``worker`` under ``token`` to now + ``lease_ms``.
    Answer: ``{"extended": [offset, ...], "lost": [offset, ...]}``."""
    return {
        "op": "heartbeat",
        "queue": queue,
        "group": group,
        "worker": worker,
        "offsets": list(offsets),
        "token": token,
        "lease_ms": lease_ms,
    }


def complete(queue: str, group: str, offset: int, token: int, result: bytes) -> dict:
    """Record ``result`` for ``offset``; succeeds once per offset. Answer: ``{"ok": True}``."""
    return {"op": "complete", "queue": queue, "group": group, "offset": offset, "token": token, "result": result}


def fail(queue: str, group: str, offset: int, token: int, reason: str = "", dead_letter: bool = False) -> dict:
    """Release the claim at once (or dead-letter it on its last attempt, or at once with
    ``dead_letter``). Answer: ``{"ok": True, "dead_lettered": bool, "attempts": int}``."""
    cmd = {"op": "fail", "queue": queue, "group": group, "offset": offset, "token": token, "reason": reason}
    if dead_letter:
        cmd["dead_letter"] = True
    return cmd


def commit_offset(queue: str, group: str, offset: int) -> dict:
    """Log mode: store the group's read position. Answer: ``{"ok": True}``."""
    return {"op": "commit_offset", "queue": queue, "group": group, "offset": offset}
