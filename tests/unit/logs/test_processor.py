"""LogProcessor's API: what push/flush_idle/flush return and when, first_pending,
pending_lines, service and container fields, structured events, limits and counters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from sidecars.logs.model import LogLine
from sidecars.logs.pending import split_line
from sidecars.logs.processor import LogProcessor
from sidecars.observability import LOG_ADAPTER_METRICS
from sidecars.settings import load_log_adapter

NOW = 1795694400.0  # the clock fixture's start: 2026-11-26T12:00:00Z
Make = Callable[..., LogProcessor]


def line(text: str = "", stream_key: str = "app", **fields: Any) -> LogLine:
    return LogLine(text=text, received_at=NOW, input="stdin", stream_key=stream_key, **fields)


def metric(name: str, **labels: str) -> float:
    return LOG_ADAPTER_METRICS.get_sample_value(name, labels) or 0.0


def test_a_line_stays_pending_until_the_next_line_of_its_stream(make_processor: Make) -> None:
    processor = make_processor()
    assert processor.push([line("first")]) == []
    assert processor.pending_lines == 1
    records = processor.push([line("second")])
    assert [record["message"] for record in records] == ["first"]
    assert [record["message"] for record in processor.flush()] == ["second"]
    assert processor.pending_lines == 0


def test_flush_idle_emits_only_streams_idle_longer_than_the_timeout(
    make_processor: Make, clock: Any
) -> None:
    processor = make_processor(MULTILINE_TIMEOUT="500ms")
    processor.push([line("quiet stream", stream_key="a")])
    clock.advance(0.3)
    processor.push([line("busy stream", stream_key="b")])
    assert processor.flush_idle() == []
    clock.advance(0.25)  # a: 0.55 s idle, b: 0.25 s
    assert [r["message"] for r in processor.flush_idle()] == ["quiet stream"]
    clock.advance(0.3)
    assert [r["message"] for r in processor.flush_idle()] == ["busy stream"]
    assert processor.flush() == []


def test_flush_streams_emits_only_the_streams_of_those_keys(make_processor: Make) -> None:
    processor = make_processor()
    processor.push([line("ERROR:app:boom", stream_key="gone"),
                    line("Traceback (most recent call last):", stream_key="gone"),
                    line("kept", stream_key="open"),
                    line("part one ", stream_key="cut",
                         fields={"partial_message": "true", "partial_id": "p",
                                 "partial_ordinal": 1, "partial_last": "false"})])
    flushed = processor.flush_streams(["gone", "cut", "unknown"])
    assert sorted(record["message"] for record in flushed) == ["boom", "part one "]
    assert processor.pending_lines == 1
    assert [record["message"] for record in processor.flush()] == ["kept"]


def test_a_stack_trace_waits_for_the_line_after_it(make_processor: Make, clock: Any) -> None:
    processor = make_processor()
    out = processor.push(
        [line("ERROR:app:boom"), line("Traceback (most recent call last):"),
         line('  File "x.py", line 1, in <module>')]
    )
    assert out == []
    clock.advance(0.1)
    assert processor.flush_idle() == []  # not idle long enough: more frames may come
    out = processor.push([line("ValueError: bad"), line("INFO:app:next")])
    assert len(out) == 1
    assert out[0]["error"]["type"] == "ValueError"
    assert out[0]["message"] == "boom"


def test_stdout_and_stderr_are_grouped_apart(make_processor: Make) -> None:
    processor = make_processor()
    records = processor.push(
        [
            line("ERROR:app:request failed", stream="stderr"),
            line("GET / 200", stream="stdout"),
            line("Traceback (most recent call last):", stream="stderr"),
            line("GET /x 200", stream="stdout"),
            line('  File "app.py", line 3, in handle', stream="stderr"),
            line("KeyError: 'x'", stream="stderr"),
        ]
    ) + processor.flush()
    by_stream = {(r["stream"], r["message"]): r for r in records}
    assert set(by_stream) == {
        ("stdout", "GET / 200"), ("stdout", "GET /x 200"), ("stderr", "request failed")
    }
    assert by_stream["stderr", "request failed"]["error"]["type"] == "KeyError"


def test_first_pending_is_the_oldest_line_not_yet_in_a_record(make_processor: Make) -> None:
    processor = make_processor()
    key = "/var/log/app.log"
    texts = ["one", "ERROR:app:two", "Traceback (most recent call last):", "  frame"]
    offsets = [0, 4, 18, 53]
    pairs = zip(texts, offsets, strict=True)
    out = processor.push([line(text, stream_key=key, offset=offset) for text, offset in pairs])
    assert [r["message"] for r in out] == ["one"]
    pending = processor.first_pending(key)
    assert pending is not None and pending.offset == 4  # "two" and its trace are pending
    assert processor.first_pending("another file") is None
    processor.flush()
    assert processor.first_pending(key) is None


def test_first_pending_sees_a_partial_line_before_a_group(make_processor: Make) -> None:
    processor = make_processor()
    key = "/var/log/containers/web.log"
    processor.push(
        [
            line("2026-11-26T10:00:00.000000000Z stderr F waiting group", stream_key=key, offset=0),
            line("2026-11-26T10:00:01.000000000Z stdout P half of a li", stream_key=key,
                 offset=53),
        ]
    )
    pending = processor.first_pending(key)
    assert pending is not None and pending.offset == 0
    assert processor.pending_lines == 2


def test_service_is_the_setting_then_container_then_the_line(make_processor: Make) -> None:
    json_line = '{"msg":"hi","service":"from-line"}'
    from_setting = make_processor(SERVICE="checkout")
    record = from_setting.push([line(json_line, container_name="/web")]) + from_setting.flush()
    assert record[0]["service"] == "checkout"
    assert record[0]["container_name"] == "web"  # Docker's leading "/" dropped
    assert record[0]["attributes"]["service"] == "from-line"  # kept, not lost

    from_container = make_processor()
    record = from_container.push([line(json_line, container_name="/web")])
    record += from_container.flush()
    assert record[0]["service"] == "web"

    from_line = make_processor()
    record = from_line.push([line(json_line)]) + from_line.flush()
    assert record[0]["service"] == "from-line"
    assert "attributes" not in record[0]

    nothing = make_processor()
    assert (nothing.push([line("plain")]) + nothing.flush())[0]["service"] == "unknown"


def test_records_lead_with_the_schema_fields(make_processor: Make) -> None:
    processor = make_processor()
    record = (
        processor.push(
            [line('{"z":1,"msg":"m","level":"warn"}', stream="stdout", container_id="abc123")]
        )
        + processor.flush()
    )[0]
    assert list(record)[:7] == [
        "timestamp", "level", "message", "service", "stream", "container_id", "attributes"
    ]


def test_timestamp_falls_back_to_the_input_then_the_receive_time(make_processor: Make) -> None:
    processor = make_processor()
    records = processor.push(
        [line("no time here", timestamp=1795687200.25), line("none here either")]
    ) + processor.flush()
    assert records[0]["timestamp"] == "2026-11-26T10:00:00.250000Z"
    assert records[1]["timestamp"] == "2026-11-26T12:00:00.000000Z"


def test_static_fields_are_added_to_every_record(make_processor: Make) -> None:
    ecs = {"cluster": "prod", "task_arn": "arn:aws:ecs:eu-west-1:1:task/a", "container_name": "web"}
    processor = make_processor(static_fields={"ecs": ecs})
    records = processor.push([line("a"), line('{"msg":"b"}')]) + processor.flush()
    assert [record["ecs"] for record in records] == [ecs, ecs]


def test_structured_events_are_normalised_like_json(make_processor: Make) -> None:
    processor = make_processor()
    event = line(
        "", stream_key="tag:app.web", tag="app.web", timestamp=1795687200.0,
        fields={"level": "warning", "msg": "cache cold", "hits": 0, "password": "x"},
    )
    [record] = processor.push([event])
    assert record["level"] == "warn"
    assert record["message"] == "cache cold"
    assert record["timestamp"] == "2026-11-26T10:00:00.000000Z"
    assert record["attributes"] == {"hits": 0, "password": "[REDACTED:secret_field]"}
    assert event.fields is not None and event.fields["password"] == "x"  # input untouched


def test_a_structured_event_after_a_pending_line_keeps_the_order(make_processor: Make) -> None:
    processor = make_processor()
    out = processor.push([line("text first", stream_key="k"),
                          line(stream_key="k", fields={"msg": "event second"})])
    assert [record["message"] for record in out] == ["text first", "event second"]


def test_a_docker_record_handed_over_whole_is_a_text_line(make_processor: Make) -> None:
    processor = make_processor()
    record = {
        "container_id": "3f1c", "container_name": "/orders", "source": "stderr",
        "log": "2026-11-26 10:00:00,000 ERROR orders: out of stock",
        "ecs_cluster": "prod",
    }
    [out] = processor.push([line(stream_key="3f1c", fields=record)]) + processor.flush()
    assert out["message"] == "out of stock"
    assert out["level"] == "error"
    assert (out["stream"], out["container_id"], out["container_name"]) == (
        "stderr", "3f1c", "orders"
    )
    assert out["service"] == "orders"
    assert out["attributes"] == {"ecs_cluster": "prod"}


def test_docker_forward_partials_are_stitched_in_order(make_processor: Make) -> None:
    processor = make_processor()
    parts = ["{\"level\":\"error\",\"msg\":\"", "x" * 10, "\"}"]
    pushed = [
        line(
            part, stream_key="c1", stream="stdout", container_id="c1",
            fields={"partial_message": "true", "partial_id": "p1",
                    "partial_ordinal": str(number), "partial_last": str(number == 3).lower()},
        )
        for number, part in enumerate(parts, 1)
    ]
    assert processor.push(pushed[:2]) == []
    assert processor.pending_lines == 2
    records = processor.push(pushed[2:]) + processor.flush()
    assert [(r["level"], r["message"]) for r in records] == [("error", "x" * 10)]


def test_a_partial_that_never_ends_is_emitted_when_idle(make_processor: Make, clock: Any) -> None:
    processor = make_processor()
    processor.push([line("2026-11-26T10:00:00.000000000Z stdout P no final part")])
    assert processor.flush_idle() == []
    clock.advance(1)
    assert [r["message"] for r in processor.flush_idle()] == ["no final part"]


def test_syslog_hint_parses_as_syslog_in_auto_mode(make_processor: Make) -> None:
    processor = make_processor()
    [record] = processor.push(
        [line("<11>Nov 26 10:00:00 host app[3]: disk failed", format_hint="syslog"),
         line("<11>x", format_hint="syslog")]
    )
    assert record["level"] == "error"
    assert record["service"] == "app"


@pytest.mark.parametrize(
    ("log_format", "text", "expected_format", "expected_message"),
    [
        ("json", '{"msg":"ok"}', "json", "ok"),
        ("json", "level=info msg=ok", "unparsed", "level=info msg=ok"),
        ("logfmt", "level=info msg=ok", "logfmt", "ok"),
        ("logfmt", '{"msg":"ok"}', "unparsed", '{"msg":"ok"}'),
        ("clf", '::1 - - [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1', "clf",
         "GET / HTTP/1.1"),
        ("syslog", "<14>1 2026-11-26T10:00:00Z h a - - - hello", "syslog", "hello"),
        ("raw", "ERROR {\"not\": \"parsed\"}", "raw", "ERROR {\"not\": \"parsed\"}"),
        ("regex:^(?P<level>\\w+) (?P<message>.*)$", "WARN low disk", "regex", "low disk"),
        ("cri", "2026-11-26T10:00:00.000000000Z stdout F {\"msg\":\"in cri\"}", "json",
         "in cri"),
    ],
)
def test_forced_formats(
    make_processor: Make, log_format: str, text: str, expected_format: str, expected_message: str
) -> None:
    before = metric("logadapter_records_format_total", format=expected_format)
    processor = make_processor(FORMAT=log_format)
    [record] = processor.push([line(text)]) + processor.flush()
    assert record["message"] == expected_message
    assert metric("logadapter_records_format_total", format=expected_format) == before + 1
    assert processor.totals["formats"] == {expected_format: 1}


def test_a_line_over_max_line_bytes_is_split_into_marked_records(make_processor: Make) -> None:
    before = metric("logadapter_records_truncated_total", reason="max_line_bytes")
    processor = make_processor(MAX_LINE_BYTES="1KiB")
    text = "é" * 1000  # 2000 bytes
    records = processor.push([line("before"), line(text), line("after")]) + processor.flush()
    assert (records[0]["message"], records[-1]["message"]) == ("before", "after")
    pieces = records[1:-1]
    assert "".join(r["message"] for r in pieces) == text  # nothing lost
    assert [r["attributes"] for r in pieces] == [
        {"truncated": True, "part": "1/2"}, {"truncated": True, "part": "2/2"}
    ]
    assert all(len(r["message"].encode()) <= 1024 for r in pieces)
    assert metric("logadapter_records_truncated_total", reason="max_line_bytes") == before + 1


def test_split_line_cuts_on_character_boundaries() -> None:
    assert split_line("abcdef", 4) == ["abcd", "ef"]
    assert split_line("ab€cd", 4) == ["ab", "€c", "d"]  # € is 3 bytes
    assert "".join(split_line("😀" * 10, 5)) == "😀" * 10


def test_a_group_over_multiline_max_bytes_continues_in_a_new_record(
    make_processor: Make,
) -> None:
    before = metric("logadapter_records_truncated_total", reason="multiline_max_bytes")
    processor = make_processor(MULTILINE_MAX_BYTES="200")
    frames = [f"\tat com.example.Deep.call{n}(Deep.java:{n})" for n in range(20)]
    texts = ["ERROR boom", "java.lang.IllegalStateException: deep", *frames, "INFO next"]
    records = processor.push([line(t) for t in texts]) + processor.flush()
    assert records[-1]["message"] == "next"
    trace_parts = records[:-1]
    assert len(trace_parts) > 1
    assert trace_parts[0]["attributes"]["truncated"] is True
    assert all(part["attributes"].get("continued") for part in trace_parts[1:])
    joined = "\n".join(
        part.get("error", {}).get("stack_trace") or part["message"] for part in trace_parts
    )
    for frame in frames:  # every line is in some record
        assert frame in joined
    assert metric(
        "logadapter_records_truncated_total", reason="multiline_max_bytes"
    ) == before + len(trace_parts) - 1


def test_multiline_off_emits_every_line_at_once(make_processor: Make) -> None:
    processor = make_processor(MULTILINE="off")
    records = processor.push(
        [line("Traceback (most recent call last):"), line("  frame"), line(""), line("x")]
    )
    assert [r["message"] for r in records] == ["Traceback (most recent call last):", "  frame", "x"]


def test_blank_lines_outside_a_group_are_skipped(make_processor: Make) -> None:
    processor = make_processor()
    records = processor.push([line(""), line("   "), line("a"), line(""), line("b")])
    records += processor.flush()
    assert [r["message"] for r in records] == ["a", "b"]


def test_invalid_utf8_replacement_characters_are_kept(make_processor: Make) -> None:
    processor = make_processor()
    text = b"caf\xe9 \xff level=info".decode("utf-8", "replace")
    [record] = processor.push([line(text)]) + processor.flush()
    assert "\ufffd" in record["message"]
    orjson.dumps(record)


def test_counters_reach_prometheus_once_per_call(make_processor: Make) -> None:
    json_before = metric("logadapter_records_format_total", format="json")
    groups_before = metric("logadapter_multiline_groups_total")
    bearer_before = metric("logadapter_redactions_total", rule="bearer")
    processor = make_processor()
    processor.push(
        [line('{"msg":"a"}'), line('{"msg":"b"}'), line("ERROR x"), line("  continued"),
         line("Authorization: Bearer abcdefghijklmnop")]
    )
    processor.flush()
    assert metric("logadapter_records_format_total", format="json") == json_before + 2
    assert metric("logadapter_multiline_groups_total") == groups_before + 1
    assert metric("logadapter_redactions_total", rule="bearer") == bearer_before + 1
    assert processor.totals["multiline_groups"] == {"total": 1}
    assert processor.totals["redactions"] == {"bearer": 1}


def test_redaction_off_leaves_secrets(make_processor: Make) -> None:
    processor = make_processor(REDACT="off")
    [record] = processor.push([line("password=hunter2")]) + processor.flush()
    assert record["attributes"] == {"password": "hunter2"}


def test_an_invalid_redact_setting_is_a_value_error() -> None:
    # The settings reject it first (exit 2); the processor does not trust that.
    settings = dataclasses.replace(load_log_adapter({}), redact="default,([unclosed")
    with pytest.raises(ValueError, match="not a regular expression"):
        LogProcessor(settings)
