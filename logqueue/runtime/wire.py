"""The wire format shared by nodes and clients: length-prefixed msgpack frames.

A frame is a 5-byte header -- the body length (4 bytes, big-endian) and the protocol
version (1 byte) -- followed by a msgpack body, always an array whose first element is
the frame type. This module is sans-I/O: ``FrameDecoder`` turns received bytes into
bodies, ``encode_*`` / ``decode_*`` turn values into bodies and back. Anything that
does not decode raises ``FrameError`` with a one-line reason; the connection that sent
it is then closed and the node keeps serving.
"""
from __future__ import annotations

import mmap
import struct
from typing import Any

import msgpack

from logqueue.packing import LARGE, coalesce, pack_parts
from logqueue.raft import types as t

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">IB")
DEFAULT_MAX_FRAME = 64 << 20  # large enough for a snapshot in one InstallSnapshot

# Frame types (the first element of every body).
HELLO = 1  # server -> connecting side: [HELLO, node_id, nonce]
AUTH = 2  # connecting side -> server: [AUTH, kind, peer_id, listen_address, mac]
WELCOME = 3  # server -> connecting side: [WELCOME]
REQUEST = 30  # client -> node: [REQUEST, request_id, op, args]
RESPONSE = 31  # node -> client: [RESPONSE, request_id, ok, body]
# Raft messages use 10 + their position in MESSAGE_TYPES.
_RAFT_BASE = 10
_RAFT_CODE = {cls: _RAFT_BASE + i for i, cls in enumerate(t.MESSAGE_TYPES)}
_RAFT_CLS = {code: cls for cls, code in _RAFT_CODE.items()}


class FrameError(ValueError):
    """A frame that cannot be accepted; the reason is one line."""


# --- framing --------------------------------------------------------------------------


def frame(body: Any) -> bytes:
    """Encode one body as a complete frame (header + msgpack)."""
    data = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(data), PROTOCOL_VERSION) + data


def frame_parts(body: Any) -> list:
    """The frame of ``body`` as parts (``logqueue.packing``): the bytes of ``frame(body)``,
    large bins referenced, not copied."""
    parts = pack_parts(body)
    return coalesce([HEADER.pack(sum(map(len, parts)), PROTOCOL_VERSION), *parts])


class FrameDecoder:
    """Incremental decoder: ``feed(data)`` returns the bodies of every complete frame.

    Raises FrameError on a wrong protocol version, a length above ``max_frame`` (checked
    from the header, before any of the body is buffered) or a body that is not a msgpack
    array with an integer type; the decoder must not be used after that. The body of a
    large frame is received straight into a buffer of its size and decoded in place:
    no copy of it is made before msgpack's own.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()  # the start of the next frames
        self._large: mmap.mmap | None = None  # the body of a large frame being received ...
        self._filled = 0  # ... and how much of it has arrived

    def feed(self, data: bytes) -> list[list]:
        out: list[list] = []
        while data:
            data = self._fill(memoryview(data), out) if self._large is not None else self._split(data, out)
        return out

    def _split(self, data, out: list[list]) -> bytes:
        """Buffer ``data``, decode every complete frame; all of ``data`` is taken."""
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        with memoryview(buf) as view:
            while n - pos >= HEADER.size:
                length, version = HEADER.unpack_from(buf, pos)
                if version != PROTOCOL_VERSION:
                    raise FrameError(f"protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})")
                if length > self.max_frame:
                    raise FrameError(f"frame of {length} bytes exceeds the maximum of {self.max_frame}")
                start = pos + HEADER.size
                end = start + length
                if end <= n:
                    out.append(_unpack_body(view[start:end]))
                    pos = end
                    continue
                if length >= LARGE:  # the rest of its body goes straight into its own buffer
                    # Anonymous memory: its pages are zeroed as the body fills them, not
                    # all at once here (a bytearray of 20 MB is a 20 MB memset on the loop).
                    self._large = mmap.mmap(-1, length)
                    self._large[: n - start] = view[start:n]
                    self._filled, pos = n - start, n
                break
        del buf[:pos]
        return b""

    def _fill(self, data: memoryview, out: list[list]) -> memoryview:
        """Add ``data`` to the large body; decode it once complete. Returns what follows it."""
        large = self._large
        take = min(len(large) - self._filled, len(data))
        large[self._filled : self._filled + take] = data[:take]
        self._filled += take
        if self._filled == len(large):
            self._large = None
            with large:  # the decoded body holds copies of its bins: nothing refers to it after
                out.append(_unpack_body(large))
        return data[take:]


def _unpack_body(data) -> list:
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise FrameError(f"malformed msgpack body: {exc.__class__.__name__}") from None
    if not isinstance(body, list) or not body or type(body[0]) is not int:
        raise FrameError("frame body is not an array starting with an integer type")
    return body


# --- Raft messages --------------------------------------------------------------------
# Field kinds, checked on decode so that a peer's garbage never reaches the core.
_I, _B, _OPT_I = "int", "bool", "int|None"
_FIELDS: dict[type, tuple[str, ...]] = {
    t.RequestVote: (_I, _I, _I, _I, _I, _B, _B),
    t.RequestVoteResponse: (_I, _I, _I, _B, _B),
    t.AppendEntriesResponse: (_I, _I, _I, _B, _I, _I, _I),
    t.Heartbeat: (_I, _I, _I, _I, _I),
    t.HeartbeatResponse: (_I, _I, _I, _I, _OPT_I),
    t.TimeoutNow: (_I, _I, _I),
    t.ReadIndex: (_I, _I, _I, _I),
    t.ReadIndexResponse: (_I, _I, _I, _I, _I),
}
_ENTRY_KINDS = {k.value: k for k in t.EntryKind}


def _check(value: Any, kind: str) -> bool:
    if kind == _OPT_I and value is None:
        return True
    if kind in (_I, _OPT_I):
        return type(value) is int and value >= 0
    return type(value) is bool


def encode_message(msg: t.Message) -> list:
    """The body of a Raft message."""
    cls = type(msg)
    if cls is t.AppendEntries:
        # Entries are consecutive from prev_index + 1: their index is implied.
        return [
            _RAFT_CODE[cls],
            msg.term,
            msg.src,
            msg.dst,
            msg.prev_index,
            msg.prev_term,
            msg.commit,
            [(e.term, e.data, e.kind) for e in msg.entries],
        ]
    if cls is t.InstallSnapshot:
        m = msg.snapshot.meta
        return [
            _RAFT_CODE[cls],
            msg.term,
            msg.src,
            msg.dst,
            m.index,
            m.term,
            sorted(m.conf.voters),
            sorted(m.conf.outgoing),
            msg.snapshot.data,
            sorted(m.conf.learners),
        ]
    if cls is t.RequestVote:
        return [_RAFT_CODE[cls], msg.term, msg.src, msg.dst, msg.last_log_index, msg.last_log_term, msg.pre_vote, msg.transfer]
    if cls is t.RequestVoteResponse:
        return [_RAFT_CODE[cls], msg.term, msg.src, msg.dst, msg.granted, msg.pre_vote]
    if cls is t.AppendEntriesResponse:
        return [
            _RAFT_CODE[cls],
            msg.term,
            msg.src,
            msg.dst,
            msg.success,
            msg.match_index,
            msg.conflict_index,
            msg.conflict_term,
        ]
    if cls is t.Heartbeat:
        return [_RAFT_CODE[cls], msg.term, msg.src, msg.dst, msg.commit, msg.context]
    if cls is t.HeartbeatResponse:
        return [_RAFT_CODE[cls], msg.term, msg.src, msg.dst, msg.context, msg.last_index]
    if cls is t.TimeoutNow:
        return [_RAFT_CODE[cls], msg.term, msg.src, msg.dst]
    if cls is t.ReadIndex:
        return [_RAFT_CODE[cls], msg.term, msg.src, msg.dst, msg.context]
    if cls is t.ReadIndexResponse:
        return [_RAFT_CODE[cls], msg.term, msg.src, msg.dst, msg.context, msg.index]
    raise TypeError(f"not a Raft message: {cls.__name__}")


def message_frame(msg: t.Message) -> list:
    """The frame of a Raft message as parts: a message carrying large data (entries, a
    snapshot) references it rather than copying it (``frame_parts``)."""
    large = (isinstance(msg, t.AppendEntries) and any(len(e.data) >= LARGE for e in msg.entries)) or (
        isinstance(msg, t.InstallSnapshot) and len(msg.snapshot.data) >= LARGE)
    body = encode_message(msg)
    return frame_parts(body) if large else [frame(body)]


def is_raft(body: list) -> bool:
    return body[0] in _RAFT_CLS


def decode_message(body: list) -> t.Message:
    """The Raft message in a body; FrameError if any field is missing or mistyped."""
    cls = _RAFT_CLS.get(body[0])
    if cls is None:
        raise FrameError(f"unknown frame type {body[0]}")
    name = cls.__name__
    if cls is t.AppendEntries:
        if len(body) != 8:
            raise FrameError(f"{name}: expected 7 fields, got {len(body) - 1}")
        _, term, src, dst, prev_index, prev_term, commit, raw = body
        if not all(type(v) is int and v >= 0 for v in (term, src, dst, prev_index, prev_term, commit)):
            raise FrameError(f"{name}: header fields must be non-negative integers")
        if type(raw) is not list:
            raise FrameError(f"{name}: entries must be an array")
        entries = []
        index = prev_index
        kinds = _ENTRY_KINDS
        for item in raw:
            index += 1
            try:
                eterm, data, kind = item
            except (TypeError, ValueError):
                raise FrameError(f"{name}: entry {index} is not [term, data, kind]") from None
            if type(eterm) is not int or type(data) is not bytes or kind not in kinds:
                raise FrameError(f"{name}: entry {index} has mistyped fields")
            entries.append(t.Entry(eterm, index, data, kinds[kind]))
        return t.AppendEntries(term, src, dst, prev_index, prev_term, tuple(entries), commit)
    if cls is t.InstallSnapshot:
        if len(body) != 10:
            raise FrameError(f"{name}: expected 9 fields, got {len(body) - 1}")
        _, term, src, dst, index, sterm, voters, outgoing, data, learners = body
        if not all(type(v) is int and v >= 0 for v in (term, src, dst, index, sterm)):
            raise FrameError(f"{name}: header fields must be non-negative integers")
        if not (
            type(voters) is list
            and type(outgoing) is list
            and type(learners) is list
            and all(type(v) is int for v in voters + outgoing + learners)
            and type(data) is bytes
        ):
            raise FrameError(f"{name}: mistyped configuration or data")
        meta = t.SnapshotMeta(index, sterm, t.ConfState(frozenset(voters), frozenset(outgoing), frozenset(learners)))
        return t.InstallSnapshot(term, src, dst, t.Snapshot(meta, data))
    kinds = _FIELDS[cls]
    if len(body) - 1 != len(kinds):
        raise FrameError(f"{name}: expected {len(kinds)} fields, got {len(body) - 1}")
    for value, kind in zip(body[1:], kinds):
        if not _check(value, kind):
            raise FrameError(f"{name}: field {value!r} is not a {kind}")
    return cls(*body[1:])


# --- client requests ------------------------------------------------------------------


def request(request_id: int, op: str, args: dict) -> list:
    return [REQUEST, request_id, op, args]


def response(request_id: int, ok: bool, body: Any) -> list:
    return [RESPONSE, request_id, ok, body]


def decode_request(body: list) -> tuple[int, str, dict]:
    """(request_id, op, args) of a REQUEST body; FrameError if malformed."""
    if len(body) != 4 or body[0] != REQUEST:
        raise FrameError("malformed request frame")
    _, rid, op, args = body
    if type(rid) is not int or type(op) is not str or type(args) is not dict:
        raise FrameError("request needs an integer id, a string op and a map of arguments")
    return rid, op, args
