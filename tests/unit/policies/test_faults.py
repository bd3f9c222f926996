"""The fault policy: parsing, which request gets which fault, drills and their expiry."""

from __future__ import annotations

import random

import pytest

from sidecars.policies.faults import (
    Drill,
    DrillRefused,
    Drills,
    Fault,
    parse_abort,
    parse_delay,
    parse_reset,
    pick,
)


def test_the_variables_parse() -> None:
    assert parse_abort("503@10%") == Fault("abort", 10.0, status=503)
    assert parse_delay("200ms@5%") == Fault("delay", 5.0, delay=0.2)
    assert parse_reset("2%") == Fault("reset", 2.0)
    assert parse_reset("2.5") == Fault("reset", 2.5)


@pytest.mark.parametrize(
    ("parse", "raw"),
    [
        (parse_abort, "503"),
        (parse_abort, "99@10%"),
        (parse_abort, "299@10%"),  # not a registered status: no reason phrase
        (parse_abort, "503@101%"),
        (parse_delay, "soon@5%"),
        (parse_reset, "-1%"),
    ],
)
def test_bad_values_are_refused(parse: object, raw: str) -> None:
    with pytest.raises(ValueError):
        parse(raw)  # type: ignore[operator]


@pytest.mark.parametrize("share", [2.0, 10.0, 30.0, 75.0])
def test_the_share_of_requests_hit_is_the_percentage(share: float) -> None:
    draw = random.Random(1234).random
    faults = [Fault("abort", share, status=503)]
    trials = 20_000
    hits = sum(pick(faults, b"/", [], draw) is not None for _ in range(trials))
    expected = trials * share / 100
    # Within 4 standard deviations of the binomial expectation.
    sigma = (trials * share / 100 * (1 - share / 100)) ** 0.5
    assert abs(hits - expected) < 4 * sigma


def test_zero_and_hundred_percent_draw_nothing() -> None:
    def no_draw() -> float:
        raise AssertionError("no draw needed")

    assert pick([Fault("reset", 0.0)], b"/", [], no_draw) is None
    assert pick([Fault("reset", 100.0)], b"/", [], no_draw) == Fault("reset", 100.0)


def test_the_first_fault_that_hits_applies() -> None:
    draws = iter([0.5, 0.01])
    faults = [Fault("abort", 10.0, status=503), Fault("delay", 10.0, delay=1.0)]
    assert pick(faults, b"/", [], lambda: next(draws)) == faults[1]


def test_a_fault_may_match_a_path_prefix_or_a_header() -> None:
    by_path = Fault("abort", 100.0, status=500, path_prefix=b"/orders")
    by_header = Fault("abort", 100.0, status=500, header=(b"x-user", b"tester"))
    lines = [b"X-User", b": ", b"tester", b"\r\n"]
    assert by_path.matches(b"/orders/7", [])
    assert not by_path.matches(b"/users", [])
    assert by_header.matches(b"/", lines)
    assert not by_header.matches(b"/", [b"X-User", b": ", b"other", b"\r\n"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_drill_expires_by_itself_and_its_end_is_heard() -> None:
    clock = FakeClock()
    ended: list[tuple[str, str]] = []
    drills = Drills(clock=clock, on_end=lambda d, why: ended.append((d.id, why)))
    drill = drills.add(Fault("abort", 30.0, status=503), 60.0)
    assert drills.faults == (drill.fault,)
    assert drills.active() == [
        {"id": drill.id, "kind": "abort", "percent": 30.0, "status": 503, "remaining": 60.0}
    ]
    clock.now += 59.0
    drills.expire()
    assert drills.faults == (drill.fault,)
    clock.now += 1.0
    drills.expire()
    assert drills.faults == ()
    assert ended == [(drill.id, "expired")]


def test_drills_are_bounded_in_number_and_duration() -> None:
    drills = Drills(clock=FakeClock(), max_active=2, max_seconds=600.0)
    fault = Fault("reset", 5.0)
    with pytest.raises(ValueError):
        drills.add(fault, 601.0)
    with pytest.raises(ValueError):
        drills.add(fault, 0.0)
    drills.add(fault, 10.0)
    drills.add(fault, 10.0)
    with pytest.raises(DrillRefused):
        drills.add(fault, 10.0)


def test_drills_are_deleted_one_or_all_newest_first() -> None:
    ended: list[Drill] = []
    drills = Drills(clock=FakeClock(), on_end=lambda d, why: ended.append(d))
    first = drills.add(Fault("reset", 5.0), 10.0)
    second = drills.add(Fault("abort", 5.0, status=500), 10.0)
    assert drills.faults == (second.fault, first.fault)
    assert drills.remove(first.id) == first
    assert drills.remove(first.id) is None
    assert drills.clear() == [second]
    assert drills.faults == ()
    assert ended == [first, second]
