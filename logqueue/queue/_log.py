"""Where a job's payload and a settlement's result live: the log entries that carried them.

The machine names a command by its locator ``(index, pos)``: the Raft index of its entry
and its position among the entry's commands. It keeps locators, never the bytes, and asks
its log (an object with the methods of ``MemoryLog``) for them:

* ``pin(at, value)``: the command at ``at`` became referenced (an enqueue's payload, or
  ``[token, result | reason]`` of the complete/fail that settled an offset);
* ``unpin(at)``: retention dropped that reference;
* ``payload(at)`` / ``settlement(at)``: read them back; ``payloads(at, n)``: the payloads
  of ``n`` consecutive commands of one entry from ``at`` on;
* ``dump()``: what the snapshot must carry of the log itself (None when the log is
  durable elsewhere, as the runtime's WAL-backed log).

``MemoryLog`` is the log of a machine used on its own (tests, the model checker): it
keeps exactly the pinned values and travels inside the snapshot. The runtime's log
(``logqueue.runtime.entry_log``) reads them from the WAL segments instead.
"""
from __future__ import annotations


class MemoryLog:
    """Pinned values in a dict; its image goes into the machine's snapshot."""

    pins = True  # the machine must call unpin when it drops a reference

    def __init__(self) -> None:
        self._values: dict[tuple[int, int], object] = {}

    def pin(self, at: tuple[int, int], value) -> None:
        self._values[at] = value

    def unpin(self, at: tuple[int, int]) -> None:
        self._values.pop(at, None)

    def payload(self, at: tuple[int, int]) -> bytes:
        return self._values[at]

    def payloads(self, at: tuple[int, int], n: int) -> list[bytes]:
        index, pos = at
        return [self._values[index, p] for p in range(pos, pos + n)]

    def settlement(self, at: tuple[int, int]) -> tuple[int, object]:
        token, value = self._values[at]
        return token, value

    def dump(self) -> list:
        return [[index, pos, value] for (index, pos), value in sorted(self._values.items())]

    @classmethod
    def load(cls, image: list) -> "MemoryLog":
        log = cls()
        log._values = {(index, pos): tuple(v) if isinstance(v, list) else v for index, pos, v in image}
        return log
