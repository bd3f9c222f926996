"""The Forward input on a Unix socket (``LOGADAPTER_FORWARD_LISTEN=unix:///path``), as FireLens
hands container output to its log router: the real fluent-logger client, FireLens-shaped
records with an ack, a stale socket file from an earlier run, permissions, clean-up."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import msgpack
from fluent.sender import FluentSender
from logadapter_support import StartAdapter, wait_for


def unix_env(path: Path) -> dict[str, str]:
    return {"LOGADAPTER_INPUTS": "forward", "LOGADAPTER_FORWARD_LISTEN": f"unix://{path}"}


def test_fluent_logger_sends_over_the_unix_socket(
    adapters: StartAdapter, tmp_path: Path
) -> None:
    path = tmp_path / "fluent.sock"
    adapter = adapters(unix_env(path))
    sender = FluentSender("app", host=f"unix://{path}", nanosecond_precision=True)
    try:
        assert sender.emit("web", {"level": "error", "msg": "payment failed", "order": 7})
        firelens = {
            "container_id": "4f" * 32,
            "container_name": "/orders-1",
            "source": "stderr",
            "log": '{"level":"warn","msg":"slow query","ms":912}',
            "ecs_cluster": "shop",
        }
        assert sender.emit("orders-firelens-abc", firelens)
    finally:
        sender.close()
    structured, docker = adapter.wait_records(2)
    assert structured["message"] == "payment failed"
    assert structured["level"] == "error"
    assert structured["attributes"]["order"] == 7
    assert docker["message"] == "slow query"
    assert docker["level"] == "warn"
    assert docker["stream"] == "stderr"
    assert docker["container_name"] == "orders-1"
    assert docker["service"] == "orders-1"
    assert docker["attributes"] == {"ms": 912, "ecs_cluster": "shop"}
    assert adapter.status()["inputs"]["forward"]["listen"] == f"unix://{path}"


def test_a_chunk_sent_over_the_unix_socket_is_acknowledged(
    adapters: StartAdapter, tmp_path: Path
) -> None:
    path = tmp_path / "fluent.sock"
    adapters(unix_env(path))
    entries = b"".join(
        msgpack.packb([1795687200 + i, {"log": f"line {i}", "source": "stdout"}])
        for i in range(3)
    )
    request = msgpack.packb(["app", entries, {"chunk": "c2l4dGVlbg==", "size": 3}])
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(request)
        unpacker = msgpack.Unpacker(raw=False)
        answer: Any = None
        while answer is None:
            data = client.recv(4096)
            assert data, "closed without an ack"
            unpacker.feed(data)
            answer = next(iter(unpacker), None)
    assert answer == {"ack": "c2l4dGVlbg=="}


def test_a_stale_socket_is_replaced_the_socket_is_open_to_all_and_removed_at_exit(
    adapters: StartAdapter, tmp_path: Path
) -> None:
    path = tmp_path / "fluent.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # what a killed router leaves behind: a socket file nobody serves
    stale.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    adapter = adapters(unix_env(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    sender = FluentSender("app", host=f"unix://{path}")
    try:
        assert sender.emit("web", {"msg": "after a restart"})
    finally:
        sender.close()
    assert adapter.wait_records(1)[0]["message"] == "after a restart"
    assert any(e["event"] == "forward_stale_socket_removed" for e in adapter.process_logs())
    assert adapter.terminate() == 0
    wait_for(lambda: not path.exists(), 5, lambda: f"{path} still exists")


def test_a_path_that_is_not_a_socket_is_left_alone_and_the_start_fails(
    adapters: StartAdapter, tmp_path: Path
) -> None:
    path = tmp_path / "fluent.sock"
    path.write_text("not a socket")
    adapter = adapters(unix_env(path), ready=False)
    assert adapter.process is not None
    assert adapter.process.wait(15) != 0
    assert path.read_text() == "not a socket"
