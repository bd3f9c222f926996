"""The sans-IO parts of the remote outputs: PutLogEvents planning within CloudWatch's limits,
the OTel mapping, and the retry schedule."""

from __future__ import annotations

import os

import orjson

from sidecars.logs.record_metrics import RecordMetrics
from sidecars.logs.sinks import RetryLater
from sidecars.logs.sinks.cloudwatch_events import (
    EVENT_OVERHEAD,
    MAX_CALL_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS,
    MAX_SPAN_MS,
    LogEvent,
    events_of,
    plan_calls,
    rejected_counts,
    stream_name,
)
from sidecars.logs.sinks.emf import EmfReporter
from sidecars.logs.sinks.otlp import endpoint_url
from sidecars.logs.sinks.otlp_mapping import resource_of, scope_of, to_otel
from sidecars.logs.sinks.retry import RETRY_MAX, RetrySchedule
from sidecars.logs.sinks.stdout import StdoutSink

NOW_MS = 1_795_687_200_000
DAY_MS = 24 * 3600 * 1000


def event(timestamp: int, size: int = 30) -> LogEvent:
    return LogEvent(timestamp, "x" * (size - EVENT_OVERHEAD), size)


def test_calls_hold_at_most_10000_events() -> None:
    calls = plan_calls([event(NOW_MS)] * (MAX_EVENTS * 2 + 1))
    assert [len(call) for call in calls] == [MAX_EVENTS, MAX_EVENTS, 1]


def test_calls_hold_at_most_1_mib_counting_26_bytes_an_event() -> None:
    size = 1000
    per_call = MAX_CALL_BYTES // size
    calls = plan_calls([event(NOW_MS, size)] * (per_call + 1))
    assert [len(call) for call in calls] == [per_call, 1]
    exact = plan_calls([event(NOW_MS, MAX_CALL_BYTES // 4)] * 4)
    assert [len(call) for call in exact] == [4]  # exactly at the limit fits


def test_calls_are_chronological_and_span_less_than_24_hours() -> None:
    times = [NOW_MS - 2 * DAY_MS, NOW_MS, NOW_MS - DAY_MS + 1, NOW_MS - 2 * DAY_MS + 5]
    calls = plan_calls([event(t) for t in times])
    for call in calls:
        stamps = [e.timestamp for e in call]
        assert stamps == sorted(stamps)
        assert stamps[-1] - stamps[0] < MAX_SPAN_MS
    assert [e.timestamp for call in calls for e in call] == sorted(times)


def test_an_oversize_record_is_split_into_marked_parts() -> None:
    message = "é" * 200_000  # 400,000 bytes of UTF-8
    record = {"timestamp": "2026-11-26T09:00:00Z", "message": message, "service": "s",
              "attributes": {"part": "2/3"}}
    line = orjson.dumps(record).decode()
    events, restamped = events_of(record, line, NOW_MS, 14 * DAY_MS)
    assert restamped is None
    assert len(events) == 2
    assert all(e.size <= MAX_EVENT_BYTES for e in events)
    parts = [orjson.loads(e.message) for e in events]
    assert "".join(p["message"] for p in parts) == message
    assert [p["attributes"]["part"] for p in parts] == ["2/3 1/2", "2/3 2/2"]
    assert all(e.timestamp == NOW_MS - 3600 * 1000 for e in events)  # the record's own time


def test_a_record_large_outside_its_message_is_carried_whole() -> None:
    record = {"message": "short", "service": "s", "attributes": {"blob": "q" * 300_000}}
    line = orjson.dumps(record).decode()
    events, _ = events_of(record, line, NOW_MS, 14 * DAY_MS)
    assert all(e.size <= MAX_EVENT_BYTES for e in events)
    assert "".join(orjson.loads(e.message)["message"] for e in events) == line


def test_times_cloudwatch_would_refuse_are_replaced_by_now() -> None:
    def stamp(iso: str, max_age_days: int = 14) -> tuple[int, str | None]:
        record = {"timestamp": iso, "message": "m"}
        events, why = events_of(record, orjson.dumps(record).decode(), NOW_MS,
                                max_age_days * DAY_MS)
        return events[0].timestamp, why

    assert stamp("2026-11-26T10:00:00Z") == (NOW_MS, None)
    assert stamp("2026-11-01T10:00:00Z") == (NOW_MS, "too_old")
    assert stamp("2026-11-26T13:00:00Z") == (NOW_MS, "too_new")
    assert stamp("2026-11-24T10:00:00Z", max_age_days=1) == (NOW_MS, "too_old")
    assert stamp("2026-11-26T11:00:00Z")[1] is None


def test_rejected_events_by_reason() -> None:
    assert rejected_counts({"tooNewLogEventStartIndex": 7}, 10) == {"cloudwatch_too_new": 3}
    assert rejected_counts({"tooOldLogEventEndIndex": 1, "expiredLogEventEndIndex": 3}, 10) == {
        "cloudwatch_too_old": 2,
        "cloudwatch_expired": 2,
    }


def test_stream_names_from_the_template() -> None:
    record = {"service": "web", "container_name": "/app", "ecs": {"task_arn": "arn:aws:ecs:x"}}
    assert stream_name("{service}/{container_id}", record) == "web/unknown"
    assert stream_name("{service}/{container_name}/{ecs.task_arn}", record) == (
        "web/app/arn_aws_ecs_x"
    )


def test_otel_mapping() -> None:
    record = {
        "timestamp": "2026-11-26T10:00:00.000001Z",
        "level": "error",
        "message": "boom",
        "service": "web",
        "container_id": "c0ffee",
        "ecs": {"cluster": "prod", "task_arn": "arn:t"},
        "logger": "app.db",
        "stream": "stderr",
        "trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736",
        "span_id": "not-hex",
        "error": {"type": "KeyError", "message": "x", "stack_trace": "..."},
        "attributes": {"order": 1},
        "extra": True,
    }
    otel = to_otel(record, 0)
    assert otel.time_unix_nano == NOW_MS * 1_000_000 + 1000
    assert (otel.severity_number, otel.severity_text, otel.body) == (17, "ERROR", "boom")
    assert otel.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert otel.span_id is None
    attributes = dict(otel.attributes)
    assert attributes["span_id"] == "not-hex"
    assert attributes["exception.type"] == "KeyError"
    assert attributes["log.iostream"] == "stderr"
    assert attributes["order"] == 1
    assert attributes["extra"] is True
    assert dict(resource_of(record)) == {
        "service.name": "web",
        "container.id": "c0ffee",
        "cloud.provider": "aws",
        "cloud.platform": "aws_ecs",
        "aws.ecs.cluster.arn": "prod",
        "aws.ecs.task.arn": "arn:t",
    }
    assert scope_of(record) == "app.db"


def test_otlp_endpoint_path() -> None:
    assert endpoint_url("otlp+http://otel:4318") == "http://otel:4318/v1/logs"
    assert endpoint_url("otlp+https://otel/custom/logs") == "https://otel/custom/logs"


def test_retry_schedule_full_jitter_or_retry_after() -> None:
    schedule = RetrySchedule(random=lambda: 1.0)
    delays = [schedule.failed("x").delay for _ in range(10)]
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert delays[-1] == RETRY_MAX
    assert isinstance(schedule.failed("x", retry_after=7.0), RetryLater)
    assert schedule.failed("x", retry_after=7.0).delay == 7.0
    assert RetrySchedule(random=lambda: 0.0).failed("x").delay == 0.0  # full jitter: from 0
    schedule.succeeded()
    assert schedule.failed("x").delay == 0.1


async def test_emf_reports_what_was_counted_since_the_last_report() -> None:
    metrics = RecordMetrics(max_services=1)
    reporter = EmfReporter("shop", StdoutSink(os.open(os.devnull, os.O_WRONLY)), metrics,
                           clock=lambda: NOW_MS / 1000)
    metrics.count([{"service": "web", "level": "warn"}] * 2 + [{"service": "db", "level": "x"}])
    first = reporter.due_records()
    assert [(r["service"], r["level"], r["LogRecords"]) for r in first] == [
        ("web", "warn", 2), ("other", "other", 1)
    ]
    assert first[0]["_aws"] == {
        "Timestamp": NOW_MS,
        "CloudWatchMetrics": [{"Namespace": "shop", "Dimensions": [["service", "level"]],
                               "Metrics": [{"Name": "LogRecords", "Unit": "Count"}]}],
    }
    assert reporter.due_records() == []
    metrics.count([{"service": "web", "level": "warn", "http": {"status": 502}}])
    assert [(r["service"], r.get("level") or r["status_class"]) for r in
            reporter.due_records()] == [("web", "warn"), ("web", "5xx")]
