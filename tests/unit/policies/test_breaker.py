"""CircuitBreaker: every transition, the ratio window, half-open permits, forced states."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.policies.breaker import REASONS, STATES, CircuitBreaker, Permit, SharedDelta
from sidecars.settings import BreakerSettings

BASE = BreakerSettings(
    enabled=True,
    failure_threshold=5,
    failure_ratio=None,
    window=10.0,
    min_requests=20,
    open_seconds=30.0,
    half_open_requests=1,
    failure_statuses=frozenset(range(500, 600)),
    slow_call=None,
    state_redis_url=None,
)


class Recorder:
    """Collects on_transition calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, old: str, new: str, reason: str) -> None:
        self.calls.append((old, new, reason))


def make(clock: Any, **changes: Any) -> tuple[CircuitBreaker, Recorder]:
    recorder = Recorder()
    ttl = changes.pop("trial_permit_ttl", 30.0)
    breaker = CircuitBreaker(
        dataclasses.replace(BASE, **changes),
        clock=clock,
        on_transition=recorder,
        trial_permit_ttl=ttl,
    )
    return breaker, recorder


def fail(breaker: CircuitBreaker, times: int = 1, kind: str = "connect") -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record_failure(permit, kind, 0.01)


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record_success(permit, 0.01)


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, breaker.settings.failure_threshold)
    assert breaker.state == "open"


def half_open(breaker: CircuitBreaker, clock: Any) -> None:
    trip(breaker)
    clock.advance(breaker.settings.open_seconds)
    assert breaker.state == "half_open"


# -- closed -----------------------------------------------------------------------------------


def test_starts_closed_and_admits_everything(clock: Any) -> None:
    breaker, recorder = make(clock)
    assert breaker.state == "closed"
    assert all(breaker.acquire() is not None for _ in range(1000))
    assert breaker.retry_after() == 0.0
    assert recorder.calls == []


def test_opens_on_consecutive_failures(clock: Any) -> None:
    breaker, recorder = make(clock, failure_threshold=3)
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"
    assert recorder.calls == [("closed", "open", "failure_threshold")]
    assert breaker.acquire() is None


def test_a_success_breaks_the_chain_of_failures(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=3)
    fail(breaker, 2)
    succeed(breaker)
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 2


@pytest.mark.parametrize("kind", ["connect", "reset", "timeout", "bad_response", "tls", "status"])
def test_every_failure_kind_counts(clock: Any, kind: str) -> None:
    breaker, _ = make(clock, failure_threshold=2)
    fail(breaker, 2, kind)
    assert breaker.state == "open"
    assert breaker.snapshot()["last_failure"] == kind


def test_failure_statuses_follow_the_settings(clock: Any) -> None:
    breaker, _ = make(clock, failure_statuses=frozenset({429, 502, 503}))
    assert breaker.is_failure_status(503)
    assert breaker.is_failure_status(429)
    assert not breaker.is_failure_status(500)
    assert not breaker.is_failure_status(404)
    assert not breaker.is_failure_status(200)


def test_only_a_slow_call_limit_needs_call_durations(clock: Any) -> None:
    assert make(clock, slow_call=0.5)[0].times_calls
    breaker, _ = make(clock, failure_threshold=2)
    assert not breaker.times_calls  # any elapsed given to record_success is then ignored
    fail(breaker)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record_success(permit, 999.0)
    assert breaker.snapshot()["consecutive_failures"] == 0
    fail(breaker)
    assert breaker.state == "closed"  # the success broke the chain: one failure since


def test_a_slow_success_is_a_failure(clock: Any) -> None:
    breaker, recorder = make(clock, failure_threshold=2, slow_call=0.5)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record_success(permit, 0.5)  # exactly the limit is not slow
    assert breaker.snapshot()["consecutive_failures"] == 0
    for _ in range(2):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record_success(permit, 0.51)
    assert breaker.state == "open"
    assert breaker.snapshot()["last_failure"] == "slow"
    assert recorder.calls == [("closed", "open", "failure_threshold")]


def test_recording_a_permit_twice_counts_once(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=2)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record_failure(permit, "connect", 0.1)
    breaker.record_failure(permit, "connect", 0.1)
    breaker.record_success(permit, 0.1)
    breaker.release(permit)
    assert breaker.state == "closed"
    snapshot = breaker.snapshot()
    assert snapshot["consecutive_failures"] == 1
    assert snapshot["window"]["requests"] == 1


def test_release_counts_nothing(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=1)
    for _ in range(10):
        permit = breaker.acquire()
        assert permit is not None
        breaker.release(permit)
    assert breaker.state == "closed"
    assert breaker.snapshot()["window"]["requests"] == 0


def test_verdicts_of_calls_admitted_before_a_transition_are_ignored(clock: Any) -> None:
    breaker, recorder = make(clock, failure_threshold=2)
    in_flight = [breaker.acquire() for _ in range(10)]
    fail(breaker, 2)
    assert breaker.state == "open"
    for permit in in_flight:
        assert permit is not None
        breaker.record_success(permit, 0.01)
    assert breaker.state == "open"
    clock.advance(30.0)
    assert breaker.state == "half_open"
    late = breaker.acquire()
    assert late is not None
    # A success of a call admitted while closed is not a trial's success.
    old = in_flight[0]
    assert old is not None
    old.done = False  # pretend it had never been recorded
    breaker.record_success(old, 0.01)
    assert breaker.state == "half_open"
    assert [call[1] for call in recorder.calls] == ["open", "half_open"]


# -- open -------------------------------------------------------------------------------------


def test_open_rejects_until_the_open_period_ends(clock: Any) -> None:
    breaker, recorder = make(clock, open_seconds=30.0)
    trip(breaker)
    assert breaker.retry_after() == pytest.approx(30.0)
    clock.advance(29.5)
    assert breaker.acquire() is None
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(0.5)
    clock.advance(0.5)
    assert breaker.retry_after() == 0.0
    assert breaker.state == "half_open"
    assert recorder.calls[-1] == ("open", "half_open", "open_timeout")


def test_acquire_itself_half_opens_when_the_period_is_over(clock: Any) -> None:
    breaker, recorder = make(clock, open_seconds=5.0)
    trip(breaker)
    clock.advance(5.0)
    permit = breaker.acquire()
    assert permit is not None and permit.trial
    assert recorder.calls[-1] == ("open", "half_open", "open_timeout")


def test_snapshot_reports_the_open_circuit(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=3, open_seconds=10.0)
    trip(breaker)
    clock.advance(4.0)
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "open"
    assert snapshot["forced"] is False
    assert snapshot["seconds_until_half_open"] == pytest.approx(6.0)
    assert snapshot["transitions"] == 1
    assert snapshot["half_open"]["permits_out"] == 0


# -- half-open --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_half_open_admits_exactly_the_trial_permits(clock: Any, limit: int) -> None:
    breaker, _ = make(clock, half_open_requests=limit)
    half_open(breaker, clock)
    permits = [breaker.acquire() for _ in range(500)]
    granted = [permit for permit in permits if permit is not None]
    assert len(granted) == limit
    assert all(permit.trial for permit in granted)
    assert breaker.snapshot()["half_open"]["permits_out"] == limit


def test_all_trials_succeeding_closes_the_circuit(clock: Any) -> None:
    breaker, recorder = make(clock, half_open_requests=3)
    half_open(breaker, clock)
    trials = [breaker.acquire() for _ in range(3)]
    for index, permit in enumerate(trials):
        assert permit is not None
        breaker.record_success(permit, 0.01)
        if index < 2:
            assert breaker.state == "half_open"
            # A succeeded trial does not free a slot: N trials in all, not N at a time.
            assert breaker.acquire() is None
    assert breaker.state == "closed"
    assert recorder.calls[-1] == ("half_open", "closed", "trials_succeeded")
    snapshot = breaker.snapshot()
    assert snapshot["consecutive_failures"] == 0
    assert snapshot["window"]["requests"] == 0


def test_closing_forgets_the_failures_before(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=3)
    half_open(breaker, clock)
    succeed(breaker)
    assert breaker.state == "closed"
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_a_failed_trial_opens_again_for_a_fresh_period(clock: Any) -> None:
    breaker, recorder = make(clock, half_open_requests=2, open_seconds=30.0)
    half_open(breaker, clock)
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None and second is not None
    breaker.record_success(first, 0.01)
    breaker.record_failure(second, "status", 0.01)
    assert breaker.state == "open"
    assert recorder.calls[-1] == ("half_open", "open", "trial_failed")
    assert breaker.retry_after() == pytest.approx(30.0)
    clock.advance(29.9)
    assert breaker.acquire() is None


def test_a_slow_trial_fails(clock: Any) -> None:
    breaker, recorder = make(clock, slow_call=1.0)
    half_open(breaker, clock)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record_success(permit, 2.0)
    assert recorder.calls[-1] == ("half_open", "open", "trial_failed")


def test_a_released_trial_frees_its_slot(clock: Any) -> None:
    breaker, _ = make(clock, half_open_requests=1)
    half_open(breaker, clock)
    permit = breaker.acquire()
    assert permit is not None
    assert breaker.acquire() is None
    breaker.release(permit)
    assert breaker.state == "half_open"
    again = breaker.acquire()
    assert again is not None
    breaker.record_success(again, 0.01)
    assert breaker.state == "closed"


def test_a_trial_never_reported_expires(clock: Any) -> None:
    breaker, _ = make(clock, half_open_requests=1, trial_permit_ttl=5.0)
    half_open(breaker, clock)
    hung = breaker.acquire()
    assert hung is not None
    clock.advance(4.9)
    assert breaker.acquire() is None
    clock.advance(0.1)
    fresh = breaker.acquire()
    assert fresh is not None
    assert breaker.snapshot()["half_open"]["permits_expired"] == 1
    # The hung call ending late changes nothing: its slot was already given away.
    breaker.record_failure(hung, "timeout", 5.5)
    assert breaker.state == "half_open"
    breaker.record_success(fresh, 0.01)
    assert breaker.state == "closed"


def test_the_trial_limit_counts_permits_out_and_succeeded(clock: Any) -> None:
    breaker, _ = make(clock, half_open_requests=2)
    half_open(breaker, clock)
    first = breaker.acquire()
    assert first is not None
    breaker.record_success(first, 0.01)
    second = breaker.acquire()
    assert second is not None
    assert breaker.acquire() is None
    snapshot = breaker.snapshot()["half_open"]
    assert (snapshot["permits_out"], snapshot["succeeded"]) == (1, 1)


def test_flapping_between_open_and_half_open(clock: Any) -> None:
    breaker, recorder = make(clock, open_seconds=1.0)
    trip(breaker)
    for _ in range(20):
        clock.advance(1.0)
        fail(breaker)  # the trial
        assert breaker.state == "open"
    assert len(recorder.calls) == 41
    pairs = [(old, new) for old, new, _ in recorder.calls]
    assert pairs[1:] == [("open", "half_open"), ("half_open", "open")] * 20
    clock.advance(1.0)
    succeed(breaker)
    assert breaker.state == "closed"


# -- failure ratio over the sliding window ----------------------------------------------------


def test_the_ratio_is_not_judged_below_the_minimum_volume(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=100, failure_ratio=0.5, min_requests=20)
    fail(breaker, 19)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


@pytest.mark.parametrize(
    ("ratio", "requests", "failures"),
    [(0.1, 20, 2), (0.2, 20, 4), (0.25, 20, 5), (0.3, 20, 6), (0.5, 20, 10), (0.6, 20, 12),
     (0.7, 20, 14), (0.9, 20, 18), (1.0, 20, 20), (0.3, 10, 3), (0.7, 10, 7), (0.35, 20, 7)],
)  # fmt: skip
def test_exactly_at_the_ratio_trips_and_just_below_does_not(
    clock: Any, ratio: float, requests: int, failures: int
) -> None:
    at, recorder = make(clock, failure_threshold=1000, failure_ratio=ratio, min_requests=requests)
    succeed(at, requests - failures)
    fail(at, failures)
    assert at.state == "open"
    assert recorder.calls == [("closed", "open", "failure_ratio")]

    below, _ = make(clock, failure_threshold=1000, failure_ratio=ratio, min_requests=requests)
    succeed(below, requests - failures + 1)
    fail(below, failures - 1)
    assert below.state == "closed"


def test_the_ratio_is_judged_after_a_success_too(clock: Any) -> None:
    breaker, recorder = make(clock, failure_threshold=1000, failure_ratio=0.5, min_requests=20)
    fail(breaker, 10)
    succeed(breaker, 9)
    assert breaker.state == "closed"
    succeed(breaker)  # 10 of 20: the volume is reached at exactly the ratio
    assert recorder.calls == [("closed", "open", "failure_ratio")]


def test_the_consecutive_count_wins_when_both_trip_together(clock: Any) -> None:
    breaker, recorder = make(clock, failure_threshold=3, failure_ratio=0.1, min_requests=3)
    fail(breaker, 3)
    assert recorder.calls == [("closed", "open", "failure_threshold")]


def test_failures_leave_the_window_as_time_passes(clock: Any) -> None:
    breaker, _ = make(
        clock, failure_threshold=1000, failure_ratio=0.5, min_requests=20, window=10.0
    )
    clock.now = 1000.0
    fail(breaker, 15)
    succeed(breaker, 4)
    clock.advance(10.0)  # all of it left the window
    fail(breaker, 5)
    snapshot = breaker.snapshot()["window"]
    assert (snapshot["requests"], snapshot["failures"]) == (5, 5)
    assert breaker.state == "closed"
    fail(breaker, 15)
    assert breaker.state == "open"


def test_the_window_slides_bucket_by_bucket(clock: Any) -> None:
    breaker, _ = make(
        clock, failure_threshold=1000, failure_ratio=0.5, min_requests=10, window=10.0
    )
    clock.now = 1000.0
    fail(breaker, 4)  # slot [1000, 1001)
    clock.now = 1005.0
    succeed(breaker, 5)  # slot [1005, 1006)
    clock.now = 1010.0  # the failures' slot has left the window
    fail(breaker, 4)
    window = breaker.snapshot()["window"]
    assert (window["requests"], window["failures"]) == (9, 4)
    fail(breaker)  # 5 of 10: trips
    assert breaker.state == "open"


def test_flapping_success_and_failure(clock: Any) -> None:
    """Alternating results never make two failures in a row, so only the ratio can trip."""
    breaker, _ = make(clock, failure_threshold=2)
    for _ in range(500):
        fail(breaker)
        succeed(breaker)
        clock.advance(0.01)
    assert breaker.state == "closed"
    with_ratio, recorder = make(clock, failure_threshold=2, failure_ratio=0.5, min_requests=20)
    for _ in range(9):
        fail(with_ratio)
        succeed(with_ratio)
    assert with_ratio.state == "closed"
    fail(with_ratio)
    assert with_ratio.state == "closed"  # 10 of 19: below the volume
    succeed(with_ratio)
    assert recorder.calls == [("closed", "open", "failure_ratio")]


def test_snapshot_reports_the_window(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=1000, failure_ratio=0.9, min_requests=5)
    fail(breaker, 1)
    succeed(breaker, 3)
    window = breaker.snapshot()["window"]
    assert window == {
        "seconds": 10.0,
        "requests": 4,
        "failures": 1,
        "failure_ratio": 0.25,
        "ratio_threshold": 0.9,
        "min_requests": 5,
    }


# -- forced states ----------------------------------------------------------------------------


def test_forced_open_stays_open(clock: Any) -> None:
    breaker, recorder = make(clock, open_seconds=1.0)
    breaker.force_open()
    assert recorder.calls == [("closed", "open", "forced")]
    clock.advance(3600.0)
    assert breaker.state == "open"
    assert breaker.acquire() is None
    assert breaker.retry_after() == 1.0
    snapshot = breaker.snapshot()
    assert snapshot["forced"] is True
    breaker.force_open()
    assert len(recorder.calls) == 1


def test_forcing_open_an_open_circuit_pins_it(clock: Any) -> None:
    breaker, recorder = make(clock, open_seconds=1.0)
    trip(breaker)
    breaker.force_open()
    clock.advance(10.0)
    assert breaker.state == "open"
    assert len(recorder.calls) == 1


def test_force_close_resets_everything(clock: Any) -> None:
    breaker, recorder = make(clock, failure_threshold=3)
    breaker.force_open()
    breaker.force_close()
    assert breaker.state == "closed"
    assert not breaker.forced
    assert recorder.calls[-1] == ("open", "closed", "forced")
    fail(breaker, 2)
    breaker.force_close()  # already closed: no transition, counters kept
    assert len(recorder.calls) == 2
    fail(breaker)
    assert breaker.state == "open"


def test_force_close_from_half_open(clock: Any) -> None:
    breaker, recorder = make(clock, half_open_requests=1)
    half_open(breaker, clock)
    trial = breaker.acquire()
    assert trial is not None
    breaker.force_close()
    assert recorder.calls[-1] == ("half_open", "closed", "forced")
    breaker.record_failure(trial, "connect", 0.01)  # from the half-open period: ignored
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_force_open_from_half_open(clock: Any) -> None:
    breaker, recorder = make(clock)
    half_open(breaker, clock)
    breaker.force_open()
    assert recorder.calls[-1] == ("half_open", "open", "forced")
    assert breaker.acquire() is None


# -- shared state hooks -----------------------------------------------------------------------


def test_shared_delta_reports_local_news_once(clock: Any) -> None:
    breaker, _ = make(clock, failure_threshold=3)
    fail(breaker, 1)
    succeed(breaker)
    fail(breaker, 2)
    assert breaker.take_shared_delta() == SharedDelta(None, 2, True)
    assert breaker.take_shared_delta() == SharedDelta(None, 0, False)
    fail(breaker)  # the third in a row: trips, and counts restart at the transition
    assert breaker.take_shared_delta() == SharedDelta("open", 0, False)


def test_shared_deltas_merge_in_order() -> None:
    earlier = SharedDelta("open", 3, False)
    assert earlier.then(SharedDelta(None, 2, False)) == SharedDelta("open", 5, False)
    assert earlier.then(SharedDelta(None, 1, True)) == SharedDelta("open", 1, True)
    assert earlier.then(SharedDelta("closed", 2, False)) == SharedDelta("closed", 2, False)
    assert SharedDelta(None, 2, True).then(SharedDelta(None, 1, False)) == SharedDelta(
        None, 3, True
    )


def test_adopting_an_open_circuit_keeps_its_age(clock: Any) -> None:
    breaker, recorder = make(clock, open_seconds=30.0)
    assert breaker.adopt_shared("open", open_elapsed=20.0)
    assert recorder.calls == [("closed", "open", "shared")]
    assert breaker.retry_after() == pytest.approx(10.0)
    assert breaker.take_shared_delta() == SharedDelta(None, 0, False)  # nothing to publish
    clock.advance(10.0)
    assert breaker.state == "half_open"
    assert breaker.take_shared_delta().transition == "half_open"


def test_adopting_follows_other_replicas_states(clock: Any) -> None:
    breaker, recorder = make(clock)
    trip(breaker)
    breaker.take_shared_delta()
    assert breaker.adopt_shared("half_open")
    assert breaker.adopt_shared("closed")
    assert not breaker.adopt_shared("closed")
    assert [call[2] for call in recorder.calls] == ["failure_threshold", "shared", "shared"]


def test_the_shared_failure_count_trips_a_replica_that_saw_fewer(clock: Any) -> None:
    breaker, recorder = make(clock, failure_threshold=5)
    fail(breaker, 1)
    breaker.take_shared_delta()
    assert not breaker.adopt_shared("closed", failures=4)
    assert breaker.adopt_shared("closed", failures=5)
    assert recorder.calls == [("closed", "open", "shared")]
    # Unlike an adopted state, this trip is this replica's decision: it is published.
    assert breaker.take_shared_delta().transition == "open"


def test_local_news_wins_over_the_shared_state(clock: Any) -> None:
    breaker, _ = make(clock)
    trip(breaker)
    assert not breaker.adopt_shared("closed")  # the trip is not published yet
    assert breaker.state == "open"


def test_a_forced_circuit_ignores_the_shared_state(clock: Any) -> None:
    breaker, _ = make(clock)
    breaker.force_open()
    breaker.take_shared_delta()
    assert not breaker.adopt_shared("closed")
    assert breaker.state == "open"


# -- invariants under any sequence of events --------------------------------------------------

EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(0, 0)),
        st.tuples(st.just("success"), st.integers(0, 20)),
        st.tuples(st.just("failure"), st.integers(0, 20)),
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(0, 40)),
        st.tuples(st.just("force_open"), st.integers(0, 0)),
        st.tuples(st.just("force_close"), st.integers(0, 0)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(1, 4))
def test_invariants_hold_for_any_sequence(events: list[tuple[str, int]], limit: int) -> None:
    now = [0.0]
    recorder = Recorder()
    breaker = CircuitBreaker(
        dataclasses.replace(
            BASE, failure_threshold=3, failure_ratio=0.5, min_requests=4, open_seconds=5.0,
            half_open_requests=limit,
        ),
        clock=lambda: now[0],
        on_transition=recorder,
        trial_permit_ttl=7.0,
    )  # fmt: skip
    held: list[Permit] = []
    for event, value in events:
        if event == "acquire":
            permit = breaker.acquire()
            if permit is not None:
                held.append(permit)
        elif event == "advance":
            now[0] += value / 4
        elif event == "force_open":
            breaker.force_open()
        elif event == "force_close":
            breaker.force_close()
        elif held:
            permit = held[value % len(held)]
            if event == "success":
                breaker.record_success(permit, 0.01)
            elif event == "failure":
                breaker.record_failure(permit, "reset", 0.01)
            else:
                breaker.release(permit)
        snapshot = breaker.snapshot()
        assert snapshot["state"] in STATES
        trials = snapshot["half_open"]
        assert trials["permits_out"] + trials["succeeded"] <= limit
        assert snapshot["seconds_until_half_open"] >= 0
        if snapshot["forced"]:
            assert snapshot["state"] == "open"
    # Transitions chain: each starts where the previous one ended, and never stays put.
    state = "closed"
    for old, new, reason in recorder.calls:
        assert old == state != new
        assert reason in REASONS - {"shared"}
        state = new
