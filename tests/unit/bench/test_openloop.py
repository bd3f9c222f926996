"""The open-loop generator (bench/openloop.c), built with gcc: its histogram's percentiles,
and its framing and counting against a real loopback HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from bench.openloop import histogram_percentiles, run_openloop


def test_values_below_128_ns_are_exact() -> None:
    result = histogram_percentiles(list(range(1, 101)))
    assert result["recorded"] == 100
    # 100 values 1..100 ns: p50 is the 50th, p99 the 99th (in us).
    assert result["latency_us"]["p50"] == pytest.approx(0.050)
    assert result["latency_us"]["p99"] == pytest.approx(0.099)
    assert result["latency_us"]["max"] == pytest.approx(0.100)


def test_percentiles_within_a_bucket_of_the_exact_value() -> None:
    values = [n * 1000 for n in range(1, 100_001)]  # 1 us .. 100 ms, uniform
    result = histogram_percentiles(values)
    latency = result["latency_us"]
    for key, exact in (("p50", 50_000), ("p90", 90_000), ("p99", 99_000), ("p999", 99_900)):
        # The upper edge of a bucket at most 1/64 of its value wide.
        assert exact <= latency[key] <= exact * (1 + 1 / 64), key
    assert latency["max"] == pytest.approx(100_000)


def test_one_slow_value_shows_at_the_top_only() -> None:
    values = [200_000] * 999 + [50_000_000]  # 200 us, one 50 ms
    latency = histogram_percentiles(values)["latency_us"]
    assert latency["p50"] == pytest.approx(200, rel=1 / 64)
    assert latency["p99"] == pytest.approx(200, rel=1 / 64)
    assert latency["max"] == pytest.approx(50_000)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A keep-alive server answering every request on a connection with ``request.param``."""
    answer: bytes = request.param
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve(conn: socket.socket) -> None:
        conn.settimeout(10)
        pending = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                pending += data
                while b"\r\n\r\n" in pending:
                    _, _, pending = pending.partition(b"\r\n\r\n")
                    conn.sendall(answer)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(listener.getsockname()[1])
    listener.close()


@pytest.mark.parametrize("server", [OK], indirect=True, ids=["ok"])
def test_every_due_request_is_answered_and_recorded_after_the_warmup(server: int) -> None:
    run = run_openloop("127.0.0.1", server, "/", 200, 0.5, connections=4, warmup_seconds=0.25)
    assert run.due == 100
    assert run.recorded == 50  # those due in the first 0.25 s are not recorded
    assert run.bad == 0
    assert run.achieved_rate == pytest.approx(200)
    assert 0 < run.latency_us["p50"] <= run.latency_us["p99"] <= run.latency_us["max"]


@pytest.mark.parametrize("server", [UNAVAILABLE], indirect=True, ids=["unavailable"])
def test_answers_outside_2xx_are_counted(server: int) -> None:
    run = run_openloop("127.0.0.1", server, "/", 100, 0.2, connections=2, warmup_seconds=0)
    assert run.non_2xx == run.due == 20
    assert run.errors == 0


@pytest.mark.parametrize("server", [CHUNKED], indirect=True, ids=["chunked"])
def test_an_answer_without_content_length_is_an_error(server: int) -> None:
    run = run_openloop("127.0.0.1", server, "/", 100, 0.2, connections=2, warmup_seconds=0)
    assert run.errors == run.due == 20
    assert run.recorded == 0
