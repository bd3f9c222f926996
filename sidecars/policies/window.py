"""A count over a sliding time window, kept in a ring of buckets so recording is O(1)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


class SlidingCounter:
    """Sum of amounts added over the last ``window`` seconds, at ``window / buckets`` grain.

    Time is cut into slots of ``window / buckets`` seconds (slot ``int(now // width)``) and the
    ring holds the counts of the newest ``buckets`` slots: the current, partly elapsed one and
    those before it, so the total covers between ``window - window / buckets`` and ``window``
    seconds of history. When time reaches a new slot, the buckets of the slots that left the
    window are emptied and taken off the running total; adding and reading are O(1) (amortised
    over slots), and within a slot a clock reading and one comparison are all they cost.
    """

    __slots__ = (
        "_buckets",
        "_clock",
        "_counts",
        "_index",
        "_slot",
        "_slot_end",
        "_slot_width",
        "_total",
        "window",
    )

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
        self._index = self._slot % buckets
        self._slot_end = self._start_of(self._slot + 1)

    def add(self, amount: int = 1) -> None:
        now = self._clock()
        if now >= self._slot_end:
            self._advance(now)
        self._counts[self._index] += amount
        self._total += amount

    def total(self) -> int:
        now = self._clock()
        if now >= self._slot_end:
            self._advance(now)
        return self._total

    def clear(self) -> None:
        self._counts = [0] * self._buckets
        self._total = 0

    def _advance(self, now: float) -> None:
        slot = int(now // self._slot_width)
        if slot - self._slot >= self._buckets:
            self.clear()
        else:
            # The buckets of slots newer than the last one seen held the slots that just left.
            for passed in range(self._slot + 1, slot + 1):
                index = passed % self._buckets
                self._total -= self._counts[index]
                self._counts[index] = 0
        self._slot = slot
        self._index = slot % self._buckets
        self._slot_end = self._start_of(slot + 1)

    def _start_of(self, slot: int) -> float:
        """The first clock reading in ``slot``: ``slot * width`` moved to where ``now // width``
        (float arithmetic) really changes, so that ``now >= start`` agrees with it exactly."""
        width = self._slot_width
        start = slot * width
        while start // width < slot:
            start = math.nextafter(start, math.inf)
        while math.nextafter(start, -math.inf) // width >= slot:
            start = math.nextafter(start, -math.inf)
        return start
