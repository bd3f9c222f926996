"""What the HTTP outputs (NDJSON and OTLP) share: one POST of a whole batch, and one verdict
on its answer.

- 2xx: delivered.
- Network errors, timeouts, 401, 403, 404, 408, 429 and 5xx: ``RetryLater``, after the server's
  ``Retry-After`` when it sends one (capped at ``RETRY_AFTER_MAX``), else after full-jitter
  backoff over consecutive failures. A collector that is down, restarting, throttling or
  misconfigured (credentials, path) keeps the batch in the buffer until it takes it.
- 400, 413, 415, 422 and the other 4xx: the batch itself is refused and sending it again cannot
  help: ``HttpRejected``; the output counts its records as dropped and moves on (after sending
  a 413's batch again in halves).
"""

from __future__ import annotations

import asyncio
import gzip
import time
from typing import Any, Protocol

import aiohttp

from sidecars.logs.sinks.retry import RetrySchedule
from sidecars.policies.retry import parse_retry_after

REQUEST_TIMEOUT = 30.0
GZIP_LEVEL = 1
"""gzip's fastest level: a batch of log lines still shrinks 5-10x, at several times the speed
of the default level."""
RETRIED_STATUSES = frozenset({401, 403, 404, 408, 429})
PAYLOAD_TOO_LARGE = 413
"""Refused for its size: the outputs send such a batch again in halves."""


class HttpRejected(Exception):
    """The destination refused the batch for what it holds (a 4xx that a resend cannot fix)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        self.status = status


class RequestSigner(Protocol):
    def signed_headers(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """``headers`` plus the signature's (blocking: runs in a thread)."""
        ...


class HttpPoster:
    """POSTs bodies to one URL over a kept-alive aiohttp session."""

    def __init__(
        self,
        url: str,
        headers: tuple[tuple[str, str], ...],
        *,
        gzip_body: bool,
        signer: RequestSigner | None = None,
    ) -> None:
        self.url = url
        self.headers = dict(headers)
        self.gzip_body = gzip_body
        self.signer = signer
        self.retry = RetrySchedule()
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.last_status: int | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: it belongs to the running loop
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                auto_decompress=True,
            )
        return self._session

    async def post(self, body: bytes, content_type: str) -> bytes:
        """The answer's body once the destination took ``body``; raises ``RetryLater`` or
        ``HttpRejected``."""
        headers = {**self.headers, "Content-Type": content_type}
        if self.gzip_body:
            body = gzip.compress(body, GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        self.requests += 1
        try:
            if self.signer is not None:
                headers = await asyncio.to_thread(
                    self.signer.signed_headers, self.url, headers, body
                )
            async with self._client().post(self.url, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError, LookupError) as error:
            self.last_status = None
            raise self.retry.failed(f"{type(error).__name__}: {error}") from error
        self.last_status = status
        if 200 <= status < 300:
            self.retry.succeeded()
            return answer
        if status >= 500 or status in RETRIED_STATUSES:
            wait = parse_retry_after(retry_after, time.time()) if retry_after else None
            text = answer[:200].decode("utf-8", "replace")
            raise self.retry.failed(f"HTTP {status}: {text}", wait)
        self.retry.succeeded()
        raise HttpRejected(status, answer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "gzip": self.gzip_body,
            "signed": self.signer is not None,
            "requests": self.requests,
            "last_status": self.last_status,
            "consecutive_failures": self.retry.failures,
        }
