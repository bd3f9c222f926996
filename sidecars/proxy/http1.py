"""HTTP/1.1 framing, in one place: the request head for an upstream, chunk re-framing, and the
response heads given to the client. The exchange and the filters never write wire bytes
themselves, so another protocol (HTTP/2) is another codec, not an edit to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sidecars.proxy.headers import ATTEMPTS_LINES, attempt_ending, attempts_line

if TYPE_CHECKING:
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.request import RequestHead

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
# How a relayed response body is framed for the client (CODED_*: with transfer codings
# other than chunked, gzip say, which are the client's to undo).
LENGTH: Final = 0
CHUNKED: Final = 1
NO_BODY: Final = 2
UNTIL_CLOSE: Final = 3
TUNNEL: Final = 4
CODED_CHUNKED: Final = 5
CODED_UNTIL_CLOSE: Final = 6


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def chunks(body: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%b\r\n" % (len(data), data) for data in body]


def request_head(
    head: RequestHead, path_prefix: bytes, authority: bytes, peer: bytes, attempt: int
) -> list[bytes]:
    """The request head for the upstream, as parts for one join with the body's first bytes."""
    forwarded_for = peer if head.forwarded_for is None else head.forwarded_for + b", " + peer
    parts = [
        head.method,
        b" ",
        path_prefix if head.target != b"*" else b"",
        head.target,
        b" HTTP/1.1\r\nHost: ",
        authority,
        b"\r\n",
        *head.lines,
        b"X-Forwarded-For: ",
        forwarded_for,
        b"\r\nX-Forwarded-Proto: ",
        head.forwarded_proto or b"http",
        b"\r\nX-Request-Id: ",
        head.request_id,
        b"\r\n",
    ]
    if head.span_id:
        parts += (
            b"traceparent: 00-",
            head.trace_id,
            b"-",
            head.span_id,
            b"-",
            head.trace_flags,
            b"\r\n",
        )
        if head.tracestate is not None:
            parts += (b"tracestate: ", head.tracestate, b"\r\n")
    elif head.trace_lines is not None:
        parts += head.trace_lines  # trace context off: forwarded as it came
    host = head.forwarded_host or head.host
    if host is not None:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % head.content_length)
    if head.upgrade is not None:
        parts += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade, b"\r\n")
    parts.append(attempt_ending(attempt))
    return parts


def response_framing(conn: Connection, is_head: bool, http11: bool) -> int:
    """How the client gets the body of ``conn``'s response."""
    status = conn.status
    if status == 101:
        return TUNNEL
    if conn.content_length is not None:
        return LENGTH
    if is_head or status in (204, 304):
        return NO_BODY
    if conn.codings is not None:
        # Chunked framing follows the codings, or the body ends with the connection as the
        # upstream's did.
        return CODED_CHUNKED if conn.chunked and http11 else CODED_UNTIL_CLOSE
    return CHUNKED if http11 else UNTIL_CLOSE  # HTTP/1.0: the body ends with the connection


def response_head(conn: Connection, framing: int, attempt: int, close: bool, http11: bool) -> bytes:
    """The head of a relayed response, built on the upstream's relayed header lines."""
    parts = conn.parts
    parts.insert(0, conn.status_line)
    if framing == LENGTH:
        if conn.status != 204:
            parts += (b"Content-Length: ", conn.content_length or b"0", b"\r\n")
    elif framing == CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif framing == TUNNEL:
        parts += (b"Connection: upgrade\r\nUpgrade: ", conn.upgrade or b"", b"\r\n")
    elif framing == CODED_CHUNKED:
        parts += (b"Transfer-Encoding: ", conn.codings or b"", b", chunked\r\n")
    elif framing == CODED_UNTIL_CLOSE:
        parts += (b"Transfer-Encoding: ", conn.codings or b"", b"\r\n")
    parts.append(
        ATTEMPTS_LINES[attempt] if attempt < len(ATTEMPTS_LINES) else attempts_line(attempt)
    )
    if framing == TUNNEL:
        parts.append(b"\r\n")
    elif close:
        parts.append(b"Connection: close\r\n\r\n")
    elif http11:
        parts.append(b"\r\n")
    else:
        parts.append(b"Connection: keep-alive\r\n\r\n")  # HTTP/1.0 asked to keep it
    return b"".join(parts)


def whole_response(
    status_line: bytes,
    parts: list[bytes],
    body: bytes,
    attempt: int,
    *,
    close: bool,
    is_head: bool,
) -> bytes:
    """A response read whole (kept while a retry went ahead), with its length."""
    return b"%b%b%b%b%b\r\n%b" % (
        status_line,
        b"".join(parts),
        b"Content-Length: %d\r\n" % len(body),
        attempts_line(attempt),
        b"Connection: close\r\n" if close else b"",
        b"" if is_head else body,
    )
