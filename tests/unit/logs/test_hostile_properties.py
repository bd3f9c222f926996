"""Properties over hostile shapes (deep nesting, odd types, huge values) on the paths of every
input: a JSON line (stdin, tail, syslog) or a Forward event (every mode) never raises out of
the processor or the buffer's encoding, never costs its neighbours, and comes out (or is
counted as dropped) bounded in depth. Run in both builds: ``make test-compiled`` runs this
file against the mypyc-compiled processor."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecars.logs.buffer import encode_records
from sidecars.logs.depth import MAX_DEPTH
from sidecars.logs.forward_protocol import ForwardMessage, decode_message, new_unpacker
from sidecars.logs.model import LogLine, Record
from sidecars.logs.processor import LogProcessor
from sidecars.logs.sources.forward import events_to_parts
from sidecars.logs.sources.syslog import message_text
from sidecars.settings import load_log_adapter

NOW = 1795694400.0


def nested(levels: int, leaf: Any, as_list: bool) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value] if as_list else {"k": value}
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.integers(min_value=0, max_value=200_000).map(lambda n: "h" * n),  # huge values
)
keys = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.sampled_from(
    ["message", "msg", "level", "time", "ts", "error", "err", "log", "source", "stack",
     "trace_id", "service", "container_name", "partial_message", "partial_id", "password"]
))
shapes = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.builds(nested, st.integers(0, 400), children, st.booleans()),  # deep nesting
    ),
    max_leaves=12,
)
records = st.dictionaries(keys, shapes, max_size=5)


def depth_of(value: Any) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def processor(**env: str) -> LogProcessor:
    settings_ = load_log_adapter({f"LOGADAPTER_{key}": value for key, value in env.items()})
    return LogProcessor(settings_, clock=lambda: NOW)


def no_record_failed(*processors: LogProcessor) -> None:
    """The guard that keeps one record's failure to that record (counted as dropped,
    ``processor_error``) is a last resort: none of these shapes needs it."""
    for used in processors:
        assert used.totals["dropped"]["processor_error"] == 0


def encoded(out: list[Record]) -> list[dict[str, Any]]:
    """The buffer's JSON lines, decoded: each a record within the depth bound."""
    decoded = [orjson.loads(line) for line in encode_records(out).splitlines()]
    for record in decoded:
        assert depth_of(record) <= MAX_DEPTH + 3, record  # record, attributes, docker_attrs
    return decoded


def messages(decoded: list[dict[str, Any]]) -> list[str]:
    return [record["message"] for record in decoded]


def json_text(value: Any) -> str:
    """A JSON line for ``value`` (orjson's own limits aside: those lines stay text)."""
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return repr(value)[:10_000]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=3))
def test_json_lines_on_stdin_tail_and_syslog(values: list[dict[Any, Any]]) -> None:
    texts = ["before", *(json_text(value) for value in values), "after"]
    for env in ({}, {"FORMAT": "json"}, {"REDACT": "off"}, {"MULTILINE": "off"}):
        stdin = processor(**env)
        out = stdin.push_lines(texts, LogLine("", NOW, "stdin", "stdin"))
        got = messages(encoded(out + stdin.flush()))
        assert got[0] == "before" and got[-1] == "after"
        tail = processor(**env)
        lines = [LogLine(text, NOW, "tail", "t", offset=n) for n, text in enumerate(texts)]
        got = messages(encoded(tail.push(lines) + tail.flush()))
        assert got[0] == "before" and got[-1] == "after"
        no_record_failed(stdin, tail)
    syslog = processor()
    framed = [message_text(f"<14>1 2026-11-26T10:00:00Z h app 1 - - {text}".encode())
              for text in texts]
    lines = [LogLine(text, NOW, "syslog", "s", format_hint="syslog") for text in framed]
    got = messages(encoded(syslog.push(lines) + syslog.flush()))
    assert got[0] == "before" and got[-1] == "after"
    no_record_failed(syslog)


def forward_requests(events: list[dict[Any, Any]]) -> list[bytes]:
    """The events in every carrier mode, as msgpack bytes (what a sender puts on the wire)."""
    packer = msgpack.Packer(use_bin_type=True)
    entries = [[NOW, event] for event in events]
    packed = b"".join(packer.pack(entry) for entry in entries)
    return [
        b"".join(packer.pack(["app", NOW, event]) for event in events),
        packer.pack(["app", entries, {"chunk": "f"}]),
        packer.pack(["app", packed, {"chunk": "p"}]),
    ]


def packable(value: Any) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=3), st.booleans())
def test_forward_events_in_every_mode(values: list[dict[Any, Any]], docker: bool) -> None:
    if docker:  # Docker/FireLens records: the odd values ride along as extra keys
        values = [{**value, "log": "odd", "source": "stdout", "container_id": "c"}
                  for value in values]
    values = [value for value in values if packable(value)]
    events = [{"message": "before"}, *values, {"message": "after"}]
    for request in forward_requests(events):
        unpacker = new_unpacker()
        unpacker.feed(request)
        try:
            decoded = [decode_message(value) for value in unpacker]
            messages_ = [message for message in decoded if isinstance(message, ForwardMessage)]
        except ValueError:  # msgpack's own nesting limit: the connection is closed, counted
            continue
        forward = processor()
        out: list[Record] = []
        for part in events_to_parts(messages_, NOW):
            if isinstance(part, list):
                out += forward.push(part)
            else:
                out += forward.push_lines(
                    part.texts, part.like, times=part.times, extra=part.extra, unwrap=part.unwrap
                )
        got = messages(encoded(out + forward.flush()))
        assert "before" in got and "after" in got
        assert got.index("before") < got.index("after")
        no_record_failed(forward)


def test_nan_and_huge_integers_are_encoded() -> None:
    fields: dict[Any, Any] = {"n": math.nan, "i": 2**64 - 1, 7: b"\xff"}  # msgpack makes these
    out = processor().push([LogLine("", NOW, "forward", "f", fields=fields)])
    (record,) = encoded(out)
    assert record["attributes"]["7"] == "b'\\xff'"
