"""The node's replicated state: client sessions, the address book, the work queue.

Everything here is a deterministic function of the committed log (and the snapshot it
started from), so every node holds the same state at the same applied index. Time comes
only from the leader's stamps inside QUEUE entries, never from a local clock.

Client sessions (Ongaro §6.3): for each client id, the answers to its requests by
sequence number, kept until the client says (``low``) it has them. A request whose
``(client_id, seq)`` was applied before is a duplicate: it changes nothing and gets the
cached answer. Sessions are evicted least-recently-used beyond ``MAX_SESSIONS``.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import msgpack

from logqueue.packing import packb
from logqueue.runtime.entry_log import commands_of


MAX_SESSIONS = 10_000
SNAPSHOT_VERSION = 1


class StaleRequest(Exception):
    """A request older than what its client said it has answers for (``low``)."""


class _Session:
    __slots__ = ("low", "results", "order")

    def __init__(self) -> None:
        self.low = 0
        self.results: dict[int, Any] = {}
        self.order: deque[int] = deque()  # seqs in apply order, to forget answers below `low`

    def forget_below(self, low: int) -> None:
        if low <= self.low:
            return
        self.low = low
        order, results = self.order, self.results
        while order and order[0] < low:
            results.pop(order.popleft(), None)


def _queue_machine_class():
    # Imported lazily: the queue package is optional for a pure log service.
    from logqueue.queue import QueueMachine

    return QueueMachine


class ServiceMachine:
    """Applies committed application entries; see ``logqueue.runtime.envelope``.

    ``entry_log``: where the queue machine reads payloads and results back from (a node's
    ``EntryLog`` over its WAL; None: the queue keeps them in memory and in snapshots).
    ``retention_jobs``: the queue machine's retention (None: its default); a machine
    restored from a snapshot keeps the snapshot's.
    """

    def __init__(self, entry_log=None, retention_jobs: int | None = None) -> None:
        self.entry_log = entry_log
        self.retention_jobs = retention_jobs
        self.sessions: OrderedDict[int, _Session] = OrderedDict()
        self.addresses: dict[int, str] = {}
        self.duplicates: set[int] = set()  # indexes of RECORD entries that repeated a request
        self.stamp = 0  # the latest leader time stamp applied (ms)
        self._queue = None

    @property
    def queue(self):
        """The work-queue state machine (created on first use)."""
        if self._queue is None:
            options = {} if self.retention_jobs is None else {"retention_jobs": self.retention_jobs}
            self._queue = _queue_machine_class()(log=self.entry_log, **options)
        return self._queue

    def needed_from(self) -> int | None:
        """The lowest log index the queue machine still reads values from (None: none)."""
        return None if self._queue is None else self._queue.needed_from()

    def retained_offsets(self) -> int:
        """Jobs the queue machine retains, over all queues."""
        return 0 if self._queue is None else self._queue.retained_offsets()

    # --- sessions ------------------------------------------------------------------------
    def _session(self, client_id: int) -> _Session:
        sessions = self.sessions
        s = sessions.get(client_id)
        if s is None:
            s = sessions[client_id] = _Session()
            if len(sessions) > MAX_SESSIONS:
                sessions.popitem(last=False)
        else:
            sessions.move_to_end(client_id)
        return s

    def answer(self, client_id: int, seq: int) -> tuple[bool, Any]:
        """(True, answer) if the request was applied and its answer is still kept."""
        s = self.sessions.get(client_id)
        if s is None:
            return False, None
        if seq in s.results:
            return True, s.results[seq]
        if seq < s.low:
            raise StaleRequest(f"request {seq} of client {client_id} is older than its acknowledged answers")
        return False, None

    # --- apply ---------------------------------------------------------------------------
    def apply_record(self, index: int, env: list) -> tuple[int, int, int | None]:
        """Apply a RECORD entry; returns (client_id, seq, answer) with answer = the index
        holding the record (the first copy for a duplicate; None if that is forgotten)."""
        _, client_id, seq, low, _data = env
        s = self._session(client_id)
        s.forget_below(low)
        if seq < s.low or seq in s.results:
            self.duplicates.add(index)
            return client_id, seq, s.results.get(seq)
        s.results[seq] = index
        s.order.append(seq)
        return client_id, seq, index

    def apply_queue(self, index: int, env: list, size: int = 0) -> list[tuple[int, int, Any]]:
        """Apply a QUEUE entry (``size``: bytes of its data, for the entry cache);
        returns (client_id, seq, answers) per command group."""
        _, now_ms, groups = env
        self.stamp = max(self.stamp, now_ms)
        if self.entry_log is not None:
            self.entry_log.applied(index, commands_of(env), size)
        keys: list[tuple[int, int, _Session]] = []
        fresh: list[tuple[_Session, int, list]] = []
        positions: list[int] = []  # of the fresh commands among all the entry's commands
        pos = 0
        for client_id, seq, low, commands in groups:
            s = self._session(client_id)
            s.forget_below(low)
            keys.append((client_id, seq, s))
            if not (seq < s.low or seq in s.results):
                s.results[seq] = None  # claimed now: a repeat later in this batch is a duplicate
                s.order.append(seq)
                fresh.append((s, seq, commands))
                positions.extend(range(pos, pos + len(commands)))
            pos += len(commands)
        if fresh:
            results = self.queue.apply(index, self.stamp, [c for _, _, commands in fresh for c in commands], positions)
            pos = 0
            answers = {}
            for s, seq, commands in fresh:
                answer = answers[id(s), seq] = results[pos : pos + len(commands)]
                pos += len(commands)
                if seq in s.results:  # not when a later group of this entry acknowledged it (low)
                    s.results[seq] = answer
            return [(client_id, seq, answers.get((id(s), seq), s.results.get(seq))) for client_id, seq, s in keys]
        return [(client_id, seq, s.results.get(seq)) for client_id, seq, s in keys]

    def apply_address(self, env: list) -> None:
        _, node_id, addr = env
        if addr is None:
            self.addresses.pop(node_id, None)
        else:
            self.addresses[node_id] = addr

    # --- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        sessions = [[c, s.low, [[seq, s.results[seq]] for seq in s.order if seq in s.results]]
                    for c, s in self.sessions.items()]
        return packb({
            "v": SNAPSHOT_VERSION,
            "sessions": sessions,
            "addresses": self.addresses,
            "duplicates": sorted(self.duplicates),
            "stamp": self.stamp,
            "queue": self._queue.snapshot() if self._queue is not None else None,
        })

    @classmethod
    def restore(cls, data: bytes, entry_log=None, retention_jobs: int | None = None) -> "ServiceMachine":
        m = cls(entry_log, retention_jobs)
        if not data:
            return m
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if state.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {state.get('v')} is not supported")
        for c, low, results in state["sessions"]:
            s = m.sessions[c] = _Session()
            s.low = low
            for seq, answer in results:
                s.results[seq] = answer
                s.order.append(seq)
        m.addresses = {int(k): v for k, v in state["addresses"].items()}
        m.duplicates = set(state["duplicates"])
        m.stamp = state["stamp"]
        if state["queue"] is not None:
            m._queue = _queue_machine_class().restore(state["queue"], log=entry_log)
        return m

    def forget_duplicates_below(self, index: int) -> None:
        """Duplicates at or below a compacted index can no longer be read: drop them."""
        self.duplicates = {i for i in self.duplicates if i > index}
