"""An InstallSnapshot on the wire as a stream of bounded chunks (etcd's snapshot sender,
InstallSnapshot's offset/done in the Raft paper).

Sent whole, a snapshot is one frame as large as the state machine's image: the follower
buffers it in one piece before decoding anything, and a snapshot above the frame limit
could never be sent. ``chunk_frames`` cuts the data into frames of at most
``chunk_bytes`` of it, each carrying the snapshot's metadata, its byte offset and the
total size; they travel in order on the bulk connection. ``Assembler`` (one per inbound
connection) copies each chunk into place and hands the core the InstallSnapshot once the
last byte has arrived. A chunk that does not continue the snapshot being assembled
(another snapshot, a gap after a drop) discards it: the leader sends a snapshot again
once its progress goes back to probing, as for a lost InstallSnapshot.

Chunk body: ``[SNAPSHOT_CHUNK, term, src, dst, index, snap_term, voters, outgoing,
learners, offset, total, data]``.
"""
from __future__ import annotations

import msgpack

from logqueue.packing import array_header, bin_header, coalesce
from logqueue.raft import types as t
from logqueue.runtime import wire

SNAPSHOT_CHUNK = 40  # a frame type apart from the Raft messages' (10 + their position)
DEFAULT_CHUNK_BYTES = 1 << 20


def chunk_frames(msg: t.InstallSnapshot, chunk_bytes: int) -> list[list]:
    """The frames (as parts, see ``wire.frame_parts``) carrying ``msg``, in order."""
    meta, data = msg.snapshot.meta, msg.snapshot.data
    head = [SNAPSHOT_CHUNK, msg.term, msg.src, msg.dst, meta.index, meta.term, sorted(meta.conf.voters),
            sorted(meta.conf.outgoing), sorted(meta.conf.learners)]
    total = len(data)
    view = memoryview(data)
    frames = []
    for offset in range(0, max(total, 1), chunk_bytes):
        chunk = view[offset:offset + chunk_bytes]  # referenced, not copied, until it is written
        fields = msgpack.packb([*head, offset, total], use_bin_type=True)[1:]  # without its array header
        parts = [array_header(len(head) + 3), fields, bin_header(len(chunk)), chunk]
        frames.append(coalesce([wire.HEADER.pack(sum(map(len, parts)), wire.PROTOCOL_VERSION), *parts]))
    return frames


def is_chunk(body: list) -> bool:
    return body[0] == SNAPSHOT_CHUNK


class Assembler:
    """Rebuilds the InstallSnapshots of one connection from their chunks.

    ``chunks`` and ``largest`` count what arrived (for status and tests)."""

    def __init__(self) -> None:
        self._key: tuple | None = None  # the header of the snapshot being assembled
        self._buf: bytearray | None = None
        self._filled = 0
        self.chunks = 0
        self.largest = 0  # bytes of snapshot data in the largest chunk received

    def feed(self, body: list) -> t.InstallSnapshot | None:
        """The InstallSnapshot completed by chunk ``body``, else None; FrameError if the
        chunk is malformed."""
        if len(body) != 12:
            raise wire.FrameError(f"snapshot chunk: expected 11 fields, got {len(body) - 1}")
        key, (offset, total, data) = tuple(_hashable(v) for v in body[1:9]), body[9:]
        if not all(type(v) is int and v >= 0 for v in (*key[:5], offset, total)) or type(data) is not bytes:
            raise wire.FrameError("snapshot chunk: mistyped fields")
        if not all(type(v) is int for ids in key[5:] for v in ids) or offset + len(data) > total:
            raise wire.FrameError("snapshot chunk: mistyped configuration or a chunk past the end")
        self.chunks += 1
        self.largest = max(self.largest, len(data))
        if offset == 0:
            self._key, self._buf, self._filled = (key, total), bytearray(total), 0
        elif self._key != (key, total) or offset != self._filled:
            self._key = self._buf = None  # a gap or another snapshot: wait for a new one
            return None
        self._buf[offset:offset + len(data)] = data
        self._filled += len(data)
        if self._filled < total:
            return None
        term, src, dst, index, sterm, voters, outgoing, learners = key
        snap = t.Snapshot(t.SnapshotMeta(index, sterm, t.ConfState(frozenset(voters), frozenset(outgoing),
                                                                   frozenset(learners))), bytes(self._buf))
        self._key = self._buf = None
        return t.InstallSnapshot(term, src, dst, snap)


def _hashable(value):
    return tuple(value) if type(value) is list else value
