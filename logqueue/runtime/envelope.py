"""What the data of an application (NORMAL) log entry holds: a msgpack array by kind.

- ``[RECORD, client_id, seq, low, data]``: one record of the log service (``logqueue log
  append``); one entry per record, so the entry's Raft index is the record's index.
- ``[QUEUE, now_ms, [[client_id, seq, low, commands], ...]]``: a batch of queue-command
  groups from many clients, stamped with the leader's time (monotonic across leaders).
- ``[ADDRESS, node_id, address]``: the address book entry for a member (set before it
  is added by ``member add``; every node learns where to send to it).

``(client_id, seq)`` identify a client request (a client session, Ongaro §6.3): a retry
carries the same pair and is applied once. ``low`` is the client's lowest sequence
number without an answer yet: cached answers below it may be forgotten.
"""
from __future__ import annotations

from typing import Any

import msgpack

from logqueue.packing import LARGE, packb

RECORD, QUEUE, ADDRESS = 0, 1, 2
KIND_NAMES = {RECORD: "record", QUEUE: "queue", ADDRESS: "address"}

_packb = msgpack.packb


def _pack(value, large: bool) -> bytes:
    # Joining the parts copies each large payload once; msgpack's growing buffer copies it
    # two or three times (20 MB: 50 ms against 20 ms on this machine), on the event loop.
    return packb(value) if large else _packb(value)


def record(client_id: int, seq: int, low: int, data: bytes) -> bytes:
    return _pack((RECORD, client_id, seq, low, data), len(data) >= LARGE)


def queue_batch(now_ms: int, groups: list, payload_bytes: int = 0) -> bytes:
    """``payload_bytes``: how much payload ``groups`` carry (large ones are packed apart)."""
    return _pack((QUEUE, now_ms, groups), payload_bytes >= LARGE)


def address(node_id: int, addr: str | None) -> bytes:
    return _packb((ADDRESS, node_id, addr))


def decode(data: bytes) -> list[Any] | None:
    """The envelope of an entry's data, or None if it is not one of ours."""
    try:
        env = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated types on garbage
        return None
    if type(env) is not list or not env or env[0] not in KIND_NAMES:
        return None
    return env
