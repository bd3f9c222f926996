"""The engine's small parts: header helpers, sidecar-made answers, timers, metric batching,
the access log."""

from __future__ import annotations

import asyncio
import io
import json
import math
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sidecars.observability import PROXY_METRICS
from sidecars.proxy import errors, http1
from sidecars.proxy.accesslog import AccessLog
from sidecars.proxy.batch import EndOfIteration, Outbox
from sidecars.proxy.errors import ErrorResponses
from sidecars.proxy.exchange import Exchange
from sidecars.proxy.headers import (
    RequestIds,
    connection_listed,
    origin_form,
    without_listed,
)
from sidecars.proxy.metrics import (
    RouteMetrics,
    add_observations,
    add_to_counter,
    bucket_counts,
)
from sidecars.proxy.request import RequestHead
from sidecars.proxy.timer import DeadlineTimer

LOCAL = frozenset({b"localhost:15001", b"backend:8080"})


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"/a?b", b"/a?b"),
        (b"*", b"*"),
        (b"http://backend:8080/x?y=1", b"/x?y=1"),
        (b"HTTP://LOCALHOST:15001", b"/"),
        (b"http://evil.example/x", None),
        (b"https://backend:8081/x", None),
        (b"ftp://backend:8080/x", None),
        (b"backend:8080", None),
    ],
)
def test_only_local_absolute_uris_are_forwarded(target: bytes, forwarded: bytes | None) -> None:
    assert origin_form(target, LOCAL) == forwarded


def test_connection_names_the_headers_to_drop() -> None:
    assert connection_listed(b"keep-alive, X-A ,close,Upgrade, x-b") == [b"x-a", b"x-b"]
    parts = [b"X-A", b": ", b"1", b"\r\n", b"Accept", b": ", b"*/*", b"\r\n"]
    parts += [b"x-b", b": ", b"2", b"\r\n"]
    assert without_listed(parts, [b"x-a", b"x-b"]) == [b"Accept", b": ", b"*/*", b"\r\n"]


def test_request_ids_are_unique_and_short() -> None:
    ids = RequestIds()
    values = {ids.next() for _ in range(1000)}
    assert len(values) == 1000
    assert len(max(values, key=len)) <= 16
    assert RequestIds().next().split(b"-")[0] != ids.next().split(b"-")[0]


def test_the_upstream_head_carries_the_forwarding_headers() -> None:
    head = RequestHead()
    head.method, head.target, head.host = b"PUT", b"/items/1", b"app.local"
    head.lines = [b"Accept", b": ", b"*/*", b"\r\n"]
    head.forwarded_for = b"10.0.0.1"
    head.request_id = b"r-1"
    head.content_length = 12
    text = b"".join(http1.request_head(head, b"/v2", b"backend:8080", b"192.0.2.7", 2)).decode()
    assert text == (
        "PUT /v2/items/1 HTTP/1.1\r\nHost: backend:8080\r\nAccept: */*\r\n"
        "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nX-Forwarded-Proto: http\r\n"
        "X-Request-Id: r-1\r\nX-Forwarded-Host: app.local\r\nContent-Length: 12\r\n"
        "X-Sidecar-Attempt: 2\r\n\r\n"
    )


def test_sidecar_answers_follow_the_contract() -> None:
    responses = ErrorResponses("payments")
    data = responses.render(
        errors.CIRCUIT_OPEN, attempts=0, close=False, request_id=b"r-9", retry_after=7
    )
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert {
        "X-Sidecar-Error: circuit_open",
        "Retry-After: 7",
        "X-Request-Id: r-9",
        "X-Sidecar-Attempts: 0",
        f"Content-Length: {len(body)}",
    } <= set(lines)
    assert json.loads(body) == {
        "error": "circuit_open",
        "detail": "the circuit to the upstream is open",
        "upstream": "payments",
    }
    # The open circuit's pre-built answer is the same bytes, whatever the request id.
    for request_id, retry_after in ((b"r-9", 7), (b"other-id", 7), (b"r-9", 1)):
        assert responses.circuit_open(retry_after, request_id) == responses.render(
            errors.CIRCUIT_OPEN,
            attempts=0,
            close=False,
            request_id=request_id,
            retry_after=retry_after,
        )
    closing = responses.render(errors.UPSTREAM_TIMEOUT, attempts=3, close=True, request_id=b"x")
    assert closing.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert b"Connection: close\r\n" in closing


class FakeLoop:
    """call_at, call_later and time() on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[tuple[float, Any]] = []
        self.armed = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Any:
        self.armed += 1
        handle = asyncio.TimerHandle(when, callback, (), asyncio.new_event_loop())
        self.handles.append((when, handle))
        return handle

    def call_later(self, delay: float, callback: Any) -> Any:
        return self.call_at(self.now + delay, callback)

    def advance(self, to: float) -> None:
        self.now = to
        due = [(when, h) for when, h in self.handles if when <= to and not h.cancelled()]
        self.handles = [(when, h) for when, h in self.handles if (when, h) not in due]
        for _, handle in due:
            handle._run()


def test_a_deadline_timer_rearms_only_when_needed() -> None:
    loop = FakeLoop()
    fired: list[float] = []
    timer = DeadlineTimer(loop, lambda: fired.append(loop.now))  # type: ignore[arg-type]
    timer.set(10.0)
    timer.set(20.0)  # later: no new handle
    timer.set(15.0)
    assert loop.armed == 1
    loop.advance(10.0)
    assert fired == [] and loop.armed == 2  # fired early, re-armed for 15
    loop.advance(15.0)
    assert fired == [15.0]
    timer.set(5.0 + 15.0)
    timer.clear()
    loop.advance(30.0)
    assert fired == [15.0]
    assert timer.deadline == math.inf


def test_batched_observations_match_observe() -> None:
    values = [0.0004, 0.0009, 0.001, 0.003, 0.2, 0.2, 7.0, 45.0]
    buckets = (0.001, 0.005, 0.25, 10.0)
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["a"], buckets=buckets, registry=one_by_one).labels("x")
    direct_count = Counter("c", "c", ["a"], registry=one_by_one).labels("x")
    for value in values:
        direct.observe(value)
        direct_count.inc()
    child = Histogram("h", "h", ["a"], buckets=buckets, registry=batched).labels("x")
    counts = bucket_counts((*buckets, math.inf), values[::-1])  # in any order: it sorts
    assert counts == [3, 1, 2, 1, 1]  # a value on a bound is in that bound's bucket
    add_observations(child, counts, sum(values))
    add_to_counter(Counter("c", "c", ["a"], registry=batched).labels("x"), len(values))

    def samples(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert samples(batched) == samples(one_by_one)


def test_route_metrics_are_published_once_per_iteration() -> None:
    deferred: list[Any] = []  # what the loop was asked to run at the end of the iteration
    loop = SimpleNamespace(call_soon=deferred.append)
    metrics = RouteMetrics("breaker", "tallied", EndOfIteration(loop))  # type: ignore[arg-type]

    def value(name: str, **labels: str) -> float:
        found = PROXY_METRICS.get_sample_value(
            name, {"sidecar": "breaker", "upstream": "tallied", **labels}
        )
        return found or 0.0

    for status, duration in ((200, 0.0004), (200, 0.003), (503, 0.0004)):
        metrics.answered(status, duration)
    metrics.attempt_succeeded()
    metrics.circuit_rejected()
    assert len(deferred) == 1  # one publish per iteration, however many answers
    assert value("sidecar_requests_total", code="200") == 0  # not before the iteration ends
    deferred.pop()()
    assert value("sidecar_requests_total", code="200") == 2
    assert value("sidecar_requests_total", code="503") == 1
    assert value("sidecar_upstream_attempts_total", outcome="success") == 1
    assert value("sidecar_circuit_rejected_total") == 1
    histogram = "sidecar_request_duration_seconds_bucket"
    # By status class: the 2xx latency reads alone, without the 503 answered in 0.4 ms.
    assert (value(histogram, le="0.001", status_class="2xx"), value(
        histogram, le="0.005", status_class="2xx"
    )) == (1, 2)
    assert value(histogram, le="0.001", status_class="5xx") == 1
    assert metrics.answered_total == 3
    metrics.answered(200, 0.0004)
    deferred.pop()()
    assert value("sidecar_requests_total", code="200") == 3


def logged_exchange(wire: Any, **fields: Any) -> Exchange:
    """A real exchange (a compiled class in the compiled build) on a route named payments,
    from client 10.0.0.1, its head fields set as a parsed request would have them."""
    connection = wire(NAME="payments").client
    connection.peer = b"10.0.0.1"
    exchange = Exchange(connection, connection.route)
    for name, value in fields.items():
        setattr(exchange, name, value)
    return exchange


async def test_access_lines_are_json_written_once_per_loop_iteration(wire: Any) -> None:
    stream = io.BytesIO()
    log = AccessLog(EndOfIteration(asyncio.get_running_loop()), "breaker", stream)
    exchange = logged_exchange(
        wire,
        method=b"GET",
        target=b'/a?q="x"\\\xff\x01',  # what a client may put in a path, escaped in JSON
        request_id=b"r-1",
        request_id_given=False,
        user_agent=b"ua \x7f",
        attempt=2,
        bytes_sent=10,
        span_id=b"",  # trace context off
    )
    log.write(exchange, 200, 0.0012345678)
    exchange.user_agent = None
    exchange.request_id, exchange.request_id_given = b'client "id"\\', True
    log.write(exchange, 503, 0.5)
    assert stream.getvalue() == b""
    await asyncio.sleep(0)
    first, second = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert first["path"] == '/a?q="x"\\\ufffd\x01'
    assert first["user_agent"] == "ua \x7f"
    assert (first["status"], first["attempts"], first["bytes"]) == (200, 2, 10)
    assert (first["upstream"], first["remote_addr"], first["request_id"]) == (
        "payments",
        "10.0.0.1",
        "r-1",
    )
    assert first["duration"] == 0.001235
    assert first["timestamp"].endswith("Z") and len(first["timestamp"]) == 27
    assert (first["event"], first["level"], first["sidecar"]) == ("access", "info", "breaker")
    assert (second["status"], second["user_agent"]) == (503, None)
    assert second["request_id"] == 'client "id"\\'
    # One loop iteration, one timestamp (taken once per iteration, as nginx caches its time).
    assert second["timestamp"] == first["timestamp"]


async def test_repeated_user_agents_are_escaped_once_and_stay_bounded(wire: Any) -> None:
    stream = io.BytesIO()
    log = AccessLog(EndOfIteration(asyncio.get_running_loop()), "breaker", stream)
    exchange = logged_exchange(
        wire,
        method=b"GET",
        target=b"/",
        request_id=b"r",
        request_id_given=False,
        user_agent=b"",
        attempt=1,
        bytes_sent=0,
        span_id=b"",
    )
    agents = [b'agent "%d"' % n for n in range(300)] + [b'agent "0"']
    for agent in agents:
        exchange.user_agent = agent
        log.write(exchange, 200, 0.001)
    await asyncio.sleep(0)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["user_agent"] for line in lines] == [agent.decode() for agent in agents]
    assert len(log._user_agents) <= 256


class RecordingTransport:
    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.log.append(f"{self.name} write {data.decode()}")

    def close(self) -> None:
        self.closing = True
        self.log.append(f"{self.name} close")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.log.append(f"{self.name} eof")


async def test_the_outbox_writes_at_the_end_of_the_iteration_in_order() -> None:
    log: list[str] = []
    outbox = Outbox(EndOfIteration(asyncio.get_running_loop()))
    a, b, c = (RecordingTransport(log, name) for name in "abc")
    outbox.write(a, b"1")  # type: ignore[arg-type]
    outbox.write(b, b"2")  # type: ignore[arg-type]
    outbox.close(a)  # type: ignore[arg-type]
    outbox.write(a, b"late")  # type: ignore[arg-type]
    outbox.write_eof(b)  # type: ignore[arg-type]
    outbox.write(c, b"3")  # type: ignore[arg-type]
    c.closing = True  # aborted before the end of the iteration
    assert log == []
    await asyncio.sleep(0)
    assert log == ["a write 1", "b write 2", "a close", "b eof"]
