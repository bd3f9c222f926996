"""Fixtures for the overload-protection tests: a real Redis (upstreams and proxies come from
../conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_parts import RedisServer, redis_server_fixture


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from redis_server_fixture()
