"""The sidecars' own logs as input: a real breaker's stdout fed to a real log adapter."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from logadapter_support import StartAdapter
from support import LOOPBACK, Sidecar, free_port

from sidecars.logs.normalise import SIDECAR_EVENT_KEYS


class _Payments(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 404 if self.path.startswith("/missing") else 200
        body = b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def payments() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Payments)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def breaker_output(upstream: str) -> str:
    """What a breaker writes on stdout, start to stop, for a 200 and a 404."""
    port, admin_port = free_port(), free_port()
    env = {
        "BREAKER_UPSTREAM": upstream,
        "BREAKER_NAME": "payments",
        "BREAKER_LISTEN": f"{LOOPBACK}:{port}",
        "BREAKER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
        "BREAKER_CONNECT_TIMEOUT": "1s",
    }
    breaker = Sidecar(["breaker"], env, admin_port).start()
    try:
        breaker.wait_ready_sync()
        for path in ("/charge", "/missing"):
            try:
                urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5).read()
            except urllib.error.HTTPError as error:
                assert error.code == 404
        assert breaker.terminate() == 0
        return breaker.stdout_text()
    finally:
        breaker.close()


def test_the_adapter_reads_a_proxy_s_events_and_access_lines(
    adapters: StartAdapter, payments: str
) -> None:
    output = breaker_output(payments)
    lines = [json.loads(line) for line in output.splitlines()]
    # One key order for every event the breaker wrote, its access lines included.
    assert {tuple(line)[:5] for line in lines} == {SIDECAR_EVENT_KEYS}
    assert {line["sidecar"] for line in lines} == {"breaker"}
    adapter = adapters({"LOGADAPTER_INPUTS": "stdin"}, stdin=subprocess.PIPE, ready=False)
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(output.encode())
    adapter.process.stdin.close()
    assert adapter.process.wait(30) == 0, adapter.stderr_text()
    records = adapter.records()
    assert len(records) == len(lines)
    assert {record["service"] for record in records} == {"breaker"}
    assert all(record["logger"].startswith("sidecars.") for record in records)
    access = [record for record in records if "http" in record]
    assert [(r["message"], r["level"], r["http"]["status"]) for r in access] == [
        ("GET /charge", "info", 200),
        ("GET /missing", "warn", 404),
    ]
    charge = access[0]
    assert charge["http"]["remote_addr"] == LOOPBACK
    assert charge["http"]["user_agent"].startswith("Python-urllib")
    assert charge["http"]["bytes"] == 2 and charge["http"]["duration"] >= 0
    assert charge["attributes"]["upstream"] == "payments"
    # The adapter's own events (stderr) have the same envelope.
    own = adapter.process_logs()
    assert own and {tuple(event)[:5] for event in own} == {SIDECAR_EVENT_KEYS}
    assert {event["sidecar"] for event in own} == {"log-adapter"}
