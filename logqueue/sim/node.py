"""One simulated node: the real Raft core over a simulated disk, with a tiny state
machine (a hash chain of applied entries) that can be snapshotted.

A crash loses everything the core held in memory and everything not yet persisted; the
crash can also fall between "persist" and "send" of a Ready (`CrashPoint`).
"""
from __future__ import annotations

import enum
import hashlib
import random

from logqueue.raft import Config, ConfState, Entry, Raft, Ready, RequestVoteResponse, Snapshot
from logqueue.storage.memory import MemoryStorage


class CrashPoint(enum.Enum):
    BEFORE_PERSIST = "before-persist"  # the Ready is lost entirely
    AFTER_PERSIST = "after-persist"  # persisted, but no message was sent, nothing applied
    AFTER_SEND = "after-send"  # persisted and sent, nothing applied


class Disk(MemoryStorage):
    """What survives a crash: the storage contract's reference implementation, holding the
    hard state, the snapshot and the entries after it (a snapshot drops the entries it covers,
    as a node's compaction does)."""

    def save_snapshot(self, snap: Snapshot) -> None:
        super().save_snapshot(snap)
        self.compact(snap.meta.index)

    def persist(self, rd: Ready) -> None:
        """Persist what ``rd`` says must be durable before its messages are sent."""
        if rd.snapshot is not None:
            self.save_snapshot(rd.snapshot)
        self.append(rd.entries)
        if rd.hard_state is not None:
            self.set_hard_state(rd.hard_state)

    def boot(self, raft_cls, node_id: int, cfg: Config, rng: random.Random, bootstrap: ConfState | None) -> Raft:
        """A core restarted from what is on this disk."""
        state = self.load()
        return raft_cls(node_id, cfg, rng, hard_state=state.hard_state, entries=state.entries,
                        snapshot=state.snapshot, bootstrap=bootstrap)

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot


def chain(prev: bytes, entry: Entry) -> bytes:
    return hashlib.blake2b(prev + entry.data, digest_size=16).digest()


class SimNode:
    def __init__(self, node_id: int, cfg: Config, rng: random.Random, bootstrap: ConfState | None, raft_cls=Raft):
        self.id = node_id
        self.cfg = cfg
        self.rng = rng
        self.bootstrap = bootstrap
        self.raft_cls = raft_cls
        self.disk = Disk()
        self.alive = True
        self.crash_point: CrashPoint | None = None  # armed: crash during the next Ready
        self.crash_after_vote = False  # armed: crash right after sending the next granted vote
        self._boot()

    def _boot(self) -> None:
        self.raft = self.disk.boot(self.raft_cls, self.id, self.cfg, random.Random(self.rng.random()), self.bootstrap)
        # The state machine restarts from the snapshot (or empty) and re-applies from there.
        snap = self.disk.snapshot
        self.applied_index = snap.meta.index if snap else 0
        self.state = snap.data if snap else b""

    def crash(self) -> None:
        self.alive = False
        self.crash_point = None
        self.crash_after_vote = False

    def restart(self) -> None:
        self.alive = True
        self._boot()

    def process_ready(self) -> tuple[Ready | None, bool]:
        """Carry out one Ready. Returns (ready, messages_sent); ready is None if none."""
        raft = self.raft
        if not raft.has_ready():
            return None, False
        rd = raft.ready()
        point = self.crash_point
        if self.crash_after_vote and any(
            isinstance(m, RequestVoteResponse) and m.granted and not m.pre_vote for m in rd.messages
        ):
            point = CrashPoint.AFTER_SEND
        if point is CrashPoint.BEFORE_PERSIST:
            self.crash()
            return rd, False
        self.disk.persist(rd)
        if point is CrashPoint.AFTER_PERSIST:
            self.crash()
            return rd, False
        if point is CrashPoint.AFTER_SEND:
            self.crash()
            return rd, True
        if rd.snapshot is not None:
            self.state = rd.snapshot.data
            self.applied_index = rd.snapshot.meta.index
        for e in rd.committed:
            self.state = chain(self.state, e)
            self.applied_index = e.index
        raft.advance(rd)
        return rd, True

    def maybe_compact(self, every: int, retain: int) -> Snapshot | None:
        """Snapshot the state machine every `every` applied entries and compact the log,
        keeping `retain` entries behind the snapshot in memory."""
        raft = self.raft
        last = raft.log.snapshot.meta.index if raft.log.snapshot else 0
        if self.applied_index - last < every:
            return None
        snap = raft.compact(self.applied_index, self.state, retain)
        self.disk.save_snapshot(snap)
        return snap
