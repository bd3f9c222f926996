"""The record buffer: per-output cursors, the bound, durability, replay after a restart."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from sidecars.logs.buffer import MemoryBuffer, RecordBuffer, encode_records
from sidecars.logs.disk_buffer import DiskBuffer


def records(*messages: str) -> list[dict[str, str]]:
    return [{"message": message} for message in messages]


def messages(data: bytes) -> list[str]:
    return [orjson.loads(line)["message"] for line in data.splitlines()]


async def drain(buffer: RecordBuffer, output: str) -> list[str]:
    out: list[str] = []
    while buffer.cursor(output) < buffer.end:
        batch = await buffer.read(output, 1 << 20)
        assert batch is not None
        out += messages(batch.data)
        buffer.commit(output, batch)
    return out


def make(kind: str, tmp_path: Path, outputs: list[str], max_bytes: int = 1 << 20) -> RecordBuffer:
    if kind == "memory":
        return MemoryBuffer(outputs, max_bytes)
    buffer = DiskBuffer(tmp_path / "buffer", outputs, max_bytes, segment_bytes=200)
    buffer.open()
    return buffer


@pytest.fixture(params=["memory", "disk"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_each_output_reads_everything_at_its_own_pace(kind: str, tmp_path: Path) -> None:
    buffer = make(kind, tmp_path, ["fast", "slow"])
    for i in range(20):
        buffer.append(records(f"m{i}"))
    assert await drain(buffer, "fast") == [f"m{i}" for i in range(20)]
    assert buffer.records == 20  # still owed to "slow"
    assert buffer.bytes == buffer.end
    assert await drain(buffer, "slow") == [f"m{i}" for i in range(20)]
    assert buffer.records == 0
    assert buffer.bytes == 0


async def test_read_waits_for_data_and_ends_after_close(kind: str, tmp_path: Path) -> None:
    buffer = make(kind, tmp_path, ["out"])
    reader = asyncio.ensure_future(buffer.read("out", 1000))
    await asyncio.sleep(0)
    assert not reader.done()
    buffer.append(records("late"))
    batch = await reader
    assert batch is not None
    assert messages(batch.data) == ["late"]
    buffer.commit("out", batch)
    buffer.close_input()
    assert await buffer.read("out", 1000) is None


async def test_batches_respect_max_bytes_but_always_make_progress(
    kind: str, tmp_path: Path
) -> None:
    buffer = make(kind, tmp_path, ["out"])
    buffer.append(records("x" * 50))
    buffer.append(records("y" * 50))
    batch = await buffer.read("out", 10)
    assert batch is not None
    assert messages(batch.data) == ["x" * 50]
    assert batch.count == 1


async def test_a_full_buffer_holds_inputs_until_an_output_catches_up(
    kind: str, tmp_path: Path
) -> None:
    buffer = make(kind, tmp_path, ["out"], max_bytes=100)
    buffer.append(records("a" * 120))
    assert buffer.full
    waiting = asyncio.ensure_future(buffer.wait_space())
    await asyncio.sleep(0)
    assert not waiting.done()
    batch = await buffer.read("out", 1000)
    assert batch is not None
    buffer.commit("out", batch)
    await asyncio.wait_for(waiting, 1)
    assert not buffer.full


async def test_memory_records_are_stored_only_once_delivered(tmp_path: Path) -> None:
    buffer = make("memory", tmp_path, ["a", "b"])
    position = buffer.append(records("m"))
    await buffer.wait_accepted(position)  # accepted at once
    assert not buffer.is_stored(position)
    await drain(buffer, "a")
    assert not buffer.is_stored(position)
    await drain(buffer, "b")
    assert buffer.is_stored(position)
    await asyncio.wait_for(buffer.wait_stored(position), 1)


async def test_disk_records_are_stored_once_fsynced(tmp_path: Path) -> None:
    buffer = make("disk", tmp_path, ["out"])
    position = buffer.append(records("m"))
    assert not buffer.is_stored(position)
    await buffer.wait_accepted(position)
    assert buffer.is_stored(position)


async def test_detached_output_stops_holding_records_and_counts_them(tmp_path: Path) -> None:
    buffer = make("memory", tmp_path, ["dead", "live"], max_bytes=60)
    buffer.append(records("a" * 70))
    await drain(buffer, "live")
    assert buffer.full
    buffer.detach("dead", "output_closed")
    assert not buffer.full
    assert buffer.records == 0


async def test_disk_restart_delivers_only_what_each_output_still_owes(tmp_path: Path) -> None:
    first = make("disk", tmp_path, ["stdout", "forward"])
    for i in range(30):
        first.append(records(f"m{i}"))
    assert await drain(first, "stdout") == [f"m{i}" for i in range(30)]
    batch = await first.read("forward", 100)
    assert batch is not None
    first.commit("forward", batch)
    delivered_to_forward = batch.count
    await first.close()

    second = make("disk", tmp_path, ["stdout", "forward", "file:///new"])
    assert second.records == 30  # the new output gets everything still on disk
    assert await drain(second, "stdout") == []
    assert await drain(second, "forward") == [f"m{i}" for i in range(delivered_to_forward, 30)]
    second.append(records("after restart"))
    assert await drain(second, "stdout") == ["after restart"]
    await second.close()


async def test_disk_segments_are_deleted_once_everyone_passed_them(tmp_path: Path) -> None:
    buffer = make("disk", tmp_path, ["out"])
    for i in range(50):
        buffer.append(records(f"message number {i}"))
    directory = tmp_path / "buffer"
    assert len(list(directory.glob("*.jsonl"))) > 3
    await drain(buffer, "out")
    assert len(list(directory.glob("*.jsonl"))) == 1  # the active segment
    await buffer.close()


async def test_disk_replay_cuts_a_torn_last_line(tmp_path: Path) -> None:
    buffer = make("disk", tmp_path, ["out"])
    buffer.append(records("whole"))
    await buffer.close()
    segment = next((tmp_path / "buffer").glob("*.jsonl"))
    with segment.open("ab") as handle:
        handle.write(b'{"message": "torn')
    replayed = make("disk", tmp_path, ["out"])
    assert segment.read_bytes().endswith(b"}\n")
    assert await drain(replayed, "out") == ["whole"]
    assert not segment.exists()  # delivered and never appended to: deleted


async def test_disk_replay_without_cursors_redelivers_everything(tmp_path: Path) -> None:
    buffer = make("disk", tmp_path, ["out"])
    buffer.append(records("a", "b"))
    await buffer.wait_accepted(buffer.end)
    # a crash: no close, no checkpoint
    os.close(buffer._write_fd)  # type: ignore[arg-type]
    replayed = make("disk", tmp_path, ["out"])
    assert await drain(replayed, "out") == ["a", "b"]


def test_unencodable_values_are_repaired_not_lost() -> None:
    data = encode_records([{"message": "bad \udcff", "n": 2**70, 1: "int key"}])
    assert orjson.loads(data) == {"message": "bad \ufffd", "n": str(2**70), "1": "int key"}
