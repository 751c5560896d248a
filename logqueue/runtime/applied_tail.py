"""The data bytes of the last applied entries, to find where the last N bytes of the log
begin: the node keeps ``retain_entries`` entries behind a snapshot but no more than
``retain_bytes`` of them, so entries of a few bytes (records) keep a long history while
entries of megabytes (batches of jobs) do not keep gigabytes.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left


class AppliedTail:
    """Cumulative sizes of the entries applied since start (their order is their index's)."""

    def __init__(self) -> None:
        self._index = array("q")  # index of each recorded entry
        self._upto = array("q")  # bytes applied since start up to and including that entry
        self._total = 0
        self._base = 0  # bytes applied before the first recorded entry

    def add(self, index: int, size: int) -> None:
        self._total += size
        self._index.append(index)
        self._upto.append(self._total)

    def start_of_last(self, nbytes: int) -> int | None:
        """The lowest index from which the recorded entries hold at most ``nbytes``
        (one past the last when the last alone holds more); None when every recorded
        entry fits: how much came before them is not known here."""
        if self._total - self._base <= nbytes:
            return None
        # entries from j on hold _total - _upto[j - 1]: the first j with _upto[j - 1] >= _total - nbytes
        m = bisect_left(self._upto, self._total - nbytes)
        return self._index[m + 1] if m + 1 < len(self._index) else self._index[-1] + 1

    def forget_before(self, index: int) -> None:
        """Drop the records of entries below ``index`` (in steps, so that it is amortised)."""
        k = bisect_left(self._index, index)
        if k >= 4096 or (k and k == len(self._index)):
            self._base = self._upto[k - 1]
            del self._index[:k], self._upto[:k]
