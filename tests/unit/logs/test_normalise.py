"""Structured data -> record fields: key aliases, precedence, ids, errors, what is kept."""

from __future__ import annotations

from typing import Any

import pytest

from sidecars.logs import normalise, stacktrace


@pytest.mark.parametrize("key", ["msg", "message", "event", "@message", "log", "body"])
def test_message_aliases(key: str) -> None:
    assert normalise.from_mapping({key: "hello"}) == {"message": "hello"}


@pytest.mark.parametrize(
    "key", ["level", "severity", "lvl", "levelname", "log.level", "loglevel", "SeverityText"]
)
def test_level_aliases(key: str) -> None:
    assert normalise.from_mapping({key: "WARNING"}) == {"level": "warn"}


@pytest.mark.parametrize("key", ["time", "ts", "timestamp", "@timestamp", "asctime", "t"])
def test_time_aliases(key: str) -> None:
    fields = normalise.from_mapping({key: "2026-11-26T10:00:00Z"})
    assert fields == {"timestamp": "2026-11-26T10:00:00.000000Z"}


def test_the_alias_listed_first_wins_whatever_the_key_order() -> None:
    fields = normalise.from_mapping({"msg": "second", "message": "first", "event": "third"})
    assert fields["message"] == "first"
    assert fields["attributes"] == {"msg": "second", "event": "third"}


def test_unusable_values_stay_in_attributes_unchanged() -> None:
    data = {"level": "loud", "time": "soon", "logger": 42, "trace_id": 1.5, "service": 7}
    fields = normalise.from_mapping(data)
    assert fields == {"attributes": data}


def test_a_second_usable_alias_does_not_replace_the_first() -> None:
    fields = normalise.from_mapping({"level": "info", "severity": "ERROR"})
    assert fields == {"level": "info", "attributes": {"severity": "ERROR"}}


@pytest.mark.parametrize(
    ("data", "trace_id", "span_id"),
    [
        ({"trace_id": "a1", "span_id": "b2"}, "a1", "b2"),
        ({"traceId": "a1", "spanId": "b2"}, "a1", "b2"),
        ({"trace.id": "a1", "span.id": "b2"}, "a1", "b2"),
        ({"dd.trace_id": 123, "dd.span_id": 456}, "123", "456"),
        ({"otelTraceID": "a1", "otelSpanID": "b2"}, "a1", "b2"),
        ({"trace": {"id": "a1"}, "span": {"id": "b2"}}, "a1", "b2"),
        ({"dd": {"trace_id": "1", "span_id": "2"}}, "1", "2"),
        ({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
         "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
    ],
)
def test_trace_and_span_ids(data: dict[str, Any], trace_id: str, span_id: str) -> None:
    fields = normalise.from_mapping(data)
    assert (fields["trace_id"], fields["span_id"]) == (trace_id, span_id)
    assert "attributes" not in fields


def test_a_malformed_traceparent_is_kept() -> None:
    fields = normalise.from_mapping({"traceparent": "nope"})
    assert fields == {"attributes": {"traceparent": "nope"}}


def test_error_objects_and_traceback_strings() -> None:
    pino = normalise.from_mapping(
        {"err": {"type": "Error", "message": "boom", "stack": "Error: boom\n    at f (a.js:1:1)",
                 "code": "E42"}}
    )
    assert pino["error"] == {
        "type": "Error", "message": "boom", "stack_trace": "Error: boom\n    at f (a.js:1:1)"
    }
    assert pino["attributes"] == {"err": {"code": "E42"}}

    structlog = normalise.from_mapping(
        {"exception": "Traceback (most recent call last):\n  File \"a.py\", line 1\nOSError: x"}
    )
    assert structlog["error"]["type"] == "OSError"
    assert structlog["error"]["message"] == "x"

    zap = normalise.from_mapping({"error": "refused", "stacktrace": "main.f\n\t/a.go:1"})
    assert zap["error"] == {"message": "refused", "stack_trace": "main.f\n\t/a.go:1"}

    ecs_flat = normalise.from_mapping({"error.type": "E", "error.message": "m"})
    assert ecs_flat["error"] == {"type": "E", "message": "m"}


def test_ecs_nested_log_and_service() -> None:
    fields = normalise.from_mapping(
        {"log": {"level": "error", "logger": "app.db", "origin": {"line": 3}},
         "service": {"name": "orders", "version": "2"}}
    )
    assert fields == {
        "level": "error", "logger": "app.db", "service": "orders",
        "attributes": {"log": {"origin": {"line": 3}}, "service": {"version": "2"}},
    }


def test_numbers_and_objects_as_messages_become_text() -> None:
    assert normalise.from_mapping({"msg": 42}) == {"message": "42"}
    assert normalise.from_mapping({"msg": {"a": 1}}) == {"message": '{"a":1}'}
    assert normalise.from_mapping({"msg": None}) == {"attributes": {"msg": None}}


def test_owned_data_is_reused_other_data_is_copied() -> None:
    data = {"msg": "m", "extra": 1}
    fields = normalise.from_mapping(data)
    assert data == {"msg": "m", "extra": 1}
    owned = normalise.from_mapping(data, owned=True)
    assert owned["attributes"] is data
    assert fields == owned


@pytest.mark.parametrize(
    ("trace", "kind", "error_type", "message"),
    [
        ("Traceback (most recent call last):\n  File \"a.py\", line 1\nValueError: bad value",
         None, "ValueError", "bad value"),
        ("Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyboardInterrupt",
         None, "KeyboardInterrupt", ""),
        ("java.lang.IllegalStateException: closed\n\tat A.b(A.java:1)", None,
         "java.lang.IllegalStateException", "closed"),
        ('Exception in thread "main" java.lang.Error\n\tat A.b(A.java:1)', "java",
         "java.lang.Error", ""),
        ("panic: boom [recovered]\n\ngoroutine 1 [running]:", None, "panic", "boom"),
        ("fatal error: all goroutines are asleep - deadlock!", "go", "fatal error",
         "all goroutines are asleep - deadlock!"),
        ("app.rb:3:in `div': divided by 0 (ZeroDivisionError)\n\tfrom app.rb:7:in `<main>'",
         None, "ZeroDivisionError", "divided by 0"),
        ("TypeError: x is undefined\n    at f (a.js:1:2)", None, "TypeError", "x is undefined"),
    ],
)
def test_describe_stack_traces(trace: str, kind: Any, error_type: str, message: str) -> None:
    error = stacktrace.describe(trace, kind)
    assert (error["type"], error["message"], error["stack_trace"]) == (error_type, message, trace)


def test_describe_without_an_error_name_uses_the_context() -> None:
    error = stacktrace.describe("    at f (a.js:1:2)", "stack", "Request failed")
    assert error == {"message": "Request failed", "stack_trace": "    at f (a.js:1:2)"}


def sidecar_event(event: str, **fields: Any) -> dict[str, Any]:
    """A sidecar's JSON event, keys in the order every sidecar writes them."""
    return {
        "timestamp": "2026-11-26T10:00:00.000001Z",
        "level": "info",
        "sidecar": "breaker",
        "logger": "sidecars.proxy.access" if event == "access" else "sidecars.proxy",
        "event": event,
        **fields,
    }


ACCESS = {
    "upstream": "payments",
    "method": "POST",
    "path": "/charge?x=1",
    "status": 503,
    "attempts": 0,
    "duration": 0.000412,
    "bytes": 96,
    "request_id": "ad95-1",
    "remote_addr": "127.0.0.1",
    "user_agent": "curl/8",
}


def test_a_proxy_access_line_fills_http_service_and_level() -> None:
    fields = normalise.from_mapping(sidecar_event("access", **ACCESS))
    assert fields == {
        "message": "POST /charge?x=1",
        "level": "error",  # by the status, as for a web server's access line
        "timestamp": "2026-11-26T10:00:00.000001Z",
        "logger": "sidecars.proxy.access",
        "service": "breaker",
        "http": {
            "method": "POST",
            "path": "/charge?x=1",
            "status": 503,
            "bytes": 96,
            "remote_addr": "127.0.0.1",
            "user_agent": "curl/8",
            "duration": 0.000412,
        },
        "attributes": {"upstream": "payments", "attempts": 0, "request_id": "ad95-1"},
    }
    # The access line of a client without a user agent; ids when the line carries them.
    line = sidecar_event("access", **{**ACCESS, "status": 200, "user_agent": None})
    line["traceparent"] = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    fields = normalise.from_mapping(line)
    assert "user_agent" not in fields["http"]
    assert (fields["level"], fields["trace_id"], fields["span_id"]) == ("info", "a" * 32, "b" * 16)


def test_any_sidecar_event_names_its_service_and_the_shape_decides() -> None:
    fields = normalise.from_mapping(sidecar_event("circuit_transition", to="open"))
    assert (fields["message"], fields["service"], fields["logger"]) == (
        "circuit_transition",
        "breaker",
        "sidecars.proxy",
    )
    assert fields["attributes"] == {"to": "open"}
    # The same keys in another order are an application's line: nothing is taken as a sidecar's.
    data = {"event": "access", "sidecar": "x", **ACCESS}
    fields = normalise.from_mapping(data)
    assert "http" not in fields and "service" not in fields
    assert fields["attributes"]["sidecar"] == "x"
    # An "access" event without a request's fields stays as it is.
    fields = normalise.from_mapping(sidecar_event("access", path="/x"))
    assert "http" not in fields and fields["attributes"] == {"path": "/x"}


def test_a_sidecar_event_is_never_taken_by_the_schema_record_fast_path() -> None:
    data = sidecar_event("access", **ACCESS)
    assert normalise.schema_record(data, None, None) is None
    assert data == sidecar_event("access", **ACCESS)  # left as it was, for from_mapping
