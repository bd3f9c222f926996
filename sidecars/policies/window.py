"""A count over a sliding time window, kept in a ring of buckets so recording is O(1)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class SlidingCounter:
    """Sum of amounts added over the last ``window`` seconds, at ``window / buckets`` grain.

    Time is cut into slots of ``window / buckets`` seconds and the ring holds the counts of
    the newest ``buckets`` slots: the current, partly elapsed one and those before it, so the
    total covers between ``window - window / buckets`` and ``window`` seconds of history.
    When time reaches a new slot, the buckets of the slots that left the window are emptied
    and taken off the running total; adding and reading are O(1) (amortised over slots).
    """

    __slots__ = ("_buckets", "_clock", "_counts", "_slot", "_slot_width", "_total", "window")

    def __init__(self, window: float, buckets: int = 10, clock: Clock = time.monotonic) -> None:
        if window <= 0 or buckets < 1:
            raise ValueError("window must be above zero and buckets at least 1")
        self.window = window
        self._buckets = buckets
        self._slot_width = window / buckets
        self._clock = clock
        self._counts = [0] * buckets
        self._total = 0
        self._slot = int(clock() // self._slot_width)

    def add(self, amount: int = 1) -> None:
        slot = int(self._clock() // self._slot_width)
        if slot > self._slot:
            self._advance(slot)
        self._counts[slot % self._buckets] += amount
        self._total += amount

    def total(self) -> int:
        slot = int(self._clock() // self._slot_width)
        if slot > self._slot:
            self._advance(slot)
        return self._total

    def clear(self) -> None:
        self._counts = [0] * self._buckets
        self._total = 0

    def _advance(self, slot: int) -> None:
        if slot - self._slot >= self._buckets:
            self.clear()
        else:
            # The buckets of slots newer than the last one seen held the slots that just left.
            for passed in range(self._slot + 1, slot + 1):
                index = passed % self._buckets
                self._total -= self._counts[index]
                self._counts[index] = 0
        self._slot = slot
