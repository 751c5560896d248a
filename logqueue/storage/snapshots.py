"""Snapshot files: one per snapshot, named by its last index, checksummed.

Layout: ``b"LQSNAP01" | u64 body length | u32 crc32c(body) | body`` where body is the
msgpack array ``[index, term, voters, outgoing, data, learners]`` (files from before
learners existed lack the last field). A file is written under a
temporary name and renamed into place, so a visible ``*.snap`` file is complete unless
the disk damaged it -- which the checksum catches.
"""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import msgpack
from crc32c import crc32c

from logqueue.packing import pack_parts
from logqueue.raft.types import ConfState, Snapshot, SnapshotMeta
from logqueue.storage.base import CorruptSnapshotError
from logqueue.storage.files import TMP_SUFFIX, replace_atomically

MAGIC = b"LQSNAP01"
_FRAME = struct.Struct("<8sQI")
_NAME = re.compile(r"^(\d{20})\.snap$")


def encode_snapshot(snap: Snapshot) -> bytes:
    return b"".join(encode_snapshot_parts(snap))


def encode_snapshot_parts(snap: Snapshot) -> list:
    """The file's bytes as parts: the data is referenced, not copied."""
    meta = snap.meta
    body = pack_parts(
        (meta.index, meta.term, sorted(meta.conf.voters), sorted(meta.conf.outgoing), snap.data,
         sorted(meta.conf.learners))
    )
    crc = 0
    for part in body:
        crc = crc32c(part, crc)
    return [_FRAME.pack(MAGIC, sum(map(len, body)), crc), *body]


def decode_snapshot(raw: bytes, path: Path) -> Snapshot:
    """Raises CorruptSnapshotError naming ``path`` if ``raw`` is not an intact snapshot."""
    if len(raw) < _FRAME.size:
        raise CorruptSnapshotError(path, 0, f"snapshot file too short ({len(raw)} bytes)")
    magic, length, crc = _FRAME.unpack_from(raw)
    if magic != MAGIC:
        raise CorruptSnapshotError(path, 0, "not a snapshot file (bad magic)")
    body = memoryview(raw)[_FRAME.size :]
    if len(body) != length:
        raise CorruptSnapshotError(path, _FRAME.size, f"snapshot body is {len(body)} bytes, header says {length}")
    if crc32c(body) != crc:
        raise CorruptSnapshotError(path, _FRAME.size, "snapshot checksum mismatch")
    try:
        # Files written before learners existed have no sixth field.
        index, term, voters, outgoing, data, *learners = msgpack.unpackb(body)
        learners = frozenset(learners[0]) if learners else frozenset()
    except (ValueError, TypeError) as exc:
        raise CorruptSnapshotError(path, _FRAME.size, f"undecodable snapshot ({exc})") from None
    return Snapshot(SnapshotMeta(index, term, ConfState(frozenset(voters), frozenset(outgoing), learners)), data)


class SnapshotStore:
    """Keeps the newest snapshot in ``directory``; older files are deleted once a newer
    one is durable."""

    def __init__(self, directory: Path, durable: bool) -> None:
        self.directory = directory
        self._durable = durable

    def _files(self) -> list[tuple[int, Path]]:
        found = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m:
                found.append((int(m.group(1)), self.directory / name))
        return sorted(found)

    def load(self) -> Snapshot | None:
        """Return the newest snapshot, or None. Removes interrupted and superseded files.

        Raises CorruptSnapshotError if the newest snapshot file is damaged.
        """
        for name in os.listdir(self.directory):
            if name.endswith(TMP_SUFFIX):
                os.unlink(self.directory / name)
        files = self._files()
        if not files:
            return None
        index, path = files[-1]
        snap = decode_snapshot(path.read_bytes(), path)
        if snap.meta.index != index:
            raise CorruptSnapshotError(path, 0, f"snapshot holds index {snap.meta.index}, its name says {index}")
        self._remove_older_than(index)
        return snap

    def save(self, snap: Snapshot) -> None:
        """Write ``snap`` atomically (durably unless the fsync policy is ``off``), then
        delete older snapshot files."""
        replace_atomically(self.directory / f"{snap.meta.index:020d}.snap", encode_snapshot_parts(snap), self._durable)
        self._remove_older_than(snap.meta.index)

    def _remove_older_than(self, index: int) -> None:
        # Deleting superseded files needs no fsync: one that reappears after a crash is
        # removed again by the next load.
        for i, path in self._files():
            if i < index:
                path.unlink()
