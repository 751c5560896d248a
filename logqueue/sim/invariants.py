"""The five guarantees of the Raft paper (Figure 3), checked incrementally after every
simulation step. Each check raises `Violation` naming the guarantee."""
from __future__ import annotations

from logqueue.raft import Entry, Raft, Role


class Violation(Exception):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(invariant, detail)  # both in args, so it pickles across processes
        self.invariant = invariant
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


class Invariants:
    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        # (index, term) -> (data, kind, term of the previous entry) for every entry any node persisted
        self.entry_at: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}  # index -> (term, data), any node
        self.leader_last: dict[int, tuple[int, int]] = {}  # node -> (term, last index) while leader

    # Election Safety: at most one leader can be elected in a given term.
    def on_leader(self, node: int, term: int) -> None:
        other = self.leader_of_term.setdefault(term, node)
        if other != node:
            raise Violation("Election Safety", f"nodes {other} and {node} are both leaders of term {term}")

    # Leader Completeness: a leader's log holds every entry committed in earlier terms.
    def on_new_leader(self, raft: Raft) -> None:
        log = raft.log
        for index, (term, _) in self.applied.items():
            if term < raft.term and index > log.snap_index and log.term_at(index) != term:
                raise Violation(
                    "Leader Completeness",
                    f"leader {raft.id} of term {raft.term} lacks committed entry {index} (term {term})",
                )

    # Leader Append-Only: a leader never overwrites or deletes entries in its log.
    def on_persist(self, raft: Raft, entries: list[Entry], was_leader_term: int | None) -> None:
        if not entries:
            return
        node = raft.id
        if was_leader_term is not None:
            term, last = self.leader_last.get(node, (was_leader_term, 0))
            if term == was_leader_term and entries[0].index <= last:
                raise Violation(
                    "Leader Append-Only",
                    f"leader {node} of term {term} rewrote index {entries[0].index} (its log ended at {last})",
                )
            self.leader_last[node] = (was_leader_term, entries[-1].index)
        # Log Matching: same (index, term) => same entry and same preceding entries. By
        # induction it suffices that each (index, term) always has the same data and the
        # same predecessor term.
        log = raft.log
        prev_term = log.term_at(entries[0].index - 1)
        for e in entries:
            seen = self.entry_at.setdefault((e.index, e.term), (e.data, int(e.kind), prev_term))
            if seen != (e.data, int(e.kind), prev_term) and prev_term is not None and seen[2] is not None:
                raise Violation(
                    "Log Matching",
                    f"node {node} holds a different entry {e.index} of term {e.term} (or a different log before it)",
                )
            prev_term = e.term

    # State Machine Safety: no two nodes apply different entries at the same index.
    def on_apply(self, node: int, entry: Entry) -> None:
        seen = self.applied.setdefault(entry.index, (entry.term, entry.data))
        if seen != (entry.term, entry.data):
            raise Violation(
                "State Machine Safety",
                f"node {node} applied (term {entry.term}) at index {entry.index}, another node applied term {seen[0]}",
            )

    def check_roles(self, rafts: list[Raft]) -> list[Raft]:
        """Record current leaders; returns the nodes that became leader since last time."""
        new = []
        for raft in rafts:
            if raft.role is Role.LEADER:
                known = self.leader_of_term.get(raft.term)
                self.on_leader(raft.id, raft.term)
                if known is None:
                    new.append(raft)
        return new
