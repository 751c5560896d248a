"""Value types of the Raft core: log entries, persistent state, snapshots, messages.

Everything here is a small immutable value. The core (``logqueue.raft.core``) takes
and returns these; storage persists ``Entry``, ``HardState`` and ``Snapshot``; the
runtime serialises messages with ``logqueue.runtime.wire``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EntryKind(enum.IntEnum):
    NORMAL = 0  # application data
    NOOP = 1  # appended by every new leader at the start of its term
    CONFIG = 2  # a membership configuration (see ConfState.encode)


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int | None = None  # candidate voted for in `term`
    commit: int = 0  # a hint only: commit is recovered from peers if lost


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership configuration; during joint consensus `outgoing` is non-empty.

    invariant: a decision needs a majority of `voters` AND, when joint, of `outgoing`.
    `learners` receive the log but never vote nor count in a quorum (etcd's learners,
    Raft thesis §4.2.1); invariant: no learner is in `voters`.
    """

    voters: frozenset[int] = frozenset()
    outgoing: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)

    def voting(self) -> frozenset[int]:
        """The members whose votes count (in either half of a joint configuration)."""
        return self.voters | self.outgoing

    def members(self) -> frozenset[int]:
        """Everyone the leader replicates to: voters and learners."""
        return self.voters | self.outgoing | self.learners

    def encode(self) -> bytes:
        ids = lambda s: ",".join(map(str, sorted(s)))  # noqa: E731
        tail = ";" + ids(self.learners) if self.learners else ""  # older entries have no learners part
        return (ids(self.voters) + ";" + ids(self.outgoing) + tail).encode()

    @classmethod
    def decode(cls, data: bytes) -> "ConfState":
        new, old, learners = (data.decode().split(";") + ["", ""])[:3]
        parse = lambda s: frozenset(int(x) for x in s.split(",") if x)  # noqa: E731
        return cls(parse(new), parse(old), parse(learners))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0  # last log index the snapshot covers
    term: int = 0  # term of that entry
    conf: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""  # the application's state machine image


# --- messages -------------------------------------------------------------------------
# Every message carries the sender's term and the sender and receiver ids.


@dataclass(frozen=True, slots=True)
class RequestVote:
    term: int  # for a pre-vote: the term the candidate would campaign in
    src: int
    dst: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False  # campaign forced by TimeoutNow: ignore leader leases


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: int
    dst: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    src: int
    dst: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    term: int
    src: int
    dst: int
    success: bool
    match_index: int  # on success: last index known to match the leader's log
    # On failure (etcd's RejectHint/LogTerm): the follower's largest index <= match_index
    # whose term is <= the leader's prev_term, and that term (0: compacted/none).
    conflict_index: int = 0
    conflict_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    term: int
    src: int
    dst: int
    commit: int  # min(leader commit, follower match): never beyond what the follower has
    context: int = 0  # ReadIndex round, echoed back


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    src: int
    dst: int
    context: int = 0
    last_index: int | None = None  # the follower's last log index (None: not told)


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: int
    dst: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    term: int
    src: int
    dst: int


@dataclass(frozen=True, slots=True)
class ReadIndex:
    """A follower asks the leader for a read index on behalf of its client (Raft §6.4)."""

    term: int
    src: int
    dst: int
    context: int  # the follower's read request id


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's commit index, confirmed by a quorum after the request arrived."""

    term: int
    src: int
    dst: int
    context: int
    index: int


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
    | ReadIndex
    | ReadIndexResponse
)

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
    ReadIndex,  # appended last: wire codes are positions in this tuple
    ReadIndexResponse,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied `index`."""

    request: int  # the caller's read request id
    index: int


@dataclass(slots=True)
class Ready:
    """One batch of work for the runtime, in this order:

    1. persist `snapshot` (if any), then `entries` (entries replace any stored entries at
       the same or higher index), then `hard_state` (if any) -- BEFORE step 2;
    2. send `messages`;
    3. install `snapshot` into the state machine (if any), then apply `committed`;
       answer `read_states` once their index is applied;
    4. call ``advance(ready)``.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    role: Role = Role.FOLLOWER
    leader: int | None = None
    term: int = 0

    def empty(self) -> bool:
        return not (
            self.hard_state or self.entries or self.snapshot or self.messages or self.committed or self.read_states
        )
