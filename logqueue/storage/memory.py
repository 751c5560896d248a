"""In-memory storage: the reference implementation of the contract, for the simulator
and tests. Nothing survives the process."""
from __future__ import annotations

from logqueue.raft.types import Entry, HardState, Snapshot
from logqueue.storage.base import LoadedState, check_compact, check_prepend, check_snapshot_order, entries_to_store


class MemoryStorage:
    """A `Storage` kept in Python lists; `sync` and `close` do nothing."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        # invariant: self._entries[k].index == self._first + k
        # invariant: self._first <= snapshot index + 1 <= last_index() + 1
        self._first = 1
        self._entries: list[Entry] = []

    def _snapshot_index(self) -> int:
        return self._snapshot.meta.index if self._snapshot else 0

    def load(self) -> LoadedState:
        return LoadedState(
            self._hard_state, self._snapshot, self.entries(self._snapshot_index() + 1, self.last_index() + 1)
        )

    def append(self, entries: list[Entry]) -> None:
        entries = entries_to_store(entries, self._snapshot_index(), self.last_index())
        if entries:
            del self._entries[entries[0].index - self._first :]
            self._entries.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def save_snapshot(self, snap: Snapshot) -> None:
        check_snapshot_order(snap, self._snapshot)
        index = snap.meta.index
        consistent = self._term_at(index) == snap.meta.term
        self._snapshot = snap
        if not consistent:
            self._entries = []
            self._first = index + 1

    def _term_at(self, index: int) -> int | None:
        if self._first <= index <= self.last_index():
            return self._entries[index - self._first].term
        if self._snapshot and index == self._snapshot.meta.index:
            return self._snapshot.meta.term
        return None

    def compact(self, index: int) -> None:
        if index < self._first:
            return
        check_compact(index, self._snapshot_index())
        del self._entries[: index + 1 - self._first]
        self._first = index + 1

    def prepend(self, entries: list[Entry]) -> None:
        if entries:
            check_prepend(entries, self._first, self._snapshot_index())
            self._entries[:0] = entries
            self._first = entries[0].index

    def usage(self) -> tuple[int, int]:
        return 0, 0

    def sync(self) -> None:
        pass

    def entries(self, lo: int, hi: int) -> list[Entry]:
        lo = max(lo, self._first)
        hi = min(hi, self.last_index() + 1)
        return self._entries[lo - self._first : hi - self._first] if lo < hi else []

    def first_index(self) -> int:
        return self._first

    def last_index(self) -> int:
        return self._first + len(self._entries) - 1

    def close(self) -> None:
        pass
