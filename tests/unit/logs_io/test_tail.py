"""The tail input on real files: rotation, truncation, offsets saved only below what is safe."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from sidecars.logs.buffer import MemoryBuffer
from sidecars.logs.pipeline import LineProcessor, Pipeline
from sidecars.logs.sources.tail import STATE_FILE, TailSource


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)  # polling interval


class Harness:
    """A tail source, the stand-in processor, a memory buffer and one output draining it."""

    def __init__(self, processor: LineProcessor, directory: Path, state_dir: Path) -> None:
        self.processor = processor
        self.buffer = MemoryBuffer(["out"], 1 << 20)
        self.pipeline = Pipeline(self.processor, self.buffer)
        self.source = TailSource(
            (str(directory / "*.log"),),
            self.pipeline,
            1000,
            str(state_dir),
            poll_seconds=0.02,
            save_seconds=0.05,
        )
        self.delivered: list[str] = []
        self.delivering = True
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.source.start()
        self._task = asyncio.create_task(self._deliver())

    async def _deliver(self) -> None:
        while (batch := await self.buffer.read("out", 1 << 20)) is not None:
            await wait_until(lambda: self.delivering, seconds=60)
            self.delivered += [orjson.loads(line)["message"] for line in batch.data.splitlines()]
            self.buffer.commit("out", batch)

    async def stop(self) -> None:
        await self.source.stop()
        self.pipeline.flush()
        self.buffer.close_input()
        assert self._task is not None
        await self._task
        await self.source.close()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


@pytest.fixture
async def tail(
    logs: Path, tmp_path: Path, processor_factory: type[LineProcessor]
) -> AsyncIterator[Harness]:
    harness = Harness(processor_factory(), logs, tmp_path / "state")
    await harness.start()
    yield harness
    if harness._task is not None and not harness._task.done():
        await harness.stop()


def saved_offsets(tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "state" / STATE_FILE
    if not path.exists():
        return {}
    state = json.loads(path.read_text())
    return {entry["path"]: entry["offset"] for entry in state["files"].values()}


def append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


async def test_lines_of_a_new_file_are_read_from_its_beginning(tail: Harness, logs: Path) -> None:
    append(logs / "app.log", "one\ntwo\nthree\n")
    await wait_until(lambda: tail.delivered == ["one", "two"])  # "three" may be continued
    await tail.stop()
    assert tail.delivered == ["one", "two", "three"]


async def test_a_partial_last_line_waits_for_its_newline(tail: Harness, logs: Path) -> None:
    append(logs / "app.log", "first\nsecond without newline")
    await wait_until(lambda: tail.processor.pending_lines == 1)
    append(logs / "app.log", ", completed\nthird\n")
    await wait_until(lambda: "second without newline, completed" in tail.delivered)


async def test_offset_is_never_saved_past_a_pending_line(
    tail: Harness, logs: Path, tmp_path: Path
) -> None:
    path = logs / "app.log"
    trace = "Exception: boom\n  at frame\n"
    append(path, "done\n" + trace)
    await wait_until(lambda: tail.delivered == ["done"])
    await wait_until(lambda: saved_offsets(tmp_path).get(str(path)) == len("done\n"))
    append(path, "next\n")
    await wait_until(lambda: len(tail.delivered) == 2)
    assert tail.delivered[1] == trace.rstrip("\n")
    await wait_until(lambda: saved_offsets(tmp_path).get(str(path)) == len("done\n" + trace))


async def test_offset_waits_for_delivery_with_a_memory_buffer(
    tail: Harness, logs: Path, tmp_path: Path
) -> None:
    path = logs / "app.log"
    append(path, "a\nb\n")
    await wait_until(lambda: saved_offsets(tmp_path).get(str(path)) == 2)
    tail.delivering = False
    append(path, "c\nd\n")
    await wait_until(lambda: tail.source.lines == 4)
    await asyncio.sleep(0.2)  # several save periods pass while nothing is delivered
    assert saved_offsets(tmp_path)[str(path)] == 2
    tail.delivering = True
    await wait_until(lambda: saved_offsets(tmp_path)[str(path)] == 6)


async def test_rename_rotation_reads_the_old_file_to_its_end(tail: Harness, logs: Path) -> None:
    path = logs / "app.log"
    append(path, "old-1\nold-2\n")
    await wait_until(lambda: "old-1" in tail.delivered)
    os.rename(path, logs / "app.log.1")  # out of the glob
    append(logs / "app.log.1", "old-3 written after the rename\n")
    append(path, "new-1\nnew-2\n")
    await wait_until(lambda: "new-1" in tail.delivered)
    await wait_until(lambda: not any(f.path.endswith(".1") for f in tail.source._files.values()))
    await tail.stop()
    assert sorted(tail.delivered) == sorted(
        ["old-1", "old-2", "old-3 written after the rename", "new-1", "new-2"]
    )


async def test_copytruncate_restarts_at_zero(tail: Harness, logs: Path) -> None:
    path = logs / "app.log"
    append(path, "before-1\nbefore-2\nbefore-3\n")
    await wait_until(lambda: "before-2" in tail.delivered)
    with path.open("r+") as handle:
        handle.truncate(0)
    append(path, "after\n")
    await wait_until(lambda: tail.source.truncations == 1)
    await tail.stop()
    assert tail.delivered == ["before-1", "before-2", "before-3", "after"]


async def test_restart_continues_from_the_saved_offset(
    logs: Path, tmp_path: Path, processor_factory: type[LineProcessor]
) -> None:
    path = logs / "app.log"
    append(path, "".join(f"line {i}\n" for i in range(100)))
    first = Harness(processor_factory(), logs, tmp_path / "state")
    await first.start()
    await wait_until(lambda: len(first.delivered) == 99)
    await first.stop()
    assert len(first.delivered) == 100
    append(path, "line 100\n")
    second = Harness(processor_factory(), logs, tmp_path / "state")
    await second.start()
    await wait_until(lambda: second.processor.pending_lines == 1)
    await second.stop()
    assert second.delivered == ["line 100"]


async def test_a_reused_inode_with_other_content_starts_at_zero(
    logs: Path, tmp_path: Path, processor_factory: type[LineProcessor]
) -> None:
    path = logs / "app.log"
    append(path, "original content\n")
    first = Harness(processor_factory(), logs, tmp_path / "state")
    await first.start()
    await wait_until(lambda: first.processor.pending_lines == 1)
    await first.stop()
    with path.open("r+") as handle:  # same inode, different first bytes
        handle.seek(0)
        handle.write("REPLACED content\nmore\n")
    second = Harness(processor_factory(), logs, tmp_path / "state")
    await second.start()
    await wait_until(lambda: second.delivered == ["REPLACED content"])
    await second.stop()


async def test_what_the_files_hold_at_stop_is_still_read(
    logs: Path, tmp_path: Path, processor_factory: type[LineProcessor]
) -> None:
    """The app's last lines before a shutdown (a crash trace) must not wait for the next
    start: they are read at stop, even between two polls. Later writes are not."""
    harness = Harness(processor_factory(), logs, tmp_path / "state")
    harness.source = TailSource(
        (str(logs / "*.log"),), harness.pipeline, 1000, str(tmp_path / "state"),
        poll_seconds=60,  # no poll between the writes and the stop
    )
    path = logs / "app.log"
    path.write_text("first\n")
    await harness.start()
    await wait_until(lambda: harness.source.lines == 1)
    with path.open("a") as file:
        file.write("last words\nTraceback (most recent call last):\n")
    await harness.stop()
    assert harness.delivered == ["first", "last words", "Traceback (most recent call last):"]
