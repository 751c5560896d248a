"""The Storage contract, run against MemoryStorage and DiskStorage alike.

For DiskStorage every check is repeated after closing and reopening the directory.
"""
from __future__ import annotations

import pytest

from logqueue.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from logqueue.storage import DiskStorage, MemoryStorage, Storage


class Handle:
    """A storage under test; `reopen` closes and reopens a disk one (no-op in memory)."""

    def __init__(self, kind: str, path) -> None:
        self.kind = kind
        self.path = path
        self.s: Storage = MemoryStorage() if kind == "memory" else DiskStorage(path, segment_bytes=512)

    def reopen(self) -> None:
        if self.kind == "disk":
            self.s.close()
            self.s = DiskStorage(self.path, segment_bytes=512)


@pytest.fixture(params=["memory", "disk"])
def h(request, tmp_path):
    handle = Handle(request.param, tmp_path / "data")
    yield handle
    handle.s.close()


def ents(lo: int, hi: int, term: int = 1, tag: bytes = b"") -> list[Entry]:
    return [Entry(term, i, b"%s-%d-%d" % (tag, term, i)) for i in range(lo, hi)]


def snap(index: int, term: int, data: bytes = b"image") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(frozenset({1, 2, 3}))), data)


def both_lives(h: Handle):
    """Run the checks that follow once as is and once after a reopen."""
    yield h.s
    h.reopen()
    yield h.s


def test_empty_storage(h):
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (1, 0)
        st = s.load()
        assert st.hard_state == HardState() and st.snapshot is None and st.entries == []
        assert s.entries(1, 10) == []


def test_append_and_read_ranges(h):
    h.s.append(ents(1, 4))
    h.s.append(ents(4, 41))
    h.s.sync()
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (1, 40)
        assert s.load().entries == ents(1, 41)
        assert s.entries(10, 13) == ents(10, 13)
        assert s.entries(0, 100) == ents(1, 41)  # clamped to what is stored
        assert s.entries(41, 50) == [] and s.entries(5, 5) == []


def test_append_overwrites_the_suffix(h):
    h.s.append(ents(1, 30, term=1))
    h.s.append(ents(12, 15, term=2))  # a new leader's entries replace 12.. and drop the rest
    for s in both_lives(h):
        assert s.last_index() == 14
        assert s.load().entries == ents(1, 12, term=1) + ents(12, 15, term=2)
    h.s.append(ents(15, 17, term=2))
    h.s.append(ents(1, 3, term=3))  # overwrite from the very first entry
    for s in both_lives(h):
        assert s.load().entries == ents(1, 3, term=3)


def test_append_rejects_gaps_and_non_contiguous_batches(h):
    h.s.append(ents(1, 4))
    with pytest.raises(ValueError, match="gap after the last index 3"):
        h.s.append(ents(5, 6))
    with pytest.raises(ValueError, match="contiguous"):
        h.s.append([Entry(1, 4), Entry(1, 6)])
    h.s.append([])
    assert h.s.load().entries == ents(1, 4)


def test_entry_kinds_and_payloads_round_trip(h):
    conf = ConfState(frozenset({1, 2, 3}), frozenset({1, 2}))
    batch = [
        Entry(1, 1, b"", EntryKind.NOOP),
        Entry(1, 2, conf.encode(), EntryKind.CONFIG),
        Entry(2, 3, bytes(range(256)) * 8),  # larger than a segment
        Entry(2, 4, b"\x00"),
    ]
    h.s.append(batch)
    for s in both_lives(h):
        got = s.load().entries
        assert got == batch
        assert got[0].kind is EntryKind.NOOP and ConfState.decode(got[1].data) == conf


def test_hard_state(h):
    h.s.set_hard_state(HardState(term=3, vote=2, commit=0))
    h.s.set_hard_state(HardState(term=4, vote=None, commit=7))
    h.s.sync()
    for s in both_lives(h):
        assert s.load().hard_state == HardState(term=4, vote=None, commit=7)


def test_snapshot_matching_the_log_keeps_entries_until_compacted(h):
    h.s.append(ents(1, 51, term=1))
    h.s.save_snapshot(snap(30, 1))
    for s in both_lives(h):
        st = s.load()
        assert st.snapshot == snap(30, 1)
        assert st.entries == ents(31, 51)  # load gives what follows the snapshot
        assert (s.first_index(), s.last_index()) == (1, 50)  # older entries kept for `log read`
    h.s.compact(20)
    h.s.sync()
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (21, 50)
        assert s.entries(1, 100) == ents(21, 51)
    h.s.compact(30)
    h.s.compact(10)  # already dropped: no-op
    h.s.sync()
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (31, 50)
        assert s.load().entries == ents(31, 51)


def test_snapshot_that_diverges_from_the_log_drops_it(h):
    h.s.append(ents(1, 21, term=1))
    h.s.save_snapshot(snap(15, 2))  # our entry 15 has term 1: the rest is not the leader's
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (16, 15)
        assert s.load().entries == [] and s.load().snapshot == snap(15, 2)
    with pytest.raises(ValueError, match="gap"):
        h.s.append(ents(17, 18, term=2))
    h.s.append(ents(16, 18, term=2))
    for s in both_lives(h):
        assert s.load().entries == ents(16, 18, term=2)


def test_snapshot_beyond_the_log(h):
    h.s.append(ents(1, 6))
    h.s.save_snapshot(snap(100, 3))
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (101, 100)
    h.s.append(ents(101, 103, term=3))
    for s in both_lives(h):
        assert s.load().entries == ents(101, 103, term=3)


def test_a_snapshot_keeps_its_configuration_with_learners(h):
    conf = ConfState(frozenset({1, 2}), frozenset({1, 2, 3}), frozenset({4}))
    image = Snapshot(SnapshotMeta(7, 2, conf), b"image")
    h.s.save_snapshot(image)
    for s in both_lives(h):
        assert s.load().snapshot == image


def test_entries_a_snapshot_covers_are_skipped_on_append(h):
    h.s.append(ents(1, 11))
    h.s.save_snapshot(snap(8, 1))
    h.s.compact(8)
    h.s.append(ents(5, 13))  # a resent batch overlapping the snapshot
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (9, 12)
        assert s.entries(0, 100) == ents(9, 13)


def test_snapshot_and_compaction_misuse(h):
    h.s.append(ents(1, 11))
    with pytest.raises(ValueError, match="snapshot only covers up to 0"):
        h.s.compact(3)
    h.s.save_snapshot(snap(6, 1))
    with pytest.raises(ValueError, match="only covers up to 6"):
        h.s.compact(7)
    with pytest.raises(ValueError, match="older than the stored one at 6"):
        h.s.save_snapshot(snap(5, 1))
    h.s.save_snapshot(snap(6, 1, data=b"again"))  # same index: replaced
    for s in both_lives(h):
        assert s.load().snapshot.data == b"again"
        assert s.load().entries == ents(7, 11)


def test_prepend_fills_in_history_behind_an_installed_snapshot(h):
    s = h.s
    s.save_snapshot(snap(20, 2))  # a snapshot from a leader: this storage holds none of 1..20
    s.append(ents(21, 24, term=2))
    for bad in (ents(10, 20, term=2), ents(15, 22, term=2)):  # a gap before 21, or past the snapshot
        with pytest.raises(ValueError, match="prepend must end at index 20"):
            s.prepend(bad)
    s.prepend(ents(12, 21, term=2))
    s.prepend(ents(5, 12, term=2))
    s.sync()
    for s in both_lives(h):
        assert (s.first_index(), s.last_index()) == (5, 23)
        assert s.entries(1, 30) == ents(5, 24, term=2)
        assert s.load().entries == ents(21, 24, term=2)  # load still starts after the snapshot
    h.s.compact(9)
    assert h.s.first_index() == 10


def test_prepend_into_an_empty_log_then_append_after_it(h):
    s = h.s
    s.save_snapshot(snap(30, 3))
    s.prepend(ents(25, 31, term=3))
    s.append(ents(31, 33, term=3))
    s.sync()
    for s in both_lives(h):
        assert s.entries(1, 40) == ents(25, 33, term=3)
