"""Trace correlation end to end (issue 16): a request through an ambassador and then a breaker
(two real sidecar processes, a real upstream recording the headers it saw) keeps the client's
trace id, and the two access lines, fed to a real ``sidecars log-adapter`` with an otlp+http
output, reach an OTLP receiver (decoding with opentelemetry-proto) with that TraceId and each
sidecar's own SpanId."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from http_receiver import HttpReceiver
from logadapter_support import StartAdapter
from otlp_support import all_records
from proxy_parts import (
    RunningProxy,
    ScriptedUpstream,
    ambassador_env,
    breaker_env,
    eventually,
    start_proxy,
)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    server = await ScriptedUpstream("app").start()
    yield server
    await server.stop()


def access_lines(proxy: RunningProxy, request_id: str) -> list[str]:
    """The raw access lines of one request on the sidecar's stdout."""
    lines = []
    text = proxy.sidecar.stdout_text()
    for line in text[: text.rfind("\n") + 1].splitlines():  # whole lines: it is still writing
        event: dict[str, Any] = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "access" and event.get("request_id") == request_id:
            lines.append(line)
    return lines


async def test_one_trace_id_from_the_client_through_both_sidecars_to_otlp(
    upstream: ScriptedUpstream, receiver: HttpReceiver, adapters: StartAdapter
) -> None:
    breaker = await start_proxy("breaker", breaker_env(upstream))
    ambassador = await start_proxy("ambassador", ambassador_env(breaker.url))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                ambassador.url + "/orders/7",
                headers={
                    "X-Request-Id": "e2e-1",
                    "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                },
            ) as response,
        ):
            assert response.status == 200
        seen = upstream.seen[-1].headers["traceparent"]
        await eventually(
            lambda: bool(access_lines(ambassador, "e2e-1") and access_lines(breaker, "e2e-1")),
            "both access lines",
        )
        (first,) = access_lines(ambassador, "e2e-1")
        (second,) = access_lines(breaker, "e2e-1")
    finally:
        ambassador.sidecar.close()
        breaker.sidecar.close()
    outer, inner = json.loads(first), json.loads(second)
    assert outer["trace_id"] == inner["trace_id"] == CLIENT_TRACE
    assert (outer["parent_span_id"], inner["parent_span_id"]) == (CLIENT_SPAN, outer["span_id"])
    assert seen == f"00-{CLIENT_TRACE}-{inner['span_id']}-01"

    adapter = adapters(
        {"LOGADAPTER_INPUTS": "stdin", "LOGADAPTER_OUTPUTS": f"otlp+{receiver.url}"},
        stdin=subprocess.PIPE,
    )
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(f"{first}\n{second}\n".encode())
    adapter.process.stdin.close()  # end of input: the adapter sends what it has and exits
    assert adapter.process.wait(30) == 0
    assert receiver.taken[0].headers["content-type"] == "application/x-protobuf"
    records = all_records(receiver)
    assert [(record["resource"]["service.name"], record["body"]) for record in records] == [
        ("ambassador", "GET /orders/7"),
        ("breaker", "GET /orders/7"),
    ]
    assert [(record["trace_id"], record["span_id"]) for record in records] == [
        (CLIENT_TRACE, outer["span_id"]),
        (CLIENT_TRACE, inner["span_id"]),
    ]
