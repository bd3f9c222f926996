"""Issue 4 through the real ``sidecars ambassador`` process: only what is safe to repeat is
repeated, and a replayed body is the same bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from proxy_parts import Proxies, Upstreams, ambassador_env, send


async def test_a_post_is_not_retried_once_sent(upstreams: Upstreams, proxies: Proxies) -> None:
    upstream = await upstreams()
    upstream.script = ["503", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream))
    async with aiohttp.ClientSession() as session:
        status, headers, body = await send(session, proxy, "POST", data=b'{"pay": 10}')
    assert (status, body) == (503, b"503 from app")  # the upstream's answer, as it was
    assert headers["X-Sidecar-Attempts"] == "1"
    assert upstream.hits == 1
    assert await proxy.metric("sidecar_retries_skipped_total", reason="non_idempotent") == 1


async def test_a_post_reset_on_a_reused_connection_is_not_sent_again(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    """The upstream read the whole POST, then reset: it may have acted on it. That the
    connection came from the pool does not make it safe to replay (Go's transport replays
    only idempotent requests on a stale connection)."""
    upstream = await upstreams()
    upstream.script = ["ok", "reset", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream))
    async with aiohttp.ClientSession() as session:
        assert (await send(session, proxy))[0] == 200  # leaves a pooled connection
        status, headers, _ = await send(session, proxy, "POST", data=b'{"pay": 10}')
    assert [seen.method for seen in upstream.seen] == ["GET", "POST"]
    assert (status, headers.get("X-Sidecar-Error")) == (502, "upstream_unavailable")


async def test_a_post_with_an_idempotency_key_is_retried(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    upstream.script = ["503", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream))
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(
            session, proxy, "POST", data=b'{"pay": 10}', headers={"Idempotency-Key": "k-1"}
        )
    assert (status, headers["X-Sidecar-Attempts"]) == (200, "2")
    assert [seen.headers["Idempotency-Key"] for seen in upstream.seen] == ["k-1", "k-1"]


async def test_retry_non_idempotent_allows_a_plain_post(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    upstream.script = ["503", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream, retry_non_idempotent="on"))
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy, "PATCH", data=b"x")
    assert (status, headers["X-Sidecar-Attempts"]) == (200, "2")


async def chunks(payload: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_the_request_body_is_replayed_byte_exact(
    upstreams: Upstreams, proxies: Proxies, framing: str
) -> None:
    payload = os.urandom(200 * 1024)
    upstream = await upstreams()
    upstream.script = ["503", "502", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream))
    data: Any = payload if framing == "content-length" else chunks(payload)
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy, "PUT", data=data)
    assert (status, headers["X-Sidecar-Attempts"]) == (200, "3")
    digest = hashlib.sha256(payload).hexdigest()
    assert [(seen.body_sha256, seen.body_size) for seen in upstream.seen] == [
        (digest, len(payload))
    ] * 3


async def test_a_body_over_the_retry_limit_streams_once(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    payload = os.urandom(64 * 1024)
    upstream = await upstreams()
    upstream.script = ["503", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream, max_retry_body="1KiB"))
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy, "PUT", data=payload)
    assert (status, headers["X-Sidecar-Attempts"]) == (503, "1")
    assert [seen.body_sha256 for seen in upstream.seen] == [hashlib.sha256(payload).hexdigest()]
    skipped = "sidecar_retries_skipped_total"
    assert await proxy.metric(skipped, reason="body_not_replayable") == 1
