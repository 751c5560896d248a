"""The queue machine's log in a node: payloads and results read back from the WAL.

The queue machine names a command by ``(index, pos)``: the Raft index of its QUEUE entry
and its position among the entry's commands, all groups flattened in order (see
``commands_of``). The values of recent entries are cached (the hot path: a job is usually
claimed soon after it was enqueued), as one list per entry of what each command can be
asked for (``values_of``), not the decoded commands, which take several times the bytes;
a miss reads a run of entries from storage at once, so a replay from offset 0 reads each
segment sequentially.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from logqueue.raft import types as t
from logqueue.runtime import envelope

DEFAULT_CACHE_BYTES = 8 * 1024 * 1024  # of entry data; decoded commands take a few times that
READ_AHEAD = 16  # entries read on a miss (an entry holds up to max_bytes_per_msg)


def commands_of(env: list) -> list:
    """The commands of a QUEUE envelope in locator order: every group's, flattened."""
    return [c for _c, _seq, _low, cmds in env[2] for c in cmds]


def values_of(commands: list) -> list:
    """Per command, what the machine may read back: an enqueue's payload, a complete's
    (token, result), a fail's (token, reason); None for the others."""
    out: list = []
    for cmd in commands:
        op = cmd.get("op") if type(cmd) is dict else None
        if op == "enqueue":
            out.append(cmd.get("payload"))
        elif op == "complete":
            out.append((cmd.get("token"), cmd.get("result")))
        elif op == "fail":
            out.append((cmd.get("token"), cmd.get("reason") or ""))
        else:
            out.append(None)
    return out


class EntryLog:
    """Reads values the queue machine pinned from ``read(lo, hi)`` (the node's storage
    ``entries``), keeping the values of recent entries, up to ``cache_bytes`` of entry
    data, in memory."""

    pins = False  # storage keeps everything from the machine's needed_from() on

    def __init__(self, read: Callable[[int, int], list[t.Entry]], cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._read = read
        self._limit = cache_bytes
        self._cache: OrderedDict[int, tuple[list, int]] = OrderedDict()  # index -> (values_of, data size)
        self._bytes = 0
        self.misses = 0  # storage reads, for monitoring

    def applied(self, index: int, commands: list, size: int) -> None:
        """Cache the values of an entry being applied."""
        self._put(index, values_of(commands), size)

    def payload(self, at: tuple[int, int]) -> bytes:
        return self._value(at)

    def payloads(self, at: tuple[int, int], n: int) -> list[bytes]:
        index, pos = at
        return self._values(index)[pos : pos + n]

    def settlement(self, at: tuple[int, int]) -> tuple[int, object]:
        return self._value(at)

    def dump(self) -> None:
        return None  # the WAL is the log; the snapshot carries none of it

    def _value(self, at: tuple[int, int]):
        index, pos = at
        return self._values(index)[pos]

    def _values(self, index: int) -> list:
        """``values_of`` the commands of entry ``index``, from the cache or storage."""
        hit = self._cache.get(index)
        if hit is None:
            self._fill(index)
            hit = self._cache.get(index)
            if hit is None:
                raise LookupError(f"log entry {index} holds no queue commands or is not stored")
        else:
            self._cache.move_to_end(index)
        return hit[0]

    def _fill(self, index: int) -> None:
        """Read entry ``index``, and the next ones if ``READ_AHEAD`` entries of its size fit
        the cache (a replay of small entries then reads each segment sequentially; large
        ones would only be read, decoded and evicted)."""
        self.misses += 1
        entries = self._read(index, index + 1)
        if entries and len(entries[0].data) * READ_AHEAD <= self._limit:
            entries += self._read(index + 1, index + READ_AHEAD)
        for e in reversed(entries):  # the one asked for cached last
            if e.kind is t.EntryKind.NORMAL and e.index not in self._cache:
                env = envelope.decode(e.data)
                if env is not None and env[0] == envelope.QUEUE:
                    self._put(e.index, values_of(commands_of(env)), len(e.data))

    def _put(self, index: int, values: list, size: int) -> None:
        self._cache[index] = (values, size)
        self._bytes += size
        while self._bytes > self._limit and len(self._cache) > 1:
            _, (_, dropped) = self._cache.popitem(last=False)
            self._bytes -= dropped
