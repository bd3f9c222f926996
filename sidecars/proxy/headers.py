"""Header tables and head builders for both directions (pure functions, no I/O).

Hop-by-hop headers (RFC 9110 section 7.6.1) are answered by each hop, not forwarded: the
parsers look every header name up once in a table and either pass the line through or hand it
to the engine, which re-frames bodies and writes its own Connection, Host and X-Forwarded-*
lines.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sidecars.proxy.request import RequestHead

# What the engine does with a header, by its lower-case name; absent: forwarded as it came
# (FORWARD is 0 so that the hot paths test it with a plain ``not role``).
FORWARD: Final = 0
DROP: Final = -1
HOST: Final = 1
CONNECTION: Final = 2
TRANSFER_ENCODING: Final = 3
CONTENT_LENGTH: Final = 4
EXPECT: Final = 5
UPGRADE: Final = 6
REQUEST_ID: Final = 7
FORWARDED_FOR: Final = 8
FORWARDED_HOST: Final = 9
FORWARDED_PROTO: Final = 10
IDEMPOTENCY_KEY: Final = 11
USER_AGENT: Final = 12
RETRY_AFTER: Final = 13
TRACE_CONTEXT: Final = 14  # traceparent and tracestate

_HOP_BY_HOP: Final = {
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
REQUEST_ROLES: Final[dict[bytes, int]] = {
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
    b"traceparent": TRACE_CONTEXT,
    b"tracestate": TRACE_CONTEXT,
    # Ours to set: a client cannot pretend to be a later attempt.
    b"x-sidecar-attempt": DROP,
}
RESPONSE_ROLES: Final[dict[bytes, int]] = {
    **_HOP_BY_HOP,
    b"content-length": CONTENT_LENGTH,
    b"retry-after": RETRY_AFTER,
    b"x-sidecar-attempts": DROP,
}
# Longest header name whose spelling is remembered, and how many spellings are.
_SPELLING_MAX: Final = 64
_SPELLINGS_MAX: Final = 1024


class HeaderRoles:
    """A header name's role, looked up by the name as it came.

    Header names are case-insensitive, but peers spell them the same way every time (every
    client sends the same few, every upstream answers with the same ones): the case-folded
    lookup is made once per spelling, then ``by_spelling.get(name)`` answers. The table is
    bounded, so names a peer makes up cost the folded lookup each time, never memory.
    """

    __slots__ = ("_roles", "by_spelling")

    def __init__(self, roles: dict[bytes, int]) -> None:
        self._roles = roles
        self.by_spelling: dict[bytes, int] = {}

    def learn(self, name: bytes) -> int:
        """The role of a spelling not seen yet (``by_spelling`` had no answer)."""
        role = self._roles.get(name.lower(), FORWARD)
        if len(name) <= _SPELLING_MAX and len(self.by_spelling) < _SPELLINGS_MAX:
            self.by_spelling[name] = role
        return role


REQUEST_HEADERS: Final[HeaderRoles] = HeaderRoles(REQUEST_ROLES)
RESPONSE_HEADERS: Final[HeaderRoles] = HeaderRoles(RESPONSE_ROLES)

# Connection tokens that are options, not names of headers to remove.
_CONNECTION_OPTIONS: Final = frozenset({b"keep-alive", b"close", b"upgrade"})
# Connection values seen on nearly every message, which name no header.
PLAIN_CONNECTION: Final = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)
# The standard reason phrase of each status and its status line, for the answers the sidecar
# makes and, when an upstream uses the same phrase, for relayed ones (the common case).
STANDARD_STATUS: Final[dict[int, tuple[bytes, bytes]]] = {
    status.value: (
        status.phrase.encode(),
        b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode()),
    )
    for status in HTTPStatus
}

# Pre-built "X-Sidecar-Attempt: n" lines that end the upstream request head.
_ATTEMPT_ENDINGS: Final = [b"X-Sidecar-Attempt: %d\r\n\r\n" % n for n in range(16)]
ATTEMPTS_LINES: Final = [b"X-Sidecar-Attempts: %d\r\n" % n for n in range(16)]


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
    if attempts < len(ATTEMPTS_LINES):
        return ATTEMPTS_LINES[attempts]
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


# W3C Trace Context (https://www.w3.org/TR/trace-context/): version-traceid-parentid-flags.
_TRACEPARENT: Final = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE_ID: Final = b"0" * 32
_ZERO_SPAN_ID: Final = b"0" * 16
# tracestate: what is kept untouched; longer, list-members are dropped as section 3.3.1.5 says
# (those over 128 characters first, then from the end).
TRACESTATE_MAX: Final = 512
_TRACESTATE_MEMBER_MAX: Final = 128
SAMPLED: Final = b"01"
# A trace id and a span id: 16 + 8 random bytes; drawn for this many requests at once.
_ID_BYTES: Final = 24
IDS_PER_DRAW: Final = 64


def parse_traceparent(value: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(trace id, parent id, flags) of a valid ``traceparent``, or None.

    A later version than 00 is read as far as version 00 goes (the spec's forward
    compatibility); its flags are cut to the sampled bit, the only one version 00 defines.
    """
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_SPAN_ID:
        return None
    if version != b"00":
        if len(value) > 55 and value[55:56] != b"-":
            return None
        flags = b"01" if int(flags, 16) & 1 else b"00"
    elif len(value) != 55:
        return None
    return trace_id, parent_id, flags


def bounded_tracestate(value: bytes) -> bytes | None:
    """``value`` untouched when it is at most ``TRACESTATE_MAX`` bytes; else what is left of
    it after the spec's truncation (None when nothing is)."""
    if len(value) <= TRACESTATE_MAX:
        return value
    members = [member.strip() for member in value.split(b",")]
    kept = [member for member in members if member and len(member) <= _TRACESTATE_MEMBER_MAX]
    while kept and len(b",".join(kept)) > TRACESTATE_MAX:
        kept.pop()
    return b",".join(kept) or None


class TraceContext:
    """The trace context of each request: the client's ``traceparent`` continued, or a new
    trace begun, and a span id of the sidecar's own for the request it sends upstream.

    One span per request, whatever its attempts: every attempt carries the same span id (the
    attempts are told apart by ``X-Sidecar-Attempt``), which is the ``span_id`` of the access
    line. ``randbytes`` is ``random.Random().randbytes`` (seeded from os.urandom; trace ids
    need to be unique, not secret: OpenTelemetry's SDKs make them so, and a system call per
    request would cost more) unless a test passes its own. It is asked for the ids of
    ``IDS_PER_DRAW`` requests at a time, hexed in one go: each request slices its 48 digits.
    """

    __slots__ = ("_hex", "_next", "_randbytes")

    def __init__(self, randbytes: Callable[[int], bytes] | None = None) -> None:
        self._randbytes = random.Random().randbytes if randbytes is None else randbytes
        self._hex = b""  # IDS_PER_DRAW trace id + span id pairs, in hex
        self._next = 0  # offset of the next unused pair in _hex

    def begin(self, head: RequestHead) -> bool:
        """Set the trace fields of ``head``; True when the client sent a ``traceparent`` that
        was not valid (replaced by a new trace, as the spec says)."""
        lines = head.trace_lines
        if lines is None:
            # The common request: a new trace, its ids sliced here (_new_ids inlined).
            at = self._next
            ids = self._hex
            if at < len(ids):
                self._next = at + 2 * _ID_BYTES
                trace_id = ids[at : at + 32]
                span_id = ids[at + 32 : at + 48]
                if trace_id != _ZERO_TRACE_ID and span_id != _ZERO_SPAN_ID:
                    head.trace_id = trace_id
                    head.span_id = span_id
                    head.trace_flags = SAMPLED
                    return False
            head.trace_id, head.span_id = self._new_ids()
            head.trace_flags = SAMPLED
            return False
        parent: tuple[bytes, ...] | None = None
        tracestate: list[bytes] = []
        for index in range(0, len(lines), 4):
            # The header roles let only these two names through: their lengths tell them.
            if len(lines[index]) == len(b"tracestate"):
                tracestate.append(lines[index + 2])
            elif parent is None:
                parent = parse_traceparent(lines[index + 2]) or ()
            else:
                parent = ()  # more than one traceparent: not valid
        if parent:
            head.trace_id, head.parent_id, head.trace_flags = parent
            head.span_id = self._new_ids()[1]
            if tracestate:
                head.tracestate = bounded_tracestate(b",".join(tracestate))
            return False
        head.trace_id, head.span_id = self._new_ids()
        head.trace_flags = SAMPLED
        # tracestate alone belongs to no trace: dropped, but not invalid.
        return parent is not None

    def _new_ids(self) -> tuple[bytes, bytes]:
        """A random trace id and span id, in hex (all zeros is not an id: drawn again)."""
        while True:
            at = self._next
            ids = self._hex
            if at >= len(ids):
                ids = self._hex = self._randbytes(_ID_BYTES * IDS_PER_DRAW).hex().encode()
                at = 0
            self._next = at + 2 * _ID_BYTES
            trace_id = ids[at : at + 32]
            span_id = ids[at + 32 : at + 48]
            if trace_id != _ZERO_TRACE_ID and span_id != _ZERO_SPAN_ID:
                return trace_id, span_id


def status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 <status> <reason>`` for an upstream's answer (the prebuilt line when the
    phrase is the standard one)."""
    standard = STANDARD_STATUS.get(status)
    if standard is not None and reason == standard[0]:
        return standard[1]
    return b"HTTP/1.1 %d %b\r\n" % (status, reason)
