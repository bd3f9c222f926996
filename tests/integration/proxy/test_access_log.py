"""The access log and the per-request metrics through a real ``sidecars breaker``: lines
buffered and written after the answers, every line written by the SIGTERM drain, the level
rule, exact counts at scrape time, and a stdout nobody reads."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from proxy_parts import breaker_process_env, eventually
from support import LOOPBACK, http_get, metric_value


async def get(connection: Any, request_id: str, path: str = "/echo") -> int:
    await connection.send(
        f"GET {path} HTTP/1.1\r\nHost: a\r\nX-Request-Id: {request_id}\r\n\r\n".encode()
    )
    status: int = (await connection.response()).status
    return status


def logged_ids(proxy: Any) -> list[str]:
    return [event["request_id"] for event in proxy.events("access")]


async def test_access_lines_are_written_soon_after_the_answers(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    proxy = proxies({"BREAKER_UPSTREAM": backend.url})
    connection = await connect(proxy.port)
    ids = [f"soon-{n}" for n in range(20)]
    for request_id in ids:
        assert await get(connection, request_id) == 200
    await eventually(lambda: logged_ids(proxy) == ids, "the 20 access lines")


async def test_the_sigterm_drain_writes_every_buffered_line(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    # Neither the timer (an hour) nor the buffer (64 KiB) writes 50 lines: only the drain.
    proxy = proxies({"BREAKER_UPSTREAM": backend.url, "BREAKER_ACCESS_LOG_FLUSH": "1h"})
    connection = await connect(proxy.port)
    ids = [f"drained-{n}" for n in range(50)]
    for request_id in ids:
        assert await get(connection, request_id) == 200
    assert logged_ids(proxy) == []
    await connection.close()
    assert await asyncio.to_thread(proxy.sidecar.terminate) == 0
    assert logged_ids(proxy) == ids
    # The drain's own event comes before the lines it wrote at exit.
    events = [event["event"] for event in proxy.sidecar.log_events()]
    assert events.index("drained") < events.index("access")


async def test_warn_turns_the_access_log_off_unless_it_is_asked_for(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    quiet = proxies({"BREAKER_UPSTREAM": backend.url, "SIDECAR_LOG_LEVEL": "warn"})
    asked = proxies(
        {"BREAKER_UPSTREAM": backend.url, "SIDECAR_LOG_LEVEL": "error", "BREAKER_ACCESS_LOG": "on"}
    )
    for proxy in (quiet, asked):
        connection = await connect(proxy.port)
        assert await get(connection, "level-1") == 200
        await connection.close()
        assert await asyncio.to_thread(proxy.sidecar.terminate) == 0
    assert quiet.events("access") == []
    assert logged_ids(asked) == ["level-1"]


async def test_the_scrape_counts_every_answer_exactly(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    proxy = proxies({"BREAKER_UPSTREAM": backend.url})
    connection = await connect(proxy.port)
    for n in range(25):
        assert await get(connection, f"ok-{n}") == 200
        if n % 5 == 0:
            assert await get(connection, f"missing-{n}", "/status/404") == 404
    text = await asyncio.to_thread(proxy.sidecar.metrics)
    assert metric_value(text, "sidecar_requests_total", code="200") == 25
    assert metric_value(text, "sidecar_requests_total", code="404") == 5
    duration = "sidecar_request_duration_seconds"
    assert metric_value(text, duration + "_count", status_class="2xx") == 25
    assert metric_value(text, duration + "_bucket", status_class="4xx", le="+Inf") == 5
    assert metric_value(text, "sidecar_upstream_attempts_total", outcome="success") == 30
    assert metric_value(text, "sidecar_upstream_attempts_total", outcome="failure") == 0
    assert metric_value(text, "sidecar_circuit_rejected_total") == 0
    assert await get(connection, "one-more") == 200
    assert await proxy.metric("sidecar_requests_total", code="200") == 26


async def test_a_stdout_nobody_reads_loses_counted_lines_and_never_blocks_serving(
    backend: Any, connect: Any
) -> None:
    port, admin_port, env = breaker_process_env(
        backend.url,
        # 4 KiB buffers, so at most 64 KiB wait for stdout: past the pipe's 64 KiB, lines drop.
        BREAKER_ACCESS_LOG_BUFFER="4KiB",
    )
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "sidecars", "breaker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    admin = f"http://{LOOPBACK}:{admin_port}"

    def scrape(name: str) -> float:
        return metric_value(http_get(admin + "/metrics")[1].decode(), name, reason="stdout_full")

    try:

        def ready() -> bool:
            try:
                return http_get(admin + "/readyz", timeout=0.5)[0] == 200
            except OSError:
                return False

        await eventually(lambda: asyncio.to_thread(ready), "readiness")
        connection = await connect(port)
        sent = 0
        while await asyncio.to_thread(scrape, "sidecar_access_log_dropped_total") == 0:
            for _ in range(100):  # every request answered while stdout takes nothing
                assert await get(connection, f"stuck-{sent}") == 200
                sent += 1
            assert sent < 20_000, "no line was dropped"
        assert process.stdout is not None
        output = bytearray()
        reader = threading.Thread(target=lambda: output.extend(process.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        assert await get(connection, "after") == 200
        await connection.close()
        lost = await asyncio.to_thread(scrape, "sidecar_access_log_dropped_total")
        process.terminate()
        assert await asyncio.to_thread(process.wait, 30) == 0
        reader.join(30)
        events = [json.loads(line) for line in output.splitlines()]
        reports = [event for event in events if event["event"] == "access_log_dropped"]
        assert reports and all(report["level"] == "warn" for report in reports)
        access = [event for event in events if event["event"] == "access"]
        # Every line is either written or logged as lost (as many as counted, or more: lines
        # dropped after the last scrape).
        reported = sum(report["lines"] for report in reports)
        assert reported >= lost > 0
        assert len(access) + reported == sent + 1
        assert access[-1]["request_id"] == "after"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_request_cut_by_the_drain_timeout_is_logged_before_exit(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    # The upstream answers in a minute; the drain waits 0.2 s, then cuts the request: its
    # access line (499, the client never got an answer) is still written before exit.
    proxy = proxies({"BREAKER_UPSTREAM": backend.url, "SIDECAR_DRAIN_TIMEOUT": "0.2s"})
    connection = await connect(proxy.port)
    await connection.send(b"GET /slow?delay=60 HTTP/1.1\r\nHost: a\r\nX-Request-Id: cut\r\n\r\n")

    def dialled() -> bool:
        text = proxy.sidecar.metrics()
        return metric_value(text, "sidecar_upstream_connections_opened_total") >= 1

    await eventually(dialled, "the request sent upstream")
    assert await asyncio.to_thread(proxy.sidecar.terminate) == 0
    drained = [event for event in proxy.sidecar.log_events() if event["event"] == "drained"]
    assert [event["cut"] for event in drained] == [1]
    assert [(line["request_id"], line["status"]) for line in proxy.events("access")] == [
        ("cut", 499)
    ]
