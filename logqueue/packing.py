"""msgpack encodings that reference large byte strings instead of copying them.

A value packed by msgpack is the concatenation of its elements' encodings, and a bin
is a short header followed by the bytes themselves. So the encoding of something that
holds a large payload can be written as *parts*: packed headers and small fields,
then the payload object as it is. Writing the parts in order (``os.writev``, one
transport write each) puts the same bytes on the wire or disk as ``msgpack.packb``
would, without the 20 MB copies.
"""
from __future__ import annotations

import struct

import msgpack

# Data at least this long is referenced as its own part; shorter data is packed inline.
LARGE = 64 << 10

_BIN8, _BIN16, _BIN32 = struct.Struct(">BB"), struct.Struct(">BH"), struct.Struct(">BI")


def bin_header(n: int) -> bytes:
    """The msgpack header of a bin of ``n`` bytes (what ``packb(bytes)`` starts with)."""
    if n < 1 << 8:
        return _BIN8.pack(0xC4, n)
    if n < 1 << 16:
        return _BIN16.pack(0xC5, n)
    return _BIN32.pack(0xC6, n)


def _container_header(n: int, fix: int, code16: int, code32: int) -> bytes:
    if n < 16:
        return bytes((fix | n,))
    if n < 1 << 16:
        return struct.pack(">BH", code16, n)
    return struct.pack(">BI", code32, n)


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` elements."""
    return _container_header(n, 0x90, 0xDC, 0xDD)


def map_header(n: int) -> bytes:
    """The msgpack header of a map of ``n`` pairs."""
    return _container_header(n, 0x80, 0xDE, 0xDF)


def pack_parts(value) -> list:
    """``value`` (lists, tuples, dicts and what msgpack packs) packed as parts: each bin of
    at least ``LARGE`` bytes is a part of its own, the object itself."""
    parts: list = []
    pack = msgpack.Packer().pack

    def walk(v) -> None:
        if type(v) in (list, tuple):
            parts.append(array_header(len(v)))
            for item in v:
                walk(item)
        elif type(v) is dict:
            parts.append(map_header(len(v)))
            for key, item in v.items():
                walk(key)
                walk(item)
        elif type(v) is bytes and len(v) >= LARGE:
            parts.append(bin_header(len(v)))
            parts.append(v)
        else:
            parts.append(pack(v))

    walk(value)
    return parts


def packb(value) -> bytes:
    """``msgpack.packb(value)``'s bytes, with one copy of its large bins (msgpack's own
    buffer grows by doubling and is copied out again)."""
    return b"".join(pack_parts(value))


def byte_range(parts: list, start: int, stop: int) -> list[memoryview]:
    """The bytes ``start:stop`` of the concatenation of ``parts``, as views (no copy)."""
    out: list[memoryview] = []
    pos = 0
    for part in parts:
        end = pos + len(part)
        if end > start and pos < stop:
            out.append(memoryview(part)[max(0, start - pos) : min(len(part), stop - pos)])
        if end >= stop:
            break
        pos = end
    return out


def coalesce(parts: list) -> list:
    """``parts`` with runs of small ones joined (fewer writes), large ones left as they are."""
    out: list = []
    small: list = []
    for part in parts:
        if len(part) < LARGE:
            small.append(part)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(part)
    if small:
        out.append(b"".join(small))
    return out
