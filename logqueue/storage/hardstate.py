"""The hard state file: term, vote, commit, plus the compaction point.

Layout: ``b"LQHS" | u32 body length | u32 crc32c(body) | body`` where body is the
msgpack array ``[term, vote, commit, compacted]``. The file is only ever replaced
atomically (temp file, fsync, rename, fsync dir), so a leftover ``hardstate.tmp`` is an
interrupted write and is ignored.

``compacted`` (the last index dropped by ``compact``) rides along because it is a hint
of the same kind as ``commit``: if a crash loses its newest value, the storage merely
shows a few more (still valid) entries below the snapshot.
"""
from __future__ import annotations

import struct
from pathlib import Path

import msgpack
from crc32c import crc32c

from logqueue.raft.types import HardState
from logqueue.storage.base import CorruptLogError
from logqueue.storage.files import TMP_SUFFIX, replace_atomically

MAGIC = b"LQHS"
_FRAME = struct.Struct("<4sII")


class HardStateFile:
    """Reads and atomically replaces ``path``."""

    def __init__(self, path: Path, durable: bool) -> None:
        self.path = path
        self._durable = durable

    def read(self) -> tuple[HardState, int]:
        """Return ``(hard state, compacted)``; defaults if the file does not exist.

        Raises CorruptLogError if the file is damaged.
        """
        self.path.with_name(self.path.name + TMP_SUFFIX).unlink(missing_ok=True)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return HardState(), 0
        if len(raw) < _FRAME.size:
            raise CorruptLogError(self.path, 0, f"hard state file too short ({len(raw)} bytes)")
        magic, length, crc = _FRAME.unpack_from(raw)
        body = raw[_FRAME.size :]
        if magic != MAGIC:
            raise CorruptLogError(self.path, 0, "not a hard state file (bad magic)")
        if len(body) != length or crc32c(body) != crc:
            raise CorruptLogError(self.path, _FRAME.size, "hard state checksum mismatch")
        try:
            term, vote, commit, compacted = msgpack.unpackb(body)
        except (ValueError, TypeError) as exc:
            raise CorruptLogError(self.path, _FRAME.size, f"undecodable hard state ({exc})") from None
        return HardState(term, vote, commit), compacted

    def write(self, hs: HardState, compacted: int) -> None:
        body = msgpack.packb((hs.term, hs.vote, hs.commit, compacted))
        replace_atomically(self.path, _FRAME.pack(MAGIC, len(body), crc32c(body)) + body, self._durable)
