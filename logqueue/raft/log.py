"""The core's in-memory view of the Raft log: a snapshot point plus the entries after it.

invariant: entries[i].index == snap_index + 1 + i (no gaps).
invariant: applied <= committed <= last_index.
invariant: entries below `unstable` have been handed to the runtime to persist.
"""
from __future__ import annotations

from .types import ConfState, Entry, EntryKind, Snapshot


class SafetyError(AssertionError):
    """The core was asked to do something Raft forbids (e.g. truncate committed entries)."""


class RaftLog:
    def __init__(self, snapshot: Snapshot | None, entries: list[Entry], bootstrap: ConfState | None) -> None:
        meta = snapshot.meta if snapshot else None
        self.snap_index = meta.index if meta else 0
        self.snap_term = meta.term if meta else 0
        self.snapshot = snapshot  # latest snapshot (sent to followers that fell behind it)
        self.entries: list[Entry] = [e for e in entries if e.index > self.snap_index]
        self.committed = self.snap_index
        self.applied = self.snap_index
        self.unstable = self.last_index + 1  # first index not yet handed out for persistence
        self.pending_snapshot: Snapshot | None = None  # received by InstallSnapshot, not yet handed out
        self._base_conf = meta.conf if meta and (meta.conf.voters or meta.conf.outgoing) else (bootstrap or ConfState())
        # Configuration entries in the log, in order: the latest one is in effect (Raft §6).
        self.conf_entries: list[tuple[int, ConfState]] = [
            (e.index, ConfState.decode(e.data)) for e in self.entries if e.kind is EntryKind.CONFIG
        ]

    # --- reading -------------------------------------------------------------------
    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    @property
    def first_index(self) -> int:
        return self.snap_index + 1

    def term_at(self, index: int) -> int | None:
        """Term of the entry at `index`; None when it is compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        offset = index - self.snap_index - 1
        if 0 <= offset < len(self.entries):
            return self.entries[offset].term
        return None

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi (lo > snap_index)."""
        base = self.snap_index + 1
        return self.entries[lo - base : hi - base]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    @property
    def conf(self) -> ConfState:
        return self.conf_entries[-1][1] if self.conf_entries else self._base_conf

    def conf_at(self, index: int) -> ConfState:
        conf = self._base_conf
        for at, c in self.conf_entries:
            if at > index:
                break
            conf = c
        return conf

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose entry's term is <= `term`, and that term (etcd's
        findConflictByTerm). Below it the log may match a log whose entry at `index` has
        `term`; above it, it cannot. (index, 0) when that entry is compacted away."""
        index = min(index, self.last_index)
        while index >= self.snap_index:
            at = self.term_at(index)
            if at is not None and at <= term:
                return index, at
            index -= 1
        return index, 0

    # --- writing -------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        """Append entries that directly follow the last one."""
        self.entries.extend(entries)
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                self.conf_entries.append((e.index, ConfState.decode(e.data)))

    def truncate_and_append(self, entries: list[Entry]) -> None:
        """Replace everything from entries[0].index on (a follower repairing its log)."""
        first = entries[0].index
        if first <= self.committed:
            raise SafetyError(f"truncating committed entry {first} (committed {self.committed})")
        del self.entries[first - self.snap_index - 1 :]
        self.conf_entries = [(i, c) for i, c in self.conf_entries if i < first]
        self.unstable = min(self.unstable, first)
        self.append(entries)

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index)
        if index > self.committed:
            self.committed = index
            return True
        return False

    def compact(self, snapshot: Snapshot, retain: int = 0) -> None:
        """Take an application snapshot (at an applied index) and drop the entries it covers,
        but for the last `retain` of them: a follower just behind then catches up from the
        log instead of by InstallSnapshot."""
        index = snapshot.meta.index
        if self.snapshot is not None and index <= self.snapshot.meta.index:
            return
        if index > self.applied:
            raise SafetyError(f"compacting to {index} beyond applied {self.applied}")
        self.snapshot = snapshot  # invariant: snap_index <= snapshot index <= applied
        start = index - retain
        if start <= self.snap_index:
            return
        self.snap_term = self.term_at(start)
        self._base_conf = self.conf_at(start)
        del self.entries[: start - self.snap_index]
        self.snap_index = start
        self.conf_entries = [(i, c) for i, c in self.conf_entries if i > start]

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot from the leader (InstallSnapshot)."""
        meta = snapshot.meta
        self.entries = []
        self.snap_index, self.snap_term = meta.index, meta.term
        self.snapshot = self.pending_snapshot = snapshot
        self.committed = self.applied = meta.index
        self.unstable = meta.index + 1
        self._base_conf = meta.conf
        self.conf_entries = []

    # --- handing out work (read in `Raft.ready()`, accepted in `Raft.advance()`) ---------
    def unstable_entries(self) -> list[Entry]:
        return self.slice(self.unstable, self.last_index + 1) if self.unstable <= self.last_index else []

    def entries_to_apply(self) -> list[Entry]:
        return self.slice(self.applied + 1, self.committed + 1) if self.applied < self.committed else []

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) are on disk -- unless the log was rewritten there since."""
        if index >= self.unstable and self.term_at(index) == term:
            self.unstable = index + 1

    def applied_to(self, index: int) -> None:
        self.applied = max(self.applied, min(index, self.committed))
