"""Descriptor exhaustion through the real ``sidecars breaker`` process, run with a low
``RLIMIT_NOFILE``: a flood of client connections stops the data port at the reserve, the
admin plane keeps answering, and the data port accepts again once the flood is gone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support import LOOPBACK, Sidecar, free_port, http_get, metric_value

NOFILE = 128  # a reserve of 16 (a tenth, at least 16)
FLOOD = 300  # idle client connections, far more than the limit


# `python -m sidecars ...` with the limit set first (``ulimit -n``, without a shell).
LIMITED = (
    "import resource, runpy, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE}))\n"
    "sys.argv[0] = 'sidecars'\n"
    "runpy.run_module('sidecars', run_name='__main__', alter_sys=True)\n"
)


class LimitedSidecar(Sidecar):
    """A sidecar whose process runs with ``RLIMIT_NOFILE`` at ``NOFILE``."""

    def start(self) -> LimitedSidecar:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", LIMITED, *self.args],
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=self.stdin,
            )
        return self


@pytest.fixture
async def limited(backend: Any) -> AsyncIterator[tuple[Sidecar, int]]:
    port, admin_port = free_port(), free_port()
    env = {
        "BREAKER_UPSTREAM": backend.url,
        "BREAKER_NAME": "app",
        "BREAKER_LISTEN": f"{LOOPBACK}:{port}",
        "BREAKER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
        "BREAKER_HEADER_TIMEOUT": "60s",  # the flood stays until the test ends it
    }
    sidecar = LimitedSidecar(["breaker"], env, admin_port).start()
    try:
        await sidecar.wait_ready()
        yield sidecar, port
    finally:
        sidecar.close()


async def admin_get(sidecar: Sidecar, path: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(http_get, sidecar.admin_url + path)


async def until(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` (an async callable) until it returns something true; 20 s at most."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (result := await check()):
        assert loop.time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)  # polling interval
    return result


async def served(port: int) -> bool:
    """Whether a request on a new data connection is answered 200."""
    with contextlib.suppress(OSError, TimeoutError):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        return answer.startswith(b"HTTP/1.1 200 ")
    return False


async def test_a_connection_flood_leaves_the_admin_plane_answering(
    limited: tuple[Sidecar, int],
) -> None:
    sidecar, port = limited
    flood: list[asyncio.StreamWriter] = []
    try:
        for _ in range(FLOOD):  # accepted by the kernel's backlog whether served or not
            _, writer = await asyncio.open_connection(LOOPBACK, port)
            flood.append(writer)

        async def paused() -> bool:
            status = json.loads((await admin_get(sidecar, "/status"))[1])
            return status["descriptors"]["accepting"]["app"] is False

        await until(paused, "the data port to stop at the reserve")
        for _ in range(20):  # probes are answered all along
            assert (await admin_get(sidecar, "/readyz"))[0] == 200
        metrics = (await admin_get(sidecar, "/metrics"))[1].decode()
        assert metric_value(metrics, "sidecar_accept_paused_total", upstream="app") >= 1
        paused_events = [e for e in sidecar.log_events() if e.get("event") == "accept_paused"]
        assert paused_events and paused_events[0]["limit"] == NOFILE
    finally:
        for writer in flood:
            writer.close()

    await until(lambda: served(port), "the data port to accept again")
    status = json.loads((await admin_get(sidecar, "/status"))[1])
    assert status["descriptors"]["accepting"]["app"] is True


async def test_a_failed_accept_is_counted_and_the_port_recovers(
    limited: tuple[Sidecar, int],
) -> None:
    """Descriptors taken by admin connections, not data ones, leave the data port short
    before its reserve check sees it: its accept fails with EMFILE, is counted and logged,
    and the port waits for room instead of spinning."""
    sidecar, port = limited
    held: list[asyncio.StreamWriter] = []

    async def open_descriptors() -> int:
        return int(json.loads((await admin_get(sidecar, "/status"))[1])["descriptors"]["open"])

    try:
        while await open_descriptors() < 80:  # well below the reserve's mark (112)
            for _ in range(5):
                held.append((await asyncio.open_connection(LOOPBACK, port))[1])
        for _ in range(64):  # the rest, and more, to the admin port
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(LOOPBACK, sidecar.admin_port)
                held.append(writer)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
                async with asyncio.timeout(5):
                    await reader.read(1)
        held.append((await asyncio.open_connection(LOOPBACK, port))[1])  # no descriptor left

        async def logged() -> list[dict[str, Any]]:  # the log needs no new descriptor
            return [e for e in sidecar.log_events() if e.get("event") == "accept_failed"]

        failed = await until(logged, "the failed accept to be logged")
        assert failed[0]["reason"] == "EMFILE"
    finally:
        for writer in held:
            writer.close()

    async def counted() -> float:
        with contextlib.suppress(OSError):
            metrics = (await admin_get(sidecar, "/metrics"))[1].decode()
            return metric_value(metrics, "sidecar_accept_errors_total", reason="EMFILE")
        return 0.0

    assert await until(counted, "the failed accept to be counted") >= 1
    assert await until(lambda: served(port), "the data port to accept again")
