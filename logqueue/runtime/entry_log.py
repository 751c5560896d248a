"""The queue machine's log in a node: payloads and results read back from the WAL.

The queue machine names a command by ``(index, pos)``: the Raft index of its QUEUE entry
and its position among the entry's commands, all groups flattened in order (see
``commands_of``). Entries just applied are cached (the hot path: a job is usually claimed
soon after it was enqueued); a miss reads a run of entries from storage at once, so a
replay from offset 0 reads each segment sequentially.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from logqueue.raft import types as t
from logqueue.runtime import envelope

DEFAULT_CACHE_BYTES = 8 * 1024 * 1024  # of entry data; decoded commands take a few times that
READ_AHEAD = 64  # entries read on a miss


def commands_of(env: list) -> list:
    """The commands of a QUEUE envelope in locator order: every group's, flattened."""
    return [c for _c, _seq, _low, cmds in env[2] for c in cmds]


class EntryLog:
    """Reads values the queue machine pinned from ``read(lo, hi)`` (the node's storage
    ``entries``), keeping the commands of recent entries, up to ``cache_bytes`` of entry
    data, in memory."""

    pins = False  # storage keeps everything from the machine's needed_from() on

    def __init__(self, read: Callable[[int, int], list[t.Entry]], cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._read = read
        self._limit = cache_bytes
        self._cache: OrderedDict[int, tuple[list, int]] = OrderedDict()  # index -> (commands, data size)
        self._bytes = 0
        self.misses = 0  # storage reads, for monitoring

    def applied(self, index: int, commands: list, size: int) -> None:
        """Cache the commands of an entry being applied."""
        self._put(index, commands, size)

    def payload(self, at: tuple[int, int]) -> bytes:
        return self._command(at)["payload"]

    def settlement(self, at: tuple[int, int]) -> tuple[int, object]:
        cmd = self._command(at)
        if cmd["op"] == "complete":
            return cmd["token"], cmd["result"]
        return cmd["token"], cmd.get("reason") or ""

    def dump(self) -> None:
        return None  # the WAL is the log; the snapshot carries none of it

    def _command(self, at: tuple[int, int]) -> dict:
        index, pos = at
        hit = self._cache.get(index)
        if hit is None:
            self._fill(index)
            hit = self._cache.get(index)
            if hit is None:
                raise LookupError(f"log entry {index} holds no queue commands or is not stored")
        else:
            self._cache.move_to_end(index)
        return hit[0][pos]

    def _fill(self, index: int) -> None:
        self.misses += 1
        for e in reversed(self._read(index, index + READ_AHEAD)):  # the one asked for cached last
            if e.kind is t.EntryKind.NORMAL and e.index not in self._cache:
                env = envelope.decode(e.data)
                if env is not None and env[0] == envelope.QUEUE:
                    self._put(e.index, commands_of(env), len(e.data))

    def _put(self, index: int, commands: list, size: int) -> None:
        self._cache[index] = (commands, size)
        self._bytes += size
        while self._bytes > self._limit and len(self._cache) > 1:
            _, (_, dropped) = self._cache.popitem(last=False)
            self._bytes -= dropped
