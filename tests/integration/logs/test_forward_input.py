"""The Forward protocol input through the real process: fluent-logger, raw msgpack in every
mode, acks, Docker partial messages, heartbeats, the shared-key handshake and bad input."""

from __future__ import annotations

import gzip
import hashlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from fluent.sender import EventTime, FluentSender
from logadapter_support import Adapter, StartAdapter, forward_env, wait_for
from support import LOOPBACK, free_port, metric_value


def packb(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


class ForwardClient:
    """A raw Forward protocol client: msgpack over a socket, reading answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=10)
        self.unpacker = msgpack.Unpacker(raw=False)

    def send(self, value: Any) -> None:
        self.sock.sendall(packb(value))

    def receive(self) -> Any:
        while True:
            for value in self.unpacker:
                return value
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.unpacker.feed(data)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def forward(adapters: StartAdapter, forward_port: int) -> Adapter:
    return adapters(forward_env(forward_port))


@pytest.fixture
def client(forward: Adapter, forward_port: int) -> Iterator[ForwardClient]:
    connection = ForwardClient(forward_port)
    yield connection
    connection.close()


def test_fluent_logger_events_are_normalised(forward: Adapter, forward_port: int) -> None:
    sender = FluentSender("shop", host=LOOPBACK, port=forward_port, nanosecond_precision=True)
    try:
        assert sender.emit("web", {"level": "warning", "msg": "cart is slow", "cart_id": 7})
        assert sender.emit_with_time("web", 1795687200.5, {"message": "with a time"})
    finally:
        sender.close()
    first, second = forward.wait_records(2)
    assert first["message"] == "cart is slow"
    assert first["level"] == "warn"
    assert first["attributes"]["cart_id"] == 7
    assert second["message"] == "with a time"
    assert second["timestamp"] == "2026-11-26T10:00:00.500000Z"


def test_every_mode_is_acknowledged_after_it_is_accepted(
    forward: Adapter, client: ForwardClient
) -> None:
    now = EventTime(1795687200, 123456000)
    entries = b"".join(packb([now, {"message": f"packed {n}"}]) for n in range(3))
    client.send(["app", now, {"message": "message mode"}])  # no chunk: no answer
    client.send(["app", now, {"message": "message mode acked"}, {"chunk": "c1"}])
    assert client.receive() == {"ack": "c1"}
    client.send(
        [
            "app",
            [[now, {"message": "forward 1"}], [1795687201, {"message": "forward 2"}]],
            {"chunk": "c2", "size": 2},
        ]
    )
    assert client.receive() == {"ack": "c2"}
    client.send(["app", entries, {"chunk": "c3", "size": 3}])
    assert client.receive() == {"ack": "c3"}
    compressed = gzip.compress(entries[:15]) + gzip.compress(entries[15:])
    client.send(["app", compressed, {"chunk": "c4", "compressed": "gzip"}])
    assert client.receive() == {"ack": "c4"}
    records = forward.wait_records(10)
    assert [r["message"] for r in records] == [
        "message mode",
        "message mode acked",
        "forward 1",
        "forward 2",
        "packed 0",
        "packed 1",
        "packed 2",
        "packed 0",
        "packed 1",
        "packed 2",
    ]
    assert records[0]["timestamp"] == "2026-11-26T10:00:00.123456Z"
    status = forward.status()["inputs"]["forward"]
    assert status["modes"] == {
        "message": 2,
        "forward": 1,
        "packed_forward": 1,
        "compressed_packed_forward": 1,
    }


def test_docker_partial_messages_are_stitched(forward: Adapter, client: ForwardClient) -> None:
    """Docker's fluentd driver splits lines over 16 KiB into marked Message-mode records."""
    whole = "".join(chr(ord("a") + n % 26) * 1000 for n in range(40))  # 40 KB
    parts = [whole[i : i + 16 * 1024] for i in range(0, len(whole), 16 * 1024)]
    for ordinal, part in enumerate(parts, 1):
        client.send(
            [
                "docker.web",
                int(time.time()),
                {
                    "container_id": "c0ffee",
                    "container_name": "/web",
                    "source": "stdout",
                    "log": part,
                    "partial_message": "true",
                    "partial_id": "p-1",
                    "partial_ordinal": str(ordinal),
                    "partial_last": str(ordinal == len(parts)).lower(),
                },
                {"chunk": f"part-{ordinal}"},
            ]
        )
        assert client.receive() == {"ack": f"part-{ordinal}"}
    client.send(
        [
            "docker.web",
            int(time.time()),
            {
                "container_id": "c0ffee",
                "container_name": "/web",
                "source": "stderr",
                "log": "on stderr",
            },
        ]
    )
    records = forward.wait_records(2)
    stitched = next(r for r in records if r.get("stream") == "stdout")
    assert stitched["message"] == whole
    assert stitched["container_name"] == "web"
    assert stitched["container_id"] == "c0ffee"
    assert next(r for r in records if r.get("stream") == "stderr")["message"] == "on stderr"


def test_corrupt_msgpack_closes_only_that_connection(
    forward: Adapter, forward_port: int, client: ForwardClient
) -> None:
    bad = ForwardClient(forward_port)
    not_a_message = ForwardClient(forward_port)
    try:
        bad.sock.sendall(b"\x93\xa3app\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
        assert bad.closed_by_server()
        not_a_message.send(42)
        assert not_a_message.closed_by_server()
        client.send(["app", 1795687200, {"message": "still fine"}, {"chunk": "ok"}])
        assert client.receive() == {"ack": "ok"}
    finally:
        bad.close()
        not_a_message.close()
    metrics = forward.metrics()
    assert (
        metric_value(
            metrics, "logadapter_input_errors_total", input="forward", kind="corrupt_msgpack"
        )
        == 1
    )
    assert (
        metric_value(metrics, "logadapter_input_errors_total", input="forward", kind="bad_message")
        == 1
    )
    assert forward.wait_records(1)[0]["message"] == "still fine"


def test_invalid_utf8_is_replaced_and_counted(forward: Adapter, client: ForwardClient) -> None:
    raw_log = b"\xa6ab\xff\xfecd"  # a 6-byte msgpack str that is not UTF-8
    message = b"\x94\xa3app\xce\x6a\xfa\x0e\x00\x81\xa3log" + raw_log + packb({"chunk": "u"})
    client.sock.sendall(message)
    assert client.receive() == {"ack": "u"}
    assert forward.wait_records(1)[0]["message"] == "ab\ufffd\ufffdcd"
    assert (
        metric_value(
            forward.metrics(), "logadapter_input_errors_total", input="forward", kind="invalid_utf8"
        )
        == 1
    )


def test_heartbeats_over_udp_and_tcp(
    forward: Adapter, forward_port: int, client: ForwardClient
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"\x00", (LOOPBACK, forward_port))
        assert udp.recvfrom(16)[0] == b"\x00"
    client.sock.sendall(b"\xc0")  # msgpack nil: a TCP heartbeat
    client.send(["app", 1795687200, {"message": "after heartbeat"}, {"chunk": "h"}])
    assert client.receive() == {"ack": "h"}
    assert forward.status()["inputs"]["forward"]["udp_heartbeats"] == 1


def ping(helo: Any, key: str) -> tuple[list[Any], bytes]:
    assert helo[0] == "HELO"
    nonce = helo[1]["nonce"]
    salt = b"client-salt"
    digest = hashlib.sha512(salt + b"client.example" + nonce + key.encode()).hexdigest()
    return ["PING", "client.example", salt, digest, "", ""], nonce


def test_shared_key_handshake(adapters: StartAdapter, forward_port: int) -> None:
    adapter = adapters(forward_env(forward_port, LOGADAPTER_FORWARD_SHARED_KEY="s3cret"))
    good = ForwardClient(forward_port)
    wrong = ForwardClient(forward_port)
    try:
        message, nonce = ping(good.receive(), "s3cret")
        good.send(message)
        pong = good.receive()
        assert pong[:3] == ["PONG", True, ""]
        server_digest = hashlib.sha512(
            b"client-salt" + pong[3].encode() + nonce + b"s3cret"
        ).hexdigest()
        assert pong[4] == server_digest
        good.send(["app", 1795687200, {"message": "authenticated"}, {"chunk": "a"}])
        assert good.receive() == {"ack": "a"}

        message, _ = ping(wrong.receive(), "guessed")
        wrong.send(message)
        assert wrong.receive()[:2] == ["PONG", False]
        assert wrong.closed_by_server()
    finally:
        good.close()
        wrong.close()
    assert adapter.wait_records(1)[0]["message"] == "authenticated"
    assert (
        metric_value(
            adapter.metrics(), "logadapter_input_errors_total", input="forward", kind="auth_failed"
        )
        == 1
    )
    assert adapter.status()["settings"]["forward_shared_key"] == "***"


def test_a_sender_that_never_sends_ping_is_closed_and_counted(
    adapters: StartAdapter, forward_port: int
) -> None:
    adapter = adapters(
        forward_env(
            forward_port,
            LOGADAPTER_FORWARD_SHARED_KEY="s3cret",
            LOGADAPTER_FORWARD_HANDSHAKE_TIMEOUT="300ms",
        )
    )
    silent = [ForwardClient(forward_port) for _ in range(30)]
    try:
        for client in silent:
            assert client.receive()[0] == "HELO"
        for client in silent:  # the socket's own timeout (10 s) bounds the wait
            assert client.closed_by_server()
    finally:
        for client in silent:
            client.close()
    wait_for(lambda: adapter.status()["inputs"]["forward"]["connections"] == 0)
    metrics = adapter.metrics()
    closes = metric_value(
        metrics, "logadapter_input_errors_total", input="forward", kind="handshake_timeout"
    )
    assert closes == 30
    status = adapter.status()["inputs"]["forward"]
    assert status["closed"] == {"handshake_timeout": 30}
    events = [e for e in adapter.process_logs() if e["event"] == "forward_connection_closed"]
    assert {e["kind"] for e in events} == {"handshake_timeout"}


def test_an_idle_connection_is_closed_after_the_idle_timeout(
    adapters: StartAdapter, forward_port: int
) -> None:
    adapter = adapters(forward_env(forward_port, LOGADAPTER_FORWARD_IDLE_TIMEOUT="300ms"))
    client = ForwardClient(forward_port)
    try:
        client.send(["app", 1795687200, {"message": "then silence"}, {"chunk": "i1"}])
        assert client.receive() == {"ack": "i1"}
        assert client.closed_by_server()
    finally:
        client.close()
    assert adapter.wait_records(1)[0]["message"] == "then silence"
    closes = metric_value(
        adapter.metrics(), "logadapter_input_errors_total", input="forward", kind="idle_timeout"
    )
    assert closes == 1
    assert adapter.status()["inputs"]["forward"]["closed"] == {"idle_timeout": 1}


def test_a_full_buffer_holds_the_ack_until_there_is_room(
    adapters: StartAdapter, forward_port: int
) -> None:
    """Records wait for a collector that is down; past the bound the sender is not read and
    gets no ack; once the collector is up, everything flows and the ack comes."""
    collector_port = free_port()
    adapter = adapters(
        forward_env(
            forward_port,
            LOGADAPTER_BUFFER_MAX="64KiB",
            LOGADAPTER_OUTPUTS=f"forward://{LOOPBACK}:{collector_port}",
        )
    )
    client = ForwardClient(forward_port)
    try:
        batch = [[1795687200, {"message": "x" * 1000, "n": n}] for n in range(10)]
        client.sock.settimeout(0.5)
        acked = 0
        for chunk in range(20):  # 20 chunks of about 11 KB: far past the 64 KiB bound
            client.send(["app", batch, {"chunk": f"c{chunk}"}])
            try:
                assert client.receive() == {"ack": f"c{chunk}"}
            except TimeoutError:
                break
            acked += 1
        assert 0 < acked < 19
        assert adapter.status()["buffer"]["bytes"] >= 64 * 1024
        collector = adapters(forward_env(collector_port))
        client.sock.settimeout(15)
        assert client.receive() == {"ack": f"c{acked}"}
        collector.wait_records(10 * (acked + 1))
    finally:
        client.close()


def test_an_acknowledged_chunk_survives_kill_9_with_the_disk_buffer(
    adapters: StartAdapter, forward_port: int, tmp_path: Any
) -> None:
    buffer_dir = str(tmp_path / "buffer")
    dead_collector = f"forward://{LOOPBACK}:{free_port()}"
    first = adapters(
        forward_env(
            forward_port, LOGADAPTER_BUFFER_DIR=buffer_dir, LOGADAPTER_OUTPUTS=dead_collector
        )
    )
    client = ForwardClient(forward_port)
    try:
        client.send(
            ["app", [[1795687200, {"message": f"durable {n}"}] for n in range(50)], {"chunk": "d"}]
        )
        assert client.receive() == {"ack": "d"}
    finally:
        client.close()
    assert first.process is not None
    first.process.kill()
    first.process.wait(10)
    second = adapters(
        forward_env(free_port(), LOGADAPTER_BUFFER_DIR=buffer_dir, LOGADAPTER_OUTPUTS="stdout")
    )
    assert [r["message"] for r in second.wait_records(50)] == [f"durable {n}" for n in range(50)]


def docker_event(text: str, chunk: str) -> list[Any]:
    """A Message-mode record as Docker's fluentd driver sends it, asking for an ack."""
    record = {"container_id": "c0ffee", "container_name": "/web", "source": "stderr", "log": text}
    return ["docker.web", int(time.time()), record, {"chunk": chunk}]


@pytest.fixture
def patient(adapters: StartAdapter, forward_port: int) -> Adapter:
    """Multi-line groups wait an hour for more lines: only a flush can emit them early."""
    return adapters(forward_env(forward_port, LOGADAPTER_MULTILINE_TIMEOUT="1h"))


def test_a_closed_connection_s_streams_are_emitted_at_once(
    patient: Adapter, forward_port: int
) -> None:
    """The container stopped (Docker closes its connection): its last line, and a trace in
    progress, need not wait for the idle timeout."""
    client = ForwardClient(forward_port)
    for number, text in enumerate(["ERROR:app:boom", "Traceback (most recent call last):"]):
        client.send(docker_event(text, f"c{number}"))
        assert client.receive() == {"ack": f"c{number}"}
    client.close()
    (record,) = patient.wait_records(1)
    assert record["message"] == "boom"
    assert record["error"]["stack_trace"] == "Traceback (most recent call last):"


def test_a_stream_another_connection_still_feeds_is_not_cut(
    patient: Adapter, forward_port: int
) -> None:
    """Two connections feed one container stream (a forwarder with several): the first one
    closing does not cut the trace the second goes on with."""
    first, second = ForwardClient(forward_port), ForwardClient(forward_port)
    first.send(docker_event("ERROR:app:boom", "a"))
    assert first.receive() == {"ack": "a"}
    second.send(docker_event("Traceback (most recent call last):", "b"))
    assert second.receive() == {"ack": "b"}
    first.close()
    wait_for(lambda: patient.status()["inputs"]["forward"]["connections"] == 1)
    for number, text in enumerate(['  File "app.py", line 1, in <module>', "ValueError: bad"]):
        second.send(docker_event(text, f"c{number}"))
        assert second.receive() == {"ack": f"c{number}"}
    assert patient.records() == []
    second.close()
    (record,) = patient.wait_records(1)
    assert record["message"] == "boom"
    assert record["error"]["type"] == "ValueError"


def bad_entry_request(mode: str, texts: list[str], bad: list[Any], chunk: str) -> list[Any]:
    """A request of ``mode`` with a good entry per text, each followed by one of ``bad``."""
    now = EventTime(1795687200, 0)
    entries: list[Any] = []
    for n, text in enumerate(texts):
        entries.append([now, {"log": text}])
        if n < len(bad):
            entries.append(bad[n])
    if mode == "forward":
        return ["app.web", entries, {"chunk": chunk}]
    stream = b"".join(packb(entry) for entry in entries)
    if mode == "packed_forward":
        return ["app.web", stream, {"chunk": chunk}]
    return ["app.web", gzip.compress(stream), {"chunk": chunk, "compressed": "gzip"}]


@pytest.mark.parametrize("mode", ["forward", "packed_forward", "compressed_packed_forward"])
def test_a_bad_entry_costs_that_entry_only(
    forward: Adapter, client: ForwardClient, mode: str
) -> None:
    bad = [[1795687200, "not a map"], ["bad-time", {"log": "lost"}], [1795687200]]
    client.send(bad_entry_request(mode, ["one", "two", "three", "four"], bad, "abc123"))
    assert client.receive() == {"ack": "abc123"}
    client.send(bad_entry_request(mode, ["five", "six"], bad[:1], "next"))  # same connection
    assert client.receive() == {"ack": "next"}
    assert [r["message"] for r in forward.wait_records(6)] == [
        "one", "two", "three", "four", "five", "six"
    ]
    metrics = forward.metrics()
    assert metric_value(metrics, "logadapter_records_dropped_total", reason="bad_entry") == 4
    assert metric_value(metrics, "logadapter_input_errors_total", input="forward") == 0
    status = forward.status()["inputs"]["forward"]
    assert (status["bad_entries"], status["closed"]) == (4, {})
    dropped = [e for e in forward.process_logs() if e.get("event") == "forward_entries_dropped"]
    assert len(dropped) == 1  # at most once a minute
    assert dropped[0]["count"] == 3
    assert dropped[0]["detail"] == "a record is a str, not a map"


def test_a_bad_message_mode_record_is_dropped_and_still_acknowledged(
    forward: Adapter, client: ForwardClient
) -> None:
    client.send(["app", 1795687200, "not a map", {"chunk": "bad-record"}])
    assert client.receive() == {"ack": "bad-record"}
    client.send(["app", True, {"log": "lost"}, {"chunk": "bad-time"}])  # a str: PackedForward
    assert client.receive() == {"ack": "bad-time"}
    client.send(["app", 1795687200, {"log": "after"}, {"chunk": "good"}])
    assert client.receive() == {"ack": "good"}
    assert forward.wait_records(1)[0]["message"] == "after"
    assert (
        metric_value(forward.metrics(), "logadapter_records_dropped_total", reason="bad_entry")
        == 2
    )
    assert forward.messages() == ["after"]
