"""A trivial stand-in for the processing core, so the IO parts are tested on their own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from sidecars.logs.model import LogLine, Record


class StandInProcessor:
    """One record per line; a line starting with a space continues the previous line of its
    stream and keeps it pending (like a stack trace) until another line or a flush."""

    def __init__(self) -> None:
        self._pending: dict[str, list[LogLine]] = {}
        self.totals: dict[str, dict[str, int]] = {}

    def _emit(self, group: list[LogLine]) -> Record:
        text = "\n".join(line.text for line in group)
        return {"message": text, "stream_key": group[0].stream_key}

    def push(self, lines: Iterable[LogLine]) -> list[Record]:
        records: list[Record] = []
        for line in lines:
            group = self._pending.get(line.stream_key)
            if group is not None and line.text.startswith(" "):
                group.append(line)
                continue
            if group is not None:
                records.append(self._emit(group))
            self._pending[line.stream_key] = [line]
        return records

    def push_lines(
        self,
        texts: Sequence[str],
        like: LogLine,
        *,
        times: Sequence[float | None] | None = None,
        extra: dict[str, Any] | None = None,
        unwrap: bool = True,
    ) -> list[Record]:
        return self.push([dataclasses.replace(like, text=text) for text in texts])

    def flush_idle(self) -> list[Record]:
        return []

    def flush(self) -> list[Record]:
        records = [self._emit(group) for group in self._pending.values()]
        self._pending.clear()
        return records

    def first_pending(self, stream_key: str) -> LogLine | None:
        group = self._pending.get(stream_key)
        return group[0] if group else None

    @property
    def pending_lines(self) -> int:
        return sum(len(group) for group in self._pending.values())


@pytest.fixture
def processor_factory() -> type[StandInProcessor]:
    return StandInProcessor
