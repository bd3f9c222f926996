"""A clock the tests move by hand: the policies take time only from the clock they are given."""

from __future__ import annotations

import pytest
from support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
