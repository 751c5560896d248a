"""Deliberately broken Raft cores, to show the simulator catches real bugs.

The breakage lives here, as subclasses, never as flags in the production core.
"""
from __future__ import annotations

from logqueue.raft import HardState, Raft
from logqueue.raft.types import RequestVote


class VoteWithoutLogCheck(Raft):
    """Grants votes without the §5.4.1 up-to-date check."""

    def _handle_vote_request(self, msg: RequestVote) -> None:
        real = self.log.is_up_to_date
        self.log.is_up_to_date = lambda index, term: True
        try:
            super()._handle_vote_request(msg)
        finally:
            self.log.is_up_to_date = real


class CommitPreviousTerm(Raft):
    """Commits entries of earlier terms by counting replicas (Figure 8's mistake)."""

    def _maybe_commit(self) -> bool:
        from logqueue.raft import quorum

        index = quorum.committed_index(self.log.conf, self._match_of)
        if index > self.log.committed:
            self.log.commit_to(index)
            self._after_commit()
            return True
        return False


class ForgetVoteOnRestart(Raft):
    """Loses votedFor across restarts (as if it were not persisted)."""

    def __init__(self, *args, hard_state: HardState | None = None, **kwargs) -> None:
        if hard_state is not None:
            hard_state = HardState(hard_state.term, None, hard_state.commit)
        super().__init__(*args, hard_state=hard_state, **kwargs)


BUGS: dict[str, type[Raft]] = {
    "vote-without-log-check": VoteWithoutLogCheck,
    "commit-previous-term": CommitPreviousTerm,
    "forget-vote-on-restart": ForgetVoteOnRestart,
}
