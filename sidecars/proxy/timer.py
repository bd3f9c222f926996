"""Connection deadlines: a timer re-armed only when it fires early or a nearer deadline is
set, on a wheel shared by the loop's timers.

Connections move their deadline on every request (head deadline, body idle, pool idle); with a
plain ``call_at`` per move the proxy would create and cancel several timer handles per
request. Here a move to a later deadline is an attribute write; the pending timer fires, sees
the deadline moved and re-arms itself once.

The timers of one loop share one ``_Wheel``: deadlines rounded up to a slot of 1/128 s, one
loop timer handle for the nearest slot. A uvloop handle (with its libuv timer and context) per
connection cost about 0.6 KiB of each idle connection; a wheel entry is a dict slot. Deadlines
fire up to 8 ms late, which no timeout here is fine enough to notice; one more than a second
away takes the slot of the whole second before it (it fires early and re-arms nearer), so
idle timeouts of minutes make one slot a second, not 128, and an emptied slot goes at once.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable
from typing import Final

# uvloop rounds timers to milliseconds: a handle may fire a hair before its deadline.
_SLACK: Final = 0.001
_SLOTS_PER_SECOND: Final = 128  # a power of two: slot times are exact floats
_NEVER: Final = (1 << 62) - 1  # no slot (the largest int mypyc keeps unboxed)
# A deadline further than this (seconds) is put in the slot of the whole second before it:
# it fires early and re-arms itself nearer, so far slots (idle timeouts of minutes) are one
# per second, not 128.
_FAR: Final = 1.0


class _Wheel:
    """One loop's armed timers by slot (``ceil(when * 128)`` of the loop's time). A slot is
    a dict (insertion-ordered, O(1) removal): a timer moved to a nearer slot or cancelled
    leaves no entry behind that would keep its closed connection alive until the slot."""

    __slots__ = ("_armed_slot", "_done", "_due", "_handle", "_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, dict[DeadlineTimer, None]] = {}
        self._due: list[int] = []  # heap of the slots in _slots
        self._handle: asyncio.TimerHandle | None = None
        self._armed_slot = _NEVER
        self._done = -1  # the last slot run: a timer re-armed while running goes after it

    def add(self, timer: DeadlineTimer, when: float, now: float) -> int:
        """Arm ``timer`` for the loop time ``when`` (``now`` is the loop's time); returns
        its slot."""
        if when - now > _FAR:
            slot = math.floor(when) * _SLOTS_PER_SECOND
        else:
            slot = math.ceil(when * _SLOTS_PER_SECOND)
        slot = max(slot, self._done + 1)
        timers = self._slots.get(slot)
        if timers is not None:
            timers[timer] = None
            return slot
        self._slots[slot] = {timer: None}
        heapq.heappush(self._due, slot)
        if slot < self._armed_slot:
            self._arm(slot)
        return slot

    def remove(self, timer: DeadlineTimer, slot: int) -> None:
        """Disarm ``timer`` from ``slot``; a slot left empty goes (its heap entry stays until
        its time, and finds nothing)."""
        timers = self._slots.get(slot)
        if timers is not None:
            timers.pop(timer, None)
            if not timers:
                del self._slots[slot]

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_slot = slot
        self._handle = self._loop.call_at(slot / _SLOTS_PER_SECOND, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_slot = _NEVER
        last = math.floor((self._loop.time() + _SLACK) * _SLOTS_PER_SECOND)
        due = self._due
        slots = self._slots
        while due and due[0] <= last:
            slot = heapq.heappop(due)
            self._done = slot
            timers = slots.pop(slot, None)
            if timers is None:
                continue  # emptied before its time
            for timer in timers:
                if timer._slot == slot:
                    timer._slot = _NEVER
                    try:
                        timer._fire()
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException as error:  # one failure must not stop the others
                        self._loop.call_exception_handler(
                            {"message": "deadline timer callback failed", "exception": error}
                        )
        self._done = max(self._done, last)
        if due:
            if due[0] < self._armed_slot:  # (a timer re-armed while running armed a later one)
                self._arm(due[0])
        elif _wheels.get(self._loop) is self:
            del _wheels[self._loop]  # nothing armed: the loop may go


# The wheel of each loop with timers armed (dropped when its last timer has run).
_wheels: Final[dict[asyncio.AbstractEventLoop, _Wheel]] = {}


def _wheel_of(loop: asyncio.AbstractEventLoop) -> _Wheel:
    wheel = _wheels.get(loop)
    if wheel is None:
        for other in [other for other in _wheels if other.is_closed()]:
            del _wheels[other]  # a loop closed with timers armed (tests)
        wheel = _wheels[loop] = _Wheel(loop)
    return wheel


class DeadlineTimer:
    """Calls ``callback`` once ``clock()`` reaches ``deadline`` (``math.inf``: never). The
    clock is the event loop's unless one is given (tests drive their own); the loop only
    wakes the timer up, the clock decides whether it is due."""

    __slots__ = ("_armed_at", "_callback", "_clock", "_loop", "_slot", "deadline")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], None],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self._clock = loop.time if clock is None else clock
        self._callback = callback
        self._slot = _NEVER  # the wheel slot armed for; _NEVER: none
        self._armed_at = math.inf
        self.deadline = math.inf

    def set(self, deadline: float) -> None:
        self.deadline = deadline
        if deadline < self._armed_at:
            self._armed_at = deadline
            loop = self._loop
            wheel = _wheel_of(loop)
            if self._slot != _NEVER:
                wheel.remove(self, self._slot)
            now = loop.time()
            self._slot = wheel.add(self, now + max(0.0, deadline - self._clock()), now)

    def clear(self) -> None:
        """No deadline; a pending wake-up stays and finds nothing to do."""
        self.deadline = math.inf

    def cancel(self) -> None:
        self.deadline = math.inf
        self._armed_at = math.inf
        if self._slot != _NEVER:
            wheel = _wheels.get(self._loop)
            if wheel is not None:
                wheel.remove(self, self._slot)
            self._slot = _NEVER

    def close(self) -> None:
        """Cancel for good and drop the callback: its owner (the object of a bound method,
        which holds this timer) is then freed by reference counting as soon as it is let go,
        not left for the cycle collector's rare full pass."""
        self.cancel()
        self._callback = _nothing

    def _fire(self) -> None:
        self._armed_at = math.inf
        deadline = self.deadline
        if deadline == math.inf:
            return
        if self._clock() + _SLACK >= deadline:
            self.deadline = math.inf
            self._callback()
        else:
            self.set(deadline)


def _nothing() -> None:
    """A closed timer's callback."""
