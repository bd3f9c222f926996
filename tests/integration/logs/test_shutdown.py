"""SIGTERM: inputs stop, the processor flushes, outputs deliver, exit 0; a disk buffer keeps
what could not be delivered in time for the next start."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from fluent.sender import FluentSender
from logadapter_support import StartAdapter, forward_env, wait_for
from support import LOOPBACK, free_port, metric_value

TRACE = [
    "Traceback (most recent call last):",
    '  File "/app/main.py", line 3, in <module>',
    "    run()",
    "ValueError: pending until shutdown",
]


def test_sigterm_flushes_pending_groups_and_buffered_records(
    adapters: StartAdapter, forward_port: int
) -> None:
    adapter = adapters(forward_env(forward_port, LOGADAPTER_MULTILINE_TIMEOUT="1h"))
    sender = FluentSender("app", host=LOOPBACK, port=forward_port)
    try:
        for n in range(200):
            assert sender.emit("events", {"message": f"event {n}"})
        for line in TRACE:  # Docker-style records: the trace stays pending (1h timeout, and
            assert sender.emit(  # the connection stays open: closing it would flush them)
                "docker",
                {"log": line, "source": "stderr", "container_id": "abc", "container_name": "/api"},
            )
        adapter.wait_records(200)
        wait_for(lambda: adapter.status()["processor"]["pending_lines"] == len(TRACE))
        assert adapter.terminate(sig=signal.SIGTERM) == 0
    finally:
        sender.close()
    records = adapter.records()
    assert [r["message"] for r in records[:200]] == [f"event {n}" for n in range(200)]
    trace = records[200]
    assert trace["error"]["type"] == "ValueError"
    assert trace["container_name"] == "api"
    assert len(records) == 201
    assert "drained" in [event["event"] for event in adapter.process_logs()]


def test_disk_buffer_keeps_what_could_not_be_delivered(
    adapters: StartAdapter, forward_port: int, tmp_path: Path
) -> None:
    collector_port = free_port()
    env = forward_env(
        forward_port,
        LOGADAPTER_BUFFER_DIR=str(tmp_path / "buffer"),
        LOGADAPTER_OUTPUTS=f"stdout,forward://{LOOPBACK}:{collector_port}",
        SIDECAR_DRAIN_TIMEOUT="1s",
    )
    first = adapters(env)
    sender = FluentSender("app", host=LOOPBACK, port=forward_port)
    try:
        for n in range(100):
            assert sender.emit("events", {"message": f"kept {n}"})
    finally:
        sender.close()
    first.wait_records(100)  # stdout delivered; the collector is down
    assert first.terminate() == 0
    assert "drain_timeout_kept_on_disk" in [e["event"] for e in first.process_logs()]

    collector = adapters(forward_env(collector_port))
    second = adapters({**env, "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{free_port()}"})
    collected = collector.wait_records(100)
    assert [r["message"] for r in collected] == [f"kept {n}" for n in range(100)]
    assert second.records() == []  # stdout had delivered them already: not again
    assert second.terminate() == 0


def test_memory_buffer_counts_what_the_drain_timeout_dropped(
    adapters: StartAdapter, forward_port: int
) -> None:
    env = forward_env(
        forward_port,
        SIDECAR_DRAIN_TIMEOUT="500ms",
        LOGADAPTER_OUTPUTS=f"forward://{LOOPBACK}:{free_port()}",
    )
    adapter = adapters(env)
    sender = FluentSender("app", host=LOOPBACK, port=forward_port)
    try:
        for n in range(10):
            assert sender.emit("events", {"message": f"lost {n}"})
    finally:
        sender.close()
    wait_for(lambda: metric_value(adapter.metrics(), "logadapter_buffer_records") == 10)
    assert adapter.terminate() == 0
    dropped = [e for e in adapter.process_logs() if e["event"] == "drain_timeout_records_dropped"]
    assert dropped[0]["undelivered"] == {f"forward://{LOOPBACK}:{env_port(env)}": 10}


def env_port(env: dict[str, str]) -> int:
    return int(env["LOGADAPTER_OUTPUTS"].rsplit(":", 1)[1])


def test_idle_forward_clients_are_closed_cleanly_at_sigterm(
    adapters: StartAdapter, forward_port: int
) -> None:
    adapter = adapters(forward_env(forward_port))
    idle = socket.create_connection((LOOPBACK, forward_port))
    half = socket.create_connection((LOOPBACK, forward_port))
    half.sendall(b"\x93\xa3app")  # the first bytes of a Message, the rest never comes
    try:
        wait_for(lambda: adapter.status()["inputs"]["forward"]["connections"] == 2)
        assert adapter.terminate(sig=signal.SIGTERM) == 0
        assert idle.recv(1) == b""  # closed by the adapter
    finally:
        idle.close()
        half.close()
    errors = [event for event in adapter.process_logs() if event["level"] == "error"]
    assert errors == []
