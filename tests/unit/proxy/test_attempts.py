"""The attempt loop over fake transports: retries, breaker verdicts, failures before and after
the answer started."""

from __future__ import annotations

import json
from typing import Any

from sidecars.observability import PROXY_METRICS
from sidecars.proxy.pool import ConnectFailure

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
NO_BACKOFF = {"backoff_base": "0", "backoff_max": "0"}


def upstream_errors(kind: str, command: str = "breaker") -> float:
    labels = {"sidecar": command, "upstream": "backend.internal", "kind": kind}
    return PROXY_METRICS.get_sample_value("sidecar_upstream_errors_total", labels) or 0.0


def status_of(received: bytes) -> int:
    return int(received.split(b" ", 2)[1])


def header(received: bytes, name: bytes) -> bytes | None:
    for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b": ")
        if key.lower() == name.lower():
            return value
    return None


async def test_a_503_is_retried_and_the_next_answer_given(wire: Any) -> None:
    w = wire("ambassador", **NO_BACKOFF)
    await w.send(GET)
    assert header(w.sent_upstream(), b"X-Sidecar-Attempt") == b"1"
    await w.answer(UNAVAILABLE)
    first, second = w.upstreams[0], w.upstreams[-1]
    assert first is second  # the failed answer was read to its end: the connection is reused
    assert header(w.sent_upstream(), b"X-Sidecar-Attempt") == b"2"
    await w.answer(OK)
    received = w.received()
    assert (status_of(received), header(received, b"X-Sidecar-Attempts")) == (200, b"2")


async def test_a_refused_dial_is_retried(wire: Any) -> None:
    w = wire("ambassador", **NO_BACKOFF)
    before = upstream_errors("connect", "ambassador")
    w.dialer.failures.append(ConnectFailure("connect", "ConnectionRefusedError"))
    await w.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    assert w.sent_upstream().endswith(b"X-Sidecar-Attempt: 2\r\n\r\nhi")  # never sent: safe
    await w.answer(OK)
    assert header(w.received(), b"X-Sidecar-Attempts") == b"2"
    assert upstream_errors("connect", "ambassador") == before + 1


async def test_the_last_failure_is_reported_by_the_sidecar(wire: Any) -> None:
    w = wire()
    w.dialer.failures.append(ConnectFailure("tls", "certificate verify failed"))
    await w.send(GET)
    received = w.received()
    body = json.loads(received.partition(b"\r\n\r\n")[2])
    assert (status_of(received), body["error"]) == (502, "upstream_unavailable")
    assert header(received, b"X-Sidecar-Error") == b"upstream_unavailable"


async def test_a_circuit_opening_between_attempts_returns_the_last_answer(wire: Any) -> None:
    w = wire("ambassador", failure_threshold="1", **NO_BACKOFF)
    await w.send(GET)
    await w.answer(UNAVAILABLE)
    received = w.received()
    assert (status_of(received), received.endswith(b"busy")) == (503, True)
    assert header(received, b"X-Sidecar-Error") is None  # the upstream's own answer
    assert header(received, b"X-Sidecar-Attempts") == b"1"
    assert len(w.upstreams) == 1


async def test_an_open_circuit_answers_without_dialling(wire: Any) -> None:
    w = wire(open_seconds="30")
    assert w.route.breaker is not None
    w.route.breaker.force_open()
    await w.send(GET)
    received = w.received()
    assert status_of(received) == 503
    assert header(received, b"Retry-After") == b"30"
    assert header(received, b"X-Sidecar-Attempts") == b"0"
    assert w.dialer.opened == 0


async def test_a_stale_pooled_connection_is_replaced_for_a_get(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(OK)
    w.received()
    await w.send(GET)
    w.upstreams[0].connection_lost(ConnectionResetError())  # closed while it sat idle
    await w.settle()
    assert len(w.upstreams) == 2
    await w.answer(OK)
    received = w.received()
    assert (status_of(received), header(received, b"X-Sidecar-Attempts")) == (200, b"1")


async def test_a_post_on_a_reset_pooled_connection_is_not_resent(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(OK)
    w.received()
    await w.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    w.upstreams[0].connection_lost(ConnectionResetError())
    await w.settle()
    assert len(w.upstreams) == 1
    assert status_of(w.received()) == 502


async def test_garbage_from_the_upstream_is_502(wire: Any) -> None:
    w = wire()
    before = upstream_errors("bad_response")
    await w.send(GET)
    await w.answer(b"SMTP ready\r\n\r\n")
    assert status_of(w.received()) == 502
    assert w.upstream_transport().aborted
    assert upstream_errors("bad_response") == before + 1


async def test_a_reset_mid_body_cuts_the_client_answer(wire: Any) -> None:
    w = wire()
    before = upstream_errors("reset")
    await w.send(GET)
    await w.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    w.upstreams[-1].connection_lost(ConnectionResetError())
    await w.settle()
    assert w.received().endswith(b"\r\n\r\nabc")
    assert w.client_transport.closed
    assert upstream_errors("reset") == before + 1


async def test_a_client_leaving_releases_a_half_open_permit(wire: Any) -> None:
    now = [0.0]
    w = wire(open_seconds="10", clock=lambda: now[0])
    breaker = w.route.breaker
    assert breaker is not None
    for _ in range(5):
        await w.send(GET)
        await w.answer(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.state == "half_open"
    await w.send(GET)  # the one trial permit is taken
    w.client.connection_lost(None)
    await w.settle()
    assert breaker.snapshot()["half_open"]["permits_out"] == 0


async def test_an_endless_response_head_is_a_bad_response(wire: Any) -> None:
    w = wire()
    before = upstream_errors("bad_response")
    await w.send(GET)
    await w.answer(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    for _ in range(100):
        if w.upstream_transport().aborted:
            break
        await w.answer(b"z" * 10_000)
    assert w.upstream_transport().aborted
    assert status_of(w.received()) == 502
    assert upstream_errors("bad_response") == before + 1
