"""The queue state machine over the node's log (issue 13): payloads and results are read
back from stored entries, the snapshot carries only metadata, and a machine restored from
it on the same log answers exactly as the one that applied the history."""
from __future__ import annotations

from logqueue.queue import commands as c
from logqueue.raft.types import ConfState, Entry, Snapshot, SnapshotMeta
from logqueue.runtime import envelope
from logqueue.runtime.entry_log import EntryLog
from logqueue.runtime.machine import ServiceMachine
from logqueue.storage import MemoryStorage

Q, G = "q", "g"
JOBS, BATCH, PAYLOAD = 4_000, 200, 1_000


class Node:
    """A storage and a machine applying what is appended to it, as the runtime does."""

    def __init__(self, cache_bytes: int = 64 * 1024) -> None:
        self.storage = MemoryStorage()
        self.log = EntryLog(self.storage.entries, cache_bytes=cache_bytes)
        self.machine = ServiceMachine(self.log, retention_jobs=100_000)
        self.seq = 0

    def submit(self, *groups: list[dict]) -> list[list[dict]]:
        """One QUEUE entry with one command group per argument; their answers."""
        index = self.storage.last_index() + 1
        batch = []
        for cmds in groups:
            self.seq += 1
            batch.append([7, self.seq, self.seq, cmds])
        data = envelope.queue_batch(1_000 + index, batch)
        self.storage.append([Entry(1, index, data)])
        out = self.machine.apply_queue(index, envelope.decode(data), len(data))
        return [answer for _, _, answer in out]


def payload(i: int) -> bytes:
    return b"%08d" % i + b"p" * (PAYLOAD - 8)


def run_history(node: Node, retried: bool = True) -> None:
    for lo in range(0, JOBS, BATCH):
        # two groups per entry: positions run over both, and the claim reads payloads
        # enqueued in the same entry
        first, claimed = node.submit([c.enqueue(Q, payload(i), "prod", i) for i in range(lo, lo + BATCH)],
                                     [c.claim(Q, G, "w", BATCH, 60_000)])
        assert [j[2] for j in claimed[0]["jobs"]] == [payload(i) for i in range(lo, lo + BATCH)]
        node.submit([c.complete(Q, G, off, tok, b"r%d" % off) for off, tok, _, _ in claimed[0]["jobs"]])
    if retried:  # a retried enqueue is still answered from the dedup runs
        assert node.submit([c.enqueue(Q, payload(5), "prod", 5)])[0] == [{"offset": 5, "duplicate": True}]


def test_snapshot_holds_metadata_only_and_a_restored_machine_reads_the_log():
    node = Node()
    run_history(node)
    data = node.machine.snapshot()
    assert len(data) < JOBS * 40, "a few words per job, never the payloads"
    assert payload(17) not in data and b"r17" not in data
    # a machine restored on the same log, with a cold cache
    log = EntryLog(node.storage.entries, cache_bytes=64 * 1024)
    restored = ServiceMachine.restore(data, log)
    assert restored.snapshot() == data
    q = restored.queue
    assert [p for _, p in q.read(Q, 0, JOBS)] == [payload(i) for i in range(JOBS)]
    assert log.misses > 0
    results = q.results(Q, G)
    assert [(r["offset"], r["result"], r["attempts"]) for r in results] == [(i, b"r%d" % i, 1) for i in range(JOBS)]
    assert q.results(Q, G) == node.machine.queue.results(Q, G)


def test_equal_histories_give_equal_snapshots_whatever_the_cache():
    small, large = Node(cache_bytes=1), Node(cache_bytes=1 << 30)
    for node in (small, large):
        run_history(node)
    assert small.machine.snapshot() == large.machine.snapshot()


def test_the_entries_from_needed_from_on_are_all_a_restored_machine_reads():
    node = Node()
    node.machine = ServiceMachine(node.log, retention_jobs=BATCH)
    run_history(node, retried=False)
    needed = node.machine.needed_from()
    assert node.storage.last_index() - 10 < needed <= node.storage.last_index(), "retention moved it up"
    # a node that holds only the entries from needed_from on (what compaction keeps)
    kept = MemoryStorage()
    kept.save_snapshot(Snapshot(SnapshotMeta(needed - 1, 1, ConfState(frozenset({1}))), b""))
    kept.append(node.storage.entries(needed, node.storage.last_index() + 1))
    restored = ServiceMachine.restore(node.machine.snapshot(), EntryLog(kept.entries))
    q, original = restored.queue, node.machine.queue
    first = q.stats(Q, G)["first_retained"]
    assert first > 0
    assert q.read(Q, 0, JOBS) == original.read(Q, 0, JOBS) == [(i, payload(i)) for i in range(first, JOBS)]
    assert q.results(Q, G) == original.results(Q, G) and q.results(Q, G)


def test_positions_skip_the_commands_of_a_retried_group():
    node = Node()
    node.submit([c.enqueue(Q, b"first", "prod", 0)])
    index = node.storage.last_index() + 1
    # the same request again (client 7, seq 1: a duplicate), then a fresh one behind it
    data = envelope.queue_batch(5_000, [[7, 1, 1, [c.enqueue(Q, b"first", "prod", 0)]],
                                        [7, 2, 1, [c.enqueue(Q, b"second", "prod", 1)]]])
    node.storage.append([Entry(1, index, data)])
    node.machine.apply_queue(index, envelope.decode(data), len(data))
    cold = ServiceMachine.restore(node.machine.snapshot(), EntryLog(node.storage.entries))
    assert cold.queue.read(Q, 0, 10) == [(0, b"first"), (1, b"second")]


def test_an_answer_acknowledged_in_its_own_entry_is_not_kept():
    node = Node()
    for k in range(50):
        seq = 2 * k + 1
        index = node.storage.last_index() + 1
        # seq is answered, and seq + 1 (same entry) says the client has every answer below it
        data = envelope.queue_batch(5_000, [[9, seq, seq, [c.enqueue(Q, b"j", "p", seq)]],
                                            [9, seq + 1, seq + 1, [c.enqueue(Q, b"j", "p", seq + 1)]]])
        node.storage.append([Entry(1, index, data)])
        out = node.machine.apply_queue(index, envelope.decode(data), len(data))
        assert out[0][2] == [{"offset": 2 * k}]
    assert len(node.machine.sessions[9].results) == 1
