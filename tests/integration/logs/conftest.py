"""Fixtures for the log adapter run as the real ``sidecars log-adapter`` process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from logadapter_support import Adapter, StartAdapter, start_adapter
from support import free_port


@pytest.fixture
def adapters() -> Iterator[StartAdapter]:
    """Start adapters (``adapters(env, stdin=..., ready=...)``); all are killed at the end."""
    started: list[Adapter] = []

    def start(env: dict[str, str], **options: Any) -> Adapter:
        adapter = start_adapter(env, **options)
        started.append(adapter)
        return adapter

    yield start
    for adapter in started:
        adapter.close()


@pytest.fixture
def forward_port() -> int:
    return free_port()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory
