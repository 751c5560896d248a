"""DiskStorage: the durable `Storage` of a node's data directory.

Layout of ``path``::

    LOCK                      flock'ed while open: one process per data dir
    hardstate                 term, vote, commit, compaction point (see hardstate.py)
    snap/<index>.snap         the newest snapshot (see snapshots.py)
    wal/<first index>.wal     log segments (see wal.py)
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from logqueue.raft.types import Entry, HardState, Snapshot
from logqueue.storage.base import (
    CorruptLogError,
    FsyncPolicy,
    LoadedState,
    StorageError,
    check_compact,
    check_fsync_policy,
    check_prepend,
    check_snapshot_order,
    entries_to_store,
)
from logqueue.storage.files import fsync_dir
from logqueue.storage.hardstate import HardStateFile
from logqueue.storage.snapshots import SnapshotStore
from logqueue.storage.wal import Wal, segment_name

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


class DiskStorage:
    """A `Storage` in the directory ``path`` (created if missing).

    ``fsync``:

    - ``always``: append, set_hard_state and compact are durable when they return;
    - ``batch`` (default, group commit): append only writes, set_hard_state only
      records; `sync` makes all of it durable -- one fdatasync for every entry since
      the last sync, then an atomic replace of the hard state file if it changed;
    - ``off``: never fsync. A process crash loses nothing written, but a machine crash
      may lose acknowledged writes or leave the directory unusable -- benchmarks only.

    save_snapshot and suffix rewrites (append at an index already stored) are durable
    on return under ``always`` and ``batch``.

    Raises StorageError if another process has the directory open, CorruptLogError
    (naming file and byte offset) if recovery finds damage before the log's tail, and
    ValueError for bad arguments. A torn tail record is truncated with a warning on the
    ``logqueue.storage.wal`` logger.
    """

    def __init__(self, path: str | os.PathLike[str], fsync: FsyncPolicy | str = "batch",
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self._policy = check_fsync_policy(fsync)
        if not isinstance(segment_bytes, int) or segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be a positive integer, not {segment_bytes!r}")
        self.path = Path(path)
        self._closed = True
        self._lock_fd = self._lock()
        durable = self._policy != "off"
        for sub in ("wal", "snap"):
            if not (self.path / sub).is_dir():
                (self.path / sub).mkdir()
                if durable:
                    fsync_dir(self.path)
        try:
            self._hs_file = HardStateFile(self.path / "hardstate", durable)
            self._hard_state, compacted = self._hs_file.read()
            self._snapshots = SnapshotStore(self.path / "snap", durable)
            self._snapshot = self._snapshots.load()
            self._wal = Wal(self.path / "wal", self._policy, segment_bytes)
            try:
                self._reconcile(compacted)
            except BaseException:
                self._wal.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._hs_unsynced = False
        self._closed = False

    def _lock(self) -> int:
        try:
            if not self.path.is_dir():
                self.path.mkdir(parents=True)
                if self._policy != "off":
                    fsync_dir(self.path.parent)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(f"{self.path} is not a directory") from None
        fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"{self.path} is in use by another process (it holds {self.path / 'LOCK'})") from None
        return fd

    def _reconcile(self, compacted: int) -> None:
        """Make the recovered log agree with the recovered snapshot (the same rule as
        save_snapshot, replayed in case a crash interrupted it)."""
        s = self._snapshot_index()
        self._compacted = min(compacted, s)  # invariant: self._compacted <= snapshot index
        wal = self._wal
        if wal.empty():
            wal.drop_all()  # leftover empty segment files may carry a stale name
        elif wal.last() < s or (wal.first() <= s and wal.term(s) != self._snapshot.meta.term):
            wal.drop_all()  # the log is behind or diverges from the snapshot
        elif wal.first() > s + 1:
            covered = f"the snapshot covers only up to {s}" if s else "there is no snapshot"
            raise CorruptLogError(
                wal.directory / segment_name(wal.first()), 0, f"log starts at index {wal.first()} but {covered}"
            )

    def _snapshot_index(self) -> int:
        return self._snapshot.meta.index if self._snapshot else 0

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"storage at {self.path} is closed")

    # --- Storage ------------------------------------------------------------------

    def load(self) -> LoadedState:
        self._check_open()
        return LoadedState(
            self._hard_state, self._snapshot, self.entries(self._snapshot_index() + 1, self.last_index() + 1)
        )

    def append(self, entries: list[Entry]) -> None:
        self._check_open()
        entries = entries_to_store(entries, self._snapshot_index(), self.last_index())
        if not entries:
            return
        if not self._wal.empty() and entries[0].index <= self._wal.last():
            self._wal.truncate_from(entries[0].index)
        self._wal.append(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._check_open()
        self._hard_state = hs
        self._hs_unsynced = True
        if self._policy == "always":
            self._write_hard_state()

    def _write_hard_state(self) -> None:
        self._hs_file.write(self._hard_state, self._compacted)
        self._hs_unsynced = False

    def save_snapshot(self, snap: Snapshot) -> None:
        self._check_open()
        check_snapshot_order(snap, self._snapshot)
        index = snap.meta.index
        consistent = self._term_at(index) == snap.meta.term
        # The snapshot is durable before the log is cut: a crash in between leaves a
        # state that _reconcile repairs the same way.
        self._snapshots.save(snap)
        self._snapshot = snap
        if not consistent:
            self._wal.drop_all()

    def _term_at(self, index: int) -> int | None:
        if not self._wal.empty() and self._wal.first() <= index <= self._wal.last():
            return self._wal.term(index)
        if self._snapshot and index == self._snapshot.meta.index:
            return self._snapshot.meta.term
        return None

    def compact(self, index: int) -> None:
        self._check_open()
        if index < self.first_index():
            return
        check_compact(index, self._snapshot_index())
        self._compacted = index
        self._wal.drop_before(index + 1)
        self._hs_unsynced = True  # the compaction point rides in the hard state file
        if self._policy == "always":
            self._write_hard_state()

    def prepend(self, entries: list[Entry]) -> None:
        self._check_open()
        if not entries:
            return
        check_prepend(entries, self.first_index(), self._snapshot_index())
        self._wal.prepend(entries)
        if self._compacted >= entries[0].index:
            self._compacted = entries[0].index - 1
            self._hs_unsynced = True
            self._write_hard_state()

    def usage(self) -> tuple[int, int]:
        self._check_open()
        return self._wal.usage()

    def sync(self) -> None:
        self._check_open()
        # Entries first: a durable commit hint never points past durable entries.
        self._wal.sync()
        if self._hs_unsynced:
            self._write_hard_state()

    def entries(self, lo: int, hi: int) -> list[Entry]:
        self._check_open()
        lo = max(lo, self.first_index())
        hi = min(hi, self.last_index() + 1)
        return self._wal.read(lo, hi) if lo < hi else []

    def first_index(self) -> int:
        if self._wal.empty():
            return self._snapshot_index() + 1
        return max(self._wal.first(), self._compacted + 1)

    def last_index(self) -> int:
        return self._snapshot_index() if self._wal.empty() else self._wal.last()

    def close(self) -> None:
        """Sync (per policy), close files and release the directory lock. Idempotent."""
        if self._closed:
            return
        self.sync()
        self._wal.close()
        os.close(self._lock_fd)
        self._closed = True

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
