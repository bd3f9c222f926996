"""A timer that is re-armed only when it fires early or a nearer deadline is set.

Connections move their deadline on every request (head deadline, body idle, pool idle); with a
plain ``call_at`` per move the proxy would create and cancel several timer handles per
request. Here a move to a later deadline is an attribute write; the pending handle fires, sees
the deadline moved and re-arms itself once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

# uvloop rounds timers to milliseconds: a handle may fire a hair before its deadline.
_SLACK = 0.001


class DeadlineTimer:
    """Calls ``callback`` once ``clock()`` reaches ``deadline`` (``math.inf``: never). The
    clock is the event loop's unless one is given (tests drive their own); the loop only
    wakes the timer up, the clock decides whether it is due."""

    __slots__ = ("_armed_at", "_callback", "_clock", "_handle", "_loop", "deadline")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], None],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self._clock = loop.time if clock is None else clock
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self.deadline = math.inf

    def set(self, deadline: float) -> None:
        self.deadline = deadline
        if deadline < self._armed_at:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = deadline
            self._handle = self._loop.call_later(max(0.0, deadline - self._clock()), self._fire)

    def clear(self) -> None:
        """No deadline; a pending handle stays and finds nothing to do when it fires."""
        self.deadline = math.inf

    def cancel(self) -> None:
        self.deadline = math.inf
        self._armed_at = math.inf
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        deadline = self.deadline
        if deadline == math.inf:
            return
        if self._clock() + _SLACK >= deadline:
            self.deadline = math.inf
            self._callback()
        else:
            self.set(deadline)
