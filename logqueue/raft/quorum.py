"""Majority rules for a (possibly joint) configuration.

invariant: during joint consensus every decision needs a majority of the incoming
voters AND a majority of the outgoing voters (Raft §6, C_old,new).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from .types import ConfState


def _majority(voters: frozenset[int], yes: set[int]) -> bool:
    # An empty half (not joint) never blocks a decision.
    return not voters or 2 * len(voters & yes) > len(voters)


def has_quorum(conf: ConfState, yes: Iterable[int]) -> bool:
    """True when the ids in `yes` form a quorum of `conf`."""
    yes = set(yes)
    return bool(conf.voters or conf.outgoing) and _majority(conf.voters, yes) and _majority(conf.outgoing, yes)


def _majority_index(voters: frozenset[int], match_of: Callable[[int], int]) -> int:
    matches = sorted((match_of(v) for v in voters), reverse=True)
    return matches[len(matches) // 2]


def committed_index(conf: ConfState, match_of: Callable[[int], int]) -> int:
    """The highest index replicated on a quorum of `conf` (joint: on both halves)."""
    halves = [vs for vs in (conf.voters, conf.outgoing) if vs]
    if not halves:
        return 0
    return min(_majority_index(vs, match_of) for vs in halves)
