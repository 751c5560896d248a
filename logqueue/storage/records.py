"""WAL record codec: one record per log entry.

Record layout (little-endian)::

    u32 body length | u32 crc32c(body) | u32 crc32c(the previous 8 bytes) | body

``body`` is the msgpack array ``[index, term, kind, data]`` (data as msgpack bin).
The header has its own checksum so that a damaged length is recognised as damage,
not mistaken for a record cut short by a crash (which would silently drop every
record after it).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator

import msgpack
from crc32c import crc32c

from logqueue.packing import LARGE, array_header, bin_header
from logqueue.raft.types import Entry, EntryKind

_PREFIX = struct.Struct("<II")
HEADER = struct.Struct("<III")
_KINDS = {int(k): k for k in EntryKind}


class BadRecord(Exception):
    """The record at ``offset`` is damaged. ``torn`` says the damage looks like a write
    cut short by a crash: nothing but zero bytes (or nothing) follows it."""

    def __init__(self, offset: int, reason: str, torn: bool) -> None:
        super().__init__(f"{reason} at byte offset {offset}")
        self.offset = offset
        self.reason = reason
        self.torn = torn


def encode_records(entries: list[Entry]) -> tuple[list, list[int]]:
    """Encode ``entries`` as the parts of one byte string and the end offset of each
    record. Small records are packed together; the data of a large one is a part of its
    own, referenced, not copied (``logqueue.packing``)."""
    parts: list = []
    buf = bytearray()
    ends: list[int] = []
    total = 0
    pack = msgpack.Packer().pack
    prefix = _PREFIX.pack
    for e in entries:
        data = e.data
        if len(data) < LARGE:
            body, tail = pack((e.index, e.term, e.kind, data)), None
            size, crc = len(body), crc32c(body)
        else:  # the same bytes as packing the tuple
            body, tail = array_header(4) + pack(e.index) + pack(e.term) + pack(e.kind) + bin_header(len(data)), data
            size, crc = len(body) + len(data), crc32c(data, crc32c(body))
        head = prefix(size, crc)
        buf += head
        buf += crc32c(head).to_bytes(4, "little")
        buf += body
        total += HEADER.size + size
        ends.append(total)
        if tail is not None:
            parts += (buf, tail)
            buf = bytearray()
    if buf:
        parts.append(buf)
    return parts, ends


def decode_body(body: bytes | memoryview) -> Entry:
    """Decode a checksummed body; raise ValueError if it is not an entry."""
    try:
        index, term, kind, data = msgpack.unpackb(body)
        return Entry(term, index, data, _KINDS[kind])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"undecodable record body ({exc})") from None


def _zeros_from(buf: bytes, pos: int) -> bool:
    return buf.count(0, pos) == len(buf) - pos


def iter_records(buf: bytes) -> Iterator[tuple[int, Entry]]:
    """Yield ``(offset, entry)`` for each record of a segment image; raise BadRecord at
    the first damaged one."""
    view = memoryview(buf)
    size = len(buf)
    pos = 0
    hsize = HEADER.size
    while pos < size:
        if size - pos < hsize:
            raise BadRecord(pos, f"short header ({size - pos} of {hsize} bytes)", torn=True)
        length, body_crc, head_crc = HEADER.unpack_from(buf, pos)
        if crc32c(view[pos : pos + 8]) != head_crc:
            raise BadRecord(pos, "record header checksum mismatch", torn=_zeros_from(buf, pos + hsize))
        start = pos + hsize
        end = start + length
        if end > size:
            raise BadRecord(pos, f"short body ({size - start} of {length} bytes)", torn=True)
        body = view[start:end]
        if crc32c(body) != body_crc:
            raise BadRecord(pos, "record body checksum mismatch", torn=_zeros_from(buf, end))
        try:
            entry = decode_body(body)
        except ValueError as exc:
            raise BadRecord(pos, str(exc), torn=False) from None
        yield pos, entry
        pos = end
