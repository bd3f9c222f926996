"""Outputs without sockets: file rotation, the retry schedule, the delivery loop, ECS fields."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidecars.logs.buffer import Batch, MemoryBuffer
from sidecars.logs.ecs import ecs_fields
from sidecars.logs.sinks import OutputClosed
from sidecars.logs.sinks.delivery import BACKOFF_MAX, OutputDelivery, backoff_delay
from sidecars.logs.sinks.file import FileSink, path_from_url
from sidecars.logs.sinks.stdout import StdoutSink


def batch(*messages: str) -> Batch:
    data = b"".join(orjson.dumps({"message": m}) + b"\n" for m in messages)
    return Batch(0, len(data), len(messages), data)


def lines(path: Path) -> list[str]:
    return [orjson.loads(line)["message"] for line in path.read_bytes().splitlines()]


async def test_file_output_appends_and_rotates_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "out" / "records.jsonl"
    sink = FileSink("file://" + str(path), path, max_bytes=60, keep=2)
    # each record is 25 bytes: a file holds two before the next write would pass 60
    for messages in (["a", "b"], ["c"], ["d"], ["e"], ["f"], ["g"]):
        await sink.write(batch(*(m * 10 for m in messages)))
    await sink.close()
    assert sink.rotations == 3
    assert lines(path.with_name("records.jsonl.2")) == ["c" * 10, "d" * 10]
    assert lines(path.with_name("records.jsonl.1")) == ["e" * 10, "f" * 10]
    assert lines(path) == ["g" * 10]
    assert not path.with_name("records.jsonl.3").exists()  # keep=2: "a" and "b" are gone


async def test_file_output_continues_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(orjson.dumps({"message": "earlier"}) + b"\n")
    sink = FileSink("file", path)
    await sink.write(batch("later"))
    await sink.close()
    assert lines(path) == ["earlier", "later"]


def test_file_url_to_path() -> None:
    assert path_from_url("file:///var/log/my%20app/out.jsonl") == Path("/var/log/my app/out.jsonl")


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    assert backoff_delay(0, lambda: 0.0) == 0.05
    assert backoff_delay(0, lambda: 1.0) == 0.1
    assert backoff_delay(3, lambda: 0.0) == 0.4
    assert backoff_delay(30, lambda: 1.0) == BACKOFF_MAX
    assert backoff_delay(30, lambda: 0.0) == BACKOFF_MAX / 2


class FlakySink:
    """Fails its first ``failures`` writes, then keeps what it is given."""

    name = "flaky"
    max_batch_bytes = 1 << 20

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.received: list[str] = []

    async def write(self, batch: Batch) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        self.received += [orjson.loads(line)["message"] for line in batch.data.splitlines()]

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}


async def test_delivery_retries_until_the_output_takes_the_batch() -> None:
    buffer = MemoryBuffer(["flaky"], 1 << 20)
    sink = FlakySink(3, ConnectionRefusedError("down"))
    delivery = OutputDelivery(sink, buffer, rand=lambda: 0.0)
    buffer.append([{"message": "m1"}, {"message": "m2"}])
    buffer.close_input()
    await asyncio.wait_for(delivery.run(), 5)
    assert sink.received == ["m1", "m2"]
    assert delivery.failures == 3
    assert delivery.delivered == 2
    assert buffer.records == 0


async def test_a_closed_output_ends_its_delivery_loop() -> None:
    buffer = MemoryBuffer(["flaky"], 1 << 20)
    delivery = OutputDelivery(FlakySink(1, OutputClosed("gone")), buffer)
    buffer.append([{"message": "m"}])
    try:
        await asyncio.wait_for(delivery.run(), 5)
    except OutputClosed:
        pass
    else:
        raise AssertionError("OutputClosed expected")
    assert delivery.state == "closed"
    assert buffer.records == 1


def test_ecs_fields_from_container_metadata() -> None:
    document = {
        "Name": "app",
        "Labels": {
            "com.amazonaws.ecs.cluster": "arn:aws:ecs:eu-west-1:1:cluster/prod",
            "com.amazonaws.ecs.task-arn": "arn:aws:ecs:eu-west-1:1:task/prod/abc",
            "com.amazonaws.ecs.task-definition-family": "payments",
            "com.amazonaws.ecs.task-definition-version": "7",
        },
    }
    assert ecs_fields(document) == {
        "ecs": {
            "cluster": "arn:aws:ecs:eu-west-1:1:cluster/prod",
            "task_arn": "arn:aws:ecs:eu-west-1:1:task/prod/abc",
            "task_family": "payments",
            "task_revision": "7",
            "container_name": "app",
        }
    }
    assert ecs_fields({"unexpected": True}) == {}


async def test_stdout_writes_to_a_file_in_place_and_to_a_pipe_from_a_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stdout.jsonl"
    with path.open("wb") as file:
        to_file = StdoutSink(file.fileno())
        assert to_file.status() == {"writes": "in place"}
        await to_file.write(batch("a", "b"))
        await to_file.close()
    assert lines(path) == ["a", "b"]
    read_end, write_end = os.pipe()
    try:
        to_pipe = StdoutSink(write_end)
        assert to_pipe.status() == {"writes": "thread"}
        await to_pipe.write(batch("c"))
        await to_pipe.close()
        assert os.read(read_end, 100) == b'{"message":"c"}\n'
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_stdout_whose_reader_left_is_closed_for_good() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    sink = StdoutSink(write_end)
    try:
        with pytest.raises(OutputClosed):
            await sink.write(batch("lost"))
    finally:
        await sink.close()
        os.close(write_end)
