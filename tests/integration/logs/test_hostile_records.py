"""A poison record costs one record, never an input: records nested far past the bound on
every input (stdin, tail, Forward in every mode, syslog UDP and TCP) through the real process.
The record is kept with its too-deep part replaced by a marker, counted, logged; its
neighbours are delivered and a Forward chunk is acknowledged."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import msgpack
from fluent.sender import FluentSender
from logadapter_support import Adapter, StartAdapter, forward_env, wait_for
from support import LOOPBACK, free_port, http_get, metric_value

from sidecars.logs.depth import MARKER, MAX_DEPTH

LEVELS = 253  # about orjson's recursion limit: what the hostile run sent


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


def poison_json(message: str) -> str:
    return json.dumps({"message": message, "deep": nested(LEVELS)})


def assert_cut(record: dict[str, Any]) -> None:
    """The too-deep part is the marker, at most ``MAX_DEPTH`` containers down."""
    value: Any = record["attributes"]["deep"]
    levels = 2  # the record and its attributes
    while isinstance(value, dict):
        value = value["a"]
        levels += 1
    assert value == MARKER
    assert levels <= MAX_DEPTH + 2


def assert_counted(adapter: Adapter, at_least: int = 1) -> None:
    metrics = adapter.metrics()
    cut = metric_value(metrics, "logadapter_records_truncated_total", reason="max_depth")
    assert cut >= at_least, metrics
    events = [event for event in adapter.process_logs() if event.get("reason") == "max_depth"]
    assert events and events[0]["event"] == "log_records_truncated"
    assert events[0]["limit_levels"] == MAX_DEPTH


def by_message(adapter: Adapter, count: int) -> dict[str, dict[str, Any]]:
    return {record["message"]: record for record in adapter.wait_records(count)}


def test_stdin_keeps_the_poison_and_its_neighbours(adapters: StartAdapter) -> None:
    adapter = adapters({"LOGADAPTER_INPUTS": "stdin"}, stdin=subprocess.PIPE, ready=False)
    assert adapter.process is not None and adapter.process.stdin is not None
    lines = ["before", poison_json("poison"), "after"]
    adapter.process.stdin.write(("\n".join(lines) + "\n").encode())
    adapter.process.stdin.close()
    assert adapter.process.wait(30) == 0, adapter.stderr_text()
    records = adapter.records()
    assert [r["message"] for r in records] == ["before", "poison", "after"]
    assert_cut(records[1])
    events = [event["event"] for event in adapter.process_logs()]
    assert "fatal" not in events
    assert sum(1 for e in adapter.process_logs() if e.get("reason") == "max_depth") == 1


def test_tail_keeps_following_after_a_poison_line(adapters: StartAdapter, log_dir: Path) -> None:
    path = log_dir / "app.log"
    path.write_text("before\n" + poison_json("poison") + "\nafter\n")
    adapter = adapters(
        {"LOGADAPTER_INPUTS": "tail", "LOGADAPTER_TAIL_PATHS": str(log_dir / "*.log")}
    )
    records = by_message(adapter, 3)
    assert_cut(records["poison"])
    with path.open("a") as file:
        file.write("later\n")
    wait_for(lambda: "later" in adapter.messages(), describe=adapter.stderr_text)
    assert http_get(f"{adapter.admin_url}/readyz")[0] == 200
    assert_counted(adapter)


def test_fluent_logger_poison_event_costs_nothing_else(
    adapters: StartAdapter, forward_port: int
) -> None:
    adapter = adapters(forward_env(forward_port))
    sender = FluentSender("shop", host=LOOPBACK, port=forward_port)
    try:
        assert sender.emit("web", {"message": "before"})
        assert sender.emit("web", {"message": "poison", "deep": nested(LEVELS)})
        assert sender.emit("web", {"message": "after"})
    finally:
        sender.close()
    records = by_message(adapter, 3)
    assert_cut(records["poison"])
    assert_counted(adapter)


def test_a_packed_forward_chunk_with_a_poison_record_is_delivered_and_acked(
    adapters: StartAdapter, forward_port: int
) -> None:
    adapter = adapters(forward_env(forward_port))
    packer = msgpack.Packer(use_bin_type=True)
    events = [{"message": "good 1"}, {"message": "poison", "deep": nested(LEVELS)},
              {"message": "good 2"}]
    entries = b"".join(packer.pack([1795687200, event]) for event in events)
    docker = {"log": "docker line", "source": "stdout", "container_id": "c1",
              "container_name": "/web", "deep": nested(LEVELS)}
    with socket.create_connection((LOOPBACK, forward_port), timeout=10) as sock:
        sock.sendall(packer.pack(["app", entries, {"chunk": "p1", "size": 3}]))
        sock.sendall(packer.pack(["app", [[1795687200, docker]], {"chunk": "f1"}]))
        sock.sendall(packer.pack(["app", 1795687200, events[1], {"chunk": "m1"}]))
        unpacker = msgpack.Unpacker(raw=False)
        acks: list[Any] = []
        while len(acks) < 3:
            data = sock.recv(65536)
            assert data, "closed by the server"
            unpacker.feed(data)
            acks.extend(unpacker)
    assert acks == [{"ack": "p1"}, {"ack": "f1"}, {"ack": "m1"}]
    records = adapter.wait_records(5)
    # The Docker line waits for a possible continuation: it may come last.
    assert sorted(r["message"] for r in records) == sorted(
        ["good 1", "poison", "good 2", "docker line", "poison"]
    )
    assert [r["message"] for r in records[:3]] == ["good 1", "poison", "good 2"]
    for record in records:
        if record["message"] != "good 1" and record["message"] != "good 2":
            assert_cut(record)
    assert_counted(adapter, 3)
    assert "Unhandled exception" not in adapter.stderr_text()


def test_syslog_poison_over_tcp_and_udp(adapters: StartAdapter) -> None:
    port = free_port()
    adapter = adapters(
        {"LOGADAPTER_INPUTS": "syslog", "LOGADAPTER_SYSLOG_LISTEN": f"{LOOPBACK}:{port}"}
    )

    def message(text: str) -> bytes:
        return f"<14>1 2026-11-26T10:00:00Z host app 1 - - {text}".encode()

    with socket.create_connection((LOOPBACK, port)) as tcp:
        tcp.sendall(message("tcp before") + b"\n" + message(poison_json("tcp poison")) + b"\n")
        tcp.sendall(message("tcp after") + b"\n")
        wait_for(lambda: "tcp after" in adapter.messages(), describe=adapter.stderr_text)
        tcp.sendall(message("tcp later, same connection") + b"\n")
        wait_for(
            lambda: "tcp later, same connection" in adapter.messages(),
            describe=adapter.stderr_text,
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(message(poison_json("udp poison")), (LOOPBACK, port))
        udp.sendto(message("udp after"), (LOOPBACK, port))
    records = by_message(adapter, 6)
    assert_cut(records["tcp poison"])
    assert_cut(records["udp poison"])
    assert "udp after" in records
    assert_counted(adapter, 2)


def test_a_packed_forward_entry_too_deep_for_msgpack_costs_only_itself(
    adapters: StartAdapter, forward_port: int
) -> None:
    """Nested past msgpack's own limit (1,024 levels) an entry cannot be decoded at all: it
    becomes a marker record, found by its byte extent; the chunk is still acknowledged."""
    adapter = adapters(forward_env(forward_port))
    packer = msgpack.Packer(use_bin_type=True)
    # [float time, {"message": "deep", "a": {"a": ... 3,000 levels ... "x"}}], packed by hand
    deep = b"\x92\xcb" + b"\x00" * 8 + b"\x82\xa7message\xa4deep" + b"\xa1a\x81" * 3000
    deep = deep[:-1] + b"\xa1x"
    entries = (
        packer.pack([1795687200, {"message": "good 1"}])
        + deep
        + packer.pack([1795687200, {"message": "good 2"}])
    )
    with socket.create_connection((LOOPBACK, forward_port), timeout=10) as sock:
        sock.sendall(packer.pack(["app", entries, {"chunk": "deep"}]))
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(sock.recv(1024))
        assert list(unpacker) == [{"ack": "deep"}]
    records = adapter.wait_records(3)
    assert [r["message"] for r in records] == ["good 1", MARKER, "good 2"]
    assert_counted(adapter)
