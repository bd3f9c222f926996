"""Long lines are split, never silently cut: on every input a line over
``LOGADAPTER_MAX_LINE_BYTES`` becomes the same marked parts, every byte kept, up to
``LOGADAPTER_LINE_HARD_CAP``; past it the rest is dropped and the last part says how many
bytes (counted, logged). Through the real process."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fluent.sender import FluentSender
from logadapter_support import Adapter, StartAdapter, forward_env
from support import LOOPBACK, free_port, metric_value

LINE_BYTES = 1_000_000
PART_BYTES = 64 * 1024
SPLIT = {"LOGADAPTER_MAX_LINE_BYTES": "64KiB"}
CAPPED = {"LOGADAPTER_MAX_LINE_BYTES": "64KiB", "LOGADAPTER_LINE_HARD_CAP": "256KiB"}
KEPT = 256 * 1024
DROPPED_MARK = f" [truncated: {LINE_BYTES - KEPT} bytes dropped]"


def long_line() -> str:
    """Numbered words, so that parts out of order or missing show."""
    words = "".join(f"w{n:07d} " for n in range(LINE_BYTES // 9 + 1))
    return words[:LINE_BYTES]


def assert_parts(records: list[dict[str, Any]], line: str, expected_parts: int) -> str:
    """The records are the line's parts in order, marked; returns their joined text."""
    parts = [r for r in records if r.get("attributes", {}).get("part")]
    assert [r["attributes"]["part"] for r in parts] == [
        f"{n}/{expected_parts}" for n in range(1, expected_parts + 1)
    ]
    assert all(r["attributes"]["truncated"] is True for r in parts)
    assert all(len(r["message"].encode()) <= PART_BYTES for r in parts)
    return "".join(r["message"] for r in parts)


def assert_split_whole(records: list[dict[str, Any]], line: str) -> None:
    assert assert_parts(records, line, 16) == line


def assert_capped(
    adapter: Adapter, records: list[dict[str, Any]], kept: str, *, running: bool = True
) -> None:
    """``kept``: the text of the first ``KEPT`` bytes, as the records show it."""
    joined = assert_parts(records, kept, 5)
    assert joined == kept + DROPPED_MARK
    if running:
        metrics = adapter.metrics()
        cuts = metric_value(metrics, "logadapter_records_truncated_total", reason="line_hard_cap")
        assert cuts >= 1
    cut = [e for e in adapter.process_logs() if e["event"] == "log_line_cut"]
    assert cut and cut[0]["dropped_bytes"] == LINE_BYTES - KEPT


def run_stdin(adapters: StartAdapter, env: dict[str, str], data: bytes) -> Adapter:
    adapter = adapters({"LOGADAPTER_INPUTS": "stdin", **env}, stdin=subprocess.PIPE, ready=False)
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(data)
    adapter.process.stdin.close()
    assert adapter.process.wait(60) == 0, adapter.stderr_text()[-3000:]
    return adapter


def test_stdin_splits_a_long_line_into_parts_keeping_every_byte(adapters: StartAdapter) -> None:
    line = long_line()
    adapter = run_stdin(adapters, SPLIT, f"before\n{line}\nafter\n".encode())
    records = adapter.records()
    assert records[0]["message"] == "before" and records[-1]["message"] == "after"
    assert_split_whole(records, line)


def test_stdin_past_the_hard_cap_says_how_many_bytes_were_dropped(
    adapters: StartAdapter,
) -> None:
    line = long_line()
    adapter = run_stdin(adapters, CAPPED, f"{line}\nafter\n".encode())
    records = adapter.records()
    assert records[-1]["message"] == "after"
    assert_capped(adapter, records, line[:KEPT], running=False)


@pytest.mark.parametrize("framing", ["newline", "octet_counting"])
@pytest.mark.parametrize("env", [SPLIT, CAPPED], ids=["split", "capped"])
def test_syslog_tcp_long_messages(
    adapters: StartAdapter, framing: str, env: dict[str, str]
) -> None:
    port = free_port()
    adapter = adapters(
        {"LOGADAPTER_INPUTS": "syslog", "LOGADAPTER_SYSLOG_LISTEN": f"{LOOPBACK}:{port}", **env}
    )
    header = b"<13>1 2026-11-26T10:00:00Z host app 1 - - "
    line = long_line()[: LINE_BYTES - len(header)]
    message, after = header + line.encode(), header + b"after"
    with socket.create_connection((LOOPBACK, port)) as tcp:
        if framing == "newline":
            tcp.sendall(message + b"\n" + after + b"\n")
        else:
            tcp.sendall(b"%d %s%d %s" % (len(message), message, len(after), after))
    records = adapter.wait_records(17 if env is SPLIT else 6, seconds=30)
    assert records[-1]["message"] == "after"
    first = records[0]["message"]
    assert first.startswith("w0000000"), first[:40]
    if env is SPLIT:
        assert_split_whole(records, line)
    else:
        assert_capped(adapter, records, line[: KEPT - len(header)])  # the header is parsed


def test_tail_splits_and_caps_like_the_others(adapters: StartAdapter, log_dir: Path) -> None:
    line = long_line()
    # Written in one go, then followed: a line longer than the tail's read size (1 MiB).
    longer = line + line
    (log_dir / "app.log").write_text(f"{line}\n{longer}\nafter\n")
    adapter = adapters(
        {"LOGADAPTER_INPUTS": "tail", "LOGADAPTER_TAIL_PATHS": str(log_dir / "*.log"), **CAPPED}
    )
    records = adapter.wait_records(11, seconds=30)
    assert records[-1]["message"] == "after"
    assert_capped(adapter, records[:5], line[:KEPT])
    second = assert_parts(records[5:10], longer, 5)
    assert second == longer[:KEPT] + f" [truncated: {2 * LINE_BYTES - KEPT} bytes dropped]"


def test_forward_records_and_docker_partials_split_the_same_way(
    adapters: StartAdapter, forward_port: int
) -> None:
    adapter = adapters(forward_env(forward_port, **SPLIT))
    line = long_line()
    sender = FluentSender("app", host=LOOPBACK, port=forward_port, bufmax=4 * LINE_BYTES)
    try:
        assert sender.emit("one", {"log": line, "source": "stdout", "container_id": "a"})
    finally:
        sender.close()
    records = adapter.wait_records(16, seconds=30)
    assert_split_whole(records, line)
    # Docker's fluentd driver: 16 KiB partial records of one line
    chunks = [line[i : i + 16384] for i in range(0, len(line), 16384)]
    packer = msgpack.Packer(use_bin_type=True)
    with socket.create_connection((LOOPBACK, forward_port)) as sock:
        for ordinal, chunk in enumerate(chunks, 1):
            record = {"log": chunk, "source": "stdout", "container_id": "b",
                      "partial_message": "true", "partial_id": "p1",
                      "partial_ordinal": str(ordinal),
                      "partial_last": "true" if ordinal == len(chunks) else "false"}
            sock.sendall(packer.pack(["app", 1795687200, record]))
    records = adapter.wait_records(32, seconds=30)
    assert_split_whole(records[16:], line)
