"""Format detection and the format parsers, line by line."""

from __future__ import annotations

from typing import Any

import pytest

from sidecars.logs import detect
from sidecars.logs.formats import access, cri, docker, klog, logfmt, regex, syslog, text

NOW = 1795694400.0  # 2026-11-26T12:00:00Z


@pytest.mark.parametrize(
    ("line", "expected_format"),
    [
        ('{"msg":"x"}', "json"),
        ('{"broken', "text"),
        ("[1, 2]", "text"),
        ("level=info msg=x", "logfmt"),
        ("_key=1 other=2", "logfmt"),
        ("x=1 is not how sentences go", "text"),
        ('1.2.3.4 - - [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1', "clf"),
        ('::1 - - [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1', "clf"),
        ('host.example - - [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1', "clf"),
        ("2026/11/26 10:00:00 [error] 1#1: boom", "nginx_error"),
        ("2026/11/26 10:00:00 go log line", "text"),
        ("<13>1 2026-11-26T10:00:00Z h a - - - m", "syslog"),
        ("<13>Nov 26 10:00:00 h a: m", "syslog"),
        ("Nov 26 10:00:00 h a[1]: m", "syslog"),
        ("<not syslog>", "text"),
        ("I1126 10:00:00.000000 1 a.go:1] m", "klog"),
        ("I1126 is not klog", "text"),
        ("2026-11-26 10:00:00,000 INFO a: m", "text"),
        ("E, [2026-11-26T10:00:00.000000 #1] ERROR -- : m", "text"),
        ("WARNING:root:m", "text"),
        ("", "text"),
    ],
)
def test_auto_detection(line: str, expected_format: str) -> None:
    assert detect.detect(line, NOW)[0] == expected_format


def test_cri_lines() -> None:
    assert cri.unwrap("2026-11-26T10:00:00.1Z stdout F hello world") == (
        "2026-11-26T10:00:00.1Z", "stdout", False, "hello world"
    )
    assert cri.unwrap("2026-11-26T10:00:00.1Z stderr P part") == (
        "2026-11-26T10:00:00.1Z", "stderr", True, "part"
    )
    assert cri.unwrap("2026-11-26T10:00:00.1Z stdout F") == (
        "2026-11-26T10:00:00.1Z", "stdout", False, ""
    )
    assert cri.unwrap("2026-11-26T10:00:00.1Z stdin F x") is None
    assert cri.unwrap("2026-11-26 10:00:00,1 stdout F x") is None
    assert cri.unwrap("2026-11-26T10:00:00.1Z stdout X x") is None


def test_docker_json_file_entries() -> None:
    whole = docker.unwrap({"log": "hi\n", "stream": "stderr", "time": "2026-11-26T10:00:00Z"})
    assert whole == ("2026-11-26T10:00:00Z", "stderr", False, "hi", None)
    part = docker.unwrap({"log": "h", "stream": "stdout", "time": "t"})
    assert part is not None and part.partial
    assert docker.unwrap({"log": "x\r\n", "stream": "stdout"}) == (None, "stdout", False, "x", None)
    assert docker.unwrap({"log": "x\n", "msg": "not docker", "stream": "s"}) is None
    assert docker.unwrap({"log": 3, "stream": "stdout"}) is None


def test_logfmt_values_and_flags() -> None:
    data, stray = logfmt.pairs('a=1 b="two words" c="esc \\"q\\"" flag d= e=x=y')
    assert data == {"a": "1", "b": "two words", "c": 'esc "q"', "flag": True, "d": "", "e": "x=y"}
    assert stray == 1
    record = logfmt.parse('level=warn msg="m" n=1', NOW)
    assert record == {"level": "warn", "message": "m", "attributes": {"n": "1"}}


def test_access_extras_and_times() -> None:
    record = access.parse(
        '10.0.0.1 - bob [26/Nov/2026:11:00:00 +0100] "GET /a HTTP/1.1" 503 10 "-" "ua" '
        '"1.1.1.1" request_time=1.5 custom=x 7',
        NOW,
    )
    assert record is not None
    assert record["timestamp"] == "2026-11-26T10:00:00.000000Z"
    assert record["level"] == "error"
    assert record["http"]["duration"] == 1.5
    assert record["http"]["remote_user"] == "bob"
    assert record["attributes"] == {"x_forwarded_for": "1.1.1.1", "custom": "x", "extra": ["7"]}
    assert access.clf_time("26/Xyz/2026:10:00:00 +0000") is None
    assert access.parse("not an access line", NOW) is None


def test_syslog_pri_out_of_range_is_not_syslog() -> None:
    assert syslog.parse("<192>Nov 26 10:00:00 h a: m", NOW) is None
    assert syslog.parse("<13>garbage without a timestamp", NOW) is None


def test_syslog_facility_and_severity() -> None:
    record = syslog.parse("<191>1 2026-11-26T10:00:00Z h app - - - m", NOW)
    assert record is not None
    assert record["attributes"]["syslog"]["facility"] == "local7"
    assert record["attributes"]["syslog"]["severity"] == "debug"
    assert record["level"] == "debug"


def test_klog_structured_message() -> None:
    record = klog.parse('W1126 10:00:00.5 7 a.go:1] "Quoted \\"msg\\"" k="v w" n=3', NOW)
    assert record == {
        "level": "warn", "message": 'Quoted "msg"', "timestamp": "2026-11-26T10:00:00.500000Z",
        "attributes": {"thread": 7, "source": "a.go:1", "k": "v w", "n": "3"},
    }


def test_time_only_heads_take_todays_date() -> None:
    record = text.parse("23:59:59.999 [main] INFO a.B - m", NOW)
    assert record["timestamp"] == "2026-11-26T23:59:59.999000Z"


@pytest.mark.parametrize(
    ("line", "level", "message"),
    [
        ("ERROR something", "error", "something"),
        ("[WARN] low disk", "warn", "low disk"),
        ("fatal: not a git repository", "fatal", "not a git repository"),
        ("the ERROR is in the middle", "error", "the ERROR is in the middle"),
        ("an error in lower case is just a word", None, "an error in lower case is just a word"),
        ("informative text", None, "informative text"),
    ],
)
def test_plain_text_level_words(line: str, level: str | None, message: str) -> None:
    record = text.parse(line, NOW)
    assert record.get("level") == level
    assert record["message"] == message


def test_regex_format_maps_schema_groups() -> None:
    parse = regex.compile_parser(
        r"(?P<remote_addr>\S+) (?P<method>\w+) (?P<path>\S+) (?P<status>\d+) (?P<duration>[\d.]+)"
        r" (?P<time>\S+) (?P<level>\w+)(?: (?P<trace_id>\w+))? (?P<user>\w+)"
    )
    record: dict[str, Any] | None = parse(
        "1.2.3.4 GET /x 404 0.25 2026-11-26T10:00:00Z warn alice", NOW
    )
    assert record == {
        "timestamp": "2026-11-26T10:00:00.000000Z", "level": "warn",
        "http": {"remote_addr": "1.2.3.4", "method": "GET", "path": "/x", "status": 404,
                 "duration": 0.25},
        "attributes": {"user": "alice"},
        "message": "1.2.3.4 GET /x 404 0.25 2026-11-26T10:00:00Z warn alice",
    }
    assert parse("no match", NOW) is None


@pytest.mark.parametrize(
    ("line", "logger", "thread", "message"),
    [
        # Python: "%(asctime)s %(levelname)s [%(name)s] %(message)s"
        ("2026-11-26 10:00:00,123 INFO [payments] message", "payments", None, "message"),
        ("2026-11-26 10:00:00,123 WARNING [payments.api] card declined", "payments.api", None,
         "card declined"),
        # log4j "%d %-5p [%t] %c - %m" and logback "%d [%thread] %-5level %logger - %msg"
        ("2026-11-26 10:00:00,123 ERROR [main] c.e.App - boom", "c.e.App", "main", "boom"),
        ("2026-11-26 10:00:00.123 [main] INFO  c.e.App - started", "c.e.App", "main", "started"),
    ],
)
def test_a_bracket_after_the_level_is_the_logger_unless_one_follows(
    line: str, logger: str, thread: str | None, message: str
) -> None:
    record = text.parse_stamped(line, NOW)
    assert record is not None
    assert record["logger"] == logger
    assert record.get("attributes", {}).get("thread") == thread
    assert record["message"] == message
