"""The persist step of a Ready, carried out in a thread of its own.

Writing and fsyncing a Ready's entries (20 MB of them, say) takes the disk a while; done
on the event loop, it would hold the ticker, the decoding of peer frames and client
requests, and every heartbeat. ``Persister.run`` hands it to one disk thread (file
writes, fsyncs and CRCs release the GIL) while the loop goes on. The node still sends
nothing that depends on the Ready before ``run`` returns: the persist-before-send order
is the loop's, only the waiting is no longer a stall.

The same thread writes the snapshots the node takes (``save_snapshot``): the file and
its fsync, then the WAL compaction behind it, in that order and after every Ready
handed over before. The loop only builds the snapshot's bytes.

``LockedStorage`` is the node's storage shared by the loop and that thread: every call
holds one lock, except the few in-memory reads a status or a check makes
(``first_index``, ``last_index``, ``usage``: attribute reads, atomic under the GIL).
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from logqueue.raft import types as t


class LockedStorage:
    """A storage whose calls (but the lock-free reads above) are serialized by one lock.

    ``longest_wait`` is the longest the event loop's thread waited for the lock (seconds):
    a stall of the loop behind the disk thread."""

    _LOCK_FREE = frozenset({"first_index", "last_index", "usage"})

    def __init__(self, inner) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._loop_thread = threading.get_ident()
        self.longest_wait = 0.0

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if name in self._LOCK_FREE or not callable(attr):
            return attr
        lock = self._lock

        def locked(*args, **kwargs):
            if not lock.acquire(blocking=False):
                started = time.perf_counter()
                lock.acquire()
                if threading.get_ident() == self._loop_thread:
                    self.longest_wait = max(self.longest_wait, time.perf_counter() - started)
            try:
                return attr(*args, **kwargs)
            finally:
                lock.release()

        return locked


class Persister:
    """Persists Readies, one at a time, in a thread; see the module docstring."""

    def __init__(self, storage: LockedStorage) -> None:
        self.storage = storage
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="persist")

    @staticmethod
    def needed(rd: t.Ready) -> bool:
        return rd.snapshot is not None or bool(rd.entries) or rd.hard_state is not None

    async def run(self, rd: t.Ready) -> None:
        """Make ``rd``'s snapshot, entries and hard state durable (one sync: group commit)."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._persist, rd)

    def _persist(self, rd: t.Ready) -> None:
        storage = self.storage
        if rd.snapshot is not None:
            storage.save_snapshot(rd.snapshot)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        storage.sync()

    def save_snapshot(self, snap: t.Snapshot, compact_to: int) -> Future:
        """Write ``snap`` durably, then drop the WAL up to ``compact_to`` (if > 0), in the
        disk thread; the future is done once both are."""
        return self._thread.submit(self._save_snapshot, snap, compact_to)

    def _save_snapshot(self, snap: t.Snapshot, compact_to: int) -> None:
        self.storage.save_snapshot(snap)
        if compact_to > 0:
            self.storage.compact(compact_to)

    def close(self) -> None:
        """Wait for a persist under way (the loop may have been cancelled during one)."""
        self._thread.shutdown(wait=True)
