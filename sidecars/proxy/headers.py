"""Header tables and head builders for both directions (pure functions, no I/O).

Hop-by-hop headers (RFC 9110 section 7.6.1) are answered by each hop, not forwarded: the
parsers look every header name up once in a table and either pass the line through or hand it
to the engine, which re-frames bodies and writes its own Connection, Host and X-Forwarded-*
lines.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from http import HTTPStatus

# What the engine does with a request header (lower-case name); absent: forwarded as is.
DROP = 0
HOST = 1
CONNECTION = 2
TRANSFER_ENCODING = 3
CONTENT_LENGTH = 4
EXPECT = 5
UPGRADE = 6
REQUEST_ID = 7
FORWARDED_FOR = 8
FORWARDED_HOST = 9
FORWARDED_PROTO = 10
IDEMPOTENCY_KEY = 11
USER_AGENT = 12
RETRY_AFTER = 13

_HOP_BY_HOP = {
    b"connection": CONNECTION,
    b"keep-alive": DROP,
    b"proxy-connection": DROP,
    b"te": DROP,
    b"trailer": DROP,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"upgrade": UPGRADE,
    b"proxy-authorization": DROP,
    b"proxy-authenticate": DROP,
    b"http2-settings": DROP,
}
REQUEST_ROLES: dict[bytes, int] = {
    **_HOP_BY_HOP,
    b"host": HOST,
    b"content-length": CONTENT_LENGTH,
    b"expect": EXPECT,
    b"x-request-id": REQUEST_ID,
    b"x-forwarded-for": FORWARDED_FOR,
    b"x-forwarded-host": FORWARDED_HOST,
    b"x-forwarded-proto": FORWARDED_PROTO,
    b"idempotency-key": IDEMPOTENCY_KEY,
    b"user-agent": USER_AGENT,
    # Ours to set: a client cannot pretend to be a later attempt.
    b"x-sidecar-attempt": DROP,
}
RESPONSE_ROLES: dict[bytes, int] = {
    **_HOP_BY_HOP,
    b"content-length": CONTENT_LENGTH,
    b"retry-after": RETRY_AFTER,
    b"x-sidecar-attempts": DROP,
}
# Connection tokens that are options, not names of headers to remove.
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade"})
# Connection values seen on nearly every message, which name no header.
PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)
# Status lines with the standard reason phrases: the upstream's own phrase is not relayed
# (HTTP/2 dropped reason phrases; clients must not depend on them).
_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}

# Pre-built "X-Sidecar-Attempt: n" lines that end the upstream request head.
_ATTEMPT_ENDINGS = [b"X-Sidecar-Attempt: %d\r\n\r\n" % n for n in range(16)]
_ATTEMPTS_LINES = [b"X-Sidecar-Attempts: %d\r\n" % n for n in range(16)]


def connection_listed(value: bytes) -> list[bytes]:
    """Header names a Connection header lists for removal (RFC 9110 section 7.6.1)."""
    tokens = (token.strip().lower() for token in value.split(b","))
    return [token for token in tokens if token and token not in _CONNECTION_OPTIONS]


def without_listed(parts: list[bytes], listed: Iterable[bytes]) -> list[bytes]:
    """Header ``parts`` (name, b": ", value, b"\\r\\n", ...) minus the headers a Connection
    header listed."""
    names = set(listed)
    kept: list[bytes] = []
    for index in range(0, len(parts), 4):
        if parts[index].lower() not in names:
            kept += parts[index : index + 4]
    return kept


def attempt_ending(attempt: int) -> bytes:
    if attempt < len(_ATTEMPT_ENDINGS):
        return _ATTEMPT_ENDINGS[attempt]
    return b"X-Sidecar-Attempt: %d\r\n\r\n" % attempt


def attempts_line(attempts: int) -> bytes:
    if attempts < len(_ATTEMPTS_LINES):
        return _ATTEMPTS_LINES[attempts]
    return b"X-Sidecar-Attempts: %d\r\n" % attempts


def origin_form(target: bytes, local_authorities: frozenset[bytes]) -> bytes | None:
    """The path to forward for a request target, or None when it must be refused.

    Origin-form (``/path?q``) and ``*`` pass. Absolute-form (``http://host/path``) passes only
    when it names this sidecar or its upstream (a client configured with the sidecar as its
    HTTP proxy); any other authority would make the sidecar an open proxy.
    """
    if target[:1] == b"/" or target == b"*":
        return target
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    authority, slash, path = rest.partition(b"/")
    authority = authority.partition(b"?")[0]
    if authority.lower() not in local_authorities:
        return None
    return slash + path if slash else b"/"


class RequestIds:
    """X-Request-Id values: a random per-process prefix and a counter (a uuid4 per request
    costs more than the rest of the head building)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex().encode() + b"-"
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return self._prefix + b"%x" % next(self._counter)


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status
