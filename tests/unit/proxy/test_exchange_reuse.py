"""The exchange a client connection reuses for its next request: reset to exactly a new one's
state, and reused only when nothing holds it (not for pipelined requests waiting)."""

from __future__ import annotations

from typing import Any

from sidecars.proxy.exchange import DONE, Exchange
from sidecars.proxy.request import RequestHead

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n"
# Every header-derived field the engine keeps, and a body.
LOADED = (
    b"PUT /loaded HTTP/1.1\r\nHost: a\r\nUser-Agent: agent\r\nX-Request-Id: given\r\n"
    b"X-Forwarded-For: 10.1.1.1\r\nX-Forwarded-Host: f\r\nX-Forwarded-Proto: https\r\n"
    b"Idempotency-Key: k\r\nConnection: keep-alive, X-Private\r\nX-Private: p\r\n"
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    b"tracestate: v=1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
)


def attributes(cls: type) -> tuple[str, ...]:
    """A class's own fields: ``__slots__``, or in the compiled build (mypyc's native classes
    have none) ``__mypyc_attrs__``, which lists the inherited ones too."""
    return tuple(vars(cls).get("__mypyc_attrs__") or vars(cls)["__slots__"])


def slots() -> list[str]:
    names = list(dict.fromkeys([*attributes(Exchange), *attributes(RequestHead)]))
    assert len(names) > 40  # every field, not an empty list that would prove nothing
    return names


def fields(exchange: Exchange) -> dict[str, Any]:
    return {name: getattr(exchange, name) for name in slots()}


async def test_a_reset_exchange_equals_a_new_one_field_by_field(wire: Any) -> None:
    w = wire("ambassador")
    await w.send(LOADED)
    exchange = w.client.active
    assert exchange is not None
    await w.answer(OK)
    assert exchange.state == DONE
    assert exchange.reusable
    used = fields(exchange)
    exchange.reset()
    fresh = fields(Exchange(w.client, w.route))
    assert fields(exchange) == fresh
    # The request did set what reset undid (the comparison above is not vacuous).
    changed = {name for name in slots() if used[name] != fresh[name]}
    assert {
        "method",
        "target",
        "lines",
        "listed",
        "content_length",
        "expect_continue",
        "request_id",
        "request_id_given",
        "forwarded_for",
        "forwarded_host",
        "forwarded_proto",
        "idempotency_key",
        "user_agent",
        "trace_lines",
        "trace_id",
        "parent_id",
        "tracestate",
        "asked_keep_alive",
        "state",
        "attempt",
        "status",
        "request_done",
        "sent_all",
        "bytes_sent",
        "body",
        "body_size",
    } <= changed


async def test_the_next_request_on_the_connection_reuses_the_exchange(wire: Any) -> None:
    w = wire("breaker")
    await w.send(LOADED)
    first = w.client.active
    await w.answer(OK)
    w.sent_upstream()
    await w.send(GET)
    assert w.client.active is first
    sent = w.sent_upstream()
    assert sent.startswith(b"GET /plain HTTP/1.1\r\n")
    for leaked in (b"given", b"10.1.1.1", b"https", b"Idempotency-Key", b"agent", b"v=1"):
        assert leaked not in sent, leaked
    await w.answer(OK)
    assert w.received().count(b"HTTP/1.1 200 OK\r\n") == 2


async def test_pipelined_requests_get_their_own_exchanges(wire: Any) -> None:
    w = wire("breaker")
    await w.send(GET + GET.replace(b"/plain", b"/second"))
    first = w.client.active
    assert first is not None
    await w.answer(OK)
    second = w.client.active
    assert second is not None and second is not first
    assert second.target == b"/second"
    await w.answer(OK, index=-1)
    assert second.state == DONE


async def test_an_exchange_still_holding_a_connection_is_not_reusable(wire: Any) -> None:
    w = wire("breaker")
    await w.send(GET)
    exchange = w.client.active
    assert exchange is not None and exchange.conn is not None
    assert not exchange.reusable
