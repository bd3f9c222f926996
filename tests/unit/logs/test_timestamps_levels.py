"""Timestamps to RFC 3339 UTC with microseconds, year inference, and level mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sidecars.logs import levels, timestamps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T10:00:00Z", "2026-11-26T10:00:00.000000Z"),
        ("2026-11-26T10:00:00.123Z", "2026-11-26T10:00:00.123000Z"),
        ("2026-11-26T10:00:00.123456789Z", "2026-11-26T10:00:00.123456Z"),  # truncated
        ("2026-11-26T10:00:00.999999999Z", "2026-11-26T10:00:00.999999Z"),  # not rounded up
        ("2026-11-26 10:00:00,123", "2026-11-26T10:00:00.123000Z"),  # Python asctime
        ("2026-11-26 10:00:00", "2026-11-26T10:00:00.000000Z"),  # no zone: UTC
        ("2026-11-26T11:30:00+01:30", "2026-11-26T10:00:00.000000Z"),
        ("2026-11-26T05:00:00.5-05:00", "2026-11-26T10:00:00.500000Z"),
        ("2026-11-26 10:00:00 +0000", "2026-11-26T10:00:00.000000Z"),
        ("2026-11-27T00:30:00+0100", "2026-11-26T23:30:00.000000Z"),
        ("2026-01-01T00:30:00+01", "2025-12-31T23:30:00.000000Z"),  # across a year
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000000Z"),
    ],
)
def test_iso_timestamps(text: str, expected: str) -> None:
    assert timestamps.from_iso(text) == expected
    assert timestamps.from_iso(text) == expected  # second time from the cache


@pytest.mark.parametrize(
    "text",
    ["2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2026-11-26T25:00:00Z", "2026-11-26",
     "2026-11-26T10:00:00.Z", "2026-11-26T10:00:00 junk", "2026-11-26x10:00:00Z",
     "2026-11-26T10:00:00+25:00", "abcd-ef-ghTij:kl:mn"],
)
def test_invalid_iso_timestamps_are_none(text: str) -> None:
    assert timestamps.from_iso(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1795687200, "2026-11-26T10:00:00.000000Z"),  # seconds
        (1795687200.25, "2026-11-26T10:00:00.250000Z"),
        (1795687200123, "2026-11-26T10:00:00.123000Z"),  # milliseconds (pino)
        (1795687200123456, "2026-11-26T10:00:00.123456Z"),  # microseconds
        (1795687200123456789, "2026-11-26T10:00:00.123456Z"),  # nanoseconds (OTel)
        (1795687200123.0, "2026-11-26T10:00:00.123000Z"),
        (1795687200.9999996, "2026-11-26T10:00:01.000000Z"),
    ],
)
def test_epoch_timestamps(value: float, expected: str) -> None:
    assert timestamps.from_epoch(value) == expected


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), 10**30])
def test_unusable_epochs_are_none(value: float) -> None:
    assert timestamps.from_epoch(value) is None


def test_text_timestamps_may_be_iso_or_epoch_digits() -> None:
    assert timestamps.from_text("1795687200.5") == "2026-11-26T10:00:00.500000Z"
    assert timestamps.from_text("1795687200123") == "2026-11-26T10:00:00.123000Z"
    assert timestamps.from_text("2026-11-26T10:00:00Z") == "2026-11-26T10:00:00.000000Z"
    assert timestamps.from_text("yesterday") is None
    assert timestamps.from_text("12abc") is None


def _at(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("month", "day", "now", "year"),
    [
        (11, 26, _at(2026, 11, 26), 2026),
        (12, 31, _at(2027, 1, 1), 2026),  # a December line read in January: last year
        (1, 2, _at(2026, 12, 31), 2026),  # in the past: this year
        (12, 1, _at(2026, 11, 26), 2026),  # 5 days ahead (clock skew): still this year
        (12, 5, _at(2026, 11, 26), 2025),  # more than a few days ahead: last year
        (2, 29, _at(2027, 3, 1), 2024),  # no 29 February in 2027: the last leap year
    ],
)
def test_year_inference(month: int, day: int, now: float, year: int) -> None:
    assert timestamps.infer_year(month, day, now) == year


def test_month_day_lines_get_their_inferred_year() -> None:
    now = _at(2027, 1, 1)
    assert timestamps.from_month_day(12, 31, "23:59:59.5", now) == "2026-12-31T23:59:59.500000Z"
    assert timestamps.from_month_day(1, 1, "00:00:01", now) == "2027-01-01T00:00:01.000000Z"


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("warning", "warn"), ("WARNING", "warn"), ("Warn", "warn"), ("critical", "fatal"),
        ("CRITICAL", "fatal"), ("panic", "fatal"), ("emerg", "fatal"), ("alert", "fatal"),
        ("crit", "fatal"), ("err", "error"), ("eror", "error"), ("SEVERE", "error"),
        ("notice", "info"), ("informational", "info"), ("dbug", "debug"), ("FINE", "debug"),
        ("finest", "trace"), ("Trace", "trace"), (" info ", "info"), ("I", "info"),
        ("E", "error"), ("success", "info"),
    ],
)
def test_level_names(raw: str, level: str) -> None:
    assert levels.from_name(raw) == level


def test_unknown_level_names_are_none() -> None:
    assert levels.from_name("loud") is None
    assert levels.from_value(True) is None
    assert levels.from_value(None) is None


@pytest.mark.parametrize(
    ("number", "level"),
    [(10, "trace"), (20, "debug"), (30, "info"), (35, "info"), (40, "warn"), (50, "error"),
     (60, "fatal"), (70, "fatal"), (0, "trace")],
)
def test_pino_bunyan_numbers(number: int, level: str) -> None:
    assert levels.from_number(number) == level
    assert levels.from_value(number) == level
    assert levels.from_value(str(number)) == level


@pytest.mark.parametrize(
    ("number", "level"),
    [(1, "trace"), (4, "trace"), (5, "debug"), (9, "info"), (13, "warn"), (17, "error"),
     (21, "fatal"), (24, "fatal"), (0, None), (25, None)],
)
def test_opentelemetry_severity_numbers(number: int, level: str | None) -> None:
    assert levels.from_severity_number(number) == level


def test_syslog_severities() -> None:
    assert levels.SYSLOG_SEVERITIES == (
        "fatal", "fatal", "fatal", "error", "warn", "info", "info", "debug"
    )
