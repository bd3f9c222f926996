"""Fixtures shared by the breaker and ambassador tests: scripted upstreams (optionally serving
TLS with a certificate from a test CA) and ``sidecars`` proxy processes, stopped after each
test. The proxy engine's own tests (``proxy/``) define their own ``proxies``."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from proxy_parts import Behaviour, RunningProxy, ScriptedUpstream, start_proxy


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[ScriptedUpstream]]]:
    made: list[ScriptedUpstream] = []

    async def make(
        name: str = "app", mode: Behaviour = "ok", ca: trustme.CA | None = None
    ) -> ScriptedUpstream:
        upstream = ScriptedUpstream(name, mode)
        if ca is not None:
            upstream.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1").configure_cert(upstream.ssl_context)
        made.append(await upstream.start())
        return upstream

    yield make
    for upstream in made:
        await upstream.stop()


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[[str, dict[str, str]], Awaitable[RunningProxy]]]:
    started: list[RunningProxy] = []

    async def start(command: str, env: dict[str, str]) -> RunningProxy:
        proxy = await start_proxy(command, env)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.sidecar.close()
