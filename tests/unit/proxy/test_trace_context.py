"""W3C Trace Context through the proxy: traceparent kept, replaced or begun, the sidecar's own
span id upstream, tracestate passed on, the ids in the access line, and P_TRACE_CONTEXT=off."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sidecars.observability import PROXY_METRICS
from sidecars.proxy.headers import (
    IDS_PER_DRAW,
    TRACESTATE_MAX,
    TraceContext,
    bounded_tracestate,
    parse_traceparent,
)
from sidecars.proxy.request import RequestHead

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
# What the dice give: 24 bytes, a trace id then a span id (a continued trace takes the span).
NEW_TRACE = "0123456789abcdef0123456789abcdef"
NEW_SPAN = "fedcba9876543210"


def dice(*draws: str) -> Callable[[int], bytes]:
    """randbytes giving ``draws`` (hex, 24 bytes each) in turn, then NEW_TRACE + NEW_SPAN
    every time (asked for IDS_PER_DRAW of them at once)."""
    queued = list(draws)

    def randbytes(size: int) -> bytes:
        assert size == 24 * IDS_PER_DRAW
        pairs = [queued.pop(0) if queued else NEW_TRACE + NEW_SPAN for _ in range(IDS_PER_DRAW)]
        return bytes.fromhex("".join(pairs))

    return randbytes


def headers(sent: bytes, name: bytes) -> list[bytes]:
    values = []
    for line in sent.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b": ")
        if key.lower() == name.lower():
            values.append(value)
    return values


def replaced_total() -> float:
    labels = {"sidecar": "ambassador", "upstream": "backend.internal"}
    return PROXY_METRICS.get_sample_value("sidecar_traceparent_replaced_total", labels) or 0.0


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (CLIENT_TRACEPARENT, (CLIENT_TRACE, CLIENT_SPAN, "01")),
        (f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00", (CLIENT_TRACE, CLIENT_SPAN, "00")),
        # A later version: read as version 00, whatever follows a dash; flags cut to sampled.
        (f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-03-more", (CLIENT_TRACE, CLIENT_SPAN, "01")),
        (f"cc-{CLIENT_TRACE}-{CLIENT_SPAN}-02", (CLIENT_TRACE, CLIENT_SPAN, "00")),
        (f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-01x", None),
        (f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-more", None),  # version 00 is 55 bytes
        (f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01", None),
        (f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01", None),
        (f"00-{'0' * 32}-{CLIENT_SPAN}-01", None),
        (f"00-{CLIENT_TRACE}-{'0' * 16}-01", None),
        (f"00-{CLIENT_TRACE[:-1]}-{CLIENT_SPAN}-01", None),
        ("", None),
    ],
)
def test_traceparent_values(value: str, parsed: tuple[str, str, str] | None) -> None:
    expected = None if parsed is None else tuple(part.encode() for part in parsed)
    assert parse_traceparent(value.encode()) == expected


def test_tracestate_is_kept_whole_up_to_its_bound_then_cut_as_the_spec_says() -> None:
    fitting = b",".join(b"k%d=%s" % (n, b"v" * 40) for n in range(11))
    assert len(fitting) <= TRACESTATE_MAX
    assert bounded_tracestate(fitting) is fitting
    big = b"big=" + b"x" * 200
    members = [b"k%d=%s" % (n, b"v" * 60) for n in range(10)]  # 63 bytes each, 639 in all
    cut = bounded_tracestate(b",".join([members[0], big, *members[1:]]))
    assert cut is not None
    # The member over 128 bytes went first, then members from the end until it fits.
    assert cut == b",".join(members[:8])  # 511 bytes
    assert bounded_tracestate(b",".join([big, big, big])) is None


async def test_a_request_without_trace_context_begins_a_trace(wire: Any) -> None:
    w = wire("ambassador", randbytes=dice())
    await w.send(b"GET / HTTP/1.1\r\nHost: a\r\nTracestate: lone=1\r\n\r\n")
    sent = w.sent_upstream()
    assert headers(sent, b"traceparent") == [f"00-{NEW_TRACE}-{NEW_SPAN}-01".encode()]
    assert headers(sent, b"tracestate") == []  # a tracestate alone belongs to no trace
    await w.answer(OK)
    line = w.access_lines()[-1]
    assert (line["trace_id"], line["span_id"], line["parent_span_id"]) == (
        NEW_TRACE,
        NEW_SPAN,
        None,
    )


async def test_a_valid_traceparent_is_continued_with_the_sidecars_own_span(wire: Any) -> None:
    w = wire("ambassador", randbytes=dice())
    before = replaced_total()
    await w.send(
        b"GET / HTTP/1.1\r\nHost: a\r\ntraceparent: %b\r\n"
        b"tracestate: congo=t61rcWkgMzE\r\nTraceState: rojo=00f067aa0ba902b7\r\n\r\n"
        % CLIENT_TRACEPARENT.encode()
    )
    sent = w.sent_upstream()
    assert headers(sent, b"traceparent") == [f"00-{CLIENT_TRACE}-{NEW_SPAN}-01".encode()]
    assert headers(sent, b"tracestate") == [b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"]
    await w.answer(OK)
    line = w.access_lines()[-1]
    assert (line["trace_id"], line["span_id"], line["parent_span_id"]) == (
        CLIENT_TRACE,
        NEW_SPAN,
        CLIENT_SPAN,
    )
    assert replaced_total() == before


@pytest.mark.parametrize(
    "trace_headers",
    [
        b"traceparent: 00-%b-%b-01\r\n" % (b"0" * 32, CLIENT_SPAN.encode()),
        b"traceparent: garbage\r\ntracestate: congo=1\r\n",
        # Two traceparent headers: which one is meant cannot be told.
        b"traceparent: %b\r\ntraceparent: %b\r\n" % ((CLIENT_TRACEPARENT.encode(),) * 2),
    ],
)
async def test_an_invalid_traceparent_is_replaced_by_a_new_trace(
    wire: Any, trace_headers: bytes
) -> None:
    w = wire("ambassador", randbytes=dice())
    before = replaced_total()
    await w.send(b"GET / HTTP/1.1\r\nHost: a\r\n%b\r\n" % trace_headers)
    sent = w.sent_upstream()
    assert headers(sent, b"traceparent") == [f"00-{NEW_TRACE}-{NEW_SPAN}-01".encode()]
    assert headers(sent, b"tracestate") == []
    await w.answer(OK)
    assert w.access_lines()[-1]["trace_id"] == NEW_TRACE
    assert replaced_total() == before + 1


async def test_every_attempt_carries_the_same_span(wire: Any) -> None:
    w = wire("ambassador", randbytes=dice(), backoff_base="0", backoff_max="0")
    await w.send(
        b"GET / HTTP/1.1\r\nHost: a\r\ntraceparent: %b\r\n\r\n" % CLIENT_TRACEPARENT.encode()
    )
    first = w.sent_upstream()
    await w.answer(UNAVAILABLE)
    second = w.sent_upstream()
    assert headers(second, b"X-Sidecar-Attempt") == [b"2"]
    expected = [f"00-{CLIENT_TRACE}-{NEW_SPAN}-01".encode()]
    assert headers(first, b"traceparent") == headers(second, b"traceparent") == expected
    await w.answer(OK)
    line = w.access_lines()[-1]
    assert (line["attempts"], line["span_id"]) == (2, NEW_SPAN)


async def test_an_id_of_zeros_is_drawn_again(wire: Any) -> None:
    w = wire("ambassador", randbytes=dice("00" * 16 + "ab" * 8, "cd" * 16 + "00" * 8))
    await w.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert headers(w.sent_upstream(), b"traceparent") == [f"00-{NEW_TRACE}-{NEW_SPAN}-01".encode()]


async def test_a_request_the_sidecar_refuses_is_logged_with_a_trace(wire: Any) -> None:
    w = wire("ambassador", randbytes=dice())
    await w.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400, no attempt
    assert w.received().startswith(b"HTTP/1.1 400")
    line = w.access_lines()[-1]
    assert (line["status"], line["trace_id"], line["span_id"]) == (400, NEW_TRACE, NEW_SPAN)


async def test_off_adds_nothing_and_forwards_the_clients_trace_context_as_it_came(
    wire: Any,
) -> None:
    w = wire("ambassador", trace_context="off")
    await w.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert headers(w.sent_upstream(), b"traceparent") == []
    await w.answer(OK)
    await w.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nTraceParent: garbage\r\ntracestate: congo=1\r\n\r\n"
    )
    sent = w.sent_upstream()
    assert b"\r\nTraceParent: garbage\r\ntracestate: congo=1\r\n" in sent
    await w.answer(OK)
    for line in w.access_lines():
        assert not {"trace_id", "span_id", "parent_span_id"} & line.keys()


def test_ids_are_sliced_from_draws_for_many_requests_and_never_zero() -> None:
    """One draw serves IDS_PER_DRAW requests; a zero id is skipped, at a draw's end too."""
    zero_trace = "00" * 16 + "ab" * 8
    zero_span = "cd" * 16 + "00" * 8
    pairs = [f"{n:032x}{n + 1:016x}" for n in range(1, 2 * IDS_PER_DRAW + 1)]
    pairs[5] = zero_trace
    pairs[IDS_PER_DRAW - 1] = zero_span  # the last pair of the first draw
    draws = []

    def randbytes(size: int) -> bytes:
        assert size == 24 * IDS_PER_DRAW
        start = len(draws) * IDS_PER_DRAW
        draws.append(start)
        return bytes.fromhex("".join(pairs[start : start + IDS_PER_DRAW]))

    context = TraceContext(randbytes)
    seen = []
    for _ in range(2 * IDS_PER_DRAW - 2):
        head = RequestHead()
        assert context.begin(head) is False
        assert (len(head.trace_id), len(head.span_id), head.trace_flags) == (32, 16, b"01")
        seen.append((head.trace_id + head.span_id).decode())
    assert len(draws) == 2
    assert seen == [pair for pair in pairs if pair not in (zero_trace, zero_span)]


def test_a_continued_trace_takes_a_sliced_span_id() -> None:
    context = TraceContext(dice())
    head = RequestHead()
    head.trace_lines = [b"traceparent", b": ", CLIENT_TRACEPARENT.encode(), b"\r\n"]
    assert context.begin(head) is False
    assert (head.trace_id, head.parent_id, head.span_id) == (
        CLIENT_TRACE.encode(),
        CLIENT_SPAN.encode(),
        NEW_SPAN.encode(),
    )
