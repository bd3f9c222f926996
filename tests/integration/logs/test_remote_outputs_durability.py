"""At-least-once into each remote output with the disk buffer: chunks acknowledged to a
Forward sender while the destination is down survive a SIGKILL of the adapter, and arrive
once the destination and the adapter are back."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from cloudwatch_support import CloudWatchApi
from http_receiver import HttpReceiver
from logadapter_support import StartAdapter, forward_env, wait_for
from otlp_support import all_records
from support import LOOPBACK, free_port


def send_acknowledged(port: int, messages: list[str], chunk: str) -> None:
    with socket.create_connection((LOOPBACK, port), timeout=15) as connection:
        entries = [[1795687200, {"message": message}] for message in messages]
        connection.sendall(msgpack.packb(["app", entries, {"chunk": chunk}]))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            unpacker.feed(connection.recv(65536))
            for answer in unpacker:
                assert answer == {"ack": chunk}
                return


Destination = tuple[dict[str, str], Callable[[], None], Callable[[], list[str]]]
"""The adapter's env for it, start it again, what it holds."""


@pytest.fixture(params=["otlp", "http", "cloudwatch"])
def destination(request: pytest.FixtureRequest) -> Iterator[Destination]:
    if request.param == "cloudwatch":
        api = CloudWatchApi()
        group = f"/ecs/durable-{uuid.uuid4().hex[:8]}"
        api.proxy.stop()

        def stored() -> list[str]:
            if group not in [g["logGroupName"] for g in api.client.describe_log_groups()[
                "logGroups"
            ]]:
                return []
            return [r["message"] for s in api.streams(group) for r in api.records(group, s)]

        yield api.env(group, LOGADAPTER_CLOUDWATCH_CREATE="on"), api.proxy.start, stored
        api.close()
        return
    receiver = HttpReceiver().start()
    receiver.stop()  # the port is kept for the restart
    if request.param == "otlp":
        env = {"LOGADAPTER_OUTPUTS": f"otlp+{receiver.url}"}

        def stored() -> list[str]:
            return [record["body"] for record in all_records(receiver)]
    else:
        env = {"LOGADAPTER_OUTPUTS": f"{receiver.url}/ingest"}

        def stored() -> list[str]:
            return [
                json.loads(line)["message"]
                for body in receiver.bodies()
                for line in body.splitlines()
            ]

    yield env, receiver.start, stored
    receiver.stop()


def test_acknowledged_records_survive_kill_9_while_the_destination_is_down(
    adapters: StartAdapter, destination: Destination, tmp_path: Path
) -> None:
    env, start_destination, stored = destination
    buffer_dir = str(tmp_path / "buffer")
    first = adapters(forward_env(free_port(), LOGADAPTER_BUFFER_DIR=buffer_dir, **env))
    forward_port = int(first.env["LOGADAPTER_FORWARD_LISTEN"].rsplit(":", 1)[1])
    output = env["LOGADAPTER_OUTPUTS"]
    for chunk in range(5):
        send_acknowledged(
            forward_port, [f"durable {chunk}-{n}" for n in range(200)], f"c{chunk}"
        )
    wait_for(lambda: first.status()["outputs"][output]["failures"] >= 1)
    assert first.process is not None
    first.process.kill()
    first.process.wait(10)
    start_destination()
    second = adapters(forward_env(free_port(), LOGADAPTER_BUFFER_DIR=buffer_dir, **env))
    expected = {f"durable {chunk}-{n}" for chunk in range(5) for n in range(200)}
    wait_for(lambda: set(stored()) >= expected, 30)
    assert second.terminate() == 0
    assert set(stored()) == expected
