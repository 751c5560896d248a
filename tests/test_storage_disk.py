"""DiskStorage only: recovery from torn and corrupt files, segments, durability order."""
from __future__ import annotations

import logging
import os
import shutil

import pytest

from logqueue.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from logqueue.storage import CorruptLogError, CorruptSnapshotError, DiskStorage, StorageError
from logqueue.storage.records import HEADER
from logqueue.storage.snapshots import encode_snapshot
from logqueue.storage.wal import segment_name


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, b"payload-%d-%d" % (term, i) + b"." * 40) for i in range(lo, hi)]


def segments(path) -> list[str]:
    return sorted(n for n in os.listdir(path / "wal") if n.endswith(".wal"))


@pytest.fixture
def data(tmp_path):
    return tmp_path / "data"


def test_reopen_after_close_across_many_segments(data):
    with DiskStorage(data, segment_bytes=1000) as s:
        for lo in range(1, 301, 30):
            s.append(ents(lo, lo + 30))
        s.set_hard_state(HardState(2, 1, 300))
    assert len(segments(data)) > 10
    with DiskStorage(data) as s:
        st = s.load()
        assert st.entries == ents(1, 301) and st.hard_state == HardState(2, 1, 300)
        assert s.entries(95, 205) == ents(95, 205)  # a read spanning several segments


def test_process_crash_loses_no_written_entry(data, tmp_path):
    s = DiskStorage(data, fsync="batch")
    s.append(ents(1, 11))
    s.set_hard_state(HardState(1, 1, 10))
    s.sync()
    s.append(ents(11, 21))  # written, not yet synced
    crashed = tmp_path / "crashed"
    shutil.copytree(data, crashed)  # what the disk holds if the process dies now
    s.close()
    with DiskStorage(crashed) as r:
        assert r.load().entries == ents(1, 21) and r.load().hard_state == HardState(1, 1, 10)


def write_with_last_record_span(data, n: int = 5) -> tuple[str, int, int]:
    """Store entries 1..n in one segment; return (segment path, start, end) of entry n."""
    with DiskStorage(data) as s:
        s.append(ents(1, n))
        path = data / "wal" / segment_name(1)
        start = path.stat().st_size
        s.append(ents(n, n + 1))
    return path, start, path.stat().st_size


def test_torn_last_record_is_truncated_at_every_byte_offset(data, tmp_path, caplog):
    path, start, end = write_with_last_record_span(data)
    image = path.read_bytes()
    assert end - start > HEADER.size
    for cut in range(start, end):
        trial = tmp_path / f"cut-{cut}"
        shutil.copytree(data, trial)
        seg = trial / "wal" / segment_name(1)
        seg.write_bytes(image[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="logqueue.storage"):
            with DiskStorage(trial) as s:
                assert s.load().entries == ents(1, 5)
                s.append(ents(5, 6))  # the truncated file takes new records cleanly
        if cut > start:
            assert f"{seg}: truncating torn tail record at byte offset {start}" in caplog.text
        else:
            assert caplog.text == ""
        assert seg.stat().st_size == end
        with DiskStorage(trial) as s:
            assert s.load().entries == ents(1, 6)
        shutil.rmtree(trial)


def test_checksum_mismatch_in_the_last_record_is_truncated(data, caplog):
    path, start, end = write_with_last_record_span(data)
    image = bytearray(path.read_bytes())
    image[end - 3] ^= 0x40  # inside the last record's body
    path.write_bytes(image)
    with caplog.at_level(logging.WARNING, logger="logqueue.storage"):
        with DiskStorage(data) as s:
            assert s.load().entries == ents(1, 5)
    assert f"byte offset {start} (record body checksum mismatch" in caplog.text


def test_zero_filled_tail_is_truncated(data, caplog):
    path, _, end = write_with_last_record_span(data)
    with open(path, "ab") as f:
        f.write(b"\x00" * 4096)  # file size grew, data blocks never written
    with caplog.at_level(logging.WARNING, logger="logqueue.storage"):
        with DiskStorage(data) as s:
            assert s.load().entries == ents(1, 6)
    assert f"byte offset {end} (record header checksum mismatch; 4096 bytes dropped)" in caplog.text


@pytest.mark.parametrize("where", ["body", "length"])
def test_damage_before_the_tail_is_an_error_naming_file_and_offset(data, where):
    with DiskStorage(data) as s:
        s.append(ents(1, 3))
        path = data / "wal" / segment_name(1)
        start = path.stat().st_size  # record 3 starts here
        s.append(ents(3, 11))
    size = path.stat().st_size
    image = bytearray(path.read_bytes())
    image[start + (HEADER.size + 10 if where == "body" else 0)] ^= 0x01
    path.write_bytes(image)
    with pytest.raises(CorruptLogError) as err:
        DiskStorage(data)
    assert str(path) in str(err.value) and f"byte offset {start}" in str(err.value)
    assert err.value.offset == start
    assert path.stat().st_size == size  # nothing was truncated


def test_damage_at_the_end_of_an_older_segment_is_an_error(data):
    with DiskStorage(data, segment_bytes=300) as s:
        s.append(ents(1, 20))
    first = data / "wal" / segments(data)[0]
    image = bytearray(first.read_bytes())
    image[-2] ^= 0x01  # last record of a segment that is not the last
    first.write_bytes(image)
    # A sealed segment is recovered from its index, without reading it: the damage is
    # found when the record is read ...
    with DiskStorage(data) as s:
        with pytest.raises(CorruptLogError, match=str(first)):
            s.entries(1, 21)
    # ... and, without the index, when the segment is scanned at recovery.
    first.with_suffix(".idx").unlink()
    with pytest.raises(CorruptLogError, match=str(first)):
        DiskStorage(data)


def test_recovery_takes_sealed_segments_from_their_index_and_scans_a_stale_one(data):
    with DiskStorage(data, segment_bytes=300) as s:
        s.append(ents(1, 20))
    names = segments(data)
    assert len(names) > 2 and {n[:-4] + ".idx" for n in names[:-1]} <= set(os.listdir(data / "wal"))
    with DiskStorage(data) as s:
        assert s.entries(1, 21) == ents(1, 20)
    # an index that no longer matches its segment's size is not used: the scan finds the damage
    first = data / "wal" / names[0]
    first.write_bytes(first.read_bytes() + b"garbage")
    with pytest.raises(CorruptLogError, match=str(first)):
        DiskStorage(data)


def test_missing_middle_segment_is_an_error(data):
    with DiskStorage(data, segment_bytes=300) as s:
        s.append(ents(1, 20))
    names = segments(data)
    (data / "wal" / names[1]).unlink()
    with pytest.raises(CorruptLogError, match=f"{names[2]}: segment starts at index"):
        DiskStorage(data)


def test_log_that_starts_late_without_a_snapshot_is_an_error(data):
    with DiskStorage(data, segment_bytes=300) as s:
        s.append(ents(1, 20))
    (data / "wal" / segments(data)[0]).unlink()
    with pytest.raises(CorruptLogError, match="but there is no snapshot"):
        DiskStorage(data)


def test_corrupt_snapshot_is_detected(data):
    with DiskStorage(data) as s:
        s.append(ents(1, 11))
        s.save_snapshot(Snapshot(SnapshotMeta(8, 1), b"state machine image"))
    path = data / "snap" / f"{8:020d}.snap"
    image = bytearray(path.read_bytes())
    image[-5] ^= 0x10
    path.write_bytes(image)
    with pytest.raises(CorruptSnapshotError, match=f"{path}: snapshot checksum mismatch"):
        DiskStorage(data)


def test_only_the_newest_snapshot_is_kept_and_leftovers_are_ignored(data):
    with DiskStorage(data) as s:
        s.append(ents(1, 11))
        s.save_snapshot(Snapshot(SnapshotMeta(4, 1), b"a"))
        s.save_snapshot(Snapshot(SnapshotMeta(8, 1), b"b"))
        assert os.listdir(data / "snap") == [f"{8:020d}.snap"]
    (data / "snap" / f"{9:020d}.snap.tmp").write_bytes(b"half a snapshot")  # interrupted save
    with DiskStorage(data) as s:
        assert s.load().snapshot == Snapshot(SnapshotMeta(8, 1), b"b")
    assert os.listdir(data / "snap") == [f"{8:020d}.snap"]


def test_crash_between_snapshot_and_log_cut_is_repaired(data):
    """save_snapshot writes the snapshot, then drops a diverging log; a crash between
    the two leaves both on disk, and reopening applies the same rule."""
    with DiskStorage(data) as s:
        s.append(ents(1, 21, term=1))
    (data / "snap" / f"{15:020d}.snap").write_bytes(encode_snapshot(Snapshot(SnapshotMeta(15, 2), b"x")))
    with DiskStorage(data) as s:
        assert (s.first_index(), s.last_index()) == (16, 15) and s.load().entries == []
    assert segments(data) == []


def test_rollover_and_compaction_delete_whole_old_segments(data):
    with DiskStorage(data, segment_bytes=600) as s:
        s.append(ents(1, 101))
        before = segments(data)
        assert len(before) >= 10
        assert all(os.path.getsize(data / "wal" / n) <= 600 for n in before)
        s.save_snapshot(Snapshot(SnapshotMeta(60, 1), b"img"))
        s.compact(60)
        after = segments(data)
        firsts = [int(n[:20]) for n in after]
        # every segment whose entries are all <= 60 is gone; the one holding 61 stays
        assert firsts[0] <= 61 < (firsts[1] if len(firsts) > 1 else 10**9)
        assert after == [n for n in before if int(n[:20]) >= firsts[0]]
        assert s.first_index() == 61
    with DiskStorage(data) as s:
        assert s.first_index() == 61 and s.entries(1, 200) == ents(61, 101)


def test_hard_state_is_replaced_atomically(data):
    with DiskStorage(data) as s:
        s.set_hard_state(HardState(5, 3, 9))
    (data / "hardstate.tmp").write_bytes(b"interrupted write of a newer hard state")
    with DiskStorage(data) as s:
        assert s.load().hard_state == HardState(5, 3, 9)
    assert not (data / "hardstate.tmp").exists()


def test_damaged_hard_state_is_an_error(data):
    with DiskStorage(data) as s:
        s.set_hard_state(HardState(5, 3, 9))
    raw = bytearray((data / "hardstate").read_bytes())
    raw[-1] ^= 0xFF
    (data / "hardstate").write_bytes(raw)
    with pytest.raises(CorruptLogError, match="hardstate: hard state checksum mismatch"):
        DiskStorage(data)


def test_one_process_per_data_dir(data):
    with DiskStorage(data):
        with pytest.raises(StorageError, match="in use by another process"):
            DiskStorage(data)
    DiskStorage(data).close()  # released on close


def test_bad_arguments_get_one_line_errors(data, tmp_path):
    with pytest.raises(ValueError, match="fsync policy must be one of always, batch, off, not 'sometimes'"):
        DiskStorage(data, fsync="sometimes")
    with pytest.raises(ValueError, match="segment_bytes must be a positive integer"):
        DiskStorage(data, segment_bytes=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is not a directory"):
        DiskStorage(tmp_path / "file")
    s = DiskStorage(data)
    s.close()
    with pytest.raises(StorageError, match="is closed"):
        s.append(ents(1, 2))


class SyscallLog:
    """Records the durability-relevant syscalls DiskStorage makes."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for name in ("fsync", "fdatasync", "write", "writev", "ftruncate", "unlink"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name, real):
        def call(*args, **kwargs):
            # a segment's index is a hint, not part of the durability protocol
            if not (name == "unlink" and str(args[0]).endswith(".idx")):
                self.calls.append(name)
            return real(*args, **kwargs)

        return call

    def count(self, name: str) -> int:
        return self.calls.count(name)


@pytest.mark.parametrize(
    ("policy", "syncs_per_append", "syncs_per_sync"), [("always", 1, 0), ("batch", 0, 1), ("off", 0, 0)]
)
def test_fsync_policies(data, monkeypatch, policy, syncs_per_append, syncs_per_sync):
    s = DiskStorage(data, fsync=policy)
    s.append(ents(1, 2))
    s.sync()  # settles the first segment's creation
    log = SyscallLog(monkeypatch)
    for lo in range(2, 102, 10):
        s.append(ents(lo, lo + 10))
    assert log.count("fdatasync") == 10 * syncs_per_append
    assert log.count("writev") == 10  # one write per append call
    s.sync()
    s.sync()  # nothing new: no second fsync
    assert log.count("fdatasync") == 10 * syncs_per_append + syncs_per_sync
    s.close()


def test_batch_hard_state_waits_for_sync(data, tmp_path):
    s = DiskStorage(data, fsync="batch")
    s.set_hard_state(HardState(7, 1, 0))
    crashed = tmp_path / "crashed"
    shutil.copytree(data, crashed)
    s.sync()
    assert DiskStorage(crashed).load().hard_state == HardState()  # not acknowledged yet
    s.close()
    with DiskStorage(data) as r:
        assert r.load().hard_state == HardState(7, 1, 0)


def test_suffix_rewrite_makes_the_truncation_durable_before_writing(data, monkeypatch):
    s = DiskStorage(data, fsync="batch", segment_bytes=400)
    s.append(ents(1, 20, term=1))
    s.sync()
    assert len(segments(data)) >= 3
    log = SyscallLog(monkeypatch)
    s.append(ents(3, 5, term=2))  # segment 1 holds index 3; later segments must go
    calls = log.calls
    # later segments unlinked (each followed by a directory fsync), then truncate + fsync,
    # and only then the new records are written
    assert calls[-3:] == ["ftruncate", "fsync", "writev"]
    assert calls[:-3] == ["unlink", "fsync"] * (len(calls[:-3]) // 2) and calls[:-3]
    s.close()
    with DiskStorage(data) as r:
        assert r.load().entries == ents(1, 3, term=1) + ents(3, 5, term=2)
