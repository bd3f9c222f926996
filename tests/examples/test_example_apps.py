"""The example services as real processes: the flaky dependency's switch, the order app's
answers and log styles, the probe and the load generator."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sidecars_examples.applog import LogfmtFormatter
from support import free_port, http_get


@contextmanager
def example(
    module: str, env: dict[str, str], health_port: int | None
) -> Iterator[subprocess.Popen[str]]:
    """``python -m sidecars_examples.<module>``; waits for /healthz when ``health_port``."""
    process = subprocess.Popen(
        [sys.executable, "-m", f"sidecars_examples.{module}"],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if health_port is not None:
            deadline = time.monotonic() + 15
            while True:
                assert process.poll() is None, process.communicate()
                try:
                    if http_get(f"http://127.0.0.1:{health_port}/healthz", 0.5)[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"{module} never became healthy"
                time.sleep(0.02)  # polling interval
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def post_json(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def flaky() -> Iterator[str]:
    port = free_port()
    env = {"FLAKY_LISTEN": f"127.0.0.1:{port}", "FLAKY_NAME": "payments", "FLAKY_SEED": "1"}
    with example("flaky", env, port):
        yield f"http://127.0.0.1:{port}"


def test_flaky_answers_and_echoes_the_sidecar_headers(flaky: str) -> None:
    request = urllib.request.Request(
        flaky + "/charges", headers={"X-Sidecar-Attempt": "2", "X-Request-Id": "r-1"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
    assert body == {
        "service": "payments",
        "method": "GET",
        "path": "/charges",
        "attempt": "2",
        "request_id": "r-1",
    }


def test_flaky_switches_between_healthy_failing_resetting_and_hanging(flaky: str) -> None:
    assert post_json(flaky + "/control", {"outage": "error", "failure_status": 502})[0] == 200
    assert http_get(flaky + "/x")[0] == 502
    assert post_json(flaky + "/control", {"outage": "off", "failure_rate": 1})[0] == 200
    assert http_get(flaky + "/x")[0] == 502
    assert post_json(flaky + "/control", {"failure_rate": 0, "outage": "reset"})[0] == 200
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        http_get(flaky + "/x")
    assert post_json(flaky + "/control", {"outage": "hang"})[0] == 200
    answers: list[int] = []
    waiting = threading.Thread(target=lambda: answers.append(http_get(flaky + "/x", 20)[0]))
    waiting.start()
    deadline = time.monotonic() + 10
    while json.loads(http_get(flaky + "/control")[1])["counters"].get("hung", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)  # polling interval
    assert answers == [], "answered during a hang"
    assert post_json(flaky + "/control", {"outage": "off"})[0] == 200
    waiting.join(10)
    assert answers == [200]
    counters = json.loads(http_get(flaky + "/control")[1])["counters"]
    assert counters["failed"] == 2 and counters["reset"] == 1 and counters["hung"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"outage": "down"}, "outage"),
        ({"failure_rate": 2}, "failure_rate"),
        ({"failure_rate": True}, "failure_rate"),
        ({"latency": "soon"}, "latency"),
        ({"failure_status": 200}, "failure_status"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_flaky_refuses_bad_control_values_by_name(
    flaky: str, body: dict[str, Any], field: str
) -> None:
    status, answer = post_json(flaky + "/control", body)
    assert status == 400 and field in answer["problems"]
    assert json.loads(http_get(flaky + "/control")[1])["behaviour"]["outage"] == "off"


def test_flaky_refuses_a_body_that_is_not_an_object(flaky: str) -> None:
    assert post_json(flaky + "/control", raw=b"[1")[0] == 400
    assert post_json(flaky + "/control", [1])[0] == 400
    assert http_get(flaky + "/x")[0] == 200


def test_flaky_bad_environment_exits_2_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecars_examples.flaky"],
        env={"PATH": os.environ.get("PATH", ""), "FLAKY_LATENCY": "soon", "FLAKY_OUTAGE": "x"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "FLAKY_LATENCY='soon' is invalid" in result.stderr
    assert "FLAKY_OUTAGE='x' is invalid" in result.stderr


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The app calling two flaky dependencies directly (no sidecars: the app's own behaviour)."""
    inventory, payments, app = free_port(), free_port(), free_port()
    access_log = tmp_path / "access.log"
    with (
        example("flaky", {"FLAKY_LISTEN": f"127.0.0.1:{inventory}"}, inventory),
        example("flaky", {"FLAKY_LISTEN": f"127.0.0.1:{payments}"}, payments),
        example(
            "app",
            {
                "APP_LISTEN": f"127.0.0.1:{app}",
                "APP_INVENTORY_URL": f"http://127.0.0.1:{inventory}",
                "APP_PAYMENTS_URL": f"http://127.0.0.1:{payments}",
                "APP_ACCESS_LOG": str(access_log),
            },
            app,
        ) as process,
    ):
        yield {
            "app": f"http://127.0.0.1:{app}",
            "inventory": f"http://127.0.0.1:{inventory}",
            "payments": f"http://127.0.0.1:{payments}",
            "process": process,
            "access_log": access_log,
        }


def test_app_places_orders_reports_failures_and_logs_in_four_styles(
    stack: dict[str, Any],
) -> None:
    status, placed = post_json(stack["app"] + "/orders", {"sku": "tea", "amount": 3})
    assert status == 201 and placed["status"] == "placed"
    assert set(placed["calls"]) == {"inventory", "payments"}
    assert post_json(stack["payments"] + "/control", {"outage": "error"})[0] == 200
    status, failed = post_json(stack["app"] + "/orders")
    assert status == 502 and failed["calls"]["payments"]["status"] == 503
    assert post_json(stack["payments"] + "/control", {"outage": "reset"})[0] == 200
    status, unreachable = post_json(stack["app"] + "/orders")
    assert status == 502 and unreachable["calls"]["payments"]["status"] is None
    assert post_json(stack["inventory"] + "/control", {"outage": "error"})[0] == 200
    status, no_stock = post_json(stack["app"] + "/orders")
    assert status == 502 and set(no_stock["calls"]) == {"inventory"}
    stats = json.loads(http_get(stack["app"] + "/stats")[1])
    assert stats["orders"] == {"placed": 1, "failed": 3}
    assert stats["calls"]["payments"]["failed"] == 2
    assert placed["order"] in http_get(stack["app"] + "/")[1].decode()

    process: subprocess.Popen[str] = stack["process"]
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    lines = out.splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert {e["msg"] for e in events} >= {"listening", "order placed", "order failed"}
    assert any(e.get("trace_id") for e in events)
    assert any(
        line.startswith("ts=") and 'level=error logger=inventory msg="stock check failed"' in line
        for line in lines
    )
    assert "Traceback (most recent call last):" in out
    assert "DependencyError: payments answered 503" in out
    assert "DependencyError: payments unreachable" in out
    access = stack["access_log"].read_text().splitlines()
    assert any('"POST /orders HTTP/1.1" 201' in line for line in access)


def test_logfmt_lines_quote_what_needs_quoting() -> None:
    record = logging.LogRecord("inventory", logging.WARNING, "", 0, "stock answered", None, None)
    record.order_id, record.attempts, record.note, record.gone = "o-1", 2, 'say "hi"', None
    line = LogfmtFormatter().format(record)
    assert " level=warn logger=inventory " in line
    assert line.endswith('msg="stock answered" order_id=o-1 attempts=2 note="say \\"hi\\""')


def test_app_refuses_a_bad_order_body(stack: dict[str, Any]) -> None:
    for raw in (b"{", b"[1]", b'{"amount": "lots"}'):
        status, answer = post_json(stack["app"] + "/orders", raw=raw)
        assert status == 400 and answer["error"] == "bad_request"
    assert post_json(stack["app"] + "/orders")[0] == 201


def test_probe_exits_0_when_healthy_and_1_otherwise(stack: dict[str, Any]) -> None:
    def probe(url: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "sidecars_examples.probe", url],
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode

    assert probe(stack["app"] + "/healthz") == 0
    assert probe(f"http://127.0.0.1:{free_port()}/healthz") == 1
    assert probe(stack["app"] + "/missing") == 1


def test_loadgen_reports_orders_and_stops_on_sigterm(stack: dict[str, Any]) -> None:
    env = {"LOADGEN_TARGET": stack["app"], "LOADGEN_RATE": "50", "LOADGEN_REPORT_EVERY": "200ms"}
    with example("loadgen", env, None) as loadgen:
        assert loadgen.stdout is not None
        report = json.loads(loadgen.stdout.readline())
        loadgen.send_signal(signal.SIGTERM)
        loadgen.wait(15)
    assert report["event"] == "traffic" and report.get("placed", 0) > 0
    assert loadgen.returncode == 0
