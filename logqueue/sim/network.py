"""A simulated network: per-message delay, loss, duplication and reordering, and
directed link cuts (symmetric and asymmetric partitions). Driven by the sim's rng only."""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from logqueue.raft import Message


@dataclass
class NetworkFaults:
    loss: float = 0.0  # probability a message is dropped
    duplicate: float = 0.0  # probability a message is delivered twice
    max_delay: int = 1  # delivery after 1..max_delay ticks; > 1 reorders messages


@dataclass
class Network:
    rng: random.Random
    faults: NetworkFaults = field(default_factory=NetworkFaults)
    cut: set[tuple[int, int]] = field(default_factory=set)  # (src, dst) links that drop everything
    _queue: list[tuple[int, int, Message]] = field(default_factory=list)
    _seq: int = 0
    sent: int = 0
    dropped: int = 0

    def send(self, now: int, msg: Message) -> None:
        self.sent += 1
        f = self.faults
        if f.loss and self.rng.random() < f.loss:
            self.dropped += 1
            return
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            delay = 1 if f.max_delay <= 1 else self.rng.randint(1, f.max_delay)
            self._seq += 1
            heapq.heappush(self._queue, (now + delay, self._seq, msg))

    def due(self, now: int) -> list[Message]:
        """Messages whose delivery time has come, minus those on cut links."""
        out = []
        q = self._queue
        while q and q[0][0] <= now:
            msg = heapq.heappop(q)[2]
            if (msg.src, msg.dst) in self.cut:
                self.dropped += 1
            else:
                out.append(msg)
        return out

    def partition(self, groups: list[set[int]]) -> None:
        """Cut every link between different groups (both directions)."""
        self.cut = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}

    def isolate_one_way(self, node: int, others: set[int], outgoing: bool) -> None:
        """Asymmetric partition: `node` cannot send to (or receive from) everyone else."""
        self.cut = {(node, o) if outgoing else (o, node) for o in others if o != node}

    def heal(self) -> None:
        self.cut = set()
