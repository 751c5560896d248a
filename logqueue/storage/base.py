"""The storage contract: the `Storage` protocol, its errors, and the rules both
implementations share.

Logical model (MemoryStorage and DiskStorage behave identically):

- an optional snapshot covering indexes ``1..S`` (``S = 0`` without one);
- stored entries ``first_index()..last_index()``, contiguous, where
  ``first_index() <= S + 1 <= last_index() + 1``: entries at or below ``S`` may be kept
  (for slow followers and ``log read``) until ``compact`` drops them;
- a hard state (term, vote, commit).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from logqueue.raft.types import Entry, HardState, Snapshot

FsyncPolicy = Literal["always", "batch", "off"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "batch", "off")


class StorageError(Exception):
    """A storage failure the node cannot work around (bad data dir, misuse)."""


class CorruptLogError(StorageError):
    """Damaged data found before the tail of the log: the node must not start on it.

    The message names the file and the byte offset of the damage.
    """

    def __init__(self, path: object, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at byte offset {offset}")
        self.path = str(path)
        self.offset = offset
        self.reason = reason


class CorruptSnapshotError(CorruptLogError):
    """A snapshot file whose checksum or layout does not match."""


@dataclass(frozen=True, slots=True)
class LoadedState:
    """What a node restarts from."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)  # the entries after the snapshot


class Storage(Protocol):
    """Durable state of one Raft node (hashicorp-style: a handful of methods).

    Not thread-safe: one owner (the runtime's event loop) calls it.
    """

    def load(self) -> LoadedState:
        """Return the hard state, the snapshot and the stored entries after it."""

    def append(self, entries: list[Entry]) -> None:
        """Store contiguous ``entries``, first dropping stored entries with index >=
        ``entries[0].index``. Entries a snapshot already covers are skipped.

        Raises ValueError if the indexes are not contiguous or would leave a gap.
        """

    def set_hard_state(self, hs: HardState) -> None:
        """Replace the hard state (durable per the fsync policy)."""

    def save_snapshot(self, snap: Snapshot) -> None:
        """Store ``snap`` durably. Entries after it are kept only if the stored entry at
        ``snap.meta.index`` has ``snap.meta.term`` (Raft §7); otherwise the whole log
        is dropped. Entries <= ``snap.meta.index`` may then be dropped with `compact`.

        Raises ValueError for a snapshot older than the stored one.
        """

    def compact(self, index: int) -> None:
        """Drop entries <= ``index`` (no-op if already dropped).

        Raises ValueError if ``index`` is beyond the snapshot: those entries would be lost.
        """

    def prepend(self, entries: list[Entry]) -> None:
        """Store contiguous committed ``entries`` that end at ``first_index() - 1`` and at
        or below the snapshot (filling in history the state machine still reads, fetched
        from another node); durable on return unless the fsync policy is ``off``.

        Raises ValueError if they do not end just before the first stored entry.
        """

    def usage(self) -> tuple[int, int]:
        """(bytes of stored log records, number of log segment files)."""

    def sync(self) -> None:
        """Make every write so far durable (per policy). Call before sending messages
        or replies that depend on them."""

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Stored entries with ``lo <= index < hi``, clamped to what is stored."""

    def first_index(self) -> int:
        """Index of the first stored entry (``S + 1`` when none is stored)."""

    def last_index(self) -> int:
        """Index of the last stored entry (``S`` when none is stored)."""

    def close(self) -> None:
        """Sync (per policy) and release files."""


def entries_to_store(entries: list[Entry], snapshot_index: int, last_index: int) -> list[Entry]:
    """Validate an append and return the part a snapshot does not already cover."""
    if not entries:
        return entries
    first = entries[0].index
    for expected, e in enumerate(entries, first):
        if e.index != expected:
            raise ValueError(f"append: entry index {e.index} follows {expected - 1}; indexes must be contiguous")
    if first > last_index + 1:
        raise ValueError(f"append at index {first} would leave a gap after the last index {last_index}")
    if first <= snapshot_index:
        # Committed entries the snapshot covers cannot change (State Machine Safety),
        # so a resent prefix is dropped rather than rewritten.
        return entries[snapshot_index + 1 - first :]
    return entries


def check_snapshot_order(snap: Snapshot, current: Snapshot | None) -> None:
    if current is not None and snap.meta.index < current.meta.index:
        raise ValueError(
            f"snapshot at index {snap.meta.index} is older than the stored one at {current.meta.index}"
        )


def check_compact(index: int, snapshot_index: int) -> None:
    if index > snapshot_index:
        raise ValueError(f"cannot compact through index {index}: the snapshot only covers up to {snapshot_index}")


def check_prepend(entries: list[Entry], first_index: int, snapshot_index: int) -> None:
    for expected, e in enumerate(entries, entries[0].index):
        if e.index != expected:
            raise ValueError(f"prepend: entry index {e.index} follows {expected - 1}; indexes must be contiguous")
    if entries[-1].index != first_index - 1 or entries[-1].index > snapshot_index:
        raise ValueError(
            f"prepend must end at index {first_index - 1} (just before the first stored entry), within the "
            f"snapshot ({snapshot_index}); got {entries[0].index}..{entries[-1].index}"
        )


def check_fsync_policy(policy: str) -> FsyncPolicy:
    if policy not in FSYNC_POLICIES:
        raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}, not {policy!r}")
    return policy  # type: ignore[return-value]
