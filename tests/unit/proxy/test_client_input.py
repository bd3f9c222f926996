"""Bad client input over fake transports: a defined answer, a reason counted, nothing sent on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecars.observability import PROXY_METRICS

HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n"


def bad_requests(reason: str) -> float:
    value = PROXY_METRICS.get_sample_value(
        "sidecar_bad_requests_total",
        {"sidecar": "breaker", "upstream": "backend.internal", "reason": reason},
    )
    return value or 0.0


def refusal(received: bytes) -> tuple[int, dict[str, Any], bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), head


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"\x00\x01\x02garbage\r\n\r\n", 400, "invalid_method"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), 400, "tls_on_plain_port"),
        (
            HEAD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "content_length_and_chunked",
        ),
        (
            HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            400,
            "invalid_content_length",
        ),
        (HEAD + b"Content-Length: 3x\r\n\r\nabc", 400, "invalid_content_length"),
        (HEAD + b"X-Folded: a\r\n  b\r\n\r\n", 400, "obs_fold"),
        (HEAD + b"Bad Name: x\r\n\r\n", 400, "invalid_header_name"),
        (
            HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
            "invalid_transfer_encoding",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing_host"),
        (HEAD + b"Host: b\r\n\r\n", 400, "duplicate_host"),
        (
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
            405,
            "connect_refused",
        ),
        (
            b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            400,
            "foreign_absolute_uri",
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "http2_preface"),
    ],
)
async def test_refused_input_never_reaches_the_upstream(
    wire: Any, data: bytes, status: int, reason: str
) -> None:
    w = wire()
    before = bad_requests(reason)
    await w.send(data)
    answered, body, head = refusal(w.received())
    assert (answered, body["error"], body["upstream"]) == (
        status,
        "bad_request",
        "backend.internal",
    )
    assert b"X-Sidecar-Error: bad_request\r\n" in head
    assert b"Connection: close\r\n" in head
    assert w.client_transport.closed or w.client_transport.eof_written  # ended or ending
    assert w.dialer.opened == 0
    assert bad_requests(reason) == before + 1


async def test_an_oversized_head_is_431(wire: Any) -> None:
    w = wire(max_header_size="1KiB")
    await w.send(HEAD + b"X-Big: " + b"x" * 2000 + b"\r\n\r\n")
    assert refusal(w.received())[0] == 431
    assert w.dialer.opened == 0


async def test_an_endless_head_is_cut_at_the_limit(wire: Any) -> None:
    w = wire(max_header_size="1KiB")
    before = bad_requests("head_too_large")
    await w.send(HEAD + b"X-Endless: ")
    for _ in range(3):
        if w.client_transport.closed:
            break
        await w.send(b"y" * 600)
    assert refusal(w.received())[0] == 431
    assert bad_requests("head_too_large") == before + 1


async def test_a_refused_client_may_finish_sending_before_the_close(wire: Any) -> None:
    """Closing on unread input resets the connection, and the client may lose the answer:
    a refused client's connection is half-closed and its input dropped until it ends."""
    w = wire()
    await w.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n")
    assert refusal(w.received())[0] == 400
    assert (w.client_transport.eof_written, w.client_transport.closed) == (True, False)
    await w.send(b"more bytes the client had already sent")
    assert w.received() == b""
    assert w.client.eof_received() is False  # the client is done: now it closes


async def test_a_body_over_the_limit_is_413(wire: Any) -> None:
    w = wire(max_body="10")
    await w.send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    assert refusal(w.received())[0] == 413
    assert w.dialer.opened == 0


async def test_a_chunked_body_over_the_limit_is_cut(wire: Any) -> None:
    w = wire(max_body="10")
    await w.send(
        b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n"
    )
    assert w.dialer.opened == 1
    await w.send(b"8\r\n12345678\r\n")
    assert refusal(w.received())[0] == 413
    assert w.upstream_transport().aborted
    assert w.client_transport.eof_written  # the rest of the body is read and dropped


async def test_a_malformed_chunked_body_ends_the_request(wire: Any) -> None:
    w = wire()
    before = bad_requests("invalid_chunked_body")
    await w.send(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
    await w.send(b"zz\r\n")
    assert refusal(w.received())[0] == 400
    assert w.upstream_transport().aborted
    assert bad_requests("invalid_chunked_body") == before + 1


async def test_a_client_leaving_mid_body_frees_the_upstream(wire: Any) -> None:
    w = wire()
    before = bad_requests("client_disconnected")
    await w.send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\npartial")
    w.client.connection_lost(None)
    await w.settle()
    assert w.upstream_transport().aborted
    assert bad_requests("client_disconnected") == before + 1
    assert w.access_lines()[-1]["status"] == 499
    assert w.route.in_flight == 0


async def test_the_connection_serves_on_after_a_sidecar_answer_with_a_body(wire: Any) -> None:
    """A 503 circuit_open sent before the request body arrived: the body is read and
    dropped, and the connection stays usable."""
    w = wire()
    assert w.route.breaker is not None
    w.route.breaker.force_open()
    await w.send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n")
    status, body, head = refusal(w.received())
    assert (status, body["error"]) == (503, "circuit_open")
    assert b"Retry-After: " in head
    assert b"Connection: close" not in head
    await w.send(b"abcdef" + HEAD + b"\r\n")
    assert refusal(w.received())[0] == 503
    assert not w.client_transport.closed
