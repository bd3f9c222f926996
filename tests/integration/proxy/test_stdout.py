"""The proxy's one stdout writer, through a real ``sidecars breaker``: process log lines (here
``fault_drill_started``/``_ended``, which carry a drill's path prefix, so can be long) and access
lines never split one another, and a stdout nobody reads blocks neither the answers nor the
admin plane, the process log lines it cannot take being counted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
from proxy_parts import breaker_process_env, eventually
from support import LOOPBACK, free_port, http_get, metric_value

TOKEN = "stdout-token"
# Longer than a TextIOWrapper's and a BufferedWriter's 8 KiB chunk: a line a second writer
# could split.
LONG_PREFIX = "/never/" + "x" * 40_000


def start_drill(admin_url: str) -> int:
    """POST a drill whose path matches no request (so it changes no answer); its start and its
    end (deleted right away) are logged with the 40 KB prefix."""
    body = json.dumps({"abort": 503, "path_prefix": LONG_PREFIX, "duration": "1m"}).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    post = urllib.request.Request(admin_url + "/faults", body, headers, method="POST")
    with urllib.request.urlopen(post, timeout=10) as response:
        drill = json.loads(response.read())
    delete = urllib.request.Request(
        f"{admin_url}/faults/{drill['id']}", headers=headers, method="DELETE"
    )
    with urllib.request.urlopen(delete, timeout=10) as response:
        return int(response.status)


async def test_long_process_log_lines_and_access_lines_never_interleave(
    backend: Any, proxies: Callable[..., Any]
) -> None:
    proxy = proxies(
        {
            "BREAKER_UPSTREAM": backend.url,
            "SIDECAR_ADMIN_TOKEN": TOKEN,
            # Access batches written often; the bound (16 buffers: 1 MiB) holds every line.
            "BREAKER_ACCESS_LOG_FLUSH": "10ms",
        }
    )
    url = f"http://{LOOPBACK}:{proxy.port}/echo"
    sent = 0
    drilling = True

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while drilling:
            async with session.get(url) as response:
                assert response.status == 200
                await response.read()
                sent += 1

    async with aiohttp.ClientSession() as session:
        clients = [asyncio.ensure_future(client(session)) for _ in range(8)]
        try:
            for _ in range(15):
                assert await asyncio.to_thread(start_drill, proxy.sidecar.admin_url) == 200
        finally:
            drilling = False
            await asyncio.gather(*clients)
    assert await asyncio.to_thread(proxy.sidecar.terminate) == 0
    text = proxy.sidecar.stdout_text()
    events = [json.loads(line) for line in text.splitlines()]  # each line whole JSON
    started = [event for event in events if event["event"] == "fault_drill_started"]
    ended = [event for event in events if event["event"] == "fault_drill_ended"]
    assert len(started) == len(ended) == 15
    assert all(event["path_prefix"] == LONG_PREFIX for event in started + ended)
    assert len([event for event in events if event["event"] == "access"]) == sent > 0
    assert events[-1]["event"] == "stopped"  # written after the access log closed


async def test_a_stuck_stdout_blocks_no_process_log_line_and_counts_those_dropped(
    backend: Any, connect: Any
) -> None:
    port, admin_port, env = breaker_process_env(
        backend.url,
        SIDECAR_ADMIN_TOKEN=TOKEN,
        # 4 KiB buffers: at most 64 KiB wait for stdout, past the pipe's 64 KiB lines drop.
        BREAKER_ACCESS_LOG_BUFFER="4KiB",
    )
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "sidecars", "breaker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    admin = f"http://{LOOPBACK}:{admin_port}"

    def dropped(reason: str) -> float:
        text = http_get(admin + "/metrics")[1].decode()
        return metric_value(text, "sidecar_access_log_dropped_total", reason=reason)

    try:

        def ready() -> bool:
            try:
                return http_get(admin + "/readyz", timeout=0.5)[0] == 200
            except OSError:
                return False

        await eventually(lambda: asyncio.to_thread(ready), "readiness")
        drills = 0
        # Each drill logs 80 KB: the pipe (64 KiB) and then the bound fill with nobody
        # reading. Every answer still comes (a blocked loop would time these out).
        while await asyncio.to_thread(dropped, "process_log") == 0:
            assert await asyncio.to_thread(start_drill, admin) == 200
            drills += 1
            assert drills < 50, "no process log line was dropped"
        assert await asyncio.to_thread(http_get, admin + "/healthz", 5) == (
            200,
            b'{"status":"alive"}',
        )
        connection = await connect(port)
        await connection.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await connection.response()).status == 200
        await connection.close()
        lost = await asyncio.to_thread(dropped, "process_log")
        assert process.stdout is not None
        output = bytearray()
        reader = threading.Thread(target=lambda: output.extend(process.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        assert await asyncio.to_thread(start_drill, admin) == 200  # taken again, reported
        process.terminate()
        assert await asyncio.to_thread(process.wait, 30) == 0
        reader.join(30)
        events = [json.loads(line) for line in output.splitlines()]
        reports = [event for event in events if event["event"] == "log_lines_dropped"]
        assert reports and sum(report["lines"] for report in reports) >= lost > 0
        written = [event for event in events if event["event"].startswith("fault_drill_")]
        assert len(written) + sum(report["lines"] for report in reports) == 2 * (drills + 1)
        assert events[-1]["event"] == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_fatal_error_s_line_is_written_before_exit(backend: Any) -> None:
    """A start that fails (the listen port is taken): the proxy never closed its stdout
    writer, the exit does, so the ``fatal`` line waiting in it is written."""
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        env = {
            "PATH": "/usr/bin:/bin",
            "BREAKER_UPSTREAM": backend.url,
            "BREAKER_LISTEN": f"{LOOPBACK}:{taken.getsockname()[1]}",
            "BREAKER_ADMIN_LISTEN": f"{LOOPBACK}:{free_port()}",
        }
        result = subprocess.run(
            [sys.executable, "-m", "sidecars", "breaker"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "fatal", result.stdout[-2000:]


def _stop_with_stdout(
    backend: Any, stdout: Any, before_load: Callable[[], None]
) -> tuple[int, str]:
    """Start a breaker writing stdout to ``stdout``, call ``before_load``, send 2,000 requests
    (about 600 KB of access lines with the long path: more than a pipe and the writer's bound
    hold), SIGTERM it; its exit code and stderr."""
    port, admin_port, env = breaker_process_env(
        backend.url,
        BREAKER_ACCESS_LOG_BUFFER="4KiB",
        BREAKER_ACCESS_LOG_FLUSH="10ms",
        SIDECAR_DRAIN_TIMEOUT="1s",
    )
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecars", "breaker"], env=env, stdout=stdout, stderr=errors
        )
        try:
            readyz = f"http://{LOOPBACK}:{admin_port}/readyz"
            while True:  # polling /readyz, not a readiness guess
                assert process.poll() is None, "the breaker exited at start"
                try:
                    if http_get(readyz, timeout=0.5)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.02)
            before_load()
            with socket.create_connection((LOOPBACK, port), timeout=10) as client:
                request = b"GET /echo/" + b"x" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
                for _ in range(2000):
                    client.sendall(request)
                    assert client.recv(65536).startswith(b"HTTP/1.1 200")
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        errors.seek(0)
        return code, errors.read().decode(errors="replace")


def test_sigterm_with_stdout_stuck_exits_0_and_reports_what_was_not_written(backend: Any) -> None:
    """The writer thread is blocked in a write to a full pipe nobody reads: the exit does not
    wait on it past the close timeout, nor abort on stdout's buffer lock."""
    reader, writer = os.pipe()
    try:
        code, errors = _stop_with_stdout(backend, writer, lambda: None)
    finally:
        os.close(reader)
        os.close(writer)
    assert code == 0, errors
    unwritten = [json.loads(line) for line in errors.splitlines() if "access_log_unwritten" in line]
    assert unwritten and unwritten[0]["bytes"] > 0, errors


def test_sigterm_with_stdout_closed_by_its_reader_exits_0(backend: Any) -> None:
    """Every write fails (EPIPE): the lines are counted lost, and nothing is left buffered for
    the interpreter's exit to fail on again."""
    reader, writer = os.pipe()
    try:
        code, errors = _stop_with_stdout(backend, writer, lambda: os.close(reader))
    finally:
        os.close(writer)
    assert code == 0, errors
    assert "Traceback" not in errors and "Exception ignored" not in errors, errors


def test_sigterm_with_stdout_on_a_full_disk_exits_0(backend: Any) -> None:
    with open("/dev/full", "wb") as full:
        code, errors = _stop_with_stdout(backend, full, lambda: None)
    assert code == 0, errors
    assert "Traceback" not in errors and "Exception ignored" not in errors, errors
