"""The engine's small parts: header helpers, sidecar-made answers, timers, metric batching,
the access log."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import math
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sidecars.observability import PROXY_METRICS, REQUEST_DURATION_BUCKETS, ProcessLogStream
from sidecars.proxy import errors, http1
from sidecars.proxy.accesslog import AccessLog, StdoutWriter
from sidecars.proxy.batch import EndOfIteration, Outbox
from sidecars.proxy.errors import ErrorResponses
from sidecars.proxy.exchange import Exchange
from sidecars.proxy.headers import (
    RequestIds,
    connection_listed,
    origin_form,
    without_listed,
)
from sidecars.proxy.metrics import RouteMetrics
from sidecars.proxy.request import RequestHead
from sidecars.proxy.timer import DeadlineTimer, _wheels

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
    """call_at, call_later, time() and is_closed() on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[tuple[float, Any]] = []
        self.armed = 0
        self.errors: list[dict[str, Any]] = []

    def time(self) -> float:
        return self.now

    def is_closed(self) -> bool:
        return False

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

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


def test_deadline_timers_share_one_loop_handle() -> None:
    """A thousand connections' deadlines cost the loop one handle at a time; each fires at
    its own deadline (rounded up to the wheel's slot), a failing callback does not keep the
    others from firing, and a cancelled timer leaves no reference in the wheel."""
    loop = FakeLoop()
    fired: list[int] = []

    def callback(index: int) -> Callable[[], None]:
        def call() -> None:
            fired.append(index)
            if index == 3:
                raise RuntimeError("a connection's bug")

        return call

    timers = [DeadlineTimer(loop, callback(i)) for i in range(1000)]  # type: ignore[arg-type]
    for index, timer in enumerate(timers):
        timer.set(10.0 + index % 4)
    assert loop.armed == 1
    timers[0].cancel()
    references = sys.getrefcount(timers[0])
    assert references == 2  # the list and getrefcount's argument: not the wheel
    loop.advance(10.0)
    assert fired == list(range(4, 1000, 4)) and loop.armed == 2  # then for the next slot
    loop.advance(13.0)
    assert sorted(fired) == list(range(1, 1000))
    assert len(loop.errors) == 1
    assert timers[0].deadline == math.inf and loop.armed == 2  # nothing left: no handle


def test_a_timer_re_armed_far_away_does_not_hide_a_nearer_one() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    far = DeadlineTimer(loop, lambda: fired.append("far"))  # type: ignore[arg-type]
    near = DeadlineTimer(loop, lambda: fired.append("near"))  # type: ignore[arg-type]
    far.set(10.0)
    far.set(100.0)  # fires at 10, finds its deadline moved and re-arms at 100
    near.set(20.0)
    loop.advance(10.0)
    loop.advance(20.0)
    assert fired == ["near"]
    loop.advance(100.0)
    assert fired == ["near", "far"]


def test_a_callback_raising_a_base_exception_stops_no_other_timer() -> None:
    loop = FakeLoop()
    fired: list[str] = []

    def cancelled() -> None:
        fired.append("bad")
        raise asyncio.CancelledError

    timers = [DeadlineTimer(loop, cancelled)]  # type: ignore[arg-type]
    timers += [
        DeadlineTimer(loop, lambda n=n: fired.append(n))  # type: ignore[arg-type, misc]
        for n in ("one", "two")
    ]
    for timer in timers:
        timer.set(0.5)
    loop.advance(0.5)
    assert sorted(fired) == ["bad", "one", "two"] and len(loop.errors) == 1
    timers[1].set(0.75)
    loop.advance(0.75)
    assert fired[-1] == "one"


def test_timers_moved_nearer_leave_no_slot_behind() -> None:
    """A keep-alive connection's timer moves between its idle timeout (far) and the next
    release (near) on every request: the wheel keeps no emptied slot, and a far deadline
    takes a whole second's slot (fired early, then re-armed near)."""
    loop = FakeLoop()
    fired: list[float] = []
    timers = [
        DeadlineTimer(loop, lambda: fired.append(loop.now))  # type: ignore[arg-type]
        for _ in range(100)
    ]
    for step in range(50):
        for index, timer in enumerate(timers):
            timer.set(3600.0 + step + index / 100)  # far, each its own time
            timer.cancel()
            timer.set(0.5 + step)
    wheel = _wheels[loop]  # type: ignore[index]
    assert len(wheel._slots) <= 2
    timers[0].cancel()
    timers[0].set(10.3)
    loop.advance(10.0)
    assert fired == []  # the whole second's slot: early, re-armed
    loop.advance(10.3 + 1 / 128)
    assert fired == [10.3 + 1 / 128]


FAMILIES = (
    "sidecar_requests",
    "sidecar_request_duration_seconds",
    "sidecar_upstream_attempts",
    "sidecar_circuit_rejected",
)


def exposition(registry: CollectorRegistry, upstream: str) -> list[str]:
    """The lines of the per-request families: HELP and TYPE, and the samples of ``upstream``."""
    kept = []
    for line in generate_latest(registry).decode().splitlines():
        name = line.split(" ")[2] if line.startswith("#") else line.split("{")[0]
        family = name.removesuffix("_total").removesuffix("_bucket")
        family = family.removesuffix("_count").removesuffix("_sum")
        if family in FAMILIES and (line.startswith("#") or f'upstream="{upstream}"' in line):
            kept.append(line)
    return kept


def test_the_scrape_time_families_match_prometheus_client_s_own() -> None:
    """The same names, help, labels and values as the prometheus_client families that
    observe() and inc() fill one by one (what the proxy exported before)."""
    answers = [(200, 0.0004), (200, 0.001), (200, 0.003), (503, 0.0009), (404, 7.0)]
    answers += [(200, 45.0), (201, 0.2), (503, 0.001)]
    reference = CollectorRegistry()
    base = ["sidecar", "upstream"]
    requests = Counter(
        "sidecar_requests_total", "Client requests answered.", [*base, "code"], registry=reference
    )
    durations = Histogram(
        "sidecar_request_duration_seconds",
        "Time from request head to the end of the response, by status class (2xx...).",
        [*base, "status_class"],
        buckets=REQUEST_DURATION_BUCKETS,
        registry=reference,
    )
    attempts = Counter(
        "sidecar_upstream_attempts_total",
        "Attempts towards the upstream by outcome: success, failure, rejected.",
        [*base, "outcome"],
        registry=reference,
    )
    rejected = Counter(
        "sidecar_circuit_rejected_total",
        "Requests answered at once because the circuit was open.",
        base,
        registry=reference,
    )
    labels = ("breaker", "exposed")
    outcomes = {name: attempts.labels(*labels, name) for name in ("success", "failure", "rejected")}
    rejected.labels(*labels)
    metrics = RouteMetrics(*labels)
    assert exposition(PROXY_METRICS, "exposed") == exposition(reference, "exposed")
    for status, duration in answers:
        requests.labels(*labels, str(status)).inc()
        durations.labels(*labels, f"{status // 100}xx").observe(duration)
        metrics.answered(status, duration)
    for _ in range(3):
        outcomes["success"].inc()
        metrics.attempt_succeeded()
    outcomes["failure"].inc()
    metrics.attempt_failure.inc()
    outcomes["rejected"].inc(2)
    rejected.labels(*labels).inc(2)
    metrics.circuit_rejected()
    metrics.circuit_rejected()
    seen = exposition(PROXY_METRICS, "exposed")
    assert seen == exposition(reference, "exposed")
    on_bound = {"sidecar": "breaker", "upstream": "exposed", "status_class": "2xx", "le": "0.001"}
    bucket = "sidecar_request_duration_seconds_bucket"
    assert PROXY_METRICS.get_sample_value(bucket, on_bound) == 2  # 0.001 is in le=0.001
    assert metrics.answered_total == len(answers)
    # Counted as they happen: the next scrape sees the next answer, with no publish between.
    metrics.answered(200, 0.0004)
    assert (
        PROXY_METRICS.get_sample_value(
            "sidecar_requests_total", {"sidecar": "breaker", "upstream": "exposed", "code": "200"}
        )
        == 5
    )


def test_routes_of_one_name_add_to_the_same_counts() -> None:
    first, second = RouteMetrics("breaker", "twice"), RouteMetrics("breaker", "twice")
    first.answered(200, 0.01)
    second.answered(200, 0.01)
    labels = {"sidecar": "breaker", "upstream": "twice"}
    assert PROXY_METRICS.get_sample_value("sidecar_requests_total", {**labels, "code": "200"}) == 2
    assert (first.answered_total, second.answered_total) == (1, 1)


class MemoryOutput:
    """An Output into memory that refuses while ``full``."""

    def __init__(self) -> None:
        self.data = b""
        self.full = False

    def put(self, data: bytes) -> bool:
        if self.full:
            return False
        self.data += data
        return True

    def close(self, timeout: float) -> int:
        return 0

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.data.splitlines()]


def exchange_like(wire: Any, name: str = "up", **fields: Any) -> Exchange:
    """A real exchange (a compiled class in the compiled build: no stand-in passes its type
    checks) on a route called ``name``, from client 10.0.0.1, its head fields set as a parsed
    request would have them."""
    connection = wire(NAME=name).client
    connection.peer = b"10.0.0.1"
    exchange = Exchange(connection, connection.route)
    values: dict[str, Any] = {
        "method": b"GET",
        "target": b"/",
        "request_id": b"r",
        "request_id_given": False,
        "user_agent": None,
        "attempt": 1,
        "bytes_sent": 0,
        "span_id": b"",  # trace context off
    }
    values.update(fields)
    for field, value in values.items():
        setattr(exchange, field, value)
    return exchange


def access_log(output: MemoryOutput, timers: FakeLoop, **options: Any) -> AccessLog:
    end_of_iteration = EndOfIteration(asyncio.get_running_loop())
    return AccessLog(end_of_iteration, timers, "breaker", output, **options)


async def test_access_lines_are_json_and_share_their_iteration_s_timestamp(wire: Any) -> None:
    output, timers = MemoryOutput(), FakeLoop()
    log = access_log(output, timers)
    exchange = exchange_like(
        wire,
        name="payments",
        target=b'/a?q="x"\\\xff\x01',  # what a client may put in a path, escaped in JSON
        request_id=b"r-1",
        user_agent=b"ua \x7f",
        attempt=2,
        bytes_sent=10,
    )
    log.write(exchange, 200, 0.0012345678)
    exchange.user_agent = None
    exchange.request_id, exchange.request_id_given = b'client "id"\\', True
    log.write(exchange, 503, 0.5)
    log.flush()
    first, second = output.lines()
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
    output = MemoryOutput()
    log = access_log(output, FakeLoop())
    exchange = exchange_like(wire)
    agents = [b'agent "%d"' % n for n in range(300)] + [b'agent "0"']
    for agent in agents:
        exchange.user_agent = agent
        log.write(exchange, 200, 0.001)
    log.flush()
    assert [line["user_agent"] for line in output.lines()] == [a.decode() for a in agents]
    assert len(log._user_agents) <= 256


async def test_access_lines_wait_for_the_flush_interval_then_go_after_the_sends(wire: Any) -> None:
    output, timers = MemoryOutput(), FakeLoop()
    clock = iter([1000.25, 1000.5, 1000.75])
    log = access_log(output, timers, flush_interval=0.1, wall_clock=lambda: next(clock))
    log.write(exchange_like(wire, request_id=b"a"), 200, 0.001)
    await asyncio.sleep(0)  # the iteration ends: the timer is armed, nothing written yet
    assert (output.data, [when for when, _ in timers.handles]) == (b"", [0.1])
    log.write(exchange_like(wire, request_id=b"b"), 200, 0.001)
    await asyncio.sleep(0)
    assert timers.armed == 1  # one timer for the buffer, not one per iteration
    timers.advance(0.099)
    await asyncio.sleep(0)
    assert output.data == b""
    timers.advance(0.1)
    assert output.data == b""  # the timer defers the write to the end of the iteration
    await asyncio.sleep(0)
    first, second = output.lines()
    assert (first["request_id"], second["request_id"]) == ("a", "b")
    assert first["timestamp"] != second["timestamp"]  # two iterations: two timestamps
    await asyncio.sleep(0)
    assert timers.armed == 1  # an empty buffer arms no timer


async def test_a_full_access_buffer_is_written_at_the_end_of_the_iteration(wire: Any) -> None:
    output, timers = MemoryOutput(), FakeLoop()
    log = access_log(output, timers, buffer_size=300)
    log.write(exchange_like(wire), 200, 0.001)
    log.write(exchange_like(wire), 200, 0.001)
    assert output.data == b""
    await asyncio.sleep(0)
    assert len(output.lines()) == 2 and timers.armed == 0


async def test_the_iteration_s_sends_go_before_its_bookkeeping() -> None:
    order: list[str] = []
    end_of_iteration = EndOfIteration(asyncio.get_running_loop())
    end_of_iteration.defer(lambda: order.append("bookkeeping"))
    end_of_iteration.defer_send(lambda: order.append("send"))
    await asyncio.sleep(0)
    assert order == ["send", "bookkeeping"]


async def test_lines_the_output_refuses_are_counted_and_reported_when_it_takes_again(
    wire: Any,
) -> None:
    output, timers = MemoryOutput(), FakeLoop()
    log = access_log(output, timers)
    labels = {"sidecar": "breaker", "reason": "stdout_full"}
    before = PROXY_METRICS.get_sample_value("sidecar_access_log_dropped_total", labels) or 0
    output.full = True
    for _ in range(3):
        log.write(exchange_like(wire, request_id=b"lost"), 200, 0.001)
    log.flush()
    assert PROXY_METRICS.get_sample_value("sidecar_access_log_dropped_total", labels) == before + 3
    output.full = False
    log.write(exchange_like(wire, request_id=b"kept"), 200, 0.001)
    log.flush()
    report, line = output.lines()
    assert (report["event"], report["level"], report["lines"]) == ("access_log_dropped", "warn", 3)
    assert (report["sidecar"], report["logger"]) == ("breaker", "sidecars.proxy.access")
    assert (line["event"], line["request_id"]) == ("access", "kept")
    log.write(exchange_like(wire), 200, 0.001)
    log.flush()
    assert [line["event"] for line in output.lines()] == ["access_log_dropped", "access", "access"]


def pipe_of_64_kib() -> tuple[int, int]:
    """A pipe that holds 64 KiB (Linux's default, set in case the machine's is larger)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 65536)
    return read_end, write_end


def test_a_stuck_stdout_stalls_the_writer_thread_not_the_caller() -> None:
    """A real pipe nobody reads: what it holds is written at once, the rest of the batch
    waits for the thread; put() refuses past the bound at once instead of blocking, and
    what was taken is all written once the pipe is read."""
    read_end, write_end = pipe_of_64_kib()
    with os.fdopen(write_end, "wb") as stream, os.fdopen(read_end, "rb") as reader:
        output = StdoutWriter("breaker", max_pending=10_000, stream=stream)
        chunk = b"x" * 99_999 + b"\n"  # more than the pipe holds: the rest over the bound
        assert output.put(chunk)
        assert not output.put(b"y\n")  # the bound: refused, not blocked
        received = bytearray()
        drained = threading.Thread(target=lambda: received.extend(reader.read(100_000)))
        drained.start()
        assert output.close(10.0) == 0
        drained.join(10.0)
        assert bytes(received) == chunk


def nowait_pipes() -> bool:
    """Whether this kernel writes to a pipe with RWF_NOWAIT (Linux 6 does)."""
    if not hasattr(os, "RWF_NOWAIT"):
        return False
    read_end, write_end = os.pipe()
    try:
        os.pwritev(write_end, (b"x",), -1, os.RWF_NOWAIT)
        return True
    except OSError:
        return False
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.skipif(not nowait_pipes(), reason="this kernel has no RWF_NOWAIT for pipes")
def test_lines_a_pipe_has_room_for_are_on_it_when_put_returns() -> None:
    """An access batch larger than PIPE_BUF, then a process log line, each in the pipe when
    put() returns (written on the caller's thread, no hand-over): a line logged before an
    answer is on stdout before the answer leaves."""
    read_end, write_end = pipe_of_64_kib()
    with os.fdopen(write_end, "wb") as stream, os.fdopen(read_end, "rb"):
        output = StdoutWriter("breaker", max_pending=100_000, stream=stream)
        batch = b"".join(b'{"event":"access","n":%d}\n' % n for n in range(1000))
        assert len(batch) > select.PIPE_BUF
        os.set_blocking(read_end, False)
        assert output.put(batch)
        assert os.read(read_end, 65536) == batch
        assert output.put(b'{"event":"first"}\n')
        assert os.read(read_end, 65536) == b'{"event":"first"}\n'
        assert output.close(10.0) == 0


def test_a_stdout_made_non_blocking_loses_nothing_and_splits_no_line() -> None:
    """Another process may have set O_NONBLOCK on the pipe they share: the writer's thread
    waits for room on EAGAIN instead of counting the rest lost (which left half a line)."""
    read_end, write_end = pipe_of_64_kib()
    os.set_blocking(write_end, False)
    with os.fdopen(write_end, "wb") as stream, os.fdopen(read_end, "rb") as reader:
        output = StdoutWriter("breaker", max_pending=400_000, stream=stream)
        chunk = b"x" * 199_999 + b"\n"  # three times what the pipe holds
        assert output.put(chunk)
        assert output.put(b'{"event":"next"}\n')
        received = bytearray()
        wanted = len(chunk) + len(b'{"event":"next"}\n')
        drained = threading.Thread(
            target=lambda: received.extend(reader.read(wanted)), daemon=True
        )
        drained.start()
        assert output.close(10.0) == 0
        drained.join(10.0)
        assert bytes(received) == chunk + b'{"event":"next"}\n'


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


def test_the_writer_takes_one_batch_over_its_bound_and_writes_at_once_once_closed() -> None:
    stream = io.BytesIO()
    output = StdoutWriter("breaker", max_pending=1000, stream=stream)
    batch = b"x" * 4999 + b"\n"  # one busy iteration's lines, more than the bound
    assert output.put(batch)  # nothing waits: taken, not dropped on a healthy stdout
    assert output.close(10.0) == 0
    assert output.put(b"stopped\n")  # everything written, the loop gone: written at once
    assert stream.getvalue() == batch + b"stopped\n"


def test_a_writer_still_stuck_at_close_refuses_later_lines() -> None:
    read_end, write_end = pipe_of_64_kib()
    with os.fdopen(write_end, "wb") as stream, os.fdopen(read_end, "rb") as reader:
        output = StdoutWriter("breaker", max_pending=200_000, stream=stream)
        chunk = b"x" * 199_999 + b"\n"  # more than the pipe holds: the thread blocks
        assert output.put(chunk)
        assert output.close(0.2) > 0  # not all written
        assert not output.put(b"stopped\n")  # refused, never blocking the caller
        received = reader.read(len(chunk))
        assert received == chunk


def test_process_log_lines_go_whole_through_the_writer_and_drops_are_counted() -> None:
    read_end, write_end = pipe_of_64_kib()
    labels = {"sidecar": "breaker", "reason": "process_log"}
    before = PROXY_METRICS.get_sample_value("sidecar_access_log_dropped_total", labels) or 0
    with os.fdopen(write_end, "wb") as stream, os.fdopen(read_end, "rb") as reader:
        # What the pipe does not hold of the big line (about 86 KB) waits past the bound.
        output = StdoutWriter("breaker", max_pending=50_000, stream=stream)
        log = ProcessLogStream(output.put, "breaker")
        big = orjson.dumps({"event": "big", "value": "v" * 150_000}).decode()
        # As structlog's PrintLogger writes (the line, then its newline). Over the bound, but
        # nothing waits: taken; the pipe fills.
        print(big, file=log, flush=True)
        log.write('{"event":"lost"}\n')  # refused at once, not blocking
        dropped = PROXY_METRICS.get_sample_value("sidecar_access_log_dropped_total", labels)
        assert dropped == before + 1
        received = bytearray()
        drained = threading.Thread(target=lambda: received.extend(reader.read()))
        drained.start()
        assert output.close(10.0) == 0
        print('{"event":"stopped"}', file=log)
        stream.close()
        drained.join(10.0)
    lines = [orjson.loads(line) for line in bytes(received).splitlines()]
    assert [line["event"] for line in lines] == ["big", "log_lines_dropped", "stopped"]
    assert (lines[1]["lines"], lines[1]["sidecar"]) == (1, "breaker")


def test_a_nan_duration_is_counted_in_the_last_bucket_not_raised() -> None:
    metrics = RouteMetrics("breaker", "nan-duration")
    metrics.answered(200, math.nan)
    metrics.answered(200, 0.001)
    assert PROXY_METRICS.get_sample_value(
        "sidecar_request_duration_seconds_count",
        {"sidecar": "breaker", "upstream": "nan-duration", "status_class": "2xx"},
    ) == 2


def test_a_line_is_in_a_file_when_put_returns(tmp_path: Any) -> None:
    """A regular file as stdout is written on the caller's thread (as nginx writes its
    access_log), whatever the size."""
    with (tmp_path / "stdout").open("wb") as stream:
        output = StdoutWriter("breaker", max_pending=100_000, stream=stream)
        assert output.put(b'{"event":"first"}\n')
        assert (tmp_path / "stdout").read_bytes() == b'{"event":"first"}\n'
        assert output.close(10.0) == 0
        assert output.close(10.0) == 0  # a second close waits for nothing


def test_log_lines_from_two_threads_stay_whole_lines() -> None:
    """structlog on one thread and the standard library's logging on another, both on the
    process log stream (as redis logs from its executor thread): no line glued to another."""
    script = """
import logging, sys, threading
from sidecars import observability as obs
lines = []
obs.configure_logging("breaker", "info", obs.ProcessLogStream(
    lambda data: lines.extend(data.splitlines()) or True, "breaker"))
structlog_log, stdlib_log = obs.get_logger("sidecars.proxy"), logging.getLogger("redis")
sys.setswitchinterval(1e-6)
threads = [
    threading.Thread(target=lambda: [structlog_log.info("a", i=i) for i in range(20000)]),
    threading.Thread(target=lambda: [stdlib_log.warning("b %d", i) for i in range(20000)]),
]
for thread in threads: thread.start()
for thread in threads: thread.join()
sys.stdout.buffer.write(b"\\n".join(lines))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, check=True
    )
    lines = done.stdout.split(b"\n")
    assert len(lines) == 40_000
    for line in lines:
        orjson.loads(line)  # each a whole JSON object
