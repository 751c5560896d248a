"""Sans-I/O Raft core. See `core.Raft` for the driving protocol and `types.Ready` for the
order in which the runtime must persist, send and apply."""
from .core import RAFT_VARIANTS, Config, NotLeader, ProposalDropped, Raft, ReadyNotAdvanced, SafetyError
from .types import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    MESSAGE_TYPES,
    ReadIndex,
    ReadIndexResponse,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)

__all__ = [
    "AppendEntries", "AppendEntriesResponse", "Config", "ConfState", "Entry", "EntryKind",
    "HardState", "Heartbeat", "HeartbeatResponse", "InstallSnapshot", "MESSAGE_TYPES", "Message",
    "NotLeader", "ProposalDropped", "RAFT_VARIANTS", "Raft", "ReadIndex", "ReadIndexResponse", "ReadState", "Ready", "ReadyNotAdvanced", "RequestVote",
    "RequestVoteResponse", "Role", "SafetyError", "Snapshot", "SnapshotMeta", "TimeoutNow",
]
