"""How long the node's event loop was kept from running, and how much memory it uses.

Two views of a stall: the longest single turn of the node's loop (persist, send, apply,
snapshot), and the longest the ticker woke up late (anything that held the loop: a long
turn, a burst of decoding, a pause of the process). The longest garbage collection is
measured apart (it happens inside either), as are the loop's waits for the storage lock
(``persist.LockedStorage``). All are wall-clock times: on a loaded machine they include
the time the process waited for a CPU.
"""
from __future__ import annotations

import gc
import resource
import time


class StallMeter:
    """Longest loop turn and longest ticker lateness since start, in seconds."""

    def __init__(self) -> None:
        self.longest_turn = 0.0
        self.longest_late = 0.0
        self.longest_gc = 0.0  # the longest garbage collection (part of a turn or a late tick) ...
        self.longest_gc_generation = 0  # ... and the generation it collected
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._gc_started
        if seconds > self.longest_gc:
            self.longest_gc, self.longest_gc_generation = seconds, info["generation"]

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def turn(self, seconds: float) -> None:
        if seconds > self.longest_turn:
            self.longest_turn = seconds

    def late(self, seconds: float) -> None:
        if seconds > self.longest_late:
            self.longest_late = seconds

    def longest_ms(self) -> float:
        """The longest the loop could not run: a turn, or a late tick."""
        return round(1000 * max(self.longest_turn, self.longest_late), 1)

    def longest_turn_ms(self) -> float:
        return round(1000 * self.longest_turn, 1)

    def longest_gc_ms(self) -> float:
        return round(1000 * self.longest_gc, 1)


def memory_usage() -> dict:
    """``rss_bytes`` (now) and ``peak_rss_bytes`` (since start) of this process."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    rss = 0
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the peak is all there is
        rss = peak
    return {"rss_bytes": rss, "peak_rss_bytes": peak}
