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

RECORD, QUEUE, ADDRESS = 0, 1, 2
KIND_NAMES = {RECORD: "record", QUEUE: "queue", ADDRESS: "address"}

_packb = msgpack.packb


def record(client_id: int, seq: int, low: int, data: bytes) -> bytes:
    return _packb((RECORD, client_id, seq, low, data))


def queue_batch(now_ms: int, groups: list) -> bytes:
    return _packb((QUEUE, now_ms, groups))


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
