"""W3C trace context through real sidecar processes: an ambassador in front of a breaker in
front of an upstream that echoes the headers it saw; one trace id end to end, each hop's span
the next one's parent, and P_TRACE_CONTEXT=off adding nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
from proxy_parts import eventually

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")


def chain(backend: Any, proxies: Callable[..., Any], **env: str) -> Any:
    """An ambassador whose upstream is a breaker whose upstream is ``backend``."""
    breaker = proxies(
        {"BREAKER_UPSTREAM": backend.url, **{f"BREAKER_{k.upper()}": v for k, v in env.items()}}
    )
    ambassador = proxies(
        {
            "AMBASSADOR_UPSTREAM": breaker.url,
            **{f"AMBASSADOR_{k.upper()}": v for k, v in env.items()},
        },
        "ambassador",
    )
    return ambassador, breaker


async def through(ambassador: Any, request_id: str, **headers: str) -> dict[str, str]:
    """The headers the upstream saw for one GET through the chain."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            ambassador.url + "/traced", headers={"X-Request-Id": request_id, **headers}
        ) as response,
    ):
        assert response.status == 200
        seen: dict[str, str] = (await response.json())["headers"]
        return seen


async def access_line(proxy: Any, request_id: str) -> dict[str, Any]:
    """The access line of one request (written within the flush interval of its answer)."""

    def lines() -> list[dict[str, Any]]:
        return [event for event in proxy.events("access") if event["request_id"] == request_id]

    await eventually(lambda: bool(lines()), f"the access line of {request_id}")
    (line,) = lines()
    return line


async def test_a_clients_trace_is_continued_through_both_sidecars(
    backend: Any, proxies: Callable[..., Any]
) -> None:
    ambassador, breaker = chain(backend, proxies)
    seen = await through(
        ambassador,
        "traced-1",
        traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
        tracestate="congo=t61rcWkgMzE",
    )
    match = TRACEPARENT.fullmatch(seen["traceparent"])
    assert match is not None, seen["traceparent"]
    assert seen["tracestate"] == "congo=t61rcWkgMzE"
    first = await access_line(ambassador, "traced-1")
    second = await access_line(breaker, "traced-1")
    assert first["trace_id"] == second["trace_id"] == match[1] == CLIENT_TRACE
    # Each hop's own span is the parent the next hop saw.
    assert first["parent_span_id"] == CLIENT_SPAN
    assert second["parent_span_id"] == first["span_id"]
    assert match[2] == second["span_id"]
    assert len({CLIENT_SPAN, first["span_id"], second["span_id"]}) == 3


async def test_a_request_without_trace_context_gets_one_trace_from_the_first_sidecar(
    backend: Any, proxies: Callable[..., Any]
) -> None:
    ambassador, breaker = chain(backend, proxies)
    seen = await through(ambassador, "untraced-1")
    match = TRACEPARENT.fullmatch(seen["traceparent"])
    assert match is not None, seen["traceparent"]
    first = await access_line(ambassador, "untraced-1")
    second = await access_line(breaker, "untraced-1")
    assert first["parent_span_id"] is None  # the trace began here
    assert first["trace_id"] == second["trace_id"] == match[1]
    assert (second["parent_span_id"], match[2]) == (first["span_id"], second["span_id"])
    # A second request is another trace.
    await through(ambassador, "untraced-2")
    assert (await access_line(ambassador, "untraced-2"))["trace_id"] != first["trace_id"]


async def test_an_invalid_traceparent_is_replaced_and_counted(
    backend: Any, proxies: Callable[..., Any]
) -> None:
    ambassador, _ = chain(backend, proxies)
    seen = await through(ambassador, "invalid-1", traceparent=f"00-{CLIENT_TRACE.upper()}-x-01")
    match = TRACEPARENT.fullmatch(seen["traceparent"])
    assert match is not None and match[1] != CLIENT_TRACE
    assert (await access_line(ambassador, "invalid-1"))["trace_id"] == match[1]
    assert await ambassador.metric("sidecar_traceparent_replaced_total") == 1


async def test_off_adds_no_header_and_no_access_line_fields(
    backend: Any, proxies: Callable[..., Any]
) -> None:
    ambassador, breaker = chain(backend, proxies, trace_context="off")
    seen = await through(ambassador, "off-1")
    assert "traceparent" not in seen
    given = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    assert (await through(ambassador, "off-2", traceparent=given))["traceparent"] == given
    for proxy in (ambassador, breaker):
        line = await access_line(proxy, "off-1")
        assert not {"trace_id", "span_id", "parent_span_id"} & line.keys()
