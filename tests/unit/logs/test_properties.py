"""Properties over generated input: the processor never fails, every record fits the schema,
and no line is lost."""

from __future__ import annotations

import itertools
import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.logs.buffer import encode_records
from sidecars.logs.formats import logfmt
from sidecars.logs.model import LogLine, Record
from sidecars.logs.processor import LogProcessor
from sidecars.settings import load_log_adapter

NOW = 1795694400.0
RFC3339_MICROS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
LEVELS = {"trace", "debug", "info", "warn", "error", "fatal"}

# Pieces of every format, recombined with arbitrary text, so the parsers meet both well-formed
# and broken lines.
PREFIXES = [
    "", "{", '{"msg":', '{"level":', "<13>", "<165>1 ", "2026-11-26T10:00:00Z ", "2026/11/26 ",
    "[2026-11-26 10:00:00] ", "I1126 10:00:00.000000 1 a.go:1] ", "E, [2026-11-26T10:00:00 #1] ",
    "level=", "ts=1795687200 msg=", "1.2.3.4 - - [26/Nov/2026:10:00:00 +0000] \"",
    "Traceback (most recent call last):", "  File ", "\tat ", "Caused by: ", "panic: ",
    "goroutine 1 [running]:", "java.lang.Error: ", "ValueError: ", "    at f (a.js:1:2)",
    "2026-11-26T10:00:00.000000000Z stdout P ", "2026-11-26T10:00:00.000000000Z stderr F ",
    '{"log":"x","stream":"stdout","time":"t"}', "password=", "Bearer ", "4111 1111 1111 1111",
]
line_text = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(PREFIXES),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
            max_size=80),
)


def run(texts: list[str], env: dict[str, str], streams: list[str] | None = None) -> list[Record]:
    processor = LogProcessor(load_log_adapter(env), clock=lambda: NOW)
    lines = [
        LogLine(text=text, received_at=NOW, input="stdin", stream_key="k",
                stream=(streams[index % len(streams)] if streams else None))
        for index, text in enumerate(texts)
    ]
    middle = len(lines) // 2
    records = processor.push(lines[:middle]) + processor.push(lines[middle:])
    records += processor.flush_idle() + processor.flush()
    assert processor.pending_lines == 0
    return records


def check_schema(record: Record) -> None:
    assert RFC3339_MICROS.fullmatch(record["timestamp"]), record
    assert record["level"] in LEVELS
    assert isinstance(record["message"], str)
    assert isinstance(record["service"], str) and record["service"]
    encode_records([record])  # what the outputs write (Forward events' keys may be ints)


@settings(max_examples=300, deadline=None)
@given(st.lists(line_text, max_size=30), st.sampled_from(["auto", "json", "logfmt", "cri"]))
def test_any_input_gives_schema_records(texts: list[str], log_format: str) -> None:
    for record in run(texts, {"LOGADAPTER_FORMAT": log_format}, ["stdout", "stderr"]):
        check_schema(record)


# The keys the normaliser reads, with values of every JSON type (and what else a Forward event
# may carry: integer keys, msgpack bin values): a value of an unexpected type goes to
# attributes, never fails.
ALIASED_KEYS = ["msg", "message", "event", "log", "level", "severity", "lvl", "levelname",
                "time", "ts", "timestamp", "@timestamp", "logger", "trace_id", "span_id",
                "service", "error", "source", "container_name", "partial_message", "x"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),  # what msgpack can carry
    st.floats(), st.text(max_size=12), st.binary(max_size=6),
    st.sampled_from(["info", "30", "2026-11-26T10:00:00Z", "1795687200.5", "nan", "-1", ""]),
)
json_like = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                         inner, max_size=3),
    max_leaves=6,
)
events = st.dictionaries(st.sampled_from(ALIASED_KEYS) | st.integers(0, 3), json_like, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, min_size=1, max_size=12))
def test_json_lines_and_forward_events_of_any_value_types_give_schema_records(
    batch: list[dict[str, Any]],
) -> None:
    processor = LogProcessor(load_log_adapter({}), clock=lambda: NOW)
    option = orjson.OPT_NON_STR_KEYS
    texts = [orjson.dumps(event, default=str, option=option).decode() for event in batch]
    like = LogLine(text="", received_at=NOW, input="stdin", stream_key="k")
    records = processor.push_lines(texts, like)
    records += processor.push([
        LogLine(text="", received_at=NOW, input="forward", stream_key="f", fields=event,
                timestamp=NOW)
        for event in batch
    ])
    records += processor.flush()
    for record in records:
        check_schema(record)


def texts_of(record: dict[str, Any]) -> str:
    error = record.get("error", {})
    return "\n".join([record["message"], error.get("stack_trace", "")])


@settings(max_examples=300, deadline=None)
@given(st.lists(line_text, max_size=30))
def test_no_line_is_lost(texts: list[str]) -> None:
    records = run(texts, {"LOGADAPTER_FORMAT": "raw", "LOGADAPTER_REDACT": "off"})
    everything = "\n".join(texts_of(record) for record in records)
    for text in texts:
        if text.strip():
            assert text in everything


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab é€😀", min_size=1, max_size=400), st.integers(8, 64))
def test_long_lines_are_split_without_loss(text: str, limit: int) -> None:
    env = {"LOGADAPTER_FORMAT": "raw", "LOGADAPTER_REDACT": "off", "LOGADAPTER_MULTILINE": "off",
           "LOGADAPTER_MAX_LINE_BYTES": str(limit)}
    text = "x" + text  # not blank
    records = run([text], env)
    assert "".join(record["message"] for record in records) == text
    assert all(len(record["message"].encode()) <= limit for record in records)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60).filter(lambda t: "\n" not in t and t.strip()),
       st.lists(st.integers(1, 59), max_size=4))
def test_cri_parts_give_the_same_record_as_the_whole_line(text: str, cuts: list[int]) -> None:
    stamp = "2026-11-26T10:00:00.000000000Z"
    bounds = sorted({0, len(text), *(cut for cut in cuts if cut < len(text))})
    parts = [text[start:end] for start, end in itertools.pairwise(bounds)]
    tags = ["P"] * (len(parts) - 1) + ["F"]
    split = [f"{stamp} stdout {tag} {part}" for tag, part in zip(tags, parts, strict=True)]
    whole = run([f"{stamp} stdout F {text}"], {})
    assert run(split, {}) == whole


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='ab= "\\x.', max_size=40))
def test_the_fast_logfmt_reader_agrees_with_the_exact_one(text: str) -> None:
    fast = logfmt.simple_pairs(text)
    if fast is not None:
        assert (fast, 0) == logfmt.pairs(text)
