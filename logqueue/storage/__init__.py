"""Durable state of a Raft node: log entries, hard state, snapshots.

`Storage` is the protocol the runtime codes against; `MemoryStorage` and
`DiskStorage` implement it and pass the same contract tests
(tests/test_storage_contract.py).
"""
from logqueue.storage.base import (
    FSYNC_POLICIES,
    CorruptLogError,
    CorruptSnapshotError,
    FsyncPolicy,
    LoadedState,
    Storage,
    StorageError,
)
from logqueue.storage.disk import DEFAULT_SEGMENT_BYTES, DiskStorage
from logqueue.storage.memory import MemoryStorage

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FSYNC_POLICIES",
    "CorruptLogError",
    "CorruptSnapshotError",
    "DiskStorage",
    "FsyncPolicy",
    "LoadedState",
    "MemoryStorage",
    "Storage",
    "StorageError",
]
