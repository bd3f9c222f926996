"""SlidingCounter: O(1) recording in a ring of buckets, totals over the last window."""

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecars.policies.window import SlidingCounter


def test_counts_what_was_added_within_the_window(clock: Any) -> None:
    counter = SlidingCounter(10.0, 10, clock)
    assert counter.total() == 0
    counter.add()
    counter.add(3)
    clock.advance(4.5)
    counter.add()
    assert counter.total() == 5


def test_a_bucket_expires_when_its_slot_leaves_the_window(clock: Any) -> None:
    clock.now = 100.0  # the start of a slot: slots are 1 s wide
    counter = SlidingCounter(10.0, 10, clock)
    counter.add(2)
    clock.now = 100.999
    counter.add(1)
    clock.now = 109.999
    assert counter.total() == 3
    clock.now = 110.0  # slot [100, 101) is now eleven slots old
    assert counter.total() == 0


def test_history_spans_between_window_minus_one_slot_and_the_window(clock: Any) -> None:
    clock.now = 100.5
    counter = SlidingCounter(10.0, 10, clock)
    counter.add()
    clock.now = 109.999  # 9.499 s later: still counted
    assert counter.total() == 1
    clock.now = 110.0  # 9.5 s later, but the slot it fell in has left
    assert counter.total() == 0


def test_a_recycled_bucket_forgets_the_lap_before(clock: Any) -> None:
    counter = SlidingCounter(1.0, 4, clock)
    counter.add(7)
    clock.advance(1.0)  # same bucket index, next lap
    counter.add(1)
    assert counter.total() == 1
    clock.advance(0.25)
    counter.add(1)
    assert counter.total() == 2


def test_clear_forgets_everything(clock: Any) -> None:
    counter = SlidingCounter(10.0, 10, clock)
    for _ in range(5):
        counter.add()
        clock.advance(1.0)
    counter.clear()
    assert counter.total() == 0
    counter.add()
    assert counter.total() == 1


def test_a_long_silence_expires_everything(clock: Any) -> None:
    counter = SlidingCounter(10.0, 10, clock)
    counter.add(50)
    clock.advance(1e6)
    assert counter.total() == 0


@pytest.mark.parametrize(("window", "buckets"), [(0.0, 10), (-1.0, 10), (10.0, 0)])
def test_rejects_a_window_that_cannot_count(window: float, buckets: int) -> None:
    with pytest.raises(ValueError):
        SlidingCounter(window, buckets)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=3.0), st.integers(min_value=1, max_value=5)),
        max_size=60,
    )
)
def test_matches_a_naive_count_of_the_same_slots(steps: list[tuple[float, int]]) -> None:
    """Against a list of every (time, amount): the total is the sum over the last 10 slots."""
    now = [500.0]
    counter = SlidingCounter(2.0, 10, lambda: now[0])
    events: list[tuple[int, int]] = []
    for pause, amount in steps:
        now[0] += pause
        counter.add(amount)
        events.append((int(now[0] // 0.2), amount))
        current = int(now[0] // 0.2)
        assert counter.total() == sum(a for slot, a in events if slot > current - 10)


# Spans of slots holding one where ``slot * width`` is not where ``now // width`` changes
# (399.0 // 0.2 == 1994.0, for one).
@pytest.mark.parametrize(("width", "since"), [(0.2, 396.0), (0.3, 297.0), (1 / 3, 330.0)])
def test_slot_boundaries_agree_with_floor_division(width: float, since: float) -> None:
    """The counter finds a new slot by comparing with the next slot's first clock reading;
    around every boundary that must agree with ``int(now // width)`` to the last bit."""
    now = [since]
    counter = SlidingCounter(width * 10, 10, lambda: now[0])
    events: list[int] = []
    for slot in range(int(since // width) + 1, int(since // width) + 30):
        start = slot * width
        for at in (math.nextafter(start, 0), start, math.nextafter(start, math.inf)):
            if at < now[0]:
                continue
            now[0] = at
            counter.add()
            events.append(int(at // width))
            current = int(at // width)
            assert counter.total() == sum(1 for s in events if s > current - 10)
