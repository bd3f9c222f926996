"""Fixtures for the log processing tests: a processor built from LOGADAPTER_* variables, with
a clock the test moves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import FakeClock

from sidecars.logs.processor import LogProcessor
from sidecars.settings import load_log_adapter

NOW = 1795694400.0  # 2026-11-26T12:00:00Z


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


MakeProcessor = Callable[..., LogProcessor]


@pytest.fixture
def make_processor(clock: FakeClock) -> MakeProcessor:
    """``make_processor(FORMAT="json", static_fields=...)``: LOGADAPTER_<NAME>=value."""

    def make(static_fields: dict[str, Any] | None = None, **env: str) -> LogProcessor:
        settings = load_log_adapter({f"LOGADAPTER_{key}": value for key, value in env.items()})
        return LogProcessor(settings, clock=clock, static_fields=static_fields)

    return make
