"""Admin plane of the log adapter: /status, /metrics, readiness; ECS metadata at start."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from fluent.sender import FluentSender
from logadapter_support import StartAdapter, start_adapter, wait_for
from support import LOOPBACK, free_port, metric_value

CONTAINER_METADATA = {
    "DockerId": "43481a6ce4842eec8fe72fc28500c6b52edcc0917f105b83379f88cac1ff3946",
    "Name": "log-adapter",
    "Labels": {
        "com.amazonaws.ecs.cluster": "arn:aws:ecs:eu-west-1:111122223333:cluster/prod",
        "com.amazonaws.ecs.task-arn": "arn:aws:ecs:eu-west-1:111122223333:task/prod/158d1c8083",
        "com.amazonaws.ecs.task-definition-family": "checkout",
        "com.amazonaws.ecs.task-definition-version": "12",
        "com.amazonaws.ecs.container-name": "log-adapter",
    },
}


def test_status_and_metrics_describe_inputs_outputs_and_buffer(
    adapters: StartAdapter, tmp_path: Path, forward_port: int
) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text("one\ntwo\n")
    out = tmp_path / "out" / "records.jsonl"
    adapter = adapters(
        {
            "LOGADAPTER_INPUTS": "tail,forward",
            "LOGADAPTER_TAIL_PATHS": str(tmp_path / "*.log"),
            "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{forward_port}",
            "LOGADAPTER_OUTPUTS": f"stdout,file://{out}",
            "LOGADAPTER_BUFFER_DIR": str(tmp_path / "buffer"),
            "LOGADAPTER_STATE_DIR": str(tmp_path / "state"),
            "LOGADAPTER_MULTILINE": "off",
        }
    )
    adapter.wait_records(2)
    # Each output delivers on its own: stdout having written both does not mean the file has.
    wait_for(
        lambda: all(o["delivered"] == 2 for o in adapter.status()["outputs"].values()),
        describe=lambda: str(adapter.status()["outputs"]),
    )
    status = adapter.status()
    assert status["state"] == "serving"
    assert set(status["inputs"]) == {"tail", "forward"}
    assert set(status["outputs"]) == {"stdout", f"file://{out}"}
    assert status["outputs"]["stdout"]["delivered"] == 2
    assert status["buffer"]["kind"] == "disk"
    assert status["offsets"][0]["path"] == str(log_file)
    assert status["settings"]["inputs"] == ["tail", "forward"]
    metrics = adapter.metrics()
    assert metric_value(metrics, "logadapter_records_in_total", input="tail") == 2
    assert metric_value(metrics, "logadapter_records_out_total", output="stdout") == 2
    assert metric_value(metrics, "logadapter_records_out_total", output=f"file://{out}") == 2
    assert metric_value(metrics, "logadapter_buffer_records") == 0
    for name in (
        "logadapter_records_dropped_total",
        "logadapter_output_errors_total",
        "logadapter_buffer_bytes",
        "logadapter_input_errors_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in metrics
    assert [line for line in out.read_text().splitlines()] == adapter.stdout_text().splitlines()


async def test_ecs_metadata_is_added_to_every_record() -> None:
    app = web.Application()
    requests: list[str] = []

    async def metadata(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response(CONTAINER_METADATA)

    app.router.add_get("/v4/container", metadata)
    async with TestServer(app, host=LOOPBACK, port=0) as server:
        adapter = start_adapter(
            {
                "LOGADAPTER_INPUTS": "stdin",
                "ECS_CONTAINER_METADATA_URI_V4": str(server.make_url("/v4/container")),
            },
            stdin=subprocess.PIPE,
            ready=False,
        )
        try:
            assert adapter.process is not None and adapter.process.stdin is not None
            adapter.process.stdin.write(b"hello from ecs\n")
            adapter.process.stdin.close()
            assert await asyncio.to_thread(adapter.process.wait, 30) == 0
            record = adapter.records()[0]
        finally:
            adapter.close()
    assert requests == ["/v4/container"]
    assert record["message"] == "hello from ecs"
    assert record["ecs"] == {
        "cluster": "arn:aws:ecs:eu-west-1:111122223333:cluster/prod",
        "task_arn": "arn:aws:ecs:eu-west-1:111122223333:task/prod/158d1c8083",
        "task_family": "checkout",
        "task_revision": "12",
        "container_name": "log-adapter",
    }


def test_unreachable_ecs_metadata_is_not_an_error(adapters: StartAdapter) -> None:
    adapter = adapters(
        {
            "LOGADAPTER_INPUTS": "stdin",
            "ECS_CONTAINER_METADATA_URI_V4": f"http://{LOOPBACK}:{free_port()}/v4",
        },
        stdin=subprocess.PIPE,
        ready=False,
    )
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(b"still logging\n")
    adapter.process.stdin.close()
    assert adapter.process.wait(30) == 0
    assert adapter.messages() == ["still logging"]
    assert "ecs" not in adapter.records()[0]
    assert "ecs_metadata_unavailable" in [e["event"] for e in adapter.process_logs()]


def test_a_listen_port_in_use_is_a_clear_failure(adapters: StartAdapter) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        adapter = adapters(
            {"LOGADAPTER_INPUTS": "forward", "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{port}"},
            ready=False,
        )
        assert adapter.process is not None
        assert adapter.process.wait(30) == 1
    fatal = [e for e in adapter.process_logs() if e["event"] == "fatal"]
    assert "address already in use" in fatal[0]["error"].lower()
    assert adapter.stdout_text() == ""


def test_status_shows_the_processor_totals(adapters: StartAdapter, forward_port: int) -> None:
    adapter = adapters(
        {
            "LOGADAPTER_INPUTS": "forward",
            "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{forward_port}",
            "LOGADAPTER_MAX_LINE_BYTES": "64",
            "LOGADAPTER_MULTILINE_TIMEOUT": "100ms",
        }
    )
    lines = [
        '{"level":"info","msg":"login","password":"hunter2"}',
        "level=warn msg=slow",
        "x" * 100,
        "2026-11-26 10:00:00,123 ERROR [app] failed",
        "Traceback (most recent call last):",
        '  File "app.py", line 1, in <module>',
        "KeyError: 'id'",
    ]
    sender = FluentSender("app", host=LOOPBACK, port=forward_port)
    try:
        for line in lines:
            assert sender.emit("web", {"log": line, "source": "stdout", "container_id": "c1"})
    finally:
        sender.close()
    adapter.wait_records(5)  # the long line is cut in two; the traceback joins its line
    processor = adapter.status()["processor"]
    assert processor["pending_lines"] == 0
    assert processor["formats"] == {"json": 1, "logfmt": 1, "text": 3}
    assert processor["redactions"] == {"secret_field": 1}
    assert processor["truncated"] == {"max_line_bytes": 1}
    assert processor["multiline_groups"] == {"total": 1}
