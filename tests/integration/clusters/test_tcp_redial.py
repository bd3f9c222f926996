"""TCP mode dials another endpoint when a dial fails, before any byte is relayed; and a
fallback cluster's ejections are counted under its own name. Real echo upstreams on
127.0.0.2/.3, nothing on 127.0.0.11."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cluster_parts import shared_port
from proxy_parts import RunningProxy, ambassador_env, breaker_env

Proxies = Callable[[str, dict[str, str]], Awaitable[RunningProxy]]
LIVE = ("127.0.0.2", "127.0.0.3")
DEAD = "127.0.0.11"  # nothing listens there


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes until the client half-closes, then closes."""
    while data := await reader.read(65536):
        writer.write(data)
    await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """One port with an echo server on each of LIVE and none on DEAD."""
    port = shared_port((*LIVE, DEAD))
    servers = [await asyncio.start_server(_echo, host, port) for host in LIVE]
    yield port
    for server in servers:
        server.close()
        await server.wait_closed()


async def _echoed(proxy: RunningProxy, payload: bytes) -> bytes:
    """Send ``payload`` at once (before the proxy's dial can finish), half-close, read all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await reader.read()
    except OSError:  # reset, or closed before the half-close
        return b"<reset>"
    finally:
        writer.close()


async def test_a_refused_dial_is_retried_on_another_endpoint(
    echo_port: int, proxies: Proxies
) -> None:
    urls = ",".join(f"tcp://{host}:{echo_port}" for host in (LIVE[0], DEAD, LIVE[1]))
    proxy = await proxies(
        "ambassador",
        ambassador_env(
            urls, protocol="tcp", lb="round-robin", outlier_consecutive_failures="2"
        ),
    )
    answers = [await _echoed(proxy, f"hello {n}".encode()) for n in range(12)]
    assert answers == [f"hello {n}".encode() for n in range(12)]
    failed = proxy.events("tcp_dial_failed")
    assert len(failed) == 2  # two refusals eject the dead endpoint
    assert {e["endpoint"] for e in failed} == {f"{DEAD}:{echo_port}"}
    assert all(e["retry"] and e["reason"] == "connect-failure" for e in failed)
    assert await proxy.metric("sidecar_retries_total", reason="connect-failure") == 2
    assert await proxy.metric("sidecar_upstream_attempts_total", outcome="failure") == 2
    assert await proxy.metric("sidecar_upstream_attempts_total", outcome="success") == 12
    status = await proxy.status()
    (route,) = status["routes"].values()
    states = {e["address"]: e["state"] for e in route["endpoints"]}
    assert states[f"{DEAD}:{echo_port}"] == "ejected"


async def test_dials_stop_at_max_attempts(echo_port: int, proxies: Proxies) -> None:
    urls = ",".join(f"tcp://{DEAD}:{port}" for port in (echo_port, echo_port + 1))
    proxy = await proxies(
        "ambassador",
        ambassador_env(urls, protocol="tcp", max_attempts="2", outlier_consecutive_failures="0"),
    )
    assert await _echoed(proxy, b"hello") in (b"", b"<reset>")
    failed = proxy.events("tcp_dial_failed")
    assert [(e["attempt"], e["retry"]) for e in failed] == [(1, True), (2, False)]
    assert len({e["endpoint"] for e in failed}) == 2  # the second dial went elsewhere
    assert await proxy.metric("sidecar_retries_total") == 1


async def test_fallback_ejections_are_counted_under_the_fallback_cluster(
    echo_port: int, proxies: Proxies
) -> None:
    fallback = ",".join(f"tcp://{host}:{echo_port}" for host in (LIVE[0], DEAD))
    proxy = await proxies(
        "breaker",
        breaker_env(
            f"tcp://{DEAD}:{echo_port + 1}",
            protocol="tcp",
            lb="round-robin",
            failure_threshold="1",
            fallback_upstream=fallback,
            outlier_consecutive_failures="2",
        ),
    )
    for n in range(8):
        await _echoed(proxy, f"hello {n}".encode())
    (name,) = (await proxy.status())["routes"]
    assert (
        await proxy.metric("sidecar_outlier_ejections_total", upstream=f"{name}/fallback") == 1
    )
    assert await proxy.metric("sidecar_outlier_ejections_total", upstream=name) == 0
