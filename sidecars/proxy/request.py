"""A parsed client request head: what the engine needs from it, and the lines it forwards."""

from __future__ import annotations

from sidecars.proxy.errors import SidecarError


class RequestHead:
    """Filled by the client protocol's llhttp callbacks, then read by the exchange. The
    exchange is a RequestHead itself; the defaults describe an HTTP/1.1 request kept alive,
    so the common request sets only what it carries."""

    __slots__ = (
        "asked_keep_alive",
        "chunked",
        "content_length",
        "error",
        "expect_continue",
        "forwarded_for",
        "forwarded_host",
        "forwarded_proto",
        "host",
        "http11",
        "idempotency_key",
        "is_head",
        "keep_alive",
        "lines",
        "listed",
        "method",
        "parent_id",
        "request_id",
        "request_id_given",
        "size",
        "span_id",
        "target",
        "trace_flags",
        "trace_id",
        "trace_lines",
        "tracestate",
        "upgrade",
        "user_agent",
    )

    def __init__(self) -> None:
        self.clear_head()

    def clear_head(self) -> None:
        """Every field back to its default (an exchange reused for the connection's next
        request)."""
        self.method = b""
        self.target = b""
        self.lines: list[bytes] = []  # name, b": ", value, b"\r\n", ... forwarded as they came
        self.size = 0
        self.host: bytes | None = None
        self.listed: list[bytes] | None = None  # header names a Connection header listed
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.request_id: bytes = b""
        self.request_id_given = False  # the client's own X-Request-Id (escaped in the log)
        self.forwarded_for: bytes | None = None
        self.forwarded_host: bytes | None = None
        self.forwarded_proto: bytes | None = None
        self.idempotency_key = False
        self.user_agent: bytes | None = None
        # traceparent/tracestate lines as they came (forwarded so when trace context is off),
        # and the request's trace context (headers.TraceContext.begin; b"" when off).
        self.trace_lines: list[bytes] | None = None
        self.trace_id = b""
        self.span_id = b""  # the sidecar's own: the parent id the upstream sees
        self.parent_id: bytes | None = None  # the client's span
        self.trace_flags = b""
        self.tracestate: bytes | None = None
        self.keep_alive = True
        self.asked_keep_alive = False  # Connection: keep-alive was sent
        self.http11 = True
        self.is_head = False
        self.error: SidecarError | None = None
