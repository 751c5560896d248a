"""The leader's view of one follower's replication (as etcd's tracker.Progress).

invariant: 0 <= match < next; entries up to `match` are known to be on the follower.
invariant: `inflight_bytes` is the sum of `_sizes`, the payload bytes of each append in `inflight`.
"""
from __future__ import annotations

import enum
from collections import deque


class State(enum.Enum):
    PROBE = "probe"  # position unknown: one append in flight, then wait for the answer
    REPLICATE = "replicate"  # position known: stream appends, up to `max_inflight` (and its bytes) unanswered
    SNAPSHOT = "snapshot"  # an InstallSnapshot is in flight: send nothing until it is answered


class Progress:
    __slots__ = ("match", "next", "state", "probe_sent", "inflight", "_sizes", "inflight_bytes", "pending_snapshot",
                 "recent_active", "sent_commit")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = State.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()  # last index of each unanswered append (REPLICATE)
        self._sizes: deque[int] = deque()  # its payload bytes
        self.inflight_bytes = 0
        self.pending_snapshot = 0
        self.recent_active = False  # heard from within the current CheckQuorum window
        self.sent_commit = 0  # highest commit index sent in an append

    def paused(self, max_inflight: int, max_inflight_bytes: int) -> bool:
        if self.state is State.PROBE:
            return self.probe_sent
        if self.state is State.REPLICATE:
            # With nothing in flight one append may go, however large its entries.
            return len(self.inflight) >= max_inflight or self.inflight_bytes >= max_inflight_bytes
        return True

    def _clear_inflight(self) -> None:
        self.inflight.clear()
        self._sizes.clear()
        self.inflight_bytes = 0

    def free_oldest(self) -> None:
        """Forget the oldest unanswered append (presumed lost)."""
        self.inflight.popleft()
        self.inflight_bytes -= self._sizes.popleft()

    def become_probe(self) -> None:
        # After a snapshot the follower is at least at the snapshot's index.
        self.next = max(self.match + 1, self.pending_snapshot + 1) if self.state is State.SNAPSHOT else self.match + 1
        self.state = State.PROBE
        self.probe_sent = False
        self._clear_inflight()
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = State.REPLICATE
        self.next = self.match + 1
        self._clear_inflight()
        self.probe_sent = False

    def become_snapshot(self, index: int) -> None:
        self.state = State.SNAPSHOT
        self.pending_snapshot = index
        self._clear_inflight()

    def restart_from(self, last_index: int) -> None:
        """The follower holds only up to ``last_index`` (< match): probe from there."""
        self.match = last_index
        self.sent_commit = min(self.sent_commit, last_index)
        self.state = State.PROBE
        self.next = last_index + 1
        self.probe_sent = False
        self._clear_inflight()
        self.pending_snapshot = 0

    def can_bump_commit(self, committed: int) -> bool:
        """Would an append now raise the follower's commit index? It commits at most up to
        the entries it holds, which may be up to `next - 1` (etcd's CanBumpCommit)."""
        return committed > self.sent_commit and self.sent_commit < self.next - 1

    def sent(self, last_index: int, with_entries: bool, commit: int, size: int = 0) -> None:
        """Record an append sent to the follower ending at `last_index`, carrying `commit`
        and `size` payload bytes."""
        self.sent_commit = max(self.sent_commit, commit)
        if self.state is State.REPLICATE:
            if with_entries:
                self.next = last_index + 1
                self.inflight.append(last_index)
                self._sizes.append(size)
                self.inflight_bytes += size
        elif self.state is State.PROBE:
            self.probe_sent = True

    def acknowledge(self, match: int) -> bool:
        """The follower has everything up to `match`; returns True if that is news."""
        while self.inflight and self.inflight[0] <= match:
            self.free_oldest()
        if match <= self.match:
            return False
        self.match = match
        self.next = max(self.next, match + 1)
        self.probe_sent = False
        return True
