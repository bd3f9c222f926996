"""The syslog input: UDP datagrams, TCP with octet counting or newline framing."""

from __future__ import annotations

import socket

import pytest
from logadapter_support import Adapter, StartAdapter, wait_for
from support import LOOPBACK, free_port, metric_value


@pytest.fixture
def syslog_port() -> int:
    return free_port()


@pytest.fixture
def syslog(adapters: StartAdapter, syslog_port: int) -> Adapter:
    return adapters(
        {"LOGADAPTER_INPUTS": "syslog", "LOGADAPTER_SYSLOG_LISTEN": f"{LOOPBACK}:{syslog_port}"}
    )


RFC5424 = "<164>1 2026-11-26T10:00:00.000003Z host app 42 ID47 - {text}"
RFC3164 = "<11>Nov 26 10:00:00 host app[7]: {text}"


def test_udp_datagrams(syslog: Adapter, syslog_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(RFC5424.format(text="over udp").encode(), (LOOPBACK, syslog_port))
        udp.sendto(RFC3164.format(text="bsd style\n").encode(), (LOOPBACK, syslog_port))
    records = syslog.wait_records(2)
    by_message = {r["message"]: r for r in records}
    assert by_message["over udp"]["level"] == "warn"  # severity 4 (warning)
    assert by_message["over udp"]["timestamp"] == "2026-11-26T10:00:00.000003Z"
    assert by_message["bsd style"]["level"] == "error"  # severity 3


def test_tcp_octet_counting_and_newline_framing(syslog: Adapter, syslog_port: int) -> None:
    framed = [RFC5424.format(text=f"counted {n}").encode() for n in range(3)]
    multi_line = RFC5424.format(text="first line\n  second line").encode()
    with socket.create_connection((LOOPBACK, syslog_port)) as counted:
        counted.sendall(b"".join(b"%d %s" % (len(m), m) for m in [*framed, multi_line]))
    with socket.create_connection((LOOPBACK, syslog_port)) as newline:
        newline.sendall(
            b"".join(RFC3164.format(text=f"line {n}").encode() + b"\n" for n in range(3))
        )
    records = syslog.wait_records(7)
    messages = {r["message"] for r in records}
    assert {"counted 0", "counted 1", "counted 2", "line 0", "line 1", "line 2"} <= messages
    assert "first line\n  second line" in messages


def test_a_last_message_without_newline_is_kept_at_close(syslog: Adapter, syslog_port: int) -> None:
    with socket.create_connection((LOOPBACK, syslog_port)) as tcp:
        tcp.sendall(RFC3164.format(text="first").encode() + b"\n")
        tcp.sendall(RFC3164.format(text="last, no newline").encode())
    records = syslog.wait_records(2)
    assert [r["message"] for r in records] == ["first", "last, no newline"]


def test_a_bad_frame_closes_that_connection_only(syslog: Adapter, syslog_port: int) -> None:
    with (
        socket.create_connection((LOOPBACK, syslog_port), timeout=10) as good,
        socket.create_connection((LOOPBACK, syslog_port), timeout=10) as bad,
    ):
        bad.sendall(b"12x this is not an octet count")
        assert bad.recv(1) == b""
        message = RFC5424.format(text="still served").encode()
        good.sendall(b"%d %s" % (len(message), message))
        syslog.wait_records(1)
    assert syslog.messages() == ["still served"]
    assert (
        metric_value(
            syslog.metrics(), "logadapter_input_errors_total", input="syslog", kind="bad_frame"
        )
        == 1
    )


def test_udp_is_the_only_input_that_drops_when_the_buffer_is_full(
    adapters: StartAdapter, syslog_port: int
) -> None:
    dead_collector = f"forward://{LOOPBACK}:{free_port()}"
    adapter = adapters(
        {
            "LOGADAPTER_INPUTS": "syslog",
            "LOGADAPTER_SYSLOG_LISTEN": f"{LOOPBACK}:{syslog_port}",
            "LOGADAPTER_OUTPUTS": dead_collector,
            "LOGADAPTER_BUFFER_MAX": "16KiB",
        }
    )
    payload = RFC5424.format(text="x" * 1000).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(40):
            udp.sendto(payload, (LOOPBACK, syslog_port))

    def dropped() -> float:
        return metric_value(
            adapter.metrics(), "logadapter_records_dropped_total", reason="buffer_full_udp"
        )

    wait_for(lambda: dropped() > 0)
    received = metric_value(adapter.metrics(), "logadapter_records_in_total", input="syslog")
    assert received + dropped() <= 40
    assert adapter.status()["inputs"]["syslog"]["udp_dropped_buffer_full"] == dropped()
