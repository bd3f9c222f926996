"""The stdin input through the real process: EOF exit, stack traces, garbage, backpressure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from logadapter_support import Adapter, StartAdapter, wait_for
from support import LOOPBACK, free_port, http_get, metric_value

JAVA_TRACE = (
    'Exception in thread "main" java.lang.IllegalStateException: boom\n'
    "\tat com.example.Service.handle(Service.java:42)\n"
    "\tat com.example.Main.main(Main.java:7)\n"
)


def run_to_eof(adapters: StartAdapter, data: bytes, **env: str) -> Adapter:
    adapter = adapters({"LOGADAPTER_INPUTS": "stdin", **env}, stdin=subprocess.PIPE, ready=False)
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(data)
    adapter.process.stdin.close()
    assert adapter.process.wait(30) == 0, adapter.stderr_text()
    return adapter


def test_eof_flushes_everything_and_exits_zero(adapters: StartAdapter) -> None:
    lines = [f"plain line {i}" for i in range(2000)]
    data = ("\n".join(lines) + "\n" + JAVA_TRACE + "last line without newline").encode()
    adapter = run_to_eof(adapters, data, LOGADAPTER_SERVICE="checkout")
    records = adapter.records()
    assert [r["message"] for r in records[:2000]] == lines
    trace = records[2000]
    assert trace["error"]["type"] == "java.lang.IllegalStateException"
    assert "Service.java:42" in trace["error"]["stack_trace"]
    assert "Main.java:7" in trace["error"]["stack_trace"]
    assert records[2001]["message"] == "last line without newline"
    assert len(records) == 2002
    assert {r["service"] for r in records} == {"checkout"}
    # the adapter's own logs are JSON on stderr, never on stdout
    events = [event["event"] for event in adapter.process_logs()]
    assert "stdin_eof" in events
    assert "drained" in events


def test_a_shell_pipeline_works(tmp_path: Path) -> None:
    admin_port = free_port()
    script = (
        "printf 'level=info msg=\"from shell\"\\nsecond\\n' | "
        f"{sys.executable} -m sidecars log-adapter > {tmp_path}/out.jsonl"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
    }
    result = subprocess.run(
        ["sh", "-c", script], env=env, timeout=30, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["message"] for r in records] == ["from shell", "second"]


def test_garbage_is_survived_and_counted(adapters: StartAdapter) -> None:
    adapter = adapters(
        {
            "LOGADAPTER_INPUTS": "stdin",
            "LOGADAPTER_MAX_LINE_BYTES": "1KiB",
            "LOGADAPTER_LINE_HARD_CAP": "64KiB",
        },
        stdin=subprocess.PIPE,
    )
    assert adapter.process is not None and adapter.process.stdin is not None
    giant = b"G" * (5 * 1024 * 1024)
    adapter.process.stdin.write(b"bad bytes \xff\xfe here\n" + giant + b"\nafter giant\n")
    adapter.process.stdin.flush()
    adapter.process.stdin.write(b"\x00\x01 binary \x1b[31m\n" + b"next\n")
    adapter.process.stdin.flush()
    wait_for(lambda: "next" in adapter.messages(), describe=adapter.stderr_text)
    metrics = adapter.metrics()
    assert (
        metric_value(metrics, "logadapter_input_errors_total", input="stdin", kind="invalid_utf8")
        >= 1
    )
    assert metric_value(metrics, "logadapter_records_in_total", input="stdin") >= 4
    messages = adapter.messages()
    assert "bad bytes \ufffd\ufffd here" in messages
    assert "after giant" in messages
    giant_parts = [  # 64 KiB kept and the marker, in 1 KiB parts
        r["message"] for r in adapter.records() if r.get("attributes", {}).get("part")
    ]
    assert len(giant_parts) == 65 and all(len(part) <= 1024 for part in giant_parts)
    dropped = len(giant) - 64 * 1024
    assert "".join(giant_parts) == "G" * 64 * 1024 + f" [truncated: {dropped} bytes dropped]"
    adapter.process.stdin.close()
    assert adapter.process.wait(30) == 0


def rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # exited meanwhile
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_flood_with_a_slow_reader_keeps_memory_bounded(tmp_path: Path) -> None:
    """The producer writes 30 times what the buffer holds while stdout is read slowly: the
    adapter stops reading stdin (the producer blocks), memory stays bounded, nothing is lost."""
    admin_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
        "LOGADAPTER_BUFFER_MAX": "2MiB",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecars", "log-adapter"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr").open("wb"),
    )
    assert process.stdin is not None and process.stdout is not None
    admin = f"http://{LOOPBACK}:{admin_port}"
    total_lines, line = 60_000, b"x" * 1000
    written = [0]

    def produce() -> None:
        assert process.stdin is not None
        for start in range(0, total_lines, 500):
            process.stdin.write(b"".join(b"%d %s\n" % (n, line) for n in range(start, start + 500)))
            written[0] += 500
        process.stdin.close()

    def answers(path: str) -> str:
        try:
            return http_get(admin + path)[1].decode()
        except OSError:
            return ""

    try:
        wait_for(lambda: "serving" in answers("/readyz"), 15)
        baseline = rss_bytes(process.pid)
        threading.Thread(target=produce, daemon=True).start()
        wait_for(
            lambda: metric_value(answers("/metrics"), "logadapter_buffer_bytes") >= 2 * 1024 * 1024,
            30,
            lambda: (tmp_path / "stderr").read_text()[-2000:],
        )
        assert written[0] < total_lines / 2  # the producer is held back by the pipe
        received, peak = 0, baseline
        while chunk := process.stdout.read1(256 * 1024):
            received += chunk.count(b"\n")
            peak = max(peak, rss_bytes(process.pid))
            time.sleep(0.001)  # a slow reader, not a readiness wait
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert received == total_lines
    assert peak - baseline < 40 * 1024 * 1024, (baseline, peak)


def test_a_reader_that_goes_away_stops_the_adapter_with_exit_1(tmp_path: Path) -> None:
    """``app | sidecars log-adapter | head -1``: once stdout's reader is gone nothing can be
    delivered there again; the adapter says so and exits 1 instead of buffering forever."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{free_port()}",
    }
    stderr = tmp_path / "stderr"
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecars", "log-adapter"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"first\n")
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["message"] == "first"
    process.stdout.close()
    process.stdin.write(b"second\nthird\n")
    process.stdin.flush()
    assert process.wait(30) == 1
    events = [json.loads(line) for line in stderr.read_text().splitlines()]
    closed = [e for e in events if e["event"] == "output_closed"]
    assert closed and closed[0]["output"] == "stdout"
    dropped = [e for e in events if e["event"] == "output_records_dropped"]
    assert dropped and dropped[0]["records"] >= 1


def test_crlf_line_ends_are_not_part_of_any_message(adapters: StartAdapter) -> None:
    lines = [f"windows line {i}" for i in range(30000)]  # more than one read of stdin
    adapter = run_to_eof(adapters, ("\r\n".join(lines) + "\r\n").encode())
    assert [r["message"] for r in adapter.records()] == lines


def test_stdin_from_dev_null_or_a_file_is_read_to_its_end(
    adapters: StartAdapter, tmp_path: Path
) -> None:
    """A container's stdin is usually /dev/null, and `adapter < app.log` gives a regular file:
    neither can be polled (uvloop aborted the process on /dev/null); both end like EOF."""
    empty = adapters({"LOGADAPTER_INPUTS": "stdin"}, stdin=subprocess.DEVNULL, ready=False)
    assert empty.process is not None
    assert empty.process.wait(30) == 0, empty.stderr_text()
    assert empty.records() == []
    saved = tmp_path / "app.log"
    saved.write_text("".join(f'{{"level":"warn","msg":"line {i}"}}\n' for i in range(500)))
    with saved.open("rb") as file:
        adapter = adapters({"LOGADAPTER_INPUTS": "stdin"}, stdin=file.fileno(), ready=False)
        assert adapter.process is not None
        assert adapter.process.wait(30) == 0, adapter.stderr_text()
    records = adapter.records()
    assert [r["message"] for r in records] == [f"line {i}" for i in range(500)]
    assert {r["level"] for r in records} == {"warn"}
