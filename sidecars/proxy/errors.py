"""Responses the sidecar makes itself: the contract's JSON body and ``X-Sidecar-Error``."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import orjson

from sidecars.proxy.headers import attempts_line


@dataclass(frozen=True, slots=True)
class SidecarError:
    """An answer made by the sidecar: HTTP status, contract code and a fixed detail text.

    ``reason`` is the label counted in ``sidecar_bad_requests_total`` for client faults."""

    status: int
    code: str
    detail: str
    reason: str = ""


def bad_request(reason: str, detail: str, status: int = 400) -> SidecarError:
    return SidecarError(status, "bad_request", detail, reason)


CIRCUIT_OPEN: Final = SidecarError(503, "circuit_open", "the circuit to the upstream is open")
OVERLOADED: Final = SidecarError(503, "overloaded", "too many requests to the upstream at once")
RATE_LIMITED: Final = SidecarError(429, "rate_limited", "over the rate limit of the upstream")
UPSTREAM_UNAVAILABLE: Final = SidecarError(
    502, "upstream_unavailable", "no response from the upstream"
)
UPSTREAM_UNRESOLVED: Final = SidecarError(
    502, "upstream_unavailable", "the upstream's name did not resolve"
)
UPSTREAM_TIMEOUT: Final = SidecarError(
    504, "upstream_timeout", "the upstream did not answer in time"
)
HEADER_TIMEOUT: Final = bad_request("header_timeout", "request head not received in time", 408)
BODY_TIMEOUT: Final = bad_request("body_timeout", "request body stalled", 408)
HEAD_TOO_LARGE: Final = bad_request("head_too_large", "request line or headers too large", 431)
BODY_TOO_LARGE: Final = bad_request("body_too_large", "request body over the size limit", 413)


class ErrorResponses:
    """Renders sidecar-made responses for one route; heads and bodies are cached, since an
    open circuit answers every request with the same bytes."""

    def __init__(self, upstream_name: str) -> None:
        self._upstream_name = upstream_name
        self._cache: dict[tuple[int, str, str, int, bool, int | None], tuple[bytes, bytes]] = {}
        # The open circuit's answer before any attempt on a kept-alive connection, by
        # Retry-After: the head up to the request id, and the rest.
        self._rejections: dict[int, tuple[bytes, bytes]] = {}

    def render(
        self,
        error: SidecarError,
        *,
        attempts: int,
        close: bool,
        request_id: bytes,
        retry_after: int | None = None,
    ) -> bytes:
        # Keyed by plain values: hashing the dataclass runs Python code per request.
        key = (error.status, error.code, error.detail, attempts, close, retry_after)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._build(error, attempts, close, retry_after)
            if len(self._cache) < 4096:
                self._cache[key] = cached
        head, body = cached
        return b"%bX-Request-Id: %b\r\n\r\n%b" % (head, request_id, body)

    def circuit_open(self, retry_after: int, request_id: bytes) -> bytes:
        """``render(CIRCUIT_OPEN, attempts=0, close=False, ...)``: what an open circuit answers
        to every request, so it is built once per Retry-After value and only the request id
        is put in per answer."""
        parts = self._rejections.get(retry_after)
        if parts is None:
            head, body = self._build(CIRCUIT_OPEN, 0, False, retry_after)
            parts = (head + b"X-Request-Id: ", b"\r\n\r\n" + body)
            if len(self._rejections) < 4096:
                self._rejections[retry_after] = parts
        return parts[0] + request_id + parts[1]

    def _build(
        self, error: SidecarError, attempts: int, close: bool, retry_after: int | None
    ) -> tuple[bytes, bytes]:
        body = orjson.dumps(
            {"error": error.code, "detail": error.detail, "upstream": self._upstream_name}
        )
        lines = [
            b"HTTP/1.1 %d %b\r\n" % (error.status, HTTPStatus(error.status).phrase.encode()),
            b"Content-Type: application/json\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"X-Sidecar-Error: %b\r\n" % error.code.encode(),
            attempts_line(attempts),
            b"Connection: close\r\n" if close else b"",
        ]
        if retry_after is not None:
            lines.append(b"Retry-After: %d\r\n" % retry_after)
        return b"".join(lines), body
