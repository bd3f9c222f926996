"""Fixtures for the cluster tests (the parts are in tests/cluster_parts.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cluster_parts import (
    REPLICA_HOSTS,
    DnsFactory,
    Dnsmasq,
    DnsmasqExited,
    Replicas,
    shared_port,
)
from proxy_parts import Behaviour, ScriptedUpstream


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    """``await replicas(mode, ...)``: one ScriptedUpstream per mode, on 127.0.0.2, .3, ...,
    all on one port."""
    made: list[ScriptedUpstream] = []

    async def make(*modes: Behaviour) -> list[ScriptedUpstream]:
        hosts = REPLICA_HOSTS[: len(modes)]
        port = shared_port(hosts)
        group = [
            ScriptedUpstream(f"replica{i + 2}", mode, host=host, port=port)
            for i, (host, mode) in enumerate(zip(hosts, modes, strict=True))
        ]
        for upstream in group:
            made.append(await upstream.start())
        return group

    yield make
    for upstream in made:
        await upstream.stop()


@pytest.fixture
async def dnsmasq(tmp_path: Path) -> AsyncIterator[DnsFactory]:
    """``await dnsmasq(records, srv=[...])``: a running dnsmasq serving ``records``."""
    started: list[Dnsmasq] = []

    async def start(records: dict[str, list[str]], srv: list[str] | None = None) -> Dnsmasq:
        for attempt in range(3):
            server = Dnsmasq(tmp_path, records, srv or [])
            started.append(server)
            try:
                await server.serving(records)
            except DnsmasqExited:
                if attempt == 2:
                    raise
                continue
            return server
        raise AssertionError("unreachable")

    yield start
    for server in started:
        server.stop()
