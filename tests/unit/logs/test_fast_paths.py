"""The fast paths against the general ones they stand in for: ``push_lines`` against ``push``,
``Redactor.suspects`` against ``Redactor.scan``, ``normalise.schema_record`` against
``from_mapping`` and the processor's merge, the access and logfmt lanes against ``detect``,
the canonical-timestamp shortcut against the full reading. Each must give exactly the same
records (or answer), on the realistic corpus and on generated input."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.logs import detect, levels, normalise, timestamps
from sidecars.logs.formats import access
from sidecars.logs.forward_protocol import ForwardMessage
from sidecars.logs.model import LogLine, Record
from sidecars.logs.pipeline import LineRun
from sidecars.logs.processor import LogProcessor
from sidecars.logs.redact import Redactor
from sidecars.logs.sources.forward import event_to_line, events_to_parts
from sidecars.settings import load_log_adapter

NOW = 1795694400.0  # 2026-11-26T12:00:00Z
CORPUS = Path(__file__).parent / "corpus"

# Pieces of lines in every format and of every secret the default rules know, recombined.
PIECES = [
    "", "{", "}", '{"msg":"', '","level":"warn"', '"time":"2026-11-26T10:00:00.000001Z"', '"', ",",
    "2026-11-26T10:00:00.123456Z ", "2026-11-26 10:00:00,123 INFO [app] ", "level=info msg=",
    'msg="a b" ', "k=v ", "I1126 10:00:00.000000 1 a.go:1] ", "<13>Nov 26 10:00:00 h a: ",
    '1.2.3.4 - - [26/Nov/2026:10:00:00 +0000] "GET /p HTTP/1.1" 200 5 "-" "ua"',
    "Traceback (most recent call last):", "  File x", "\tat a.B(C.java:1)", "Caused by: ",
    "ValueError: v", "password=", "PASSWD: ", "pwd=", "api-key=", "apikey:", "token=", "key ",
    "secret=", "aws_secret_access_key=", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AKIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE", "Bearer abcdefghijk", "bearer ", "eyJ",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "https://u:p@h/", "://", "@",
    "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005", "5555555555554444",
    "2026-11-26 10", "1795687200123", "0.4111111111111111", '"Authorization":"x"',
    '"db_password":1', "\\u0070assword", "é", "\u0130", "\u017f", " ", "=", ":", "'",
]
texts = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)


def processor(**env: str) -> LogProcessor:
    """``STATIC=1`` adds ECS-like static fields to every record."""
    static = {"ecs": {"cluster": "prod"}} if env.pop("STATIC", None) else None
    settings = load_log_adapter({f"LOGADAPTER_{key}": value for key, value in env.items()})
    return LogProcessor(settings, clock=lambda: NOW, static_fields=static)


def canonical(records: list[Record]) -> list[bytes]:
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
    return [orjson.dumps(record, default=str, option=option) for record in records]


def through_push(lines: Sequence[str], batch: int, **env: str) -> tuple[list[bytes], Any]:
    general = processor(**env)
    records: list[Record] = []
    for start in range(0, len(lines), batch):
        chunk = lines[start : start + batch]
        records += general.push([LogLine(text, NOW, "stdin", "app") for text in chunk])
    records += general.flush()
    return canonical(records), general.totals


def through_push_lines(lines: Sequence[str], batch: int, **env: str) -> tuple[list[bytes], Any]:
    fast = processor(**env)
    records: list[Record] = []
    for start in range(0, len(lines), batch):
        # A new ``like`` per batch, as stdin makes one per read.
        like = LogLine("", NOW, "stdin", "app")
        records += fast.push_lines(lines[start : start + batch], like)
    records += fast.flush()
    return canonical(records), fast.totals


def corpus_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted(CORPUS.glob("*.log")):
        lines += path.read_text(encoding="utf-8").split("\n")[:-1]
    return lines


@pytest.mark.parametrize("env", [{}, {"REDACT": "off"}, {"MULTILINE": "off"}, {"FORMAT": "json"},
                                 {"REDACT": "default,employee-\\d{6}"}, {"SERVICE": "shop"},
                                 {"STATIC": "1"}])
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_push_lines_gives_what_push_gives_on_the_corpus(env: dict[str, str], batch: int) -> None:
    lines = corpus_lines()
    assert through_push_lines(lines, batch, **env) == through_push(lines, batch, **env)


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, max_size=30), st.integers(min_value=1, max_value=12))
def test_push_lines_gives_what_push_gives_on_generated_lines(lines: list[str], batch: int) -> None:
    assert through_push_lines(lines, batch) == through_push(lines, batch)


def test_a_pending_line_of_another_run_keeps_its_own_container_and_time() -> None:
    fast = processor()
    api = LogLine("", NOW, "forward", "forward:app:-", container_name="api", tag="app")
    plain = LogLine("", NOW + 5, "forward", "forward:app:-", tag="app")
    assert fast.push_lines(["from the api"], api, times=[1795687200.5], unwrap=False) == []
    first, = fast.push_lines(["no container"], plain, times=[None], unwrap=False)
    assert first["container_name"] == "api"
    assert first["service"] == "api"
    assert first["timestamp"] == "2026-11-26T10:00:00.500000Z"
    last, = fast.flush()
    assert "container_name" not in last
    assert last["timestamp"] == "2026-11-26T12:00:05.000000Z"  # received then


@settings(max_examples=500, deadline=None)
@given(st.lists(texts, min_size=1, max_size=20))
def test_every_text_scan_would_touch_is_a_suspect(lines: list[str]) -> None:
    redactor = Redactor.from_spec("default")
    assert redactor is not None
    suspects = redactor.suspects(lines)
    if suspects is None:
        return  # a character lowered into two: everything is scanned
    for index, text in enumerate(lines):
        if redactor.scan(text) or redactor.scan(text, json_keys(text)):
            assert index in suspects, text


def json_keys(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def test_custom_expressions_make_every_text_a_suspect() -> None:
    redactor = Redactor.from_spec("default,employee-\\d{6}")
    assert redactor is not None
    assert redactor.suspects(["nothing here"]) is None


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 70), st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["info", "WARNING", "2026-11-26T10:00:00.000001Z", "2026-11-26 10:00:00,1",
                     "1795687200", "", "svc", TRACEPARENT]),
    st.dictionaries(st.sampled_from(["id", "name", "x"]), st.text(max_size=4), max_size=2),
)
json_keys_strategy = st.sampled_from(
    ["message", "msg", "event", "log", "level", "severity", "lvl", "time", "ts", "@timestamp",
     "logger", "trace_id", "traceId", "span_id", "service", "service.name", "error", "dd",
     "traceparent", "severity_number", "request_id", "n"]
)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(json_keys_strategy, json_values, max_size=7))
def test_schema_record_is_from_mapping_merged_into_the_defaults(data: dict[str, Any]) -> None:
    before = json.dumps(data)
    built = normalise.schema_record(data, None, "2026-11-26T12:00:00.000000Z")
    if built is None:
        assert json.dumps(data) == before  # untouched, key order too: from_mapping goes on
        return
    fields = normalise.from_mapping(json.loads(before), owned=True)
    hint = fields.pop("service", None)
    merged: Record = {
        "timestamp": "2026-11-26T12:00:00.000000Z", "level": "info", "message": "",
        "service": hint or "unknown",
    }
    merged.update(fields)
    if hint is not None and hint != merged["service"]:
        merged.setdefault("attributes", {}).setdefault("service", hint)
    assert list(built.items()) == list(merged.items())


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([*"0123456789-:T .Z,+aé", "\uff12"]), min_size=27, max_size=27))
def test_the_output_shape_shortcut_agrees_with_the_full_reading(chars: list[str]) -> None:
    base = list("2026-11-26T10:00:00.123456Z")
    for position in range(0, 27, 3):  # vary a third of the characters
        base[position] = chars[position]
    text = "".join(base)
    timestamps.from_iso("2026-11-26T10:00:00.000001Z")  # a recent second for the shortcut
    assert timestamps.from_iso(text) == _full_reading(text)


def _full_reading(text: str) -> str | None:
    """``from_iso`` without the shortcut: the same text with its zone written out."""
    if len(text) == 27 and text[26] == "Z":
        return timestamps.from_iso(text[:26] + "+00:00")
    return timestamps.from_iso(text)


@settings(max_examples=1000, deadline=None)
@given(texts)
def test_the_logfmt_lane_agrees_with_detect(text: str) -> None:
    data = detect.logfmt_data(text)
    fmt, record = detect.detect(text, NOW)
    assert (data is not None) == (fmt == "logfmt")
    if data is not None:
        fields = normalise.from_mapping(data, owned=True)
        fields.setdefault("message", "")
        assert fields == record


@settings(max_examples=500, deadline=None)
@given(texts, st.sampled_from(["GET", "get", "POST"]), st.sampled_from(["/p", "/a b", '/"q']))
def test_the_access_lane_agrees_with_the_full_parser(prefix: str, method: str, path: str) -> None:
    text = f'{prefix}1.2.3.4 - u [26/Nov/2026:10:00:00 +0100] "{method} {path} HTTP/1.1" 404 - ' \
           f'"-" "curl/8"'
    record = access.schema_record(text, "svc")
    if record is not None:
        assert record.pop("service") == "svc"
        assert record == access.parse(text, NOW)
        if detect.looks_like_access(text):  # the lane is taken only where detect goes
            assert detect.detect(text, NOW) == ("clf", record)


def test_numeric_level_text_that_int_cannot_read_is_no_level() -> None:
    assert levels.from_value("¹") is None
    assert levels.from_value("30") == "info"


def test_record_texts_are_lines_with_their_times_and_extra_attributes() -> None:
    """What the Forward input hands over for FireLens records: ``log`` texts (no envelope is
    unwrapped from them), each event's time, the records' other keys as attributes."""
    fast = processor()
    like = LogLine("", NOW, "forward", "forward:c1:stdout", stream="stdout",
                   container_id="c1", container_name="orders", tag="orders-firelens")
    docker_json = '{"log":"inner\\n","stream":"stdout","time":"2026-11-26T10:00:00Z"}'
    lines = [docker_json, "plain text", "no time", '{"msg":"json","time":"2026-11-26T09:00:00Z"}']
    times = [1795687200.5, 1795687200.25, None, 1795687200.75]
    records = fast.push_lines(lines, like, times=times, extra={"ecs_cluster": "shop"},
                              unwrap=False)
    records += fast.flush()
    # A JSON object whose "log" is its message, not a Docker envelope (stdin would unwrap it)
    assert [r["message"] for r in records] == ["inner\n", "plain text", "no time", "json"]
    assert records[0]["attributes"] == {"stream": "stdout", "ecs_cluster": "shop"}
    assert [r["timestamp"] for r in records] == [
        "2026-11-26T10:00:00.000000Z",  # its own
        "2026-11-26T10:00:00.250000Z",  # the event's time: the line has none of its own
        "2026-11-26T12:00:00.000000Z",  # received then: no event time either
        "2026-11-26T09:00:00.000000Z",  # its own
    ]
    for record in records[1:]:
        assert record.get("attributes") == {"ecs_cluster": "shop"}
    for record in records:
        assert (record["stream"], record["container_id"], record["service"]) == (
            "stdout", "c1", "orders"
        )


def through_forward_events(
    texts: Sequence[str], times: Sequence[float | None], extra: dict[str, Any] | None, batch: int,
    *, runs: bool, **env: str,
) -> tuple[list[bytes], Any]:
    """Docker/FireLens records as the Forward input hands them over: in runs
    (``events_to_parts``: ``push_lines`` with each event's time) or one LogLine each
    (``event_to_line``: ``push``)."""
    general = processor(**env)
    records: list[Record] = []
    for start in range(0, len(texts), batch):
        events = [
            (when, {"container_id": "c1", "container_name": "/orders", "source": "stdout",
                    "log": text + "\n", **(extra or {})})
            for text, when in zip(texts[start : start + batch], times[start : start + batch],
                                  strict=True)
        ]
        if runs:
            for part in events_to_parts([ForwardMessage("docker.orders", events, None, "x")],
                                        NOW):
                assert isinstance(part, LineRun)
                records += general.push_lines(part.texts, part.like, times=part.times,
                                              extra=part.extra, unwrap=part.unwrap)
        else:
            lines = [event_to_line("docker.orders", when, record, NOW) for when, record in events]
            records += general.push(lines)
    records += general.flush()
    return canonical(records), general.totals


@pytest.mark.parametrize("env", [{}, {"REDACT": "off"}, {"MULTILINE": "off"}, {"SERVICE": "shop"},
                                 {"STATIC": "1"}])
@pytest.mark.parametrize("extra", [None, {"ecs_cluster": "shop"}])
def test_forward_runs_give_what_records_one_by_one_give_on_the_corpus(
    env: dict[str, str], extra: dict[str, Any] | None
) -> None:
    lines = corpus_lines()
    times = [1795687200.0 + index / 7 if index % 5 else None for index in range(len(lines))]
    fast = through_forward_events(lines, times, extra, 500, runs=True, **env)
    assert fast == through_forward_events(lines, times, extra, 500, runs=False, **env)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(texts, st.sampled_from([None, 1795687200.25, 1795687201.5])),
                max_size=30),
       st.integers(min_value=1, max_value=12))
def test_forward_runs_give_what_records_one_by_one_give_on_generated_lines(
    events: list[tuple[str, float | None]], batch: int
) -> None:
    texts_ = [text for text, _ in events]
    times = [when for _, when in events]
    fast = through_forward_events(texts_, times, None, batch, runs=True)
    assert fast == through_forward_events(texts_, times, None, batch, runs=False)
