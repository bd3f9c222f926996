"""Retry policy: backoff, Retry-After, deadlines, the budget and the decision table."""

from __future__ import annotations

import dataclasses
import random
from email.utils import formatdate
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecars.policies.retry import (
    IDEMPOTENT_METHODS,
    BackoffSchedule,
    Deadline,
    RetryBudget,
    RetryDecision,
    RetryPolicy,
    parse_retry_after,
)
from sidecars.settings import RetrySettings, retry_on

SETTINGS = RetrySettings(
    max_attempts=3,
    backoff_base=0.025,
    backoff_max=0.25,
    retry_on=retry_on("connect-failure,reset,timeout,502,503,504"),
    retry_non_idempotent=False,
    budget_ratio=0.2,
    budget_min_per_second=10.0,
    max_retry_body=1024 * 1024,
)


# -- backoff ----------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32),
    base=st.floats(0.001, 1.0),
    factor=st.floats(1.0, 100.0),
    retry=st.integers(1, 80),
)
def test_backoff_stays_within_full_jitter_bounds(
    seed: int, base: float, factor: float, retry: int
) -> None:
    cap = base * factor
    schedule = BackoffSchedule(base, cap, random.Random(seed).random)
    ceiling = min(cap, base * 2 ** (retry - 1))
    assert schedule.ceiling(retry) == pytest.approx(ceiling)
    for _ in range(20):
        assert 0.0 <= schedule.delay(retry) <= ceiling


def test_backoff_doubles_until_the_cap() -> None:
    schedule = BackoffSchedule(0.025, 0.25, lambda: 1.0)
    assert [schedule.delay(n) for n in range(1, 7)] == pytest.approx(
        [0.025, 0.05, 0.1, 0.2, 0.25, 0.25]
    )
    assert BackoffSchedule(0.025, 0.25, lambda: 0.0).delay(3) == 0.0
    assert BackoffSchedule(0.025, 0.25, lambda: 0.5).delay(2) == pytest.approx(0.025)


def test_backoff_is_jittered() -> None:
    schedule = BackoffSchedule(0.1, 10.0, random.Random(7).random)
    delays = {schedule.delay(4) for _ in range(50)}
    assert len(delays) == 50
    assert min(delays) < 0.4 < max(delays)


def test_backoff_of_a_huge_retry_number_is_the_cap() -> None:
    assert BackoffSchedule(0.025, 0.25, lambda: 1.0).delay(10_000) == 0.25


def test_retries_are_numbered_from_one() -> None:
    with pytest.raises(ValueError):
        BackoffSchedule(0.025, 0.25).delay(0)


# -- Retry-After ------------------------------------------------------------------------------

NOW = 1445412450.0  # Wed, 21 Oct 2015 07:27:30 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (b"0", 0.0),
        (" 5 ", 5.0),
        (b"3", 3.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),  # IMF-fixdate
        (b"Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 30.0),  # obsolete RFC 850
        ("Wed Oct 21 07:28:00 2015", 30.0),  # obsolete asctime
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: now
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("99999999999999999999999", 86400.0),  # absurd: a day, the deadline caps it anyway
    ],
)
def test_retry_after_values(value: str | bytes, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", "   ", "soon", "-5", "1.5", "1e3", "0x10", "12abc", "١٢", b"\xff\xfe", "Wed, 99 Foo 2015",
     "Wed, 21 Oct 2015 25:61:00 GMT", "5, 6"],
)  # fmt: skip
def test_retry_after_garbage_is_none(value: str | bytes) -> None:
    assert parse_retry_after(value, NOW) is None


def test_retry_after_dates_follow_now() -> None:
    date = formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(90.0)
    assert parse_retry_after(date, NOW + 60) == pytest.approx(30.0)
    assert parse_retry_after(date, NOW + 600) == 0.0


@given(st.binary(max_size=40))
def test_retry_after_never_raises_and_is_never_negative(value: bytes) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or 0.0 <= seconds <= 86400.0


# -- deadline ---------------------------------------------------------------------------------


def test_deadline_counts_down_to_zero(clock: Any) -> None:
    deadline = Deadline(2.0, clock)
    assert deadline.remaining() == 2.0
    assert not deadline.expired
    clock.advance(0.75)
    assert deadline.remaining() == pytest.approx(1.25)
    clock.advance(1.25)
    assert deadline.remaining() == 0.0
    assert deadline.expired
    clock.advance(5.0)
    assert deadline.remaining() == 0.0
    assert deadline.expired


# -- budget -----------------------------------------------------------------------------------


def test_budget_allows_a_ratio_of_requests(clock: Any) -> None:
    budget = RetryBudget(0.2, 0.0, clock=clock)
    for _ in range(10):
        budget.record_request()
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    snapshot = budget.snapshot()
    assert (snapshot["requests"], snapshot["retries"], snapshot["exhausted"]) == (10, 2, 1)
    assert snapshot["available"] == 0


def test_budget_floor_allows_retries_without_traffic(clock: Any) -> None:
    budget = RetryBudget(0.2, 1.0, window=10.0, clock=clock)
    assert sum(budget.try_spend() for _ in range(50)) == 10
    assert budget.snapshot()["allowed"] == 10.0


def test_a_single_request_earns_no_retry_without_a_floor(clock: Any) -> None:
    budget = RetryBudget(0.2, 0.0, clock=clock)
    budget.record_request()
    assert not budget.try_spend()


def test_budget_window_moves(clock: Any) -> None:
    budget = RetryBudget(0.5, 0.0, window=10.0, clock=clock)
    clock.now = 1000.0
    for _ in range(4):
        budget.record_request()
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    clock.now = 1005.0
    for _ in range(2):
        budget.record_request()
    assert budget.try_spend()  # 6 requests, 3 allowed
    assert not budget.try_spend()
    clock.now = 1010.0  # the first four requests and two retries left the window
    snapshot = budget.snapshot()
    assert (snapshot["requests"], snapshot["retries"]) == (2, 1)
    assert not budget.try_spend()
    clock.now = 1015.0
    assert budget.snapshot()["requests"] == 0


def test_budget_bounds_amplification_in_a_total_outage(clock: Any) -> None:
    """Every attempt fails and wants two retries: the upstream sees about 1.2x the clients."""
    budget = RetryBudget(0.2, 1.0, window=10.0, clock=clock)
    policy = RetryPolicy(SETTINGS, budget, BackoffSchedule(0.025, 0.25, lambda: 0.0))
    clients = attempts = 0
    for _ in range(6000):  # 100 requests a second for a minute
        clock.advance(0.01)
        clients += 1
        budget.record_request()
        attempt = 1
        attempts += 1
        while policy.decide(
            attempt=attempt, failure=503, method=b"GET", has_idempotency_key=False,
            request_sent=True, body_replayable=True, retry_after=None, remaining=10.0,
        ).retry:  # fmt: skip
            attempt += 1
            attempts += 1
    floor = 1.0 * 60  # min_per_second over the minute
    assert clients + 0.2 * clients <= attempts <= clients * 1.2 + floor + 2


# -- the decision -----------------------------------------------------------------------------


def policy(clock: Any, *, random_value: float = 0.5, **changes: Any) -> RetryPolicy:
    budget = RetryBudget(0.2, 10.0, clock=clock)
    return RetryPolicy(
        dataclasses.replace(SETTINGS, **changes),
        budget,
        BackoffSchedule(0.025, 0.25, lambda: random_value),
    )


def decide(retry_policy: RetryPolicy, **overrides: Any) -> RetryDecision:
    arguments: dict[str, Any] = {
        "attempt": 1,
        "failure": "connect-failure",
        "method": b"GET",
        "has_idempotency_key": False,
        "request_sent": False,
        "body_replayable": True,
        "retry_after": None,
        "remaining": 10.0,
    }
    arguments.update(overrides)
    return retry_policy.decide(**arguments)


def test_idempotent_methods() -> None:
    assert frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"}) == (
        IDEMPOTENT_METHODS
    )


@pytest.mark.parametrize(
    ("failure", "reason"),
    [("connect-failure", "connect-failure"), ("reset", "reset"), ("timeout", "timeout"),
     (502, "502"), (503, "503"), (504, "504")],
)  # fmt: skip
def test_retryable_failures_are_retried_after_a_backoff(
    clock: Any, failure: str | int, reason: str
) -> None:
    decision = decide(policy(clock, random_value=0.5), failure=failure, attempt=2)
    assert (decision.retry, decision.delay, decision.reason) == (True, pytest.approx(0.025), reason)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(500, "not_retryable"), (429, "not_retryable"), (404, "not_retryable"),
     (200, "success"), (304, "success"), ("bad_response", "not_retryable")],
)  # fmt: skip
def test_what_is_not_retried(clock: Any, failure: str | int, reason: str) -> None:
    assert decide(policy(clock), failure=failure) == RetryDecision(False, 0.0, reason)


def test_retry_on_follows_the_settings(clock: Any) -> None:
    only_500 = policy(clock, retry_on=retry_on("500"))
    assert decide(only_500, failure=500).retry
    assert decide(only_500, failure=503).reason == "not_retryable"
    assert decide(only_500, failure="connect-failure").reason == "not_retryable"


def test_attempts_run_out(clock: Any) -> None:
    retry_policy = policy(clock, max_attempts=3)
    assert decide(retry_policy, attempt=2).retry
    assert decide(retry_policy, attempt=3).reason == "max_attempts"
    assert decide(policy(clock, max_attempts=1), attempt=1).reason == "max_attempts"


# (method, sent, idempotency key, retry_non_idempotent, body replayable) -> reason or None
SAFETY_TABLE = [
    (b"POST", False, False, False, True, None),  # never sent: always safe
    (b"POST", False, False, False, False, None),
    (b"PATCH", False, False, False, True, None),
    (b"GET", True, False, False, True, None),
    (b"HEAD", True, False, False, True, None),
    (b"PUT", True, False, False, True, None),
    (b"DELETE", True, False, False, True, None),
    (b"OPTIONS", True, False, False, True, None),
    (b"TRACE", True, False, False, True, None),
    (b"POST", True, False, False, True, "non_idempotent"),
    (b"PATCH", True, False, False, True, "non_idempotent"),
    (b"get", True, False, False, True, "non_idempotent"),  # methods are case-sensitive
    (b"POST", True, True, False, True, None),  # Idempotency-Key makes it safe
    (b"PATCH", True, True, False, True, None),
    (b"POST", True, False, True, True, None),  # the operator said so
    (b"PUT", True, False, False, False, "body_not_replayable"),
    (b"POST", True, True, False, False, "body_not_replayable"),
    (b"POST", True, False, True, False, "body_not_replayable"),
    (b"POST", True, False, False, False, "non_idempotent"),
]


@pytest.mark.parametrize("row", SAFETY_TABLE)
def test_the_safety_table(
    clock: Any, row: tuple[bytes, bool, bool, bool, bool, str | None]
) -> None:
    method, sent, key, non_idempotent, replayable, reason = row
    decision = decide(
        policy(clock, retry_non_idempotent=non_idempotent),
        failure="reset" if sent else "connect-failure",
        method=method,
        request_sent=sent,
        has_idempotency_key=key,
        body_replayable=replayable,
    )
    assert decision.retry is (reason is None)
    if reason is not None:
        assert decision.reason == reason


def test_retry_after_replaces_the_backoff(clock: Any) -> None:
    def no_randomness() -> float:
        raise AssertionError("the backoff must not be drawn when Retry-After is given")

    retry_policy = RetryPolicy(
        SETTINGS, RetryBudget(0.2, 10.0, clock=clock), BackoffSchedule(0.025, 0.25, no_randomness)
    )
    decision = decide(retry_policy, failure=503, retry_after=2.0, remaining=5.0)
    assert decision == RetryDecision(True, 2.0, "503")
    assert decide(retry_policy, failure=503, retry_after=0.0, remaining=5.0).delay == 0.0


def test_retry_after_beyond_the_deadline_returns_the_answer(clock: Any) -> None:
    retry_policy = policy(clock)
    decision = decide(retry_policy, failure=503, retry_after=5.0, remaining=4.9)
    assert decision == RetryDecision(False, 0.0, "retry_after_exceeds_deadline")
    assert decide(retry_policy, failure=503, retry_after=5.0, remaining=5.0).reason == (
        "retry_after_exceeds_deadline"
    )
    assert retry_policy.budget.snapshot()["retries"] == 0


def test_a_backoff_longer_than_the_deadline_is_not_waited(clock: Any) -> None:
    retry_policy = policy(clock, random_value=1.0)  # backoff of retry 1: 0.025 s
    assert decide(retry_policy, remaining=0.02).reason == "deadline"
    assert decide(retry_policy, remaining=0.0).reason == "deadline"
    assert decide(retry_policy, remaining=0.03).retry


def test_budget_is_asked_last_and_spent_only_on_retries(clock: Any) -> None:
    budget = RetryBudget(0.0, 0.1, window=10.0, clock=clock)  # one retry in the window
    retry_policy = RetryPolicy(SETTINGS, budget, BackoffSchedule(0.025, 0.25, lambda: 0.5))
    refusals = [
        decide(retry_policy, failure=500),
        decide(retry_policy, attempt=3),
        decide(retry_policy, method=b"POST", request_sent=True, failure="reset"),
        decide(retry_policy, request_sent=True, failure="reset", body_replayable=False),
        decide(retry_policy, remaining=0.0),
        decide(retry_policy, failure=503, retry_after=60.0),
    ]
    assert [d.reason for d in refusals] == [
        "not_retryable", "max_attempts", "non_idempotent", "body_not_replayable", "deadline",
        "retry_after_exceeds_deadline",
    ]  # fmt: skip
    assert budget.snapshot()["retries"] == 0
    assert decide(retry_policy).retry
    assert decide(retry_policy) == RetryDecision(False, 0.0, "budget")
    assert budget.snapshot()["exhausted"] == 1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        # Each case fails several checks; the earliest in the documented order names it.
        ({"failure": 500, "attempt": 3, "request_sent": True, "method": b"POST"}, "not_retryable"),
        ({"attempt": 3, "request_sent": True, "method": b"POST", "failure": "reset"},
         "max_attempts"),
        ({"request_sent": True, "method": b"POST", "failure": "reset", "remaining": 0.0},
         "non_idempotent"),
        ({"request_sent": True, "body_replayable": False, "failure": "reset", "remaining": 0.0},
         "body_not_replayable"),
        ({"failure": 503, "retry_after": 9.0, "remaining": 1.0}, "retry_after_exceeds_deadline"),
    ],
)  # fmt: skip
def test_decide_checks_in_order(clock: Any, overrides: dict[str, Any], reason: str) -> None:
    budget = RetryBudget(0.0, 0.0, clock=clock)  # the budget would refuse everything
    retry_policy = RetryPolicy(SETTINGS, budget, BackoffSchedule(0.025, 0.25, lambda: 0.5))
    assert decide(retry_policy, **overrides).reason == reason
    assert decide(retry_policy).reason == "budget"
