"""The circuit breaker: pybreaker's state machine and storage, driven with an injected clock.

pybreaker holds the state (closed, open, half-open), the consecutive-failure counter and the
half-open success counter, and announces every state change to its listeners. What it lacks
is added around it, not by forking it: a failure ratio over a sliding window, slow calls, a
limit on concurrent half-open trials, and time. pybreaker's open state reads the wall clock
itself, so it is never asked to decide anything about time: this wrapper keeps the moment the
circuit opened on the injected clock and calls ``half_open()`` itself when the open period ends.

The engine drives it per request, on the event loop, without I/O::

    permit = breaker.acquire()          # None: rejected (open, or every trial permit out)
    ...attempt...
    breaker.record_success(permit, elapsed) / record_failure(permit, kind, elapsed)
    breaker.release(permit)             # no verdict: the client went away
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pybreaker

from sidecars.policies.window import Clock, SlidingCounter

if TYPE_CHECKING:
    from sidecars.settings import BreakerSettings

STATES: Final = ("closed", "open", "half_open")
# Every reason given to ``on_transition``.
REASONS: Final = frozenset(
    {
        "failure_threshold",
        "failure_ratio",
        "open_timeout",
        "trial_failed",
        "trials_succeeded",
        "forced",
        "shared",
    }
)

_FROM_PYBREAKER: Final = {
    pybreaker.STATE_CLOSED: "closed",
    pybreaker.STATE_OPEN: "open",
    pybreaker.STATE_HALF_OPEN: "half_open",
}
TransitionCallback = Callable[[str, str, str], None]


class Permit:
    """Leave to make one call. Its verdict counts only in the period (generation) it was
    admitted in: a call admitted while closed that ends after the circuit opened changes
    nothing, and neither does one recorded twice."""

    __slots__ = ("done", "generation", "issued_at", "trial")

    def __init__(self, generation: int, trial: bool, issued_at: float) -> None:
        self.generation = generation
        self.trial = trial
        self.issued_at = issued_at
        self.done = False


@dataclass(frozen=True, slots=True)
class SharedDelta:
    """What happened locally since the last exchange with the shared state store."""

    transition: str | None  # state entered by a local decision (not adopted), if any
    failures: int  # failures since the last success, transition or exchange
    reset: bool  # a success broke the consecutive-failure chain

    def then(self, later: SharedDelta) -> SharedDelta:
        """This delta followed by ``later`` (for an exchange that failed and is retried).
        Failure counts restart at every transition, so a later transition supersedes."""
        if later.transition is not None:
            return later
        if later.reset:
            return SharedDelta(self.transition, later.failures, True)
        return SharedDelta(self.transition, self.failures + later.failures, self.reset)


class _TransitionListener(pybreaker.CircuitBreakerListener):
    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = _FROM_PYBREAKER[old_state.name] if old_state is not None else "closed"
        self._breaker._entered(old, _FROM_PYBREAKER[new_state.name])


class CircuitBreaker:
    """One route's breaker. ``trial_permit_ttl`` bounds how long a half-open trial permit may
    stay out without a verdict (give it the route's deadline): a trial that hangs or is never
    reported then frees its slot instead of wedging the circuit half-open."""

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        clock: Clock = time.monotonic,
        on_transition: TransitionCallback | None = None,
        trial_permit_ttl: float = 30.0,
        window_buckets: int = 10,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._trial_permit_ttl = trial_permit_ttl
        self._failure_statuses = settings.failure_statuses
        self._slow_call = settings.slow_call
        # Whether a call's duration can change its verdict (a slow-call limit is set): when
        # not, callers may pass any ``elapsed`` to record_success and spare reading a clock.
        self.times_calls = settings.slow_call is not None
        self._ratio = settings.failure_ratio
        self._requests = SlidingCounter(settings.window, window_buckets, clock)
        self._failures = SlidingCounter(settings.window, window_buckets, clock)
        self._state = "closed"
        self._generation = 0
        self._forced = False
        self._opened_at = 0.0
        self._open_for = settings.open_seconds
        self._trials: list[Permit] = []
        self._trials_expired = 0
        self._failing = False  # pybreaker's failure counter is above zero
        self._last_failure: str | None = None
        self._reason = "forced"
        self._publish = True
        self._transitions = 0
        # Local news for the shared state store (see take_shared_delta).
        self._unshared_transition: str | None = None
        self._unshared_failures = 0
        self._unshared_reset = False
        self._storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._machine = pybreaker.CircuitBreaker(
            fail_max=settings.failure_threshold,
            reset_timeout=settings.open_seconds,
            success_threshold=settings.half_open_requests,
            state_storage=self._storage,
            listeners=[_TransitionListener(self)],
        )

    # -- per request ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._state == "open":
            self._end_open_period_if_due()
        return self._state

    @property
    def forced(self) -> bool:
        return self._forced

    def acquire(self) -> Permit | None:
        state = self._state
        if state == "closed":
            return Permit(self._generation, False, 0.0)
        if state == "open" and not self._end_open_period_if_due():
            return None
        now = self._clock()
        self._expire_trials(now)
        if len(self._trials) + self._storage.success_counter >= self.settings.half_open_requests:
            return None
        permit = Permit(self._generation, True, now)
        self._trials.append(permit)
        return permit

    def retry_after(self) -> float:
        """Seconds until the circuit half-opens; 0 when it is not open. A forced-open circuit
        never half-opens on its own: callers are told to come back after one open period."""
        if self._state != "open":
            return 0.0
        if self._forced:
            return self.settings.open_seconds
        left = self._opened_at + self._open_for - self._clock()
        if left <= 0.0:
            self._end_open_period_if_due()  # as reading ``state`` would
            return 0.0
        return left

    def is_failure_status(self, status: int) -> bool:
        return status in self._failure_statuses

    def record_success(self, permit: Permit, elapsed: float) -> None:
        if self._slow_call is not None and elapsed > self._slow_call:
            self.record_failure(permit, "slow", elapsed)
            return
        if permit.done:
            return
        permit.done = True
        if permit.generation != self._generation:
            return
        if permit.trial:
            self._trials.remove(permit)
            self._storage.increment_success_counter()
            if self._storage.success_counter >= self.settings.half_open_requests:
                self._transition("closed", "trials_succeeded")
            return
        if self._failing:
            self._failing = False
            self._storage.reset_counter()
        self._unshared_failures = 0
        self._unshared_reset = True
        self._requests.add()
        if self._ratio is not None:
            self._trip_on_ratio()

    def record_failure(self, permit: Permit, kind: str, elapsed: float) -> None:
        """``elapsed`` is accepted for symmetry with record_success: a failure is a failure
        however long it took."""
        if permit.done:
            return
        permit.done = True
        if permit.generation != self._generation:
            return
        self._last_failure = kind
        if permit.trial:
            self._transition("open", "trial_failed")
            return
        self._storage.increment_counter()
        self._failing = True
        self._unshared_failures += 1
        self._requests.add()
        self._failures.add()
        if self._storage.counter >= self.settings.failure_threshold:
            self._transition("open", "failure_threshold")
        elif self._ratio is not None:
            self._trip_on_ratio()

    def release(self, permit: Permit) -> None:
        """No verdict (the client went away, the request was cancelled): count nothing, free a
        trial slot."""
        if permit.done:
            return
        permit.done = True
        if permit.trial and permit.generation == self._generation:
            self._trials.remove(permit)

    # -- operator actions -------------------------------------------------------------------

    def force_open(self) -> None:
        """Open and stay open (like resilience4j's FORCED_OPEN) until force_close()."""
        self._forced = True
        if self._state != "open":
            self._transition("open", "forced")

    def force_close(self) -> None:
        """Back to closed with every counter reset; not forced."""
        self._forced = False
        if self._state != "closed":
            self._transition("closed", "forced")

    # -- shared state (driven by sidecars.proxy.shared_state, never on the request path) ----

    def take_shared_delta(self) -> SharedDelta:
        delta = SharedDelta(
            self._unshared_transition, self._unshared_failures, self._unshared_reset
        )
        self._unshared_transition = None
        self._unshared_failures = 0
        self._unshared_reset = False
        return delta

    def adopt_shared(self, state: str, *, open_elapsed: float = 0.0, failures: int = 0) -> bool:
        """Follow another replica: enter ``state`` (an open period already ``open_elapsed``
        seconds old), or trip when the failures counted across replicas reach the threshold.
        Local news not yet published wins, and a forced circuit stays as forced.
        Returns True when the local state changed."""
        if self._unshared_transition is not None or self._forced:
            return False
        if state == "open" and self._state != "open":
            open_for = self.settings.open_seconds - open_elapsed
            self._transition("open", "shared", open_for=open_for, publish=False)
            return True
        if state in ("closed", "half_open") and state != self._state:
            self._transition(state, "shared", publish=False)
            return True
        if state == "closed" and failures >= self.settings.failure_threshold:
            # A decision of this replica (on counts from all of them): others must follow.
            self._transition("open", "shared")
            return True
        return False

    # -- reporting --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        if state == "half_open":
            self._expire_trials(self._clock())
        requests = self._requests.total()
        failures = self._failures.total()
        return {
            "state": state,
            "forced": self._forced,
            "consecutive_failures": self._storage.counter,
            "failure_threshold": self.settings.failure_threshold,
            "last_failure": self._last_failure,
            "window": {
                "seconds": self.settings.window,
                "requests": requests,
                "failures": failures,
                "failure_ratio": round(failures / requests, 4) if requests else 0.0,
                "ratio_threshold": self._ratio,
                "min_requests": self.settings.min_requests,
            },
            "seconds_until_half_open": round(self.retry_after(), 3),
            "half_open": {
                "permits_out": len(self._trials) if state == "half_open" else 0,
                "succeeded": self._storage.success_counter if state == "half_open" else 0,
                "limit": self.settings.half_open_requests,
                "permits_expired": self._trials_expired,
            },
            "transitions": self._transitions,
        }

    # -- internals --------------------------------------------------------------------------

    def _trip_on_ratio(self) -> None:
        assert self._ratio is not None
        requests = self._requests.total()
        if requests < self.settings.min_requests:
            return
        # failures / requests is correctly rounded, so exactly-at-the-ratio compares equal.
        if self._failures.total() / requests >= self._ratio:
            self._transition("open", "failure_ratio")

    def _end_open_period_if_due(self) -> bool:
        """Half-open when the open period is over; True when this call did it."""
        if self._forced or self._clock() < self._opened_at + self._open_for:
            return False
        self._transition("half_open", "open_timeout")
        return True

    def _expire_trials(self, now: float) -> None:
        if self._trials and self._trials[0].issued_at + self._trial_permit_ttl <= now:
            for permit in [p for p in self._trials if p.issued_at + self._trial_permit_ttl <= now]:
                permit.done = True
                self._trials.remove(permit)
                self._trials_expired += 1

    def _transition(
        self, target: str, reason: str, *, open_for: float | None = None, publish: bool = True
    ) -> None:
        """Ask pybreaker to change state; ``_entered`` (its listener) does the bookkeeping.
        ``publish``: a local decision to share, not a state adopted from the shared store."""
        self._reason = reason
        self._publish = publish
        self._open_for = self.settings.open_seconds if open_for is None else max(0.0, open_for)
        if target == "open":
            self._machine.open()
        elif target == "half_open":
            self._machine.half_open()
        else:
            self._machine.close()

    def _entered(self, old: str, new: str) -> None:
        now = self._clock()
        self._state = new
        self._generation += 1
        self._transitions += 1
        self._trials.clear()
        if new == "open":
            self._opened_at = now
        elif new == "closed":
            self._storage.reset_counter()
            self._failing = False
            self._requests.clear()
            self._failures.clear()
        reason = self._reason
        self._unshared_transition = new if self._publish else None
        self._unshared_failures = 0
        self._unshared_reset = False
        if self._on_transition is not None:
            self._on_transition(old, new, reason)
