"""The segmented write-ahead log: entries in files ``wal/<first index, 20 digits>.wal``.

Records (see ``records``) are appended to the last segment; when the next record
would push it past ``segment_bytes`` a new segment starts. An in-memory index keeps the
byte offset of every record, so reads are one ``pread`` per segment touched and
appends are one ``write`` per append call (two if it crosses a segment boundary).

Durability, by fsync policy:

- ``always``: every append is fdatasync'ed before it returns;
- ``batch``: appends are only written; ``sync()`` issues one fdatasync covering every
  append since the last one (group commit);
- ``off``: never fsync. A process crash loses nothing (the kernel has the data), but a
  machine crash or power loss may lose acknowledged entries, and may leave damage that
  recovery refuses to start on.

Invariant: only the last segment can end in a torn record -- before a new segment is
started the previous one is fsynced (except with ``off``). Recovery therefore truncates
a torn tail only in the last segment; damage anywhere else raises CorruptLogError.

A sealed segment (one that is not the last) gets ``<first index>.idx``: its record
offsets, byte size and a CRC. Recovery takes a sealed segment's offsets from its index
when the index is intact and names the segment's exact size, and scans only the others
(always the last segment), so a restart reads a few KB per sealed segment, not the
history. The index is a hint, written without fsync: a missing, torn or stale one only
means a scan. Records of a segment recovered from its index are checked when read.
"""
from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import zlib
from array import array
from pathlib import Path

from logqueue.raft.types import Entry
from logqueue.storage.base import CorruptLogError, FsyncPolicy
from logqueue.packing import byte_range
from logqueue.storage.files import fsync_dir, replace_atomically, writev_all
from logqueue.storage.records import BadRecord, encode_records, iter_records

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{20})\.wal$")
_INDEX_HEAD = struct.Struct("<4sQQI")  # magic, record count, segment bytes, crc32 of the offsets
_INDEX_MAGIC = b"LQX1"


def segment_name(first: int) -> str:
    return f"{first:020d}.wal"


def _index_path(seg_path: Path) -> Path:
    return seg_path.with_suffix(".idx")


class _Segment:
    __slots__ = ("path", "first", "offsets", "terms", "size")

    def __init__(self, path: Path, first: int, offsets: array) -> None:
        self.path = path
        self.first = first  # index of its first record, also its file name
        self.offsets = offsets  # offsets[k]: byte offset of the record of index first + k
        # terms[k]: its term (a term lookup reads no record); None for a segment recovered
        # from its index, which holds offsets only (a lookup there reads the record)
        self.terms: array | None = array("Q")
        self.size = 0  # bytes of whole records; the file holds exactly these

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1

    def end_of(self, index: int) -> int:
        """Byte offset just after the record of ``index``."""
        k = index - self.first + 1
        return self.offsets[k] if k < len(self.offsets) else self.size


class Wal:
    """A sequence of contiguous entries in segment files; recovers on construction.

    Raises CorruptLogError (naming file and byte offset) for damage before the tail.
    """

    def __init__(self, directory: Path, policy: FsyncPolicy, segment_bytes: int) -> None:
        self.directory = directory
        self._policy = policy
        self._segment_bytes = segment_bytes
        # Offsets below segment_bytes always fit 4 bytes for ordinary segment sizes.
        self._offset_type = "I" if segment_bytes < 2**32 else "Q"
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # O_APPEND descriptor of the last segment
        self._unsynced = False  # bytes written to the last segment since its fsync
        self._dir_unsynced = False  # a segment was created since the directory's fsync
        self._recover()

    # --- recovery -----------------------------------------------------------------

    def _recover(self) -> None:
        names = sorted(n for n in os.listdir(self.directory) if _NAME.match(n))
        for k, name in enumerate(names):
            path = self.directory / name
            seg = _Segment(path, int(name[:20]), array(self._offset_type))
            if self._segments and seg.first != self._segments[-1].last + 1:
                prev = self._segments[-1]
                raise CorruptLogError(
                    path, 0, f"segment starts at index {seg.first} but {prev.path.name} ends at {prev.last}"
                )
            is_last = k == len(names) - 1
            if is_last or not self._load_index(seg):
                self._scan(seg, path.read_bytes(), is_last)
            self._segments.append(seg)
        if self._segments:
            self._open_last()

    def _load_index(self, seg: _Segment) -> bool:
        """Take the offsets of sealed ``seg`` from its index; False if that is not intact
        or does not describe the segment file as it is."""
        try:
            raw = _index_path(seg.path).read_bytes()
            magic, count, size, crc = _INDEX_HEAD.unpack_from(raw)
        except (OSError, struct.error):
            return False
        body = raw[_INDEX_HEAD.size :]
        if (magic != _INDEX_MAGIC or zlib.crc32(body) != crc or len(body) != count * seg.offsets.itemsize
                or not count or size != os.path.getsize(seg.path)):
            return False
        seg.offsets.frombytes(body)
        seg.size = size
        seg.terms = None
        return True

    def _write_index(self, seg: _Segment) -> None:
        body = seg.offsets.tobytes()
        head = _INDEX_HEAD.pack(_INDEX_MAGIC, len(seg.offsets), seg.size, zlib.crc32(body))
        replace_atomically(_index_path(seg.path), head + body, durable=False)

    def _unlink(self, seg: _Segment) -> None:
        """Delete a segment, its index first (an index never outlives its segment)."""
        _index_path(seg.path).unlink(missing_ok=True)
        seg.path.unlink()

    def _scan(self, seg: _Segment, image: bytes, is_last: bool) -> None:
        expected = seg.first
        try:
            for offset, entry in iter_records(image):
                if entry.index != expected:
                    raise CorruptLogError(seg.path, offset, f"record has index {entry.index}, expected {expected}")
                seg.offsets.append(offset)
                seg.terms.append(entry.term)
                expected += 1
        except BadRecord as bad:
            if not (is_last and bad.torn):
                raise CorruptLogError(seg.path, bad.offset, bad.reason) from None
            log.warning(
                "%s: truncating torn tail record at byte offset %d (%s; %d bytes dropped)",
                seg.path, bad.offset, bad.reason, len(image) - bad.offset,
            )
            os.truncate(seg.path, bad.offset)
            if self._policy != "off":
                fd = os.open(seg.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            seg.size = bad.offset
        else:
            seg.size = len(image)

    # --- queries ------------------------------------------------------------------

    def empty(self) -> bool:
        """True if no record is stored (segment files may still exist)."""
        return not self._segments or self._segments[-1].last < self._segments[0].first

    def first(self) -> int:
        """Index of the first record; only meaningful when not `empty`."""
        return self._segments[0].first

    def last(self) -> int:
        """Index of the last record; only meaningful when not `empty`."""
        return self._segments[-1].last

    def _locate(self, index: int) -> int:
        """Position in self._segments of the segment holding ``index``."""
        return bisect.bisect_right([s.first for s in self._segments], index) - 1

    def term(self, index: int) -> int:
        """The term of the stored record ``index`` (from memory, unless its segment was
        recovered from its index)."""
        seg = self._segments[self._locate(index)]
        if seg.terms is None:
            return self.read(index, index + 1)[0].term
        return seg.terms[index - seg.first]

    def read(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo <= index < hi``; the range must be stored. Checksums are
        verified again: damage found now raises CorruptLogError."""
        out: list[Entry] = []
        k = self._locate(lo) if lo < hi else len(self._segments)
        while lo < hi:
            seg = self._segments[k]
            stop = min(hi, seg.last + 1)
            if stop > lo:
                start = seg.offsets[lo - seg.first]
                data = self._pread(seg, seg.end_of(stop - 1) - start, start)
                try:
                    out.extend(entry for _, entry in iter_records(data))
                except BadRecord as bad:
                    raise CorruptLogError(seg.path, start + bad.offset, bad.reason) from None
                lo = stop
            k += 1
        return out

    def _pread(self, seg: _Segment, n: int, offset: int) -> bytes:
        if seg is self._segments[-1]:
            assert self._fd is not None
            return os.pread(self._fd, n, offset)
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            return os.pread(fd, n, offset)
        finally:
            os.close(fd)

    # --- writes -------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append contiguous entries that follow the last record (any index if the
        log holds no segment)."""
        if self._segments and entries[0].index != self._segments[-1].last + 1:
            raise ValueError(f"WAL append at index {entries[0].index}, expected {self._segments[-1].last + 1}")
        parts, ends = encode_records(entries)
        i = start = 0
        while i < len(entries):
            seg = self._segments[-1] if self._segments else None
            if seg is None or (seg.size and seg.size + ends[i] - start > self._segment_bytes):
                seg = self._roll(entries[i].index)
            # Records i..k-1 fit in what remains of the segment; at least one goes in.
            k = max(bisect.bisect_right(ends, start + self._segment_bytes - seg.size, i), i + 1)
            stop = ends[k - 1]
            self._write(seg, byte_range(parts, start, stop))
            self._unsynced = True
            shift = seg.size - start
            seg.offsets.append(seg.size)
            seg.offsets.extend(end + shift for end in ends[i : k - 1])
            if seg.terms is not None:
                seg.terms.extend(e.term for e in entries[i:k])
            seg.size += stop - start
            i, start = k, stop
        if self._policy == "always":
            self.sync()

    def _write(self, seg: _Segment, views: list[memoryview]) -> None:
        assert self._fd is not None
        try:
            writev_all(self._fd, views)
        except OSError:
            # A short write (disk full...) must not leave half a record before the next.
            os.ftruncate(self._fd, seg.size)
            raise

    def _roll(self, first: int) -> _Segment:
        if self._fd is not None:
            if self._policy != "off" and self._unsynced:
                os.fdatasync(self._fd)  # keeps torn records confined to the last segment
            self._unsynced = False
            os.close(self._fd)
            self._fd = None
            if self._segments[-1].offsets:
                self._write_index(self._segments[-1])
        seg = _Segment(self.directory / segment_name(first), first, array(self._offset_type))
        self._fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._segments.append(seg)
        self._dir_unsynced = True
        return seg

    def _open_last(self) -> None:
        self._fd = os.open(self._segments[-1].path, os.O_RDWR | os.O_APPEND)

    def truncate_from(self, index: int) -> None:
        """Drop the records with index >= ``index`` (which must be stored), durably.

        Crash safety of a suffix rewrite: the new records will be written at the byte
        offsets of the old ones they replace. Were the new bytes to reach the disk
        before the truncation, a crash could leave new records followed by readable
        old ones -- indexes contiguous, terms from a dead leader: a log no leader ever
        had. So the old suffix is made durably unreadable before this returns, i.e.
        before any new record is written: later segments are unlinked newest first,
        each followed by a directory fsync (every crash point leaves a prefix of the
        old log), then the segment holding ``index`` is truncated at that record's
        boundary and fsynced. Policy ``off`` skips the fsyncs and gives this up.
        """
        k = self._locate(index)
        while len(self._segments) > k + 1:
            self._close_fd()
            self._unlink(self._segments.pop())
            if self._policy != "off":
                fsync_dir(self.directory)
        seg = self._segments[k]
        _index_path(seg.path).unlink(missing_ok=True)  # it is the open last segment again
        if self._fd is None:
            self._open_last()
        assert self._fd is not None
        offset = seg.offsets[index - seg.first]
        os.ftruncate(self._fd, offset)
        if self._policy != "off":
            os.fsync(self._fd)
        self._unsynced = False
        del seg.offsets[index - seg.first :]
        if seg.terms is not None:
            del seg.terms[index - seg.first :]
        seg.size = offset

    def prepend(self, entries: list[Entry]) -> None:
        """Store contiguous entries that end just before the first record (a node filling
        in, behind its snapshot, what its state machine still reads) as a new first
        segment, written whole under a temporary name then renamed: a crash leaves it
        either absent or complete, so the torn-tail invariant holds."""
        if not self.empty() and entries[-1].index != self.first() - 1:
            raise ValueError(f"WAL prepend must end at index {self.first() - 1}, not {entries[-1].index}")
        parts, ends = encode_records(entries)
        buf = b"".join(parts)
        seg = _Segment(self.directory / segment_name(entries[0].index), entries[0].index, array(self._offset_type))
        replace_atomically(seg.path, buf, self._policy != "off")
        seg.offsets.append(0)
        seg.offsets.extend(ends[:-1])
        seg.terms.extend(e.term for e in entries)
        seg.size = len(buf)
        if self.empty():
            self.drop_all()
            self._segments.append(seg)
            self._open_last()
        else:
            self._write_index(seg)
            self._segments.insert(0, seg)

    def usage(self) -> tuple[int, int]:
        """(bytes of records, number of segments)."""
        return sum(s.size for s in self._segments), len(self._segments)

    def drop_before(self, index: int) -> None:
        """Delete whole segments whose records are all below ``index``; the last
        segment always stays. Needs no fsync: a deleted segment that reappears after a
        crash holds valid (compacted) entries."""
        while len(self._segments) > 1 and self._segments[0].last < index:
            self._unlink(self._segments.pop(0))

    def drop_all(self) -> None:
        """Delete every segment, durably (the next append may start at any index)."""
        self._close_fd()
        while self._segments:
            self._unlink(self._segments.pop())
        self._unsynced = False
        if self._policy != "off":
            fsync_dir(self.directory)
        self._dir_unsynced = False

    def sync(self) -> None:
        """One fdatasync covering every append since the last sync (and a directory
        fsync if a segment was created); nothing with policy ``off``."""
        if self._policy == "off":
            return
        if self._unsynced and self._fd is not None:
            os.fdatasync(self._fd)
        self._unsynced = False
        if self._dir_unsynced:
            fsync_dir(self.directory)
            self._dir_unsynced = False

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close_fd()
