"""Random sequences of append / overwrite / snapshot / compact / reopen / crash,
checked against a plain dict model after every step."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logqueue.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from logqueue.storage import DiskStorage, MemoryStorage

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 50), st.integers(1, 12), st.integers(0, 1)),
        st.tuples(st.just("snapshot"), st.integers(0, 50), st.booleans()),
        st.tuples(st.just("compact"), st.integers(0, 50)),
        st.tuples(st.just("hard_state"), st.integers(0, 9)),
        st.tuples(st.just("sync")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("crash")),
    ),
    max_size=30,
)


class Model:
    def __init__(self) -> None:
        self.log: dict[int, Entry] = {}  # entries below `first` stay: a crash may bring them back
        self.first, self.last = 1, 0
        self.snap: Snapshot | None = None
        self.hs = self.synced_hs = HardState()
        self.term = 1

    @property
    def snap_index(self) -> int:
        return self.snap.meta.index if self.snap else 0

    def term_at(self, index: int) -> int | None:
        if self.first <= index <= self.last:
            return self.log[index].term
        return self.snap.meta.term if self.snap and index == self.snap.meta.index else None


class Disk:
    def __init__(self, root: Path) -> None:
        self.root, self.n = root, 0
        self.s = DiskStorage(self._dir(), segment_bytes=300)

    def _dir(self) -> Path:
        return self.root / str(self.n)

    def reopen(self) -> None:
        self.s.close()
        self.s = DiskStorage(self._dir(), segment_bytes=300)

    def crash(self) -> None:
        """Continue from a copy of the directory taken while the storage is open."""
        old = self._dir()
        self.n += 1
        shutil.copytree(old, self._dir())
        self.s.close()
        self.s = DiskStorage(self._dir(), segment_bytes=300)


def run(ops_list, s_holder, m: Model) -> None:
    for op in ops_list:
        s = s_holder.s
        kind = op[0]
        if kind == "append":
            _, a, n, dt = op
            m.term += dt
            start = m.first + a % (m.last - m.first + 2)
            batch = [Entry(m.term, i, b"%d/%d" % (m.term, i)) for i in range(start, start + n)]
            s.append(batch)
            stored = [e for e in batch if e.index > m.snap_index]  # the snapshot covers the rest
            if stored:
                for i in [i for i in m.log if i >= stored[0].index]:
                    del m.log[i]
                m.log.update((e.index, e) for e in stored)
                m.last = stored[-1].index
        elif kind == "snapshot":
            _, a, match = op
            index = m.snap_index + a % (m.last - m.snap_index + 3)
            term = m.term_at(index) if match and m.term_at(index) is not None else m.term + 5
            snap = Snapshot(SnapshotMeta(index, term), b"img%d" % index)
            s.save_snapshot(snap)
            if m.term_at(index) != term:
                m.log.clear()
                m.first, m.last = index + 1, index
            m.snap = snap
        elif kind == "compact":
            index = m.first - 1 + op[1] % (m.snap_index - m.first + 2)
            s.compact(index)
            m.first = max(m.first, index + 1)
        elif kind == "hard_state":
            m.hs = HardState(op[1], op[1] % 3 or None, op[1])
            s.set_hard_state(m.hs)
        elif kind == "sync":
            s.sync()
            m.synced_hs = m.hs
        elif kind == "reopen" and isinstance(s_holder, Disk):
            s_holder.reopen()
            m.synced_hs = m.hs
        elif kind == "crash" and isinstance(s_holder, Disk):
            s_holder.crash()
            m.hs = m.synced_hs
            # A lost compaction point may bring back compacted (still valid) entries.
            first = s_holder.s.first_index()
            assert first <= m.first
            assert s_holder.s.entries(first, m.first) == [m.log[i] for i in range(first, m.first)]
            m.first = first
        check(s_holder.s, m)


def check(s, m: Model) -> None:
    assert (s.first_index(), s.last_index()) == (m.first, m.last)
    assert s.entries(0, m.last + 5) == [m.log[i] for i in range(m.first, m.last + 1)]
    st_ = s.load()
    assert st_.snapshot == m.snap
    assert st_.entries == [m.log[i] for i in range(m.snap_index + 1, m.last + 1)]
    assert st_.hard_state == m.hs


class Memory:
    def __init__(self) -> None:
        self.s = MemoryStorage()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_memory_storage_matches_the_model(ops_list):
    run(ops_list, Memory(), Model())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_disk_storage_matches_the_model(ops_list):
    with tempfile.TemporaryDirectory() as tmp:
        disk = Disk(Path(tmp))
        try:
            run(ops_list, disk, Model())
        finally:
            disk.s.close()


@pytest.mark.parametrize("policy", ["always", "off"])
def test_other_policies_keep_the_same_contents(tmp_path, policy):
    """The fsync policy changes durability, never what is stored."""
    with DiskStorage(tmp_path, fsync=policy, segment_bytes=300) as s:
        s.append([Entry(1, i, b"x%d" % i) for i in range(1, 40)])
        s.append([Entry(2, i, b"y%d" % i) for i in range(20, 25)])
        s.set_hard_state(HardState(2, 1, 10))
    with DiskStorage(tmp_path, fsync=policy) as s:
        st_ = s.load()
        assert [e.term for e in st_.entries] == [1] * 19 + [2] * 5 and st_.hard_state == HardState(2, 1, 10)
