"""The tail input through the real process: rotation, copytruncate, restarts, kill -9."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from logadapter_support import Adapter, StartAdapter, wait_for


def tail_env(log_dir: Path, state_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "LOGADAPTER_INPUTS": "tail",
        "LOGADAPTER_TAIL_PATHS": str(log_dir / "*.log"),
        "LOGADAPTER_STATE_DIR": str(state_dir),
        "LOGADAPTER_FORMAT": "raw",
        "LOGADAPTER_MULTILINE": "off",
        **extra,
    }


def write_lines(path: Path, start: int, count: int, prefix: str = "line") -> list[str]:
    lines = [f"{prefix} {n}" for n in range(start, start + count)]
    with path.open("a") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return lines


def test_rename_rotation_and_copytruncate_lose_nothing(
    adapters: StartAdapter, log_dir: Path, tmp_path: Path
) -> None:
    adapter = adapters(tail_env(log_dir, tmp_path / "state"))
    path = log_dir / "app.log"
    expected = write_lines(path, 0, 500)
    adapter.wait_records(500)
    # rename rotation: the old inode gets a last write after the rename
    os.rename(path, log_dir / "app.log.1")
    expected += write_lines(log_dir / "app.log.1", 500, 10)
    expected += write_lines(path, 510, 300)
    adapter.wait_records(810)
    # copytruncate
    with path.open("r+") as handle:
        handle.truncate(0)
    expected += write_lines(path, 810, 5, prefix="after truncate")
    adapter.wait_records(815)
    assert adapter.terminate() == 0
    messages = adapter.messages()
    assert sorted(messages) == sorted(expected)
    status_events = [e["event"] for e in adapter.process_logs()]
    assert "tail_file_rotated" in status_events
    assert "tail_file_truncated" in status_events


def test_restart_after_sigterm_has_no_loss_and_no_duplicates(
    adapters: StartAdapter, log_dir: Path, tmp_path: Path
) -> None:
    path = log_dir / "app.log"
    env = tail_env(log_dir, tmp_path / "state")
    expected = write_lines(path, 0, 1000)
    first = adapters(env)
    first.wait_records(1000)
    status = first.status()
    assert status["offsets"][0]["path"] == str(path)
    assert first.terminate() == 0
    expected += write_lines(path, 1000, 200)  # written while the adapter is down
    second = adapters(env)
    expected += write_lines(path, 1200, 100)
    second.wait_records(300)
    assert second.terminate() == 0
    assert first.messages() + second.messages() == expected


def test_kill_9_then_restart_loses_nothing(
    adapters: StartAdapter, log_dir: Path, tmp_path: Path
) -> None:
    """Every line arrives after a kill -9 and a restart. Only lines past the last saved offset
    can arrive twice (at-least-once), and they are the last ones delivered before the kill."""
    path = log_dir / "app.log"
    env = tail_env(log_dir, tmp_path / "state")
    first = adapters(env)
    write_lines(path, 0, 5000)
    first.wait_records(5000)
    saved_size = path.stat().st_size
    wait_for(lambda: first.status()["offsets"][0]["saved_offset"] == saved_size)
    write_lines(path, 5000, 5000)
    first.wait_records(6000)
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    write_lines(path, 10_000, 5000)  # while the adapter is down
    before = first.messages()
    second = adapters(env)
    everything = {f"line {n}" for n in range(15_000)}
    wait_for(
        lambda: set(before + second.messages()) >= everything,
        30,
        lambda: f"{len(set(before + second.messages()))} distinct of 15000",
    )
    assert second.terminate() == 0
    after = second.messages()
    counts = Counter(before + after)
    assert set(counts) == everything
    duplicates = [message for message, count in counts.items() if count > 1]
    assert all(count <= 2 for count in counts.values())
    assert not {f"line {n}" for n in range(5000)} & set(duplicates)  # below the saved offset
    assert after[: len(duplicates)] == before[len(before) - len(duplicates) :]


def test_offsets_are_visible_in_status(
    adapters: StartAdapter, log_dir: Path, tmp_path: Path
) -> None:
    path = log_dir / "app.log"
    write_lines(path, 0, 10)
    adapter: Adapter = adapters(tail_env(log_dir, tmp_path / "state"))
    adapter.wait_records(10)
    size = path.stat().st_size
    wait_for(lambda: adapter.status()["offsets"][0]["saved_offset"] == size)
    offsets = adapter.status()["offsets"][0]
    assert offsets["read_offset"] == size
    assert offsets["inode"] == f"{path.stat().st_dev}:{path.stat().st_ino}"


def test_truncated_and_rewritten_within_one_poll_is_read_from_the_start(
    adapters: StartAdapter, log_dir: Path, tmp_path: Path
) -> None:
    """The new content is longer than what was read: only the first bytes tell."""
    adapter = adapters(tail_env(log_dir, tmp_path / "state"))
    path = log_dir / "app.log"
    expected = write_lines(path, 0, 20, prefix="old")
    adapter.wait_records(20)
    rewritten = [f"rewritten line {n:02d}" for n in range(20)]
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # truncate and write in one go: no poll between
    try:
        os.write(fd, "".join(line + "\n" for line in rewritten).encode())
    finally:
        os.close(fd)
    expected += rewritten
    adapter.wait_records(40)
    assert adapter.terminate() == 0
    assert adapter.messages() == expected
    truncated = [e for e in adapter.process_logs() if e["event"] == "tail_file_truncated"]
    assert [e["seen_by"] for e in truncated] == ["fingerprint"]
